"""The daemon: wiring (the store, the registered sources, the collector parts, from Settings) and the
run modes (serve, --once, status / check). The watchdog's loop is outputs/watchdog_loop.py."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import Part, SnapshotCollector
from ka_exporter.collectors.exporter import collect_exporter
from ka_exporter.collectors.watchdog import watchdog_part
from ka_exporter.linux import netns
from ka_exporter.linux.threadname import name_threads
from ka_exporter.outputs.exposition import Renderer
from ka_exporter.outputs.http import App, HttpServer, Limits
from ka_exporter.outputs.watchdog import WatchdogStats
from ka_exporter.outputs.watchdog_loop import WatchdogLoop
from ka_exporter.settings import Settings, parse_listen_address
from ka_exporter.sources.base import Source, Wiring
from ka_exporter.sources.registry import by_rank, registrations
from ka_exporter.store import Store
from ka_exporter.verdicts import conditions

log = logging.getLogger("ka_exporter")

SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another one waits for it


def build_sources(settings: Settings, store: Store) -> list[Source]:
    """The enabled sources that are worth running, in build order (`sources/registry.py`): each is
    built from its registration, after the sources it uses, which its build may wire it to."""
    built: dict[str, Source] = {}
    for reg in registrations():
        if not settings.enabled(reg.name):
            continue
        wiring = Wiring(settings, store, {name: built[name] for name in reg.uses if name in built})
        src = reg.build(wiring)
        if src is not None:
            built[reg.name] = src
    return list(built.values())


def build_parts(settings: Settings) -> list[Part]:
    """The collector parts, in exposition order; a disabled source's parts are left out."""
    parts: list[Part] = []
    for reg in by_rank():
        if settings.enabled(reg.name):
            for ref in reg.parts:
                part = resolve_part(ref)
                if part not in parts:  # a part shared by several sources renders once
                    parts.append(part)
    from ka_exporter.collectors.fused import collect_fused

    parts.append(collect_fused)
    parts.append(collect_exporter)
    return parts


def resolve_part(ref: str) -> Part:
    """ "keepalived:collect_keepalived" -> ka_exporter.collectors.keepalived.collect_keepalived."""
    module, _, name = ref.partition(":")
    part: Part = getattr(importlib.import_module(f"ka_exporter.collectors.{module}"), name)
    return part


def first_pass(sources: list[Source], *, serving: bool) -> None:
    """One pass of each source, so the first scrape (or --once) is complete. The sources that lead
    (keepalived.conf: the others take interfaces and VRIDs from it) go first, the rest in parallel;
    while serving, the sources that listen continuously from their start (wire, L2) have none."""
    for src in sources:
        if src.leads:
            src.run_once()
    rest = [s for s in sources if not s.leads and (s.first_pass or not serving)]
    prefix = "first" if serving else "once"
    threads = [threading.Thread(target=s.run_once, name=f"{prefix}-{s.name}") for s in rest]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Exporter:
    """One exporter: store + sources + collector registry and renderer. Serving or once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(hostname=settings.hostname)
        self.sources: list[Source] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.watchdog_stats = WatchdogStats()
        parts = build_parts(settings)
        if not settings.once:  # the watchdog runs only while serving
            parts.append(watchdog_part(self.watchdog_stats))
        self.collector = SnapshotCollector(self.store.snapshot, parts)
        self.registry.register(self.collector)
        # What /metrics serves: the same parts, rendered once per change of the store (the registry
        # stays for --once and as the reference the renderer is tested against).
        self.renderer = Renderer(self.store.snapshot_versions, parts, stamp=self.store.stamp)

    def enter_netns(self) -> None:
        if self.settings.netns:
            netns.enter(self.settings.netns)

    def start_sources(self) -> None:
        """Build the sources, make their first pass, then let events and polls take over."""
        self.sources = build_sources(self.settings, self.store)
        first_pass(self.sources, serving=True)
        for src in self.sources:
            src.start()

    def stop(self, timeout: float = 0.3) -> None:
        """Stop every source at once, then give their threads `timeout` in all to finish. A thread
        asleep in a poll with a long timeout (netlink resync) is a daemon thread: the process exit
        ends it, nothing of it needs flushing."""
        for src in self.sources:
            src.request_stop()
        deadline = time.monotonic() + timeout
        for src in self.sources:
            src.join(max(0.0, deadline - time.monotonic()))

    def collect_once(self) -> bool:
        """Run every enabled source once; True if all of them worked."""
        self.sources = build_sources(self.settings, self.store)
        first_pass(self.sources, serving=False)
        snap = self.store.snapshot()
        return all(h.up for h in snap.sources)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- the run modes: --once, status / check, serve ----------------------------------------------------


def collected(settings: Settings) -> tuple[Exporter, bool]:
    """An exporter that ran every enabled source once (inside --netns), and whether all of them worked."""
    exporter = Exporter(settings)
    exporter.enter_netns()
    ok = exporter.collect_once()
    return exporter, ok


def run_once(settings: Settings, write: Callable[[bytes], None] | None = None) -> int:
    """`--once`: collect, print or write the textfile, exit 0 if every enabled source worked."""
    from ka_exporter.outputs.textfile import TextfileError, write_atomic

    exporter, ok = collected(settings)
    body = exporter.render()
    if settings.textfile_directory is not None:
        try:
            path = write_atomic(str(settings.textfile_directory), body)
        except TextfileError as exc:
            log.error("%s", exc)
            return 1
        log.info("wrote %s", path)
    elif write is not None:
        write(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    return 0 if ok else 1


def run_view(settings: Settings, view: str) -> int:
    """`status` / `check`: collect once, print the view. `check` exits with the Nagios status."""
    from ka_exporter.outputs import views

    try:
        exporter, _ok = collected(settings)
        snap = exporter.store.snapshot()
        conds = conditions.evaluate(snap)
    except Exception as exc:  # the plugin contract: anything unexpected is UNKNOWN, one line
        if view == "check":
            print(f"KEEPALIVED UNKNOWN - {type(exc).__name__}: {exc}")
            return 3
        raise
    if view == "check":
        code, line = views.check_result(snap, conds)
        print(line)
        return code
    sys.stdout.write(views.status_table(snap, conds))
    return 0


def http_server(settings: Settings, exporter: Exporter) -> HttpServer | None:
    """The HTTP(S) server of /metrics, the page and /-/healthy, its socket bound (before --netns is
    entered); None, logged, when the --web.config.file cannot be used."""

    def landing() -> str:
        from ka_exporter.outputs import views

        snap = exporter.store.snapshot()
        return views.landing_page(snap, conditions.evaluate(snap), settings.web_telemetry_path)

    app = App(
        exporter.registry,
        settings.web_telemetry_path,
        landing=landing,
        render=exporter.renderer.render,
        cached=exporter.renderer.cached,
    )
    return server_for(settings, app)


def server_for(settings: Settings, app: App) -> HttpServer | None:
    """`app` served on --web.listen-address with --web.config.file, its socket bound; None, logged, when
    the web config cannot be used. The daemon's server and --discover's share it."""
    host, port = parse_listen_address(settings.web_listen_address)
    reloader = None
    if settings.web_config_file is not None:
        from ka_exporter.outputs.webconfig import WebConfigError, WebConfigReloader, load_web_config

        try:
            # Re-read when it or its certificates change: new connections get the current one.
            reloader = WebConfigReloader(load_web_config(settings.web_config_file))
        except WebConfigError as exc:
            log.error("%s", exc)
            return None
    return HttpServer(
        host,
        port,
        app,
        web=reloader.current if reloader is not None else None,
        limits=Limits(max_connections=settings.web_max_connections),
    )


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop


def sleep_until_signalled(stop: threading.Event) -> None:
    """Sleep in the main thread until `stop_on_signals`'s handler has set `stop`, with no timeout.

    Not in stop.wait(): the Python handler runs in this thread, between two bytecodes, and its
    stop.set() takes the event's lock, which this thread holds inside wait() for a moment around each
    sleep: a SIGTERM landing there deadlocked the exporter (a test saw it not stop within 10 s of a
    SIGTERM sent as it started). The thread sleeps in select() on a pipe that the signal's C handler
    writes to (signal.set_wakeup_fd), so no signal is lost between the check and the sleep, and it
    does not wake every second for nothing.
    """
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = signal.set_wakeup_fd(w)
    try:
        while not stop.is_set():
            select.select([r], [], [])
            with contextlib.suppress(BlockingIOError):
                os.read(r, 512)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)


def settle() -> None:
    """Tune the process for serving, once everything built at start is in place."""
    # A scrape waits for the GIL whenever a source thread runs Python (a poll, a burst of adverts):
    # up to the switch interval per hand-over, 5 ms by default, which was most of a scrape's p99.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # What was built at start (modules, keepalived.conf, first records) stays: keep it out of the
    # collector's full passes, which otherwise walk it in the middle of scrapes.
    gc.collect()
    gc.freeze()


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT. The listening socket is bound before entering --netns."""
    exporter = Exporter(settings)
    server = http_server(settings, exporter)
    if server is None:
        return 2
    # Before anything answers: a SIGTERM from the moment the port is reachable is a clean stop.
    stop = stop_on_signals()
    exporter.enter_netns()
    name_threads()  # src-wire, src-dbus, http, watchdog ... by name in /proc/PID/task/*/comm
    exporter.start_sources()
    settle()
    server.start()
    host, _port = parse_listen_address(settings.web_listen_address)
    log.info("listening on %s:%d%s", host or "*", server.port, settings.web_telemetry_path)
    WatchdogLoop(settings, exporter.store, exporter.watchdog_stats).start(stop)
    sleep_until_signalled(stop)
    server.stop()
    exporter.stop()
    return 0
