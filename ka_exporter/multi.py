"""Multi-namespace mode (`--discover`): one exporter for every keepalived on the host.

A discovery thread (`sources.discovery`) reads the process table every `--discover.interval`
seconds. Each keepalived found becomes a member of the fleet (`store.fleet`), with its own store and
its own sources: keepalived.conf and the dumps (read through /proc/PID/root, run by a small shared
pool, `sources.fleetloop.Scheduler`), the wire and netlink addresses (sockets opened inside its
namespace, polled by one shared thread, `sources.fleetloop.SharedLoop`), and its process record
(from discovery itself). A keepalived that vanished is dropped within one interval; one restarted
(same namespace and pid file, a new process, maybe a new container) is re-attached at the next pass,
its files read through the new /proc/PID/root and the old process's records forgotten. Past
`--discover.max-daemons` watched daemons, the rest are counted (`ka_exporter_daemons_unwatched`)
and one warning line says so. `/metrics` is every member's exposition, relabelled with `netns` and
`keepalived` (`outputs.merge`).

Not in this mode (yet): D-Bus, the notify FIFO, the L2 witness, LVS and the watchdog hooks. What
happens when they are asked for anyway is `refusal` and `notices` (below).
"""

from __future__ import annotations

import html
import logging
import sys
from dataclasses import replace

from ka_exporter.daemon import (
    SWITCH_INTERVAL,
    build_parts,
    server_for,
    sleep_until_signalled,
    stop_on_signals,
)
from ka_exporter.outputs.http import App
from ka_exporter.outputs.merge import MergedRenderer
from ka_exporter.settings import Settings, parse_listen_address
from ka_exporter.sources.fleet import MULTI_COLLECTORS, Multi

log = logging.getLogger("ka_exporter.multi")

# Sources that are on by default but do not run per keepalived here, and what is lost without them.
NOT_PER_DAEMON = {
    "l2": "the L2 witness does not run per keepalived with --discover: no ARP/ND probes are sent and"
    " keepalived_l2_* is not exported (watch a namespace with --netns for it)",
    "lvs": "LVS does not run per keepalived with --discover: keepalived_lvs_* (virtual and real servers)"
    " is not exported (watch a namespace with --netns for it)",
}


def refusal(settings: Settings) -> str | None:
    """Why --discover must not start with these settings, or None.

    The watchdog hook is an action the operator relies on (fencing, paging, taking a node out). This
    mode does not run it per keepalived, so starting anyway would be a watchdog that silently never
    fires: the operator would find out at the split brain, not at deploy time. An exporter that
    refuses to start is found at once (the unit fails, the pod crash-loops with this line).
    """
    if settings.watchdog_exec:
        return (
            "--watchdog.exec is not run per keepalived with --discover: refusing to start rather than"
            " never running the hook (run one exporter per namespace with --netns for the watchdog)"
        )
    return None


def notices(settings: Settings) -> list[str]:
    """One line for each source that is enabled but does not run per keepalived in this mode.

    These are observations, on by default, not actions: a missing series is visible on the dashboard,
    and refusing to start over a default the operator never chose would make --discover unusable
    without a row of --no-collector flags. So: one info line each at start, naming what is not
    exported; `--no-collector.NAME` silences it.
    """
    return [
        f"{line}; --no-collector.{name} silences this"
        for name, line in NOT_PER_DAEMON.items()
        if settings.enabled(name)
    ]


def serve(settings: Settings) -> int:
    """Serve the merged scrape until SIGTERM/SIGINT."""
    refused = refusal(settings)
    if refused is not None:
        log.error("%s", refused)
        return 2
    for line in notices(settings):
        log.info("%s", line)
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
    sleep_until_signalled(stop)
    server.stop()
    multi.stop()
    return 0
