"""Wiring: build the store, the enabled sources and the collector from Settings; serve or run once."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import Part, SnapshotCollector
from ka_exporter.collectors.exporter import collect_exporter
from ka_exporter.collectors.host import collect_config, collect_process, collect_vips
from ka_exporter.collectors.watchdog import watchdog_part
from ka_exporter.linux import netns
from ka_exporter.model import KeepalivedConfig, Snapshot
from ka_exporter.outputs.exposition import Renderer
from ka_exporter.outputs.http import App, HttpServer, Limits
from ka_exporter.outputs.watchdog import HookRunner, Watchdog, WatchdogStats
from ka_exporter.settings import Settings, parse_listen_address
from ka_exporter.sources.base import Source
from ka_exporter.sources.vips import VipSource
from ka_exporter.store import Store
from ka_exporter.verdicts import conditions
from ka_exporter.verdicts.wire import configured_vrids

log = logging.getLogger("ka_exporter")

SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another one waits for it


def build_sources(settings: Settings, store: Store) -> list[Source]:
    """The enabled sources, in start order. Importing a source is deferred to when it is enabled."""
    sources: list[Source] = []
    if settings.enabled("config"):
        from ka_exporter.sources.config import ConfigSource

        config = ConfigSource(store, settings.keepalived_config)
        # Read keepalived.conf now: which other sources are worth running depends on it (D-Bus).
        # The daemon's own first pass later finds it unchanged and does not read it again.
        config.run_once()
        sources.append(config)
    if settings.enabled("process"):
        from ka_exporter.sources.process import ProcessSource

        sources.append(ProcessSource(store, settings.keepalived_pid_file))
    if settings.enabled("vips"):
        sources.append(VipSource(store))
    if settings.enabled("wire"):
        from ka_exporter.sources.wire import WireSource

        sources.append(
            WireSource(
                store,
                settings.wire_interfaces,
                cap=settings.wire_max_peers,
                listen_seconds=settings.wire_listen_seconds,
            )
        )
    if settings.enabled("l2"):
        from ka_exporter.sources.l2 import L2Source

        sources.append(
            L2Source(
                store,
                probe_interval=settings.l2_probe_interval,
                max_probe_rate=settings.l2_max_probe_rate,
                max_vips=settings.l2_max_vips,
            )
        )
    dbus_source = None
    dumps = None
    if settings.enabled("dbus") and dbus_wanted(settings, store.config()):
        from ka_exporter.sources.dbus import DbusSource

        dbus_source = DbusSource(store, settings.keepalived_dbus_address)
        sources.append(dbus_source)
    if settings.enabled("dumps"):
        from ka_exporter.sources.dumps import DumpSource

        dumps = DumpSource(
            store,
            settings.keepalived_dumps_dir,
            settings.keepalived_pid_file,
            signal=settings.keepalived_signal,
            interval=settings.keepalived_dump_interval,
            requester=dbus_source.request_dump if dbus_source is not None else None,
        )
        if dbus_source is not None:
            # A state change seen on D-Bus refreshes the dump's detail soon after (never per scrape),
            # once the burst is over: a failover of 100 instances is 100 signals within milliseconds,
            # and a dump asked for in the middle of it has keepalived write 100 instances' detail
            # before it sends the next signals (the state the scrape waits for comes from those).
            dbus_source.on_change = coalesced(dumps.request_refresh, DETAIL_DELAY)
        for src in sources:
            if isinstance(src, VipSource):
                # A VIP coming or going means a transition: refresh keepalived's view to match.
                src.on_change = dumps.request_refresh
        sources.append(dumps)
    fifo = fifo_wanted(settings, store.config())
    if fifo is not None:
        from ka_exporter.sources.fifo import FifoSource

        # A transition read from the FIFO refreshes the dump's detail soon after (never per scrape).
        sources.append(
            FifoSource(
                store,
                fifo,
                on_change=dumps.request_refresh if dumps is not None else None,
                count_transitions=dbus_source is None,  # D-Bus counts them when it runs
            )
        )
    if settings.enabled("lvs") and lvs_wanted(store.config()):
        from ka_exporter.sources.lvs import LvsSource

        sources.append(
            LvsSource(
                store,
                settings.keepalived_dumps_dir,
                signal=settings.keepalived_signal,
                interval=settings.lvs_interval,
                pid_file=settings.keepalived_pid_file,
            )
        )
    return sources


WATCHDOG_GAP = 0.02  # seconds between two evaluations of the watchdog in a burst of changes
DETAIL_DELAY = 0.25  # seconds from a D-Bus state change to the dump refresh it asks for


def coalesced(action: Callable[[], None], delay: float) -> Callable[[], None]:
    """A call that runs `action` once, `delay` seconds after the first of a burst of calls."""
    lock = threading.Lock()
    pending: list[threading.Timer] = []

    def fire() -> None:
        with lock:
            pending.clear()
        action()

    def call() -> None:
        with lock:
            if pending:
                return
            timer = threading.Timer(delay, fire)
            timer.daemon = True
            pending.append(timer)
        timer.start()

    return call


def lvs_wanted(config: KeepalivedConfig | None) -> bool:
    """The lvs source runs only when keepalived.conf was read and has virtual_server blocks.

    Without this, every VRRP-only keepalived (most of them) would show a permanently failed lvs source.
    """
    return config is not None and bool(config.virtual_servers)


def fifo_wanted(settings: Settings, config: KeepalivedConfig | None) -> Path | None:
    """The notify FIFO to read: keepalived.conf's `vrrp_notify_fifo`, else `notify_fifo`, if enabled.

    A FIFO that keepalived also feeds to a `*_notify_fifo_script` is never read: each line goes to one
    reader only, so the exporter would take events away from the operator's script.
    """
    if not settings.enabled("fifo") or config is None or not config.notify_fifos:
        return None
    by_kind = {f.kind: f for f in config.notify_fifos}
    for kind in ("vrrp_notify_fifo", "notify_fifo"):
        fifo = by_kind.get(kind)
        if fifo is None:
            continue
        if fifo.has_script:
            log.info(
                "%s %s is read by keepalived's %s_script: not read here (a FIFO line goes to one reader)",
                kind,
                fifo.path,
                kind,
            )
            continue
        return Path(fifo.path)
    return None


def dbus_wanted(settings: Settings, config: KeepalivedConfig | None) -> bool:
    """D-Bus is worth trying unless keepalived.conf was read and does not set enable_dbus.

    Without this, every keepalived run without D-Bus would show a permanently failed dbus source.
    An explicit --keepalived.dbus-address always tries.
    """
    if settings.keepalived_dbus_address or config is None:
        return True
    if not config.enable_dbus:
        log.info("keepalived.conf does not set enable_dbus: reading keepalived's view from its dumps only")
    return config.enable_dbus


def build_parts(settings: Settings) -> list[Part]:
    """The collector parts, in exposition order; a disabled source's part is left out."""
    parts: list[Part] = []
    if settings.enabled("process"):
        parts.append(collect_process)
    if settings.enabled("vips"):
        parts.append(collect_vips)
    if settings.enabled("config"):
        parts.append(collect_config)
    if settings.enabled("dbus") or settings.enabled("dumps") or settings.enabled("fifo"):
        from ka_exporter.collectors.keepalived import collect_keepalived

        parts.append(collect_keepalived)
    if settings.enabled("wire"):
        from ka_exporter.collectors.failover import collect_failover
        from ka_exporter.collectors.wire import collect_wire

        parts.append(collect_wire)
        parts.append(collect_failover)
    if settings.enabled("l2"):
        from ka_exporter.collectors.l2 import collect_l2

        parts.append(collect_l2)
    if settings.enabled("lvs"):
        from ka_exporter.collectors.lvs import collect_lvs

        parts.append(collect_lvs)
    from ka_exporter.collectors.fused import collect_fused

    parts.append(collect_fused)
    parts.append(collect_exporter)
    return parts


class Exporter:
    """One running exporter: store + sources + collector registry."""

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
        self.sources = build_sources(self.settings, self.store)
        # A first pass of each source, in parallel, makes the first scrape complete; then events and
        # polls take over. keepalived.conf goes first (the others take interfaces and VRIDs from it);
        # the wire source has no first pass: it listens continuously from its start.
        for src in self.sources:
            if src.name == "config":
                src.run_once()
        firsts = [
            threading.Thread(target=s.run_once, name=f"first-{s.name}")
            for s in self.sources
            if s.name not in ("config", "wire", "l2")  # both listen continuously from their start
        ]
        for t in firsts:
            t.start()
        for t in firsts:
            t.join()
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
        """Run every enabled source once, in parallel; True if all of them worked."""
        self.sources = build_sources(self.settings, self.store)
        # keepalived.conf first: the wire and dump sources take their interfaces and VRIDs from it.
        first = [s for s in self.sources if s.name == "config"]
        for s in first:
            s.run_once()
        rest = [s for s in self.sources if s not in first]
        threads = [threading.Thread(target=s.run_once, name=f"once-{s.name}") for s in rest]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        snap = self.store.snapshot()
        return all(h.up for h in snap.sources)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def run_once(settings: Settings, write: Callable[[bytes], None] | None = None) -> int:
    """`--once`: collect, print or write the textfile, exit 0 if every enabled source worked."""
    from ka_exporter.outputs.textfile import TextfileError, write_atomic

    exporter = Exporter(settings)
    exporter.enter_netns()
    ok = exporter.collect_once()
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
        exporter = Exporter(settings)
        exporter.enter_netns()
        exporter.collect_once()
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


def log_transitions(snap: Snapshot, states: dict[str, str]) -> None:
    """One info line per VRRP state change keepalived reports (D-Bus: as it happens)."""
    for view in snap.instances or ():
        now = view.state.name if view.state is not None else "unknown"
        before = states.get(view.name)
        if before is not None and before != now:
            log.info(
                "instance %s (VRID %d on %s): %s -> %s", view.name, view.vrid, view.interface, before, now
            )
        states[view.name] = now


def start_watchdog(settings: Settings, exporter: Exporter, stop: threading.Event) -> Watchdog:
    """Evaluate conditions on every store change; run the hook on transitions (if configured)."""
    runner = (
        HookRunner(
            settings.watchdog_exec,
            settings.watchdog_timeout,
            max_concurrent=settings.watchdog_max_concurrent,
            stats=exporter.watchdog_stats,
        )
        if settings.watchdog_exec
        else None
    )
    store = exporter.store

    states: dict[str, str] = {}
    last: list[Snapshot] = []

    def evaluate() -> tuple[float, str, list[conditions.Condition]]:
        snap = store.snapshot()
        last[:] = [snap]
        log_transitions(snap, states)
        return snap.time, snap.hostname, conditions.evaluate(snap)

    def configured() -> tuple[tuple[str, str, int], ...]:
        return configured_vrids(last[0]) if last else ()

    wd = Watchdog(
        evaluate,
        runner,
        settings.watchdog_debounce,
        configured=configured,
        page_unconfigured=settings.watchdog_unconfigured_vrids,
        stats=exporter.watchdog_stats,
    )

    def loop() -> None:
        # Evaluate when the store changed, or when a debounce/hold falls due; otherwise sleep (idle
        # cost). Every time-driven verdict (wire expiry, listening gate) already changes the store.
        # A burst of changes (a failover of 100 instances: 100 D-Bus signals within milliseconds) is
        # judged once it is in, not once per signal: each evaluation reads every instance, and 100 of
        # them would hold the GIL the signals and scrapes wait for. The first change after a quiet
        # spell is judged at once; later ones at most every WATCHDOG_GAP seconds.
        gen = -1
        last = -WATCHDOG_GAP
        while not stop.is_set():
            deadline = wd.transitions.next_deadline()
            timeout = 30.0 if deadline is None else max(0.0, deadline - store.clock()) + 0.01
            new = store.wait_for_change(gen, timeout)
            if new == gen and (deadline is None or store.clock() < deadline):
                continue
            wait = last + WATCHDOG_GAP - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return
            gen = store.generation
            last = time.monotonic()
            try:
                wd.step()
            except Exception:
                log.exception("watchdog evaluation failed")

    threading.Thread(target=loop, name="watchdog", daemon=True).start()
    return wd


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT. The listening socket is bound before entering --netns."""
    exporter = Exporter(settings)
    host, port = parse_listen_address(settings.web_listen_address)

    def landing() -> str:
        from ka_exporter.outputs import views

        snap = exporter.store.snapshot()
        return views.landing_page(snap, conditions.evaluate(snap), settings.web_telemetry_path)

    reloader = None
    if settings.web_config_file is not None:
        from ka_exporter.outputs.webconfig import WebConfigError, WebConfigReloader, load_web_config

        try:
            # Re-read when it or its certificates change: new connections get the current one.
            reloader = WebConfigReloader(load_web_config(settings.web_config_file))
        except WebConfigError as exc:
            log.error("%s", exc)
            return 2
    app = App(
        exporter.registry,
        settings.web_telemetry_path,
        landing=landing,
        render=exporter.renderer.render,
        cached=exporter.renderer.cached,
    )
    server = HttpServer(
        host,
        port,
        app,
        web=reloader.current if reloader is not None else None,
        limits=Limits(max_connections=settings.web_max_connections),
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    # Before anything answers: a SIGTERM from the moment the port is reachable is a clean stop.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    exporter.enter_netns()
    exporter.start_sources()
    # A scrape waits for the GIL whenever a source thread runs Python (a poll, a burst of adverts):
    # up to the switch interval per hand-over, 5 ms by default, which was most of a scrape's p99.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # What was built at start (modules, keepalived.conf, first records) stays: keep it out of the
    # collector's full passes, which otherwise walk it in the middle of scrapes.
    gc.collect()
    gc.freeze()
    server.start()
    log.info("listening on %s:%d%s", host or "*", server.port, settings.web_telemetry_path)
    start_watchdog(settings, exporter, stop)
    while not stop.wait(1.0):
        pass
    server.stop()
    exporter.stop()
    return 0
