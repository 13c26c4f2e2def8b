"""The store: latest records from every source under one lock, handed out as immutable snapshots."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from ka_exporter.model import (
    FailoverEvent,
    InstanceView,
    KeepalivedConfig,
    LocalAddress,
    LvsView,
    ProcessInfo,
    Snapshot,
    SourceHealth,
    VipAnswers,
    VridTiming,
    VrrpState,
    WirePeer,
    WireStats,
)

WireProvider = Callable[[], tuple[tuple[WirePeer, ...], WireStats]]
FailoverProvider = Callable[[], tuple[tuple[VridTiming, ...], tuple[FailoverEvent, ...]]]
Listener = Callable[[], None]
Versions = Mapping[str, int]
Version = Callable[[], object]  # a provider's version: equal between two calls while it has not changed

# Sections of the store, each with a version that moves whenever what it holds changes (see
# `Store.snapshot_versions`): a renderer keeps what it made of a section until its version moves.
# "views" is keepalived's instances (both sources, merged); "views_time" when a view source last
# published (moves on every publication, even of the same records); "health" a source's outcome
# (up, error); "health_times" its timestamps (every attempt); "wire" the wire source's verdict changes;
# "lvs" the checker/IPVS view.
SECTIONS = (
    "config",
    "process",
    "addresses",
    "views",
    "views_time",
    "transitions",
    "wire",
    "health",
    "health_times",
    "l2",
    "lvs",
)


def merge_views(
    views: dict[str, tuple[InstanceView, ...]],
    dbus_current: bool = True,
    fifo_current: bool = True,
    *,
    stopped: bool = False,
    config: KeepalivedConfig | None = None,
) -> tuple[InstanceView, ...] | None:
    """One record per instance name: the dump's detail, with D-Bus's state when D-Bus knows it.

    D-Bus signals arrive within milliseconds of a transition while a dump is at most one refresh
    interval old, so D-Bus wins on `state` while the D-Bus source is up (`dbus_current`); once it
    has lost the bus its last word is history and the dumps' state counts. Everything else only the
    dumps carry.

    The notify FIFO ("fifo") is the other event stream: its lines arrive as keepalived writes them,
    so while that source is up (`fifo_current`) its state and effective priority beat a dump's, but not
    a D-Bus that is up and vouches for the instance list (both report the same transition; D-Bus also
    knows which instances exist).

    keepalived not running (`stopped`: the process source found no keepalived): every instance
    keepalived last reported and every instance of keepalived.conf (`config`) keeps one record, with
    state and wanted state STOP (4), whatever the last dump or D-Bus said. So a SIGKILLed master never
    reads MASTER, and dumps mode (whose last dump says MASTER) and D-Bus mode (whose bus forgot the
    instances) show the same series.
    """
    if stopped:
        return _stopped_views(views, config)
    if not views:
        return None
    dumps = {v.name: v for v in views.get("dumps", ())}
    dbus = {v.name: v for v in views.get("dbus", ())}
    fifo = {v.name: v for v in views.get("fifo", ())} if fifo_current else {}
    dbus_vouches = "dbus" in views
    dbus_rules = dbus_vouches and dbus_current
    merged: list[InstanceView] = []
    for name in sorted(set(dumps) | set(dbus) | set(fifo)):
        d, b, f = dumps.get(name), dbus.get(name), fifo.get(name)
        m: InstanceView | None
        if d is None:
            m = b
        elif b is None:
            # D-Bus answered and does not know this instance (keepalived stopped, or reloaded
            # without it): the dump's state is history, not the present.
            m = replace(d, state=None) if dbus_vouches else d
        elif b.state is None or not dbus_current:
            m = d
        else:
            m = replace(d, state=b.state)
        if f is not None and f.state is not None and not dbus_rules:
            m = f if m is None else replace(m, state=f.state, effective_priority=f.effective_priority)
        if m is not None:
            merged.append(m)
    return tuple(merged)


def _stopped_views(
    views: dict[str, tuple[InstanceView, ...]], config: KeepalivedConfig | None
) -> tuple[InstanceView, ...] | None:
    known = merge_views(views) or ()
    out = {v.name: replace(v, state=VrrpState.STOP, wanted_state=VrrpState.STOP) for v in known}
    for inst in config.instances if config is not None else ():
        if inst.name not in out and inst.interface and inst.vrid is not None:
            out[inst.name] = InstanceView(
                name=inst.name,
                interface=inst.interface,
                vrid=inst.vrid,
                family=inst.family,
                state=VrrpState.STOP,
                wanted_state=VrrpState.STOP,
                vips=tuple(v.address for v in inst.vips if not v.excluded),
                vips_excluded=tuple(v.address for v in inst.vips if v.excluded),
            )
    return tuple(out[name] for name in sorted(out)) or None


class Store:
    """Sources write here; collectors, verdicts and views read `snapshot()`.

    A failed source calls `report(name, error=...)` and leaves its last records in place: they stay
    visible (the health record says they are stale) and other sources are untouched.
    """

    def __init__(self, hostname: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._hostname = hostname or socket.gethostname()
        self._config: KeepalivedConfig | None = None
        self._process: ProcessInfo | None = None
        self._addresses: tuple[LocalAddress, ...] | None = None
        self._views: dict[str, tuple[InstanceView, ...]] = {}  # by source: "dumps", "dbus"
        self._views_time: dict[str, float] = {}
        self._addresses_changed: float | None = None
        self._transitions: dict[str, int] = {}
        self._wire: WireProvider | None = None
        self._wire_version: Version | None = None
        self._failover: FailoverProvider | None = None
        self._failover_version: Version | None = None
        self._l2: tuple[VipAnswers, ...] | None = None
        self._lvs: LvsView | None = None
        self._health: dict[str, SourceHealth] = {}
        self._listeners: list[Listener] = []
        self._versions: dict[str, int] = dict.fromkeys(SECTIONS, 0)
        # merge_views' result, kept until the views or the D-Bus source's standing change: a snapshot
        # is taken per event and per scrape, and merging 1,000 instances each time is the big cost.
        self._merged_key: tuple[int, bool, bool, bool, int] | None = None
        self._merged: tuple[InstanceView, ...] | None = None
        self.generation = 0
        self.changed = threading.Condition(self._lock)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # -- writers ----------------------------------------------------------------------------------

    # Writers bump the generation (waking watchers) only when something changed: sources re-publish
    # the same records every poll, and waking the watchdog for nothing is the exporter's idle cost.

    def set_config(self, config: KeepalivedConfig | None) -> None:
        with self._lock:
            if config == self._config:
                return
            self._config = config
            self._bump("config")
        self._notify()

    def set_process(self, process: ProcessInfo | None) -> None:
        with self._lock:
            if process == self._process:
                return
            self._process = process
            self._bump("process")
        self._notify()

    def set_addresses(self, addresses: tuple[LocalAddress, ...] | None) -> None:
        with self._lock:
            if addresses == self._addresses:
                return
            self._addresses_changed = self._clock()
            self._addresses = addresses
            self._bump("addresses")
        self._notify()

    def set_instances(self, instances: tuple[InstanceView, ...] | None, source: str) -> None:
        """keepalived's view of its instances as `source` ("dumps" or "dbus") sees it; None forgets it.

        The snapshot merges them (see `merge_views`): dumps give the detail, D-Bus the freshest state.
        """
        with self._lock:
            if instances is None:
                if source in self._views:
                    self._versions["views"] += 1
                self._views.pop(source, None)
                self._views_time.pop(source, None)
            else:
                same = self._views.get(source) == instances
                before = self._views_time.get(source)
                ac = self._addresses_changed
                if same and before is not None and (ac is None or before >= ac):
                    # The same records again, from a state already as fresh as the addresses: nothing
                    # a reader compares moves (the verdicts only ask whether the state is at least as
                    # fresh as the last address change, and every later change is later than both
                    # publications), so no version moves and no watcher is woken for nothing.
                    return
                if not same:
                    self._versions["views"] += 1
                self._views[source] = instances
                self._views_time[source] = self._clock()
            # The same records from a state older than the last address change still move views_time
            # (the state is current again) and wake watchers: a VIP verdict waits for that.
            self._bump("views_time")
        self._notify()

    def count_transition(self, instance: str) -> None:
        self.count_transitions((instance,))

    def count_transitions(self, instances: Iterable[str]) -> None:
        """One transition more for each name (a name twice: two), one change for watchers."""
        with self._lock:
            for instance in instances:
                self._transitions[instance] = self._transitions.get(instance, 0) + 1
            self._bump("transitions")
        self._notify()

    def set_l2(self, answers: tuple[VipAnswers, ...] | None, *, quiet: bool = False) -> None:
        """The L2 witness's current view of who answers for each VIP; None forgets it.

        `quiet`: only what no verdict reads moved (counters, timestamps, time accounts: the witness's
        periodic refresh). Snapshots and renders have it (the section's version moves), but watchers
        are not woken: the watchdog re-judged 100 unchanged instances every refresh for nothing."""
        with self._lock:
            if answers == self._l2:
                return
            self._l2 = answers
            if quiet:
                self._versions["l2"] += 1
                return
            self._bump("l2")
        self._notify()

    def set_lvs(self, lvs: LvsView | None) -> None:
        """The lvs source's view (keepalived's checker dump and IPVS); None forgets it."""
        with self._lock:
            if lvs == self._lvs:
                return
            self._lvs = lvs
            self._bump("lvs")
        self._notify()

    def set_wire_provider(self, provider: WireProvider | None, version: Version | None = None) -> None:
        """The wire table, read (outside the store's lock) by every snapshot. `version`, if given,
        changes whenever what `provider` returns does (see `stamp`)."""
        with self._lock:
            self._wire = provider
            self._wire_version = version
            self._bump("wire")

    def set_failover_provider(
        self, provider: FailoverProvider | None, version: Version | None = None
    ) -> None:
        """The wire source's failover accounts, read (outside the store's lock) by every snapshot;
        `version` as for `set_wire_provider`."""
        with self._lock:
            self._failover = provider
            self._failover_version = version
            self._versions["wire"] += 1  # another provider: a stamp taken before it never matches

    def wire_changed(self) -> None:
        """Called by the wire source when its peer table changed in a way verdicts care about."""
        with self._lock:
            self._bump("wire")
        self._notify()

    def report(self, source: str, error: str | None = None) -> None:
        """Record the outcome of a source's latest attempt (error=None means it worked)."""
        now = self._clock()
        with self._lock:
            old = self._health.get(source)
            last_ok = now if error is None else (old.last_success if old else None)
            self._health[source] = SourceHealth(
                name=source, up=error is None, error=error, last_success=last_ok, last_attempt=now
            )
            self._versions["health_times"] += 1
            if old is not None and (old.up, old.error) == (error is None, error):
                return  # the same outcome again: timestamps move, nothing to wake anyone for
            self._bump("health")
        self._notify()

    def forget_source(self, source: str) -> None:
        with self._lock:
            if self._health.pop(source, None) is not None:
                self._versions["health"] += 1
                self._versions["health_times"] += 1

    def add_listener(self, listener: Listener) -> None:
        """`listener()` is called (outside the lock) after every change."""
        with self._lock:
            self._listeners.append(listener)

    # -- readers ----------------------------------------------------------------------------------

    def health(self, source: str) -> SourceHealth | None:
        with self._lock:
            return self._health.get(source)

    def addresses_changed(self) -> float | None:
        """When this node's addresses last changed (store clock), without building a whole snapshot:
        the L2 witness reads it after every completed probe."""
        with self._lock:
            return self._addresses_changed

    def config(self) -> KeepalivedConfig | None:
        """keepalived.conf as last read, without building a whole snapshot (merged views, the wire
        table): what sources and the wiring need on their event paths."""
        with self._lock:
            return self._config

    def snapshot(self) -> Snapshot:
        return self.snapshot_versions()[0]

    def stamp(self) -> tuple[float, object] | None:
        """(the store's time now, a token of everything a snapshot holds but its time), without taking
        a snapshot: two equal tokens mean two snapshots taken then would hold the same records. None
        while the wire or failover provider has no version (then only a snapshot can tell)."""
        with self._lock:
            wire, wire_version = self._wire, self._wire_version
            failover, failover_version = self._failover, self._failover_version
            versions = tuple(self._versions.values())
            now = self._clock()
        if (wire is not None and wire_version is None) or (failover is not None and failover_version is None):
            return None
        return now, (
            versions,
            None if wire_version is None else wire_version(),
            None if failover_version is None else failover_version(),
        )

    def snapshot_versions(self) -> tuple[Snapshot, Versions]:
        """A snapshot and the version of each section (`SECTIONS`) it was taken at, in one read.

        Equal versions of a section mean equal contents of that section in both snapshots, so what
        was computed from one holds for the other. The wire table is read outside the store's lock
        (it has its own); its records are in the snapshot (compare them to know if they moved).
        """
        with self._lock:
            wire = self._wire
            dbus_current = (h := self._health.get("dbus")) is None or h.up
            fifo_current = (f := self._health.get("fifo")) is None or f.up
            stopped = self._process is not None and not self._process.running
            merged_key = (
                self._versions["views"],
                dbus_current,
                fifo_current,
                stopped,
                self._versions["config"],
            )
            if merged_key != self._merged_key:
                self._merged = merge_views(
                    self._views,
                    dbus_current=dbus_current,
                    fifo_current=fifo_current,
                    stopped=stopped,
                    config=self._config,
                )
                self._merged_key = merged_key
            snap = Snapshot(
                time=self._clock(),
                hostname=self._hostname,
                config=self._config,
                process=self._process,
                addresses=self._addresses,
                instances=self._merged,
                instances_source="+".join(sorted(self._views)) or None,
                transitions=tuple(sorted(self._transitions.items())),
                sources=tuple(self._health[k] for k in sorted(self._health)),
                addresses_changed=self._addresses_changed,
                views_time=tuple(sorted(self._views_time.items())),
                l2=self._l2,
                lvs=self._lvs,
            )
            versions = dict(self._versions)
            failover = self._failover
        if failover is not None:
            timings, events = failover()
            snap = replace(snap, failover=timings, failover_events=events)
        if wire is None:
            return snap, versions
        # The wire table has its own lock (it is written per packet); read it outside ours.
        peers, stats = wire()
        return replace(snap, wire_peers=peers, wire_stats=stats), versions

    def wait_for_change(self, generation: int, timeout: float) -> int:
        """Block until the store's generation moves past `generation` (or timeout); return it."""
        with self.changed:
            self.changed.wait_for(lambda: self.generation != generation, timeout)
            return self.generation

    # -- internals --------------------------------------------------------------------------------

    def _bump(self, section: str) -> None:
        self._versions[section] += 1
        self.generation += 1
        self.changed.notify_all()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
