"""Multi-namespace mode (`--discover`): one exporter for every keepalived on the host.

A discovery thread (`sources.discovery`) reads the process table every `--discover.interval`
seconds. Each keepalived found becomes a member of the fleet (`store.fleet`), with its own store and
its own sources: keepalived.conf and the dumps (read through /proc/PID/root, run by a small shared
pool, `sources.fleetloop.Scheduler`), the wire and netlink addresses (sockets opened inside its
namespace, polled by one shared thread, `sources.fleetloop.SharedLoop`), and its process record
(from discovery itself). A keepalived that vanished is dropped within one interval. Past
`--discover.max-daemons` watched daemons, the rest are counted (`ka_exporter_daemons_unwatched`)
and one warning line says so. `/metrics` is every member's exposition, relabelled with `netns` and
`keepalived` (`outputs.merge`).

Not in this mode (yet): D-Bus, the notify FIFO, the L2 witness, LVS and the watchdog hooks.
"""

from __future__ import annotations

import html
import logging
import sys
from dataclasses import replace

from ka_exporter.daemon import SWITCH_INTERVAL, build_parts, server_for, stop_on_signals
from ka_exporter.outputs.http import App
from ka_exporter.outputs.merge import MergedRenderer
from ka_exporter.settings import Settings, parse_listen_address
from ka_exporter.sources.fleet import MULTI_COLLECTORS, Multi

log = logging.getLogger("ka_exporter.multi")


def serve(settings: Settings) -> int:
    """Serve the merged scrape until SIGTERM/SIGINT."""
    host, _port = parse_listen_address(settings.web_listen_address)
    multi = Multi(settings)
    only = frozenset(c for c in MULTI_COLLECTORS if settings.enabled(c))
    parts = build_parts(replace(settings, collectors=only))
    renderer = MergedRenderer(multi.fleet, parts, lambda: multi.discovered)

    def landing() -> str:
        rows = "".join(
            f"<li>{html.escape(m.daemon.netns_name)}: pid {m.daemon.pid}, "
            f"{html.escape(m.daemon.pid_file)}</li>"
            for m in multi.fleet.members()
        )
        return (
            f"<html><body><h1>ka-exporter --discover</h1><p>{len(multi.fleet)} keepalived watched, "
            f"{multi.fleet.unwatched} over the cap.</p><ul>{rows}</ul>"
            f'<p><a href="{settings.web_telemetry_path}">metrics</a></p></body></html>'
        )

    app = App(None, settings.web_telemetry_path, landing=landing, render=renderer.render)
    server = server_for(settings, app)
    if server is None:
        return 2
    stop = stop_on_signals()
    multi.start()
    sys.setswitchinterval(SWITCH_INTERVAL)
    server.start()
    log.info(
        "listening on %s:%d%s, watching %d keepalived (--discover)",
        host or "*",
        server.port,
        settings.web_telemetry_path,
        len(multi.fleet),
    )
    while not stop.wait(1.0):
        pass
    server.stop()
    multi.stop()
    return 0
