"""The fleet: one Store per watched keepalived (multi-namespace mode, `--discover`), bounded.

A `Daemon` is what discovery found of one keepalived: its pid, its network namespace (inode, and the
name `ip netns` knows it by, if any), its pid file, keepalived.conf and TMPDIR, as the process sees
them. The fleet keeps a `Member` (the daemon and its own `Store`) per daemon, keyed by `Daemon.key`
(network namespace inode, pid file): the same keepalived restarted keeps its member and its series.

`labels()` names each member in the merged scrape: `netns` (the name under /run/netns, `host` for the
exporter's own namespace, else `inode:N`), and `keepalived`: the router_id from keepalived.conf when it
is set and unique within the namespace (it survives restarts and reloads), else the pid file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ka_exporter.store import Store

DaemonKey = tuple[int, str]  # (network namespace inode, pid file)


@dataclass(frozen=True, slots=True)
class Daemon:
    """One keepalived parent process as discovery found it (paths as the process itself sees them)."""

    pid: int
    start_time: int  # clock ticks since boot (/proc/PID/stat field 22): tells a recycled pid
    netns_inode: int
    netns_name: str  # /run/netns name, "host" (the exporter's own namespace) or "inode:N"
    pid_file: str
    config: str
    tmpdir: str | None = None
    config_id: str | None = None
    children: tuple[int, ...] = ()

    @property
    def key(self) -> DaemonKey:
        return (self.netns_inode, self.pid_file)

    @property
    def root(self) -> str:
        """Where the daemon's files are, seen from here (its mount namespace through /proc)."""
        return f"/proc/{self.pid}/root"


@dataclass(slots=True)
class Member:
    daemon: Daemon
    store: Store
    extra: dict[str, object] = field(default_factory=dict)  # what the wiring hangs on it (sources)


class Fleet:
    """The watched daemons, at most `cap` of them; thread-safe. `version` moves on every add/remove."""

    def __init__(
        self, cap: int, hostname: str | None = None, store_factory: Callable[[], Store] | None = None
    ):
        self.cap = cap
        self._hostname = hostname
        self._factory = store_factory or (lambda: Store(hostname=hostname))
        self._lock = threading.Lock()
        self._members: dict[DaemonKey, Member] = {}
        self.version = 0
        self.unwatched = 0  # daemons found beyond the cap at the last discovery

    def get(self, key: DaemonKey) -> Member | None:
        with self._lock:
            return self._members.get(key)

    def add(self, daemon: Daemon) -> Member | None:
        """A member for `daemon` (a new store), or None when the cap is reached."""
        with self._lock:
            if daemon.key in self._members:
                return self._members[daemon.key]
            if len(self._members) >= self.cap:
                return None
            member = Member(daemon, self._factory())
            self._members[daemon.key] = member
            self.version += 1
            return member

    def update(self, daemon: Daemon) -> None:
        """The same daemon seen again (a restart changes its pid, a fork its children)."""
        with self._lock:
            member = self._members.get(daemon.key)
            if member is not None and member.daemon != daemon:
                member.daemon = daemon
                self.version += 1

    def remove(self, key: DaemonKey) -> Member | None:
        with self._lock:
            member = self._members.pop(key, None)
            if member is not None:
                self.version += 1
            return member

    def members(self) -> list[Member]:
        """The members, in a stable order (namespace name, then pid file)."""
        with self._lock:
            members = list(self._members.values())
        return sorted(members, key=lambda m: (m.daemon.netns_name, m.daemon.pid_file))

    def __len__(self) -> int:
        with self._lock:
            return len(self._members)


def labels(members: list[Member], router_ids: Callable[[Member], str | None]) -> list[tuple[str, str]]:
    """(netns, keepalived) for each member, in order (see the module docstring)."""
    by_ns: dict[str, list[str | None]] = {}
    ids = [router_ids(m) for m in members]
    for m, rid in zip(members, ids, strict=True):
        by_ns.setdefault(m.daemon.netns_name, []).append(rid)
    out: list[tuple[str, str]] = []
    for m, rid in zip(members, ids, strict=True):
        same = by_ns[m.daemon.netns_name]
        unique = rid is not None and rid != "" and same.count(rid) == 1
        out.append((m.daemon.netns_name, rid if unique and rid is not None else m.daemon.pid_file))
    return out
