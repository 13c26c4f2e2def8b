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
gap longer than `RUN_GAP` intervals (a master that hears nothing never misses two adverts in a
row, but see "Silent masters" below; any router that resumes after someone else took over was
silent > 3*I) and not interrupted by a priority-0 advert.
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

Silent masters (keepalived re-arms a master on adverts it drops)
-----------------------------------------------------------------
"A master never misses two adverts in a row" holds only while it hears nothing. keepalived's
`vrrp_dispatcher_read()` calls `vrrp_init_instance_sands()` after *every* advert it reads for the
VRID, whatever the state machine then did with it; for a MASTER that puts its next advert one of
its own intervals after the received one. So a master that drops another router's adverts (auth,
version, VIPs, v2 interval mismatch: `drops_each_other`) is silenced whenever those adverts come at
least as often as its own interval, and stays MASTER with its VIPs: two such masters alternate with
silences of seconds, and `advert_int 2` against `advert_int 1` silences the slower one for good.

What the sniffer may conclude: a router R whose last advert had a non-zero priority and that fell
silent while an *incompatible* router Q kept advertising has not been shown to stop being master.
R is *presumed master* (`presumed_master`) while all of this holds:
  * R never resigned (a priority-0 advert, which keepalived sends on SIGTERM, reload and FAULT, ends
    it at once: `priority` 0);
  * Q advertises now, with an interval no longer than R's (only then do Q's adverts keep R's
    timer from firing: with a longer one R would speak in the gaps, so R's silence means it stopped);
  * Q's current run began before R had been silent for RUN_GAP of its intervals (Q's adverts are
    what silenced R; a Q that started after R was already silent did not);
  * R fell silent less than PRESUMED_FOR seconds ago (the bound, see below).
By keepalived's own rules nothing but a priority-0 advert or the end of R's process can make R leave
MASTER while it drops Q's adverts: it never yields to an advert it drops. The other ways R goes
silent are a SIGKILL or a SIGSTOP of its keepalived, and both leave R's VIPs on R (a dual holder
still). A router that *agrees* with the advertiser is never presumed: it would accept a higher
priority advert and yield (a preemption), or answer a lower one with its own advert, so its silence
is a real handover. Hence no failover, preemption or graceful stop ever presumes anyone.

The bound: PRESUMED_FOR (5 minutes, the peer table's default linger) after R's last advert the
presumption ends even if Q keeps advertising: a host powered off mid-misconfiguration, or a router
whose config was fixed and reloaded into BACKUP without a priority-0 advert, must not read split
brain forever. A dual master that outlasts it is still seen by the address witness on the silent
router's own node and by the L2 witness from anywhere (`ka_exporter.verdicts.fused`).

So `split_brain` (exported as `keepalived_wire_split_brain`) proves, from adverts alone: two routers
advertised concurrently (rule 1 or 2 above), or one of two incompatible routers went quiet in the
way keepalived's re-arming explains while the other still advertises. It clears RUN_GAP intervals
after one side stopped advertising when that side was not presumed, else when the presumption ends.

`masters` counts routers with a non-zero last priority whose last advert is within the hold time, as
a backup would judge them; right after a preemption or crash failover it can read 2 for up to one
hold time while `split_brain` correctly stays 0. Alert on `split_brain`, not on `masters > 1`.

`no_master`: the VRID is known (seen on the wire or configured locally) and nobody has advertised
within the hold time; a priority-0 advert within the hold time counts as "a handover is under way".
Silence is only absence once the sniffer has been listening long enough to hear a master
(`Listening`): a VRID nobody was heard on since the capture started is not "no master" until the
capture has run for that VRID's hold time (`vrid_holds`: from keepalived.conf's advert_int, else
`DEFAULT_HOLD`, the hold time of a 1 s VRRPv2 advert), and never on an interface the sniffer is not
capturing on. Without this, every exporter start (and every `--once` run) would call every
configured VRID masterless for a few seconds. A capture that ended (`--once`) counts only the time
it actually listened: with `--wire.listen-seconds` shorter than a VRID's hold time, a VRID that was
not heard in the window gets no verdict of absence (no_master 0), never a guess.

`contested`: one router row (interface, family, vrid, source) whose adverts disagree with each other
is most likely two senders using one source address (a spoofer impersonating the master). The peer
table flags it (see `ka_exporter.store.peers`) and the verdicts report it as the conflict kind "source"
(`CONFLICT_KINDS`), so `keepalived_wire_conflict{kind="source"}`, the `wire_conflict` condition and
its alert cover it like the other kinds. It is a kind of its own rather than "auth" or "vips"
because the remedy differs: the other kinds are misconfigured routers, this one is a sender that
should not exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ka_exporter.model import KeepalivedConfig, Snapshot, WireStats

#: "source": adverts from one source address disagree with each other (`WirePeer.contested`).
CONFLICT_KINDS: tuple[str, ...] = ("auth", "interval", "version", "vips", "source")

#: A router whose last advert is older than RUN_GAP intervals is not advertising any more.
RUN_GAP = 2.5

#: How long after its last advert a silent router stays presumed master (see the module docstring).
PRESUMED_FOR = 300.0

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
    @property
    def contested(self) -> bool: ...


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


#: Hold time of a VRID whose advert interval is not known: keepalived's default, 1 s VRRPv2 (~4.15 s).
DEFAULT_HOLD = hold_time(1.0, 2)


@dataclass(frozen=True, slots=True)
class Listening:
    """Since when, on which interfaces and (for a capture that ended) until when the sniffer listened.

    Verdicts of absence (`no_master`) need it: silence only means "no master" on an interface the
    sniffer captures on, after it has listened for a hold time.
    """

    since: float
    interfaces: frozenset[str] | None = None  # None: every interface
    until: float | None = None  # the capture ended then (--once); None: still listening

    def covers(self, interface: str) -> bool:
        return self.interfaces is None or interface in self.interfaces

    def listened(self, now: float) -> float:
        """Seconds of capture up to `now`."""
        end = now if self.until is None else min(now, self.until)
        return end - self.since


#: Listening forever on every interface (a complete capture replayed, plain timelines): silence
#: within the data is absence. The default of the pure functions, as before listening was tracked.
ALWAYS = Listening(-math.inf)


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


def silenced_by(silent: PeerLike, talker: PeerLike, now: float) -> bool:
    """Is `silent` presumed master because `talker`'s dropped adverts keep re-arming it?"""
    if silent.priority <= 0 or advertising(silent, now) or not advertising(talker, now):
        return False
    if now - silent.last_seen > PRESUMED_FOR or talker.interval > silent.interval:
        return False
    if talker.first_seen > silent.last_seen + RUN_GAP * silent.interval:
        return False
    return drops_each_other(silent, talker)


def presumed_master(peer: PeerLike, peers: Sequence[PeerLike], now: float) -> bool:
    """Silent but presumed master: some incompatible router's adverts explain its silence."""
    return any(q is not peer and silenced_by(peer, q, now) for q in peers)


def split_pair(a: PeerLike, b: PeerLike, now: float) -> bool:
    """Are `a` and `b` two concurrent masters at `now`? (see the module docstring)"""
    if silenced_by(a, b, now) or silenced_by(b, a, now):
        return True
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
    if not live:
        return False
    if len(peers) <= MAX_CONCURRENT and any(
        silenced_by(p, q, now) for p in peers if not advertising(p, now) for q in live
    ):
        return True
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
    """Conflict kinds among the routers of one VRID heard within their hold time.

    "source" when a router row is contested (its own adverts disagree: two senders, one address).
    """
    live = [p for p in peers if present(p, now)]
    kinds: set[str] = {"source"} if any(p.contested for p in live) else set()
    if len(live) < 2:
        return frozenset(kinds)
    first = live[0]
    for other in live[1:]:
        kinds |= incompatibilities(first, other)
    # Pairs not involving `first` can only add kinds where `first` agrees with both but they
    # disagree with each other, which equality makes impossible; comparing against one is enough.
    return frozenset(kinds)


def no_master(
    peers: Sequence[PeerLike],
    now: float,
    *,
    interface: str | None = None,
    listening: Listening | None = ALWAYS,
    hold: float = DEFAULT_HOLD,
) -> bool:
    """Nobody advertised within the hold time (a recent priority-0 advert means: handover).

    `listening` None (not capturing) or not covering `interface`: no verdict of absence (False).
    If no router of the VRID was heard since the capture started, silence counts only once the
    capture has listened for `hold` seconds (the VRID's hold time); a router heard since, now
    silent for its own hold time, is absence at once.
    """
    if any(present(p, now) for p in peers):
        return False
    if listening is None:
        return False
    if interface is not None and not listening.covers(interface):
        return False
    if any(p.last_seen >= listening.since for p in peers):
        return True
    return listening.listened(now) >= hold


def judge_vrid(
    key: VridKey,
    peers: Sequence[PeerLike],
    now: float,
    configured: bool = False,
    *,
    listening: Listening | None = ALWAYS,
    hold: float = DEFAULT_HOLD,
) -> VridVerdict:
    """The verdict for one VRID from the routers seen on it (possibly none, if only configured)."""
    return VridVerdict(
        interface=key[0],
        family=key[1],
        vrid=key[2],
        routers=sum(1 for p in peers if present(p, now)),
        masters=sum(1 for p in peers if is_master(p, now)),
        split_brain=split_brain(peers, now),
        no_master=no_master(peers, now, interface=key[0], listening=listening, hold=hold),
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
    peers: Iterable[PeerLike],
    now: float,
    configured: Iterable[VridKey] = (),
    *,
    listening: Listening | None = ALWAYS,
    holds: Mapping[VridKey, float] | None = None,
) -> tuple[VridVerdict, ...]:
    """Verdicts for every VRID seen on the wire or configured locally, sorted by key.

    `listening`/`holds`: see `no_master`; a VRID missing from `holds` has `DEFAULT_HOLD`.
    """
    groups = group(peers)
    conf = set(configured)
    keys = sorted(set(groups) | conf)
    hold = holds or {}
    return tuple(
        judge_vrid(k, groups.get(k, ()), now, k in conf, listening=listening, hold=hold.get(k, DEFAULT_HOLD))
        for k in keys
    )


def listening_from(stats: WireStats | None) -> Listening | None:
    """The sniffer's listening state from its counters; None if it is not (or never was) capturing."""
    if stats is None or stats.listening_since is None:
        return None
    return Listening(stats.listening_since, frozenset(stats.interfaces))


def judge_snapshot(
    snap: Snapshot, configured: Iterable[VridKey] | None = None, now: float | None = None
) -> tuple[VridVerdict, ...]:
    """The wire verdicts of a snapshot: its routers, configured VRIDs, hold times and listening state.

    `configured` defaults to `configured_vrids(snap)`, `now` to `snap.time`. No routers table
    (wire source off): no verdicts.
    """
    if snap.wire_peers is None:
        return ()
    return judge(
        snap.wire_peers,
        snap.time if now is None else now,
        configured_vrids(snap) if configured is None else configured,
        listening=listening_from(snap.wire_stats),
        holds=vrid_holds(snap),
    )


def configured_vrids(snap: Snapshot) -> tuple[VridKey, ...]:
    """(interface, family, vrid) of every local VRRP instance: keepalived.conf, else keepalived's view."""
    config: KeepalivedConfig | None = snap.config
    if config is not None and config.instances:
        return config_vrids(config)
    out: set[VridKey] = set()
    for view in snap.instances or ():
        out.add((view.interface, view.family, view.vrid))
    return tuple(sorted(out))


def config_vrids(config: KeepalivedConfig | None) -> tuple[VridKey, ...]:
    """(interface, family, vrid) of every VRRP instance keepalived.conf configures (configured_vrids
    without a snapshot: what the wire source asks of the store's config alone when it has one)."""
    out: set[VridKey] = set()
    for inst in config.instances if config is not None else ():
        if inst.interface and inst.vrid is not None:
            out.add((inst.interface, inst.family, inst.vrid))
    return tuple(sorted(out))


def instance_hold(advert_int: float | None, version: int | None, family: str) -> float:
    """Hold time of a configured instance: keepalived's master down interval for its advert_int.

    VRRPv2 (keepalived's default for IPv4; IPv6 is always v3) adverts in whole seconds, at least 1:
    a fractional v2 advert_int is taken rounded up, so the hold is never too short.
    """
    if advert_int is None or advert_int <= 0:
        return DEFAULT_HOLD
    ver = version if version in (2, 3) else (3 if family == "inet6" else 2)
    interval = max(1.0, float(math.ceil(advert_int))) if ver == 2 else advert_int
    return hold_time(interval, ver)


def vrid_holds(snap: Snapshot) -> dict[VridKey, float]:
    """Hold time of every local VRID (keys as `configured_vrids`): keepalived.conf, else its view."""
    out: dict[VridKey, float] = {}
    config: KeepalivedConfig | None = snap.config
    if config is not None and config.instances:
        for inst in config.instances:
            if inst.interface and inst.vrid is not None:
                version = inst.version if inst.version is not None else config.vrrp_version
                key = (inst.interface, inst.family, inst.vrid)
                out[key] = max(out.get(key, 0.0), instance_hold(inst.advert_int, version, inst.family))
    elif snap.instances:
        for view in snap.instances:
            key = (view.interface, view.family, view.vrid)
            out[key] = max(out.get(key, 0.0), instance_hold(view.advert_int, view.version, view.family))
    return out
