"""The store: latest records from every source under one lock, handed out as immutable snapshots."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from ka_exporter.model import (
    InstanceView,
    KeepalivedConfig,
    LocalAddress,
    ProcessInfo,
    Snapshot,
    SourceHealth,
    WirePeer,
    WireStats,
)

WireProvider = Callable[[], tuple[tuple[WirePeer, ...], WireStats]]
Listener = Callable[[], None]


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
        self._instances: tuple[InstanceView, ...] | None = None
        self._instances_source: str | None = None
        self._transitions: dict[str, int] = {}
        self._wire: WireProvider | None = None
        self._health: dict[str, SourceHealth] = {}
        self._listeners: list[Listener] = []
        self.generation = 0
        self.changed = threading.Condition(self._lock)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # -- writers ----------------------------------------------------------------------------------

    def set_config(self, config: KeepalivedConfig | None) -> None:
        with self._lock:
            self._config = config
            self._bump()
        self._notify()

    def set_process(self, process: ProcessInfo | None) -> None:
        with self._lock:
            self._process = process
            self._bump()
        self._notify()

    def set_addresses(self, addresses: tuple[LocalAddress, ...] | None) -> None:
        with self._lock:
            self._addresses = addresses
            self._bump()
        self._notify()

    def set_instances(self, instances: tuple[InstanceView, ...] | None, source: str) -> None:
        with self._lock:
            self._instances = instances
            self._instances_source = source if instances is not None else None
            self._bump()
        self._notify()

    def count_transition(self, instance: str) -> None:
        with self._lock:
            self._transitions[instance] = self._transitions.get(instance, 0) + 1
            self._bump()
        self._notify()

    def set_wire_provider(self, provider: WireProvider | None) -> None:
        with self._lock:
            self._wire = provider
            self._bump()

    def wire_changed(self) -> None:
        """Called by the wire source when its peer table changed in a way verdicts care about."""
        with self._lock:
            self._bump()
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
            self._bump()
        self._notify()

    def forget_source(self, source: str) -> None:
        with self._lock:
            self._health.pop(source, None)

    def add_listener(self, listener: Listener) -> None:
        """`listener()` is called (outside the lock) after every change."""
        with self._lock:
            self._listeners.append(listener)

    # -- readers ----------------------------------------------------------------------------------

    def health(self, source: str) -> SourceHealth | None:
        with self._lock:
            return self._health.get(source)

    def snapshot(self) -> Snapshot:
        with self._lock:
            wire = self._wire
            snap = Snapshot(
                time=self._clock(),
                hostname=self._hostname,
                config=self._config,
                process=self._process,
                addresses=self._addresses,
                instances=self._instances,
                instances_source=self._instances_source,
                transitions=tuple(sorted(self._transitions.items())),
                sources=tuple(self._health[k] for k in sorted(self._health)),
            )
        if wire is None:
            return snap
        # The wire table has its own lock (it is written per packet); read it outside ours.
        peers, stats = wire()
        return Snapshot(
            time=snap.time,
            hostname=snap.hostname,
            config=snap.config,
            process=snap.process,
            addresses=snap.addresses,
            instances=snap.instances,
            instances_source=snap.instances_source,
            transitions=snap.transitions,
            wire_peers=peers,
            wire_stats=stats,
            sources=snap.sources,
        )

    def wait_for_change(self, generation: int, timeout: float) -> int:
        """Block until the store's generation moves past `generation` (or timeout); return it."""
        with self.changed:
            self.changed.wait_for(lambda: self.generation != generation, timeout)
            return self.generation

    # -- internals --------------------------------------------------------------------------------

    def _bump(self) -> None:
        self.generation += 1
        self.changed.notify_all()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
