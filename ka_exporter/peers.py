"""The bounded peer table: every router seen on the wire, keyed by (interface, family, vrid, source).

Written per packet by the capture thread, read by `snapshot()` from scrapes; one lock guards both.

Bounded, because the network controls the keys: at most `cap` routers. When a new router arrives
and the table is full, the stalest entry is evicted and counted. Entries are kept in two LRU tiers
(2Q-style): a router that has sent fewer than `ESTABLISHED` adverts is *probationary* and evicted
first, so a flood of one-shot spoofed adverts with random VRIDs and sources churns the probationary
tier and leaves the real routers, which advertise every interval, in place.

Expiry: an entry stops counting as advertising after its hold time (verdicts.wire.hold_time, derived
from the advertised interval: the master down interval plus a margin; counted once in `expirations`)
and is removed `linger` seconds after its last advert, so a VRID that went silent still reads as
"no master" (and its routers' last advert times stay visible) for that long.

`WirePeer.first_seen` is the start of the router's current advertising run: the table restarts it
when a router resumes after more than RUN_GAP intervals of silence or after a priority-0 advert (see
verdicts.wire for why split brain needs runs). A priority-0 advert sets `priority` 0 and
`last_priority_zero`: the router resigned.

`update()` says whether the VRID's verdict (masters, split brain, no master, conflicts) changed, so
the source can notify the store at once, and only then. It re-judges the VRID only when something
that can change a verdict happened (a new router, a new run, a priority-0 or profile change, or an
advert that makes a split-brain pair); otherwise an advert costs a dict update. Time-driven changes
(expiry) and VRIDs crowded with more than SMALL_GROUP routers (a flood) are judged by `tick()`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ka_exporter.model import Advert, WirePeer, WireStats
from ka_exporter.parse.vrrp import INVALID_REASONS
from ka_exporter.verdicts.wire import RUN_GAP, VridKey, hold_time, judge_vrid, split_pair

PeerKey = tuple[str, str, int, str]  # (interface, family, vrid, source)

DEFAULT_CAP = 4096
DEFAULT_LINGER = 300.0
ESTABLISHED = 3  # adverts before an entry leaves the probationary tier
SMALL_GROUP = 8  # VRIDs with more routers than this are judged by tick(), not per packet


class _Entry:
    """Mutable per-router state (the table's lock guards it). Same attribute names as WirePeer."""

    __slots__ = (
        "addresses",
        "adverts",
        "auth_digest",
        "auth_type",
        "expired",
        "family",
        "first_seen",
        "interface",
        "interval",
        "last_priority_zero",
        "last_seen",
        "local",
        "priority",
        "source",
        "template",
        "version",
        "vrid",
    )

    def __init__(self, a: Advert) -> None:
        self.interface = a.interface
        self.family = a.family
        self.vrid = a.vrid
        self.source = a.source
        self.first_seen = a.timestamp
        self.last_seen = a.timestamp
        self.priority = a.priority
        self.interval = a.interval
        self.version = a.version
        self.addresses = a.addresses
        self.auth_type = a.auth_type
        self.auth_digest = a.auth_digest
        self.adverts = 1
        self.local = a.outgoing
        self.last_priority_zero: float | None = a.timestamp if a.priority == 0 else None
        self.expired = False
        self.template = a  # the advert that last updated this entry (see PeerTable.repeat)

    def record(self) -> WirePeer:
        return WirePeer(
            interface=self.interface,
            family=self.family,
            vrid=self.vrid,
            source=self.source,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            priority=self.priority,
            interval=self.interval,
            version=self.version,
            addresses=self.addresses,
            auth_type=self.auth_type,
            auth_digest=self.auth_digest,
            adverts=self.adverts,
            local=self.local,
            last_priority_zero=self.last_priority_zero,
        )


class PeerTable:
    """Thread-safe bounded table of routers seen on the wire, plus the wire's counters."""

    def __init__(self, cap: int = DEFAULT_CAP, linger: float = DEFAULT_LINGER) -> None:
        if cap < 1:
            raise ValueError("peer table cap must be at least 1")
        self.cap = cap
        self.linger = linger
        self._lock = threading.Lock()
        self._probation: OrderedDict[PeerKey, _Entry] = OrderedDict()
        self._established: OrderedDict[PeerKey, _Entry] = OrderedDict()
        self._groups: dict[VridKey, dict[str, _Entry]] = {}
        self._verdicts: dict[VridKey, tuple[int, bool, bool, frozenset[str]]] = {}
        self._packets = 0
        self._invalid: dict[str, int] = dict.fromkeys(INVALID_REASONS, 0)
        self._evictions = 0
        self._expirations = 0
        self._kernel_packets = 0
        self._kernel_drops = 0
        self._interfaces: tuple[str, ...] = ()

    # -- writers ----------------------------------------------------------------------------------

    def update(self, a: Advert) -> bool:
        """Record one advert; True if a verdict-relevant thing changed."""
        key = (a.interface, a.family, a.vrid, a.source)
        gkey = (a.interface, a.family, a.vrid)
        ts = a.timestamp
        with self._lock:
            self._packets += 1
            e = self._established.get(key)
            if e is not None:
                self._established.move_to_end(key)
            else:
                e = self._probation.get(key)
                if e is not None:
                    if e.adverts + 1 >= ESTABLISHED:
                        del self._probation[key]
                        self._established[key] = e
                    else:
                        self._probation.move_to_end(key)
            if e is None:
                e = _Entry(a)
                self._make_room()
                self._probation[key] = e
                group = self._groups.get(gkey)
                if group is None:
                    group = self._groups[gkey] = {}
                group[a.source] = e
                structural = True
            else:
                group = self._groups[gkey]
                structural = self._refresh(e, a, ts)
                e.template = a
            if len(group) > SMALL_GROUP:
                # A crowd on one VRID (a flood): judged by tick(), a few times a second.
                return False
            if not structural:
                if len(group) == 1:
                    return False
                cached = self._verdicts.get(gkey)
                if cached is not None and cached[1]:
                    return False  # already split brain; only time (tick) can clear it
                if not any(q is not e and split_pair(e, q, ts) for q in group.values()):
                    return False
            summary = judge_vrid(gkey, tuple(group.values()), ts).summary
            if self._verdicts.get(gkey) == summary:
                return False
            self._verdicts[gkey] = summary
            return True

    def repeat(self, a: Advert, ts: float, outgoing: bool) -> bool | None:
        """Fast path for a packet byte-identical to the one `a` was decoded from, received at `ts`.

        Applies when `a` is what last updated an established, advertising entry: then only the
        time, the count and the LRU position move (no Advert is built). Returns None when it does
        not apply (the caller then decodes and calls `update`), else as `update`.
        """
        key = (a.interface, a.family, a.vrid, a.source)
        with self._lock:
            e = self._established.get(key)
            if e is None or e.template is not a or e.expired or e.priority == 0:
                return None
            if ts - e.last_seen > RUN_GAP * e.interval:
                return None  # a new run: the slow path restarts it
            self._established.move_to_end(key)
            self._packets += 1
            e.last_seen = max(e.last_seen, ts)
            e.adverts += 1
            if outgoing:
                e.local = True
            gkey = (a.interface, a.family, a.vrid)
            group = self._groups[gkey]
            if len(group) == 1 or len(group) > SMALL_GROUP:
                return False
            cached = self._verdicts.get(gkey)
            if cached is not None and cached[1]:
                return False
            if not any(q is not e and split_pair(e, q, ts) for q in group.values()):
                return False
            summary = judge_vrid(gkey, tuple(group.values()), ts).summary
            if self._verdicts.get(gkey) == summary:
                return False
            self._verdicts[gkey] = summary
            return True

    def _refresh(self, e: _Entry, a: Advert, ts: float) -> bool:
        changed = False
        resumed = e.priority == 0 or ts - e.last_seen > RUN_GAP * e.interval or e.expired
        if resumed and a.priority > 0:
            e.first_seen = ts  # a new advertising run
            changed = True
        if (a.priority == 0) != (e.priority == 0):
            changed = True
        if a.priority == 0:
            e.last_priority_zero = ts
        if (
            a.interval != e.interval
            or a.version != e.version
            or a.addresses != e.addresses
            or a.auth_type != e.auth_type
            or a.auth_digest != e.auth_digest
        ):
            e.interval = a.interval
            e.version = a.version
            e.addresses = a.addresses
            e.auth_type = a.auth_type
            e.auth_digest = a.auth_digest
            changed = True
        e.last_seen = max(e.last_seen, ts)
        e.priority = a.priority
        e.adverts += 1
        e.expired = False
        if a.outgoing:
            e.local = True
        return changed

    def _make_room(self) -> None:
        while len(self._probation) + len(self._established) >= self.cap:
            tier = self._probation if self._probation else self._established
            key, _ = tier.popitem(last=False)
            self._forget(key)
            self._evictions += 1

    def _forget(self, key: PeerKey) -> None:
        gkey = (key[0], key[1], key[2])
        group = self._groups.get(gkey)
        if group is not None:
            group.pop(key[3], None)
            if not group:
                del self._groups[gkey]
                self._verdicts.pop(gkey, None)

    def count_invalid(self, reason: str) -> None:
        with self._lock:
            self._packets += 1
            self._invalid[reason] = self._invalid.get(reason, 0) + 1

    def set_kernel_stats(self, packets: int, drops: int) -> None:
        """Totals from PACKET_STATISTICS, summed over sockets by the capture."""
        with self._lock:
            self._kernel_packets = packets
            self._kernel_drops = drops

    def set_interfaces(self, interfaces: tuple[str, ...]) -> None:
        with self._lock:
            self._interfaces = interfaces

    def tick(self, now: float) -> bool:
        """Expire and drop old entries, re-judge every VRID; True if any verdict changed."""
        changed = False
        with self._lock:
            for tier in (self._probation, self._established):
                stale: list[PeerKey] = []
                for key, e in tier.items():
                    age = now - e.last_seen
                    if not e.expired and age > hold_time(e.interval, e.version):
                        e.expired = True
                        self._expirations += 1
                    if age > self.linger:
                        stale.append(key)
                for key in stale:
                    del tier[key]
                    self._forget(key)
            for gkey, group in self._groups.items():
                summary = judge_vrid(gkey, tuple(group.values()), now).summary
                if self._verdicts.get(gkey) != summary:
                    self._verdicts[gkey] = summary
                    changed = True
        return changed

    # -- readers ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._probation) + len(self._established)

    def snapshot(self) -> tuple[tuple[WirePeer, ...], WireStats]:
        """All routers (sorted by key) and the counters, as immutable records."""
        with self._lock:
            entries = [*self._probation.items(), *self._established.items()]
            stats = WireStats(
                packets=self._packets,
                invalid=tuple(sorted(self._invalid.items())),
                kernel_drops=self._kernel_drops,
                kernel_packets=self._kernel_packets,
                evictions=self._evictions,
                expirations=self._expirations,
                interfaces=self._interfaces,
            )
            entries.sort(key=lambda kv: kv[0])
            peers = tuple(e.record() for _, e in entries)
        return peers, stats
