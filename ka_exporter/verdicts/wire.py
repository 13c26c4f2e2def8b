"""Wire verdicts: masters, split brain, no master and conflicts per (interface, family, VRID).

Pure functions of peer records and a clock (`now`, in the same time base as the adverts' timestamps:
receive time live, packet time in a pcap replay). No I/O.

How keepalived behaves, and the rules derived from it
------------------------------------------------------
* Only a MASTER sends adverts, one every advert interval I (v2: whole seconds; v3: centiseconds).
  A BACKUP is silent. So "routers advertising now" is "routers that are master now".
* A BACKUP takes over when it has heard nothing for the master down interval
  3*I + skew, skew = (256 - priority)/256 * (1 s for v2, I for v3), i.e. less than 4*I + margin.
  `hold_time()` is that bound: a router silent for longer is certainly no longer master, and a
  VRID where nobody advertised for that long has no master (nobody took over in time).
* A graceful stop (SIGTERM) sends one priority-0 advert: the router resigned. A backup then takes
  over after skew time. A resigned router is not a master and must not count towards split brain.
* Preemption: a higher-priority router starts advertising; the old master receives that advert
  and goes BACKUP at once, so the old master sends at most one more advert that crossed on the
  wire. The overlap of the two routers' advertising is a few milliseconds, never an interval.
* Failover after a crash (SIGKILL): the old master just stops; the backup starts advertising one
  master down interval (> 3*I) later. The two advertising periods do not overlap at all.
* Split brain: two routers are MASTER at once and keep advertising, each every I, for as long as
  they cannot hear each other.

So the split-brain rule compares *advertising runs*. A run is a router's sequence of adverts with no
gap longer than `RUN_GAP` intervals (a master never misses two adverts in a row; any router that
resumes after someone else took over was silent > 3*I) and not interrupted by a priority-0 advert.
`WirePeer.first_seen` is the start of the router's current run (the peer table restarts it).

Two routers A and B on a VRID are in split brain at `now` when both are advertising (last advert
priority > 0, last advert within `RUN_GAP` intervals of now) and either
  1. their runs overlap by at least half an interval: min(last_A, last_B) - max(start_A, start_B)
     >= max(I_A, I_B) / 2. That needs each to have advertised at least twice while the other was
     advertising, which preemption (overlap ~ms) and crash failover (no overlap) never produce. In a
     real split brain it becomes true at the latest 1.5 intervals after the second master's first
     advert (its 2nd advert, or the first router's advert after that): within two intervals.
  2. or they are *incompatible*: keepalived drops adverts whose VIP list, auth (type/password) or
     version differs from its own, or (v2) whose interval differs, without counting them. Such
     routers never yield to each other, so one overlapping advert each is already two masters
     (the classic "silent misconfiguration" dual master; see vrid-conflict.pcap, where the third
     router sends a single advert and stays MASTER silently).
The verdict clears RUN_GAP intervals after one side stopped advertising.

`masters` counts routers with a non-zero last priority whose last advert is within the hold time, as
a backup would judge them; right after a preemption or crash failover it can read 2 for up to one
hold time while `split_brain` correctly stays 0. Alert on `split_brain`, not on `masters > 1`.

`no_master`: the VRID is known (seen on the wire or configured locally) and nobody has advertised
within the hold time; a priority-0 advert within the hold time counts as "a handover is under way".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ka_exporter.model import KeepalivedConfig, Snapshot

CONFLICT_KINDS: tuple[str, ...] = ("auth", "interval", "version", "vips")

#: A router whose last advert is older than RUN_GAP intervals is not advertising any more.
RUN_GAP = 2.5

#: More routers than this advertising one VRID at once, each for half an interval or more, is split
#: brain whatever their timing (bounds the pairwise check under a spoofed flood).
MAX_CONCURRENT = 64

VridKey = tuple[str, str, int]  # (interface, family, vrid)


class PeerLike(Protocol):
    """What the verdicts read from a router record (`model.WirePeer` and the table's entries)."""

    @property
    def interface(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def vrid(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def first_seen(self) -> float: ...
    @property
    def last_seen(self) -> float: ...
    @property
    def priority(self) -> int: ...
    @property
    def interval(self) -> float: ...
    @property
    def version(self) -> int: ...
    @property
    def addresses(self) -> tuple[str, ...]: ...
    @property
    def auth_type(self) -> int: ...
    @property
    def auth_digest(self) -> str | None: ...
    @property
    def last_priority_zero(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class VridVerdict:
    """The verdict for one (interface, family, vrid) at one instant."""

    interface: str
    family: str
    vrid: int
    routers: int  # routers heard within their hold time (any priority)
    masters: int
    split_brain: bool
    no_master: bool
    conflicts: frozenset[str]
    configured: bool = False

    @property
    def key(self) -> VridKey:
        return (self.interface, self.family, self.vrid)

    @property
    def summary(self) -> tuple[int, bool, bool, frozenset[str]]:
        """What a watcher reacts to (changes of it are "verdict-relevant")."""
        return (self.masters, self.split_brain, self.no_master, self.conflicts)


def hold_time(interval: float, version: int) -> float:
    """Master down interval (3*I + worst-case skew) plus a margin for timer and capture jitter."""
    skew = 1.0 if version == 2 else interval  # (256 - priority)/256 < 1, times 1 s (v2) or I (v3)
    return 3.0 * interval + skew + 0.1 * interval + 0.05


def present(peer: PeerLike, now: float) -> bool:
    """Heard within its hold time (whatever the priority)."""
    return now - peer.last_seen <= hold_time(peer.interval, peer.version)


def is_master(peer: PeerLike, now: float) -> bool:
    """Counts towards `masters`: last advert had a non-zero priority and is within the hold time."""
    return peer.priority > 0 and present(peer, now)


def advertising(peer: PeerLike, now: float) -> bool:
    """Still advertising right now: non-zero priority and no more than RUN_GAP intervals silent."""
    return peer.priority > 0 and now - peer.last_seen <= RUN_GAP * peer.interval


def incompatibilities(a: PeerLike, b: PeerLike) -> frozenset[str]:
    """Conflict kinds between two routers (empty when they agree)."""
    kinds: list[str] = []
    if a.auth_type != b.auth_type or a.auth_digest != b.auth_digest:
        kinds.append("auth")
    if a.interval != b.interval:
        kinds.append("interval")
    if a.version != b.version:
        kinds.append("version")
    if set(a.addresses) != set(b.addresses):
        kinds.append("vips")
    return frozenset(kinds)


def compat_class(peer: PeerLike) -> tuple[object, ...]:
    """Routers in different classes drop each other's adverts (keepalived checks these fields).

    Auth type and password, version and the VIP set must match; the interval too for VRRPv2 (a v3
    backup adopts the master's interval, RFC 5798 6.4.2, so v3 interval mismatch does not count).
    """
    return (
        peer.auth_type,
        peer.auth_digest,
        peer.version,
        frozenset(peer.addresses),
        peer.interval if peer.version == 2 else None,
    )


def drops_each_other(a: PeerLike, b: PeerLike) -> bool:
    """True when keepalived on one router would drop the other's adverts (so neither yields)."""
    return compat_class(a) != compat_class(b)


def _long_run(p: PeerLike) -> bool:
    # A run shorter than half an interval cannot overlap another by half an interval.
    return p.last_seen - p.first_seen >= p.interval / 2.0


def _overlap_split(a: PeerLike, b: PeerLike) -> bool:
    overlap = min(a.last_seen, b.last_seen) - max(a.first_seen, b.first_seen)
    return overlap >= max(a.interval, b.interval) / 2.0


def split_pair(a: PeerLike, b: PeerLike, now: float) -> bool:
    """Are `a` and `b` two concurrent masters at `now`? (see the module docstring)"""
    if not (advertising(a, now) and advertising(b, now)):
        return False
    return drops_each_other(a, b) or _overlap_split(a, b)


def split_brain(peers: Sequence[PeerLike], now: float) -> bool:
    """Two or more routers of one VRID advertising concurrently (peers of a single VRID).

    Linear in the number of routers (a spoofed flood can put thousands on one VRID): different
    compatibility classes among the advertising routers settle it at once; otherwise only routers
    with a run of at least half an interval can pair up, and more than MAX_CONCURRENT of those
    advertising at once is itself treated as split brain (no failover looks like that).
    """
    live = [p for p in peers if advertising(p, now)]
    if len(live) < 2:
        return False
    first = compat_class(live[0])
    if any(compat_class(p) != first for p in live[1:]):
        return True
    runs = [p for p in live if _long_run(p)]
    n = len(runs)
    if n > MAX_CONCURRENT:
        return True
    for i in range(n):
        for j in range(i + 1, n):
            if _overlap_split(runs[i], runs[j]):
                return True
    return False


def conflicts(peers: Sequence[PeerLike], now: float) -> frozenset[str]:
    """Conflict kinds among the routers of one VRID heard within their hold time."""
    live = [p for p in peers if present(p, now)]
    if len(live) < 2:
        return frozenset()
    kinds: set[str] = set()
    first = live[0]
    for other in live[1:]:
        kinds |= incompatibilities(first, other)
    # Pairs not involving `first` can only add kinds where `first` agrees with both but they
    # disagree with each other, which equality makes impossible; comparing against one is enough.
    return frozenset(kinds)


def no_master(peers: Sequence[PeerLike], now: float) -> bool:
    """Nobody advertised within the hold time (a recent priority-0 advert means: handover)."""
    return not any(present(p, now) for p in peers)


def judge_vrid(key: VridKey, peers: Sequence[PeerLike], now: float, configured: bool = False) -> VridVerdict:
    """The verdict for one VRID from the routers seen on it (possibly none, if only configured)."""
    return VridVerdict(
        interface=key[0],
        family=key[1],
        vrid=key[2],
        routers=sum(1 for p in peers if present(p, now)),
        masters=sum(1 for p in peers if is_master(p, now)),
        split_brain=split_brain(peers, now),
        no_master=no_master(peers, now),
        conflicts=conflicts(peers, now),
        configured=configured,
    )


def group(peers: Iterable[PeerLike]) -> dict[VridKey, list[PeerLike]]:
    """Routers by (interface, family, vrid)."""
    out: dict[VridKey, list[PeerLike]] = {}
    for p in peers:
        out.setdefault((p.interface, p.family, p.vrid), []).append(p)
    return out


def judge(
    peers: Iterable[PeerLike], now: float, configured: Iterable[VridKey] = ()
) -> tuple[VridVerdict, ...]:
    """Verdicts for every VRID seen on the wire or configured locally, sorted by key."""
    groups = group(peers)
    conf = set(configured)
    keys = sorted(set(groups) | conf)
    return tuple(judge_vrid(k, groups.get(k, ()), now, k in conf) for k in keys)


def configured_vrids(snap: Snapshot) -> tuple[VridKey, ...]:
    """(interface, family, vrid) of every local VRRP instance: keepalived.conf, else keepalived's view."""
    out: set[VridKey] = set()
    config: KeepalivedConfig | None = snap.config
    if config is not None and config.instances:
        for inst in config.instances:
            if inst.interface and inst.vrid is not None:
                out.add((inst.interface, inst.family, inst.vrid))
    elif snap.instances:
        for view in snap.instances:
            out.add((view.interface, view.family, view.vrid))
    return tuple(sorted(out))
