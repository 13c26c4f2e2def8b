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

Contested rows: the table is keyed by source address, which the network controls. A spoofer that
sends with the real master's own address would otherwise just update the master's row, silently
changing its priority, VIPs or auth. keepalived sends the same advert every interval; its priority
changes when a tracked script or interface changes (once, and then it stays), its VIPs, interval
or auth when it is reloaded with a new config (once). Two senders on one address instead make the
row go back and forth. A *return* is an advert that puts back the value the row had before its
last change, when that change was less than one hold time ago (A, B, A within seconds; a change
reverted an hour later is two changes, not a return). A row is `contested` while, within one hold
time of its last advert:
  * its profile (VIP list, interval, version, auth type or password digest) had a return: one is
    enough, a reload never reverts itself within seconds; or
  * its priority had more than PRIORITY_FLIPS returns between two non-zero values. A spoofer
    interleaved with the master at the same rate makes one every advert, about 8 per hold time
    at advert_int 1; a single change from a tracked script (it changes once and then stays) or a
    priority-0 resignation never counts, and even a script toggling the priority on every advert
    (the fastest keepalived re-evaluates) stays at 5 (a hold time spans at most 5 adverts).
It clears one hold time after the last return. The verdicts report it as the conflict kind
"source".

Listening: the source tells the table on which interfaces it captures and since when
(`set_listening`, `stop_listening`); `snapshot()` reports it in `WireStats.listening_since` /
`interfaces` for the verdicts of absence (see verdicts.wire.Listening).

`update()` says whether the VRID's verdict (masters, split brain, no master, conflicts) changed, or a
router's run reached two adverts (see `_short_run`), so the source can notify the store at once, and
only then. It re-judges the VRID only when something
that can change a verdict happened (a new router, a new run, a priority-0 or profile change, or an
advert that makes a split-brain pair); otherwise an advert costs a dict update. Time-driven changes
(expiry) and VRIDs crowded with more than SMALL_GROUP routers (a flood) are judged by `tick()`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from ka_exporter.model import Advert, WirePeer, WireStats
from ka_exporter.parse.vrrp import INVALID_REASONS
from ka_exporter.verdicts.wire import RUN_GAP, Listening, VridKey, hold_time, judge_vrid, split_pair

PeerKey = tuple[str, str, int, str]  # (interface, family, vrid, source)

DEFAULT_CAP = 4096
DEFAULT_LINGER = 300.0
ESTABLISHED = 3  # adverts before an entry leaves the probationary tier
SMALL_GROUP = 8  # VRIDs with more routers than this are judged by tick(), not per packet
PRIORITY_FLIPS = 5  # more priority returns than this within one hold time: contested

Profile = tuple[float, int, tuple[str, ...], int, str | None]  # interval, version, VIPs, auth, digest


class _Entry:
    """Mutable per-router state (the table's lock guards it). Same attribute names as WirePeer."""

    __slots__ = (
        "addresses",
        "adverts",
        "auth_digest",
        "auth_type",
        "contested",
        "expired",
        "family",
        "first_seen",
        "interface",
        "interval",
        "last_priority_zero",
        "last_seen",
        "local",
        "prev_priority",
        "prev_profile",
        "prio_changed",
        "prio_returns",
        "priority",
        "profile_changed",
        "profile_return",
        "rec",
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
        # contested detection (see the module docstring): what the row was before its last change,
        # and when it went back to it
        self.prev_priority = 0
        self.prev_profile: Profile | None = None
        self.prio_changed = -1e308  # when the priority last changed between non-zero values
        self.profile_changed = -1e308
        self.prio_returns: tuple[float, ...] = ()  # times, newest last, at most PRIORITY_FLIPS + 1
        self.profile_return: float | None = None
        self.contested = False
        self.rec: WirePeer | None = None  # record() while the entry has not changed

    def record(self) -> WirePeer:
        rec = self.rec
        if rec is None:
            rec = self.rec = self._record()
        return rec

    def _record(self) -> WirePeer:
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
            contested=self.contested,
        )


def _short_run(e: _Entry) -> bool:
    """The router's current run is shorter than half an interval (fewer than two adverts).

    When a run grows past that, `update()` reports a change even if the wire verdict did not move: the
    fused verdict's address witness (`verdicts.fused`) counts only routers with two adverts, and the
    watchdog re-evaluates on store changes.
    """
    return e.last_seen - e.first_seen < e.interval / 2.0


class PeerTable:
    """Thread-safe bounded table of routers seen on the wire, plus the wire's counters."""

    def __init__(
        self, cap: int = DEFAULT_CAP, linger: float = DEFAULT_LINGER, clock: Callable[[], float] = time.time
    ) -> None:
        if cap < 1:
            raise ValueError("peer table cap must be at least 1")
        self.cap = cap
        self.linger = linger
        self._clock = clock  # only to report a stopped capture's listening time (see snapshot)
        self._lock = threading.Lock()
        self._probation: OrderedDict[PeerKey, _Entry] = OrderedDict()
        self._established: OrderedDict[PeerKey, _Entry] = OrderedDict()
        self._groups: dict[VridKey, dict[str, _Entry]] = {}
        self._verdicts: dict[VridKey, tuple[int, bool, bool, frozenset[str]]] = {}
        # VRIDs of one router heard within its hold time, with the time until which tick() need not
        # judge them again: see tick(). Any update() of the VRID's routers drops its entry.
        self._steady: dict[VridKey, float] = {}
        # The earliest time tick() can change anything, as of the last tick (see due()); -inf after
        # an update(), which may make a VRID unsteady. repeat() only moves a router's last advert
        # later, which moves the true time later: the kept one stays a safe (early) answer.
        self._due = float("-inf")
        self._packets = 0
        self._invalid: dict[str, int] = dict.fromkeys(INVALID_REASONS, 0)
        self._evictions = 0
        self._expirations = 0
        self._kernel_packets = 0
        self._kernel_drops = 0
        self._listening: dict[str, float] = {}  # interface -> capturing since
        self._listen_until: float | None = None  # the capture stopped then
        self._version = 0  # moves with every change of what snapshot() returns (see version())
        self._moved = 0  # ... but not with repeat(): see moved()

    # -- writers ----------------------------------------------------------------------------------

    def update(self, a: Advert) -> bool:
        """Record one advert; True if a verdict-relevant thing changed."""
        key = (a.interface, a.family, a.vrid, a.source)
        gkey = (a.interface, a.family, a.vrid)
        ts = a.timestamp
        with self._lock:
            self._packets += 1
            self._version += 1
            self._moved += 1
            self._steady.pop(gkey, None)
            self._due = float("-inf")
            e = self._established.get(key)
            if e is not None:
                e.rec = None
                self._established.move_to_end(key)
                if (
                    a.priority == e.priority
                    and e.priority
                    and not e.expired
                    and ts - e.last_seen <= RUN_GAP * e.interval
                    and a.addresses == e.addresses
                    and a.auth_digest == e.auth_digest
                    and a.interval == e.interval
                    and a.version == e.version
                    and a.auth_type == e.auth_type
                    and not e.prio_returns
                    and e.profile_return is None
                ):
                    # The steady case, an advertising router repeating itself: what `_refresh`
                    # would do, minus its checks (nothing verdict-relevant changed for this router).
                    short = _short_run(e)
                    e.last_seen = max(e.last_seen, ts)
                    e.adverts += 1
                    e.template = a
                    if a.outgoing:
                        e.local = True
                    return self._rejudge(e, gkey, ts) or (short and not _short_run(e))
            else:
                e = self._probation.get(key)
                if e is not None:
                    e.rec = None
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
                structural, grew = True, False
            else:
                group = self._groups[gkey]
                short = _short_run(e)
                structural = self._refresh(e, a, ts)
                grew = short and not _short_run(e) and e.priority > 0
                e.template = a
            if len(group) > SMALL_GROUP:
                # A crowd on one VRID (a flood): judged by tick(), a few times a second.
                return False
            if not structural:
                return self._rejudge(e, gkey, ts) or grew
            summary = judge_vrid(gkey, tuple(group.values()), ts).summary
            if self._verdicts.get(gkey) == summary:
                return grew
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
            if e.prio_returns or e.profile_return is not None:
                return None  # contested detection is pending: the slow path ages it
            if ts - e.last_seen > RUN_GAP * e.interval:
                return None  # a new run: the slow path restarts it
            self._established.move_to_end(key)
            self._packets += 1
            self._version += 1
            e.rec = None
            short = _short_run(e)
            e.last_seen = max(e.last_seen, ts)
            e.adverts += 1
            if outgoing:
                e.local = True
            return self._rejudge(e, (a.interface, a.family, a.vrid), ts) or (short and not _short_run(e))

    def _rejudge(self, e: _Entry, gkey: VridKey, ts: float) -> bool:
        """After an advert that changed nothing about its router: can it have made a split brain?"""
        group = self._groups[gkey]
        if len(group) == 1 or len(group) > SMALL_GROUP:
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

    def _refresh(self, e: _Entry, a: Advert, ts: float) -> bool:
        changed = False
        prio = a.priority
        old = e.priority
        resumed = old == 0 or ts - e.last_seen > RUN_GAP * e.interval or e.expired
        if resumed and prio > 0:
            e.first_seen = ts  # a new advertising run
            changed = True
        if prio != old:
            if (prio == 0) != (old == 0):
                changed = True
            else:  # between two non-zero priorities
                if prio == e.prev_priority and ts - e.prio_changed <= hold_time(e.interval, e.version):
                    # back to the previous priority, soon after: a return (rare: a tuple is enough)
                    e.prio_returns = (*e.prio_returns[-PRIORITY_FLIPS:], ts)
                e.prev_priority = old
                e.prio_changed = ts
        if prio == 0:
            e.last_priority_zero = ts
        if (
            a.interval != e.interval
            or a.version != e.version
            or a.addresses != e.addresses
            or a.auth_type != e.auth_type
            or a.auth_digest != e.auth_digest
        ):
            before: Profile = (e.interval, e.version, e.addresses, e.auth_type, e.auth_digest)
            if (
                a.interval,
                a.version,
                a.addresses,
                a.auth_type,
                a.auth_digest,
            ) == e.prev_profile and ts - e.profile_changed <= hold_time(e.interval, e.version):
                e.profile_return = ts
            e.prev_profile = before
            e.profile_changed = ts
            e.interval = a.interval
            e.version = a.version
            e.addresses = a.addresses
            e.auth_type = a.auth_type
            e.auth_digest = a.auth_digest
            changed = True
        e.last_seen = max(e.last_seen, ts)
        e.priority = prio
        e.adverts += 1
        e.expired = False
        if a.outgoing:
            e.local = True
        if (e.prio_returns or e.profile_return is not None or e.contested) and self._contest(e):
            changed = True
        return changed

    @staticmethod
    def _contest(e: _Entry) -> bool:
        """Age the entry's returns out of one hold time and re-decide `contested`; True if it changed."""
        cut = e.last_seen - hold_time(e.interval, e.version)
        if e.prio_returns and e.prio_returns[0] < cut:
            e.prio_returns = tuple(t for t in e.prio_returns if t >= cut)
        if e.profile_return is not None and e.profile_return < cut:
            e.profile_return = None
        contested = len(e.prio_returns) > PRIORITY_FLIPS or e.profile_return is not None
        if contested == e.contested:
            return False
        e.contested = contested
        return True

    def _make_room(self) -> None:
        while len(self._probation) + len(self._established) >= self.cap:
            tier = self._probation if self._probation else self._established
            key, _ = tier.popitem(last=False)
            self._forget(key)
            self._evictions += 1

    def _forget(self, key: PeerKey) -> None:
        gkey = (key[0], key[1], key[2])
        self._steady.pop(gkey, None)
        group = self._groups.get(gkey)
        if group is not None:
            group.pop(key[3], None)
            if not group:
                del self._groups[gkey]
                self._verdicts.pop(gkey, None)

    def count_invalid(self, reason: str) -> None:
        with self._lock:
            self._packets += 1
            self._version += 1
            self._invalid[reason] = self._invalid.get(reason, 0) + 1

    def set_kernel_stats(self, packets: int, drops: int) -> None:
        """Totals from PACKET_STATISTICS, summed over sockets by the capture."""
        with self._lock:
            if (self._kernel_packets, self._kernel_drops) != (packets, drops):
                self._version += 1
            self._kernel_packets = packets
            self._kernel_drops = drops

    def set_listening(self, since: Mapping[str, float]) -> None:
        """The interfaces captured on now, each with the time its capture started."""
        with self._lock:
            self._listening = dict(since)
            self._listen_until = None
            self._version += 1
            self._moved += 1

    def stop_listening(self, at: float) -> None:
        """The capture ended at `at` (--once window over): keep what was listened, for the verdicts."""
        with self._lock:
            if self._listening and self._listen_until is None:
                self._listen_until = at
            self._version += 1
            self._moved += 1

    def tick(self, now: float) -> bool:
        """Expire and drop old entries, re-judge every VRID; True if any verdict changed."""
        changed = False
        linger = self.linger
        soon = float("inf")  # what due() answers until the next update()
        with self._lock:
            for tier in (self._probation, self._established):
                stale: list[PeerKey] = []
                for key, e in tier.items():
                    age = now - e.last_seen
                    hold = hold_time(e.interval, e.version)
                    if not e.expired:
                        if age > hold:
                            e.expired = True
                            self._expirations += 1
                            self._version += 1
                            self._moved += 1
                        else:
                            soon = min(soon, e.last_seen + hold)
                    if age > linger:
                        stale.append(key)
                    else:
                        soon = min(soon, e.last_seen + linger)
                for key in stale:
                    del tier[key]
                    self._forget(key)
                    self._version += 1
                    self._moved += 1
            listening = self._listening_locked()
            steady = self._steady
            for gkey, group in self._groups.items():
                until = steady.get(gkey)
                if until is not None and len(group) == 1:
                    if now <= until:
                        continue
                    (e,) = group.values()
                    # Past the hold time of the advert it was judged at, but heard since (repeat()
                    # moves last_seen only): still steady, until its latest advert's hold time.
                    hold = hold_time(e.interval, e.version)
                    if not e.expired and now - e.last_seen <= hold:
                        steady[gkey] = e.last_seen + hold
                        continue
                summary = judge_vrid(gkey, tuple(group.values()), now, listening=listening).summary
                if self._verdicts.get(gkey) != summary:
                    self._verdicts[gkey] = summary
                    changed = True
                    self._moved += 1
                # One router heard within its hold time: its VRID's verdict reads only whether it is
                # present (it is, until last_seen + hold time), its priority and `contested` (no split
                # brain with one router, no "no master" while it is present). Time alone changes none
                # of them before then, and repeat() moves only last_seen, counts and `local`; anything
                # else goes through update(), which drops the entry. So the tick, 4 times a second,
                # judges only the VRIDs where time can change something (100 steady VRIDs: ~2 ms/s).
                if len(group) == 1:
                    (e,) = group.values()
                    hold = hold_time(e.interval, e.version)
                    if not e.expired and now - e.last_seen <= hold:
                        steady[gkey] = e.last_seen + hold
                        continue
                steady.pop(gkey, None)
                soon = float("-inf")  # judged at every tick
            self._due = soon
        return changed

    def due(self) -> float:
        """The earliest time `tick()` can change anything: a router's hold time or linger running
        out; -inf while a VRID is not steady (see tick(): judged at every tick) or since an update().
        Kept by the last tick (O(1) here): the capture thread ticks only once it is reached, not once
        a second for nothing (100 steady VRIDs: a tick every ~2.6 s at advert_int 1)."""
        with self._lock:
            return self._due

    # -- readers ----------------------------------------------------------------------------------

    def version(self) -> int:
        """A number that moves whenever what `snapshot()` returns changes (any advert, counter,
        expiry or listening change): equal numbers, equal snapshots."""
        with self._lock:
            if self._listen_until is not None:
                self._version += 1  # a stopped capture's listening time moves with the clock
            return self._version

    def moved(self) -> int:
        """A number that moves with everything but a repeat (`repeat()`: a router sending the same
        bytes again moves only its last advert time and counts): equal numbers, the same routers,
        runs, priorities and expiries, so what the failover accounts read of them only moved in time,
        which they account exactly from the packet times whenever they are brought up to date."""
        with self._lock:
            return self._moved

    def __len__(self) -> int:
        with self._lock:
            return len(self._probation) + len(self._established)

    def listening(self) -> Listening | None:
        """Where and since when the capture has been listening (None: it is not)."""
        with self._lock:
            return self._listening_locked()

    def _listening_locked(self) -> Listening | None:
        if not self._listening:
            return None
        # One start time for the whole set: the latest, i.e. since when every interface in it has
        # been captured (a re-opened interface restarts it for all: conservative for the others).
        since = max(self._listening.values())
        if self._listen_until is not None:
            # WireStats has no end time: a capture that ended reports the start of a window just as
            # long that ends now, so `now - listening_since` is the time it actually listened (read
            # at a snapshot's time, which the store takes just before this).
            since += max(0.0, self._clock() - self._listen_until)
        return Listening(since, frozenset(self._listening))

    def snapshot(self) -> tuple[tuple[WirePeer, ...], WireStats]:
        """All routers (sorted by key) and the counters, as immutable records."""
        with self._lock:
            entries = [*self._probation.items(), *self._established.items()]
            listening = self._listening_locked()
            stats = WireStats(
                packets=self._packets,
                invalid=tuple(sorted(self._invalid.items())),
                kernel_drops=self._kernel_drops,
                kernel_packets=self._kernel_packets,
                evictions=self._evictions,
                expirations=self._expirations,
                interfaces=tuple(sorted(self._listening)),
                listening_since=None if listening is None else listening.since,
            )
            entries.sort(key=lambda kv: kv[0])
            peers = tuple(e.record() for _, e in entries)
        return peers, stats
