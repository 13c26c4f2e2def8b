"""The fused split-brain verdict: one answer per VRID from every witness the exporter has.

Pure functions of a snapshot (and its time). No I/O.

No single witness sees every dual master (see the README's "which vantage point sees which failure"):

* ``wire``: the sniffer's verdict (`verdicts.wire.split_brain`): two routers advertising concurrently,
  or an incompatible router silenced by the other's adverts (presumed master). Any vantage point on
  the segment, observers included.
* ``address``: this node holds VIPs of the VRID (`Snapshot.addresses`, netlink) while another router
  is actively master for it on the wire: not this host, advertising now, with a run of at least two
  adverts (`run >= interval / 2`), the latest at least half an interval (and ADDRESS_GRACE) after
  this node's last address change (`Snapshot.addresses_changed`) and, once this node fell quiet (no
  advert of its own for 1.5 intervals), after its own last advert; and advertising some of the same
  VIPs (another cluster reusing the VRID for its own VIPs is a VRID collision, not a second holder).
  A normal preemption never shows it: the old master removes its VIPs on the new master's *first*
  advert (milliseconds); when this node is the one preempted, its own last advert is that moment,
  and the grace covers the lag before its VIP removal reaches the store; when it is the one
  preempting, it takes its VIPs as it sends its first advert, and the old master (still
  "advertising" by the RUN_GAP rule for 2.5 intervals, perhaps with one crossing advert) sends
  nothing after that. A SIGTERM failover removes the VIPs before the backup's first advert, and a
  crash failover leaves no keepalived to hold them unless it was a SIGKILL (then the VIP really is
  on two hosts). The price: any change of this host's addresses (another VRID's VIP) pauses the
  witness for half an interval, and it fires only from the other router's second advert,
  ADDRESS_GRACE after this node's last one. It catches the master silenced by dropped adverts, a
  hung (SIGSTOPped) keepalived and the VIP a SIGKILL left, on that node.
* ``liveness``: the local keepalived claims MASTER for the VRID (its state is current: not older
  than the last change of the local addresses, as for the VIP mismatch) but the wire has not heard
  this host advertise it for the VRID's hold time (counted from its last advert, or from the last
  change of its addresses if later: becoming MASTER adds the VIPs as the first advert goes out),
  while another router advertises it with some of the same VIPs (someone else took over, or its
  adverts silence ours). Never after this host's own priority-0 advert: it resigned (SIGTERM,
  FAULT), and a MASTER claim read before that (a dump) is stale. `silent_master` alone (no other
  router) is reported as `keepalived_master_silent` without calling it split brain.
* ``l2``: the ARP/ND witness (`Snapshot.l2`, `sources/l2.py`). Answerers are *other* hosts' MACs
  (a host does not hear its own replies): two distinct answerers, or two answers to one probe, is
  two holders from anywhere; one answer to a probe this node sent after its addresses last changed,
  while it holds the VIP itself, is two holders too.

`split_brain` is the OR of the witnesses. Also judged here: `silent_master` (above), `foreign`
(advertising routers that are none of ours: only knowable locally when the instance lists its
`unicast_peer`s; with multicast the shipped rule `KeepalivedForeignMaster` compares nodes) and
`dead_vips` (a master advertises the VRID but a completed probe of its VIP got no answer and this
node does not hold it: nobody serves the VIP, e.g. a foreign master made every keepalived BACKUP).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from ka_exporter.model import InstanceView, Snapshot, VipAnswers, VrrpState, WirePeer, canonical_ip
from ka_exporter.verdicts.vips import held_addresses
from ka_exporter.verdicts.wire import (
    DEFAULT_HOLD,
    MAX_CONCURRENT,
    PRESUMED_FOR,
    RUN_GAP,
    Listening,
    VridKey,
    VridVerdict,
    advertising,
    configured_vrids,
    hold_time,
    judge_snapshot,
    judge_vrid,
    listening_from,
    presumed_master,
    vrid_holds,
)

WITNESSES: tuple[str, ...] = ("wire", "address", "liveness", "l2")


@dataclass(frozen=True, slots=True)
class FusedVerdict:
    """Everything the exporter concludes about one (interface, family, vrid)."""

    interface: str
    family: str
    vrid: int
    witnesses: frozenset[str]  # which of WITNESSES say split brain
    silent_master: bool = False  # local keepalived claims MASTER, not heard advertising for the hold time
    foreign: tuple[str, ...] = ()  # advertising sources that are none of ours (unicast peers known)
    dead_vips: tuple[str, ...] = ()  # VIPs nobody answers for while a master advertises
    routers: tuple[str, ...] = ()  # "source priority N[ (this host)]" of the routers on the wire
    masters: int = 0  # the wire's count of routers advertising as master (verdicts.wire)

    @property
    def key(self) -> VridKey:
        return (self.interface, self.family, self.vrid)

    @property
    def split_brain(self) -> bool:
        return bool(self.witnesses)


def vrid_vips(snap: Snapshot, advertised: bool = False) -> dict[VridKey, frozenset[str]]:
    """Canonical VIPs of every local VRID: keepalived.conf, else keepalived's instance list (dumps or
    D-Bus). Excluded VIPs (`virtual_ipaddress_excluded`) are held like the others but not advertised:
    with `advertised`, only the VIPs the VRID's adverts carry."""
    out: dict[VridKey, set[str]] = {}
    if snap.config is not None and snap.config.instances:
        for inst in snap.config.instances:
            if inst.interface and inst.vrid is not None:
                key = (inst.interface, inst.family, inst.vrid)
                vips = (v.address for v in inst.vips if not (advertised and v.excluded))
                out.setdefault(key, set()).update(canonical_ip(v) for v in vips)
    elif snap.instances:
        for view in snap.instances:
            key = (view.interface, view.family, view.vrid)
            listed = view.vips if advertised else (*view.vips, *view.vips_excluded)
            out.setdefault(key, set()).update(canonical_ip(v) for v in listed)
    return {k: frozenset(v) for k, v in out.items()}


def ours(snap: Snapshot) -> dict[VridKey, frozenset[str]]:
    """Addresses allowed to advertise a VRID, for instances that name their unicast peers."""
    out: dict[VridKey, set[str]] = {}
    if snap.config is None:
        return {}
    for inst in snap.config.instances:
        if inst.interface and inst.vrid is not None and inst.unicast_peers:
            key = (inst.interface, inst.family, inst.vrid)
            allowed = out.setdefault(key, set())
            allowed.update(canonical_ip(p) for p in inst.unicast_peers)
            if inst.unicast_src_ip:
                allowed.add(canonical_ip(inst.unicast_src_ip))
    return {k: frozenset(v) for k, v in out.items()}


#: How long after this node's own last advert (once it fell quiet) or address change another router must
#: still advertise before this node's VIPs count as a second holder: covers netlink and scheduling lag
#: on a loaded host (the old master's VIP removal reaching the store after the new master's adverts).
ADDRESS_GRACE = 0.25


def active_other(peers: Sequence[WirePeer], now: float, since: float | None = None) -> list[WirePeer]:
    """Routers other than this host that are master on the wire now, each with two adverts or more,
    the latest at least max(half an interval, ADDRESS_GRACE) after `since` (this node's own last advert
    or address change, whichever is later)."""
    after = -math.inf if since is None else since
    return [
        p
        for p in peers
        if not p.local
        and advertising(p, now)
        and p.last_seen - p.first_seen >= p.interval / 2.0
        and p.last_seen - after >= max(p.interval / 2.0, ADDRESS_GRACE)
    ]


@dataclass(frozen=True, slots=True)
class _Vrid:
    """What the verdict of one VRID reads of keepalived.conf (else of keepalived's instance list)."""

    mine: frozenset[str] = frozenset()  # its VIPs, canonical, excluded ones included
    bare: bool = True  # its adverts carry no VIP (none known, or all excluded)
    allow: frozenset[str] | None = None  # who may advertise it (its unicast peers); None: not known
    hold: float = DEFAULT_HOLD
    configured: bool = False  # a local VRID (`configured_vrids`)


_NOT_LOCAL = _Vrid()


@dataclass(frozen=True, slots=True)
class _World:
    """What every VRID's verdict reads of a snapshot besides its own records."""

    now: float
    instances_known: bool  # snap.instances is not None
    wire_known: bool  # snap.wire_peers is not None
    stopped: bool  # the process source says keepalived is not running
    fresh: bool  # keepalived's state is at least as fresh as the last change of the addresses
    addresses_known: bool
    held: frozenset[str]  # this node's addresses, canonical
    changed: float | None  # snap.addresses_changed
    listening: Listening | None


def _fresh(snap: Snapshot) -> bool:
    fresh = snap.state_fresh_since()
    return fresh is not None and not (snap.addresses_changed is not None and fresh < snap.addresses_changed)


def _world(snap: Snapshot, held: frozenset[str] | None = None) -> _World:
    if held is None:
        held = held_addresses(snap.addresses) if snap.addresses is not None else frozenset()
    return _World(
        now=snap.time,
        instances_known=snap.instances is not None,
        wire_known=snap.wire_peers is not None,
        stopped=snap.process is not None and not snap.process.running,
        fresh=_fresh(snap),
        addresses_known=snap.addresses is not None,
        held=held,
        changed=snap.addresses_changed,
        listening=listening_from(snap.wire_stats),
    )


# The liveness rule (`silent_master`) in two steps: what does not read the addresses' change time or the
# state's freshness (`_silent_stage`: None when it cannot hold whatever they are, else this host's
# last advert), and what does (`_silent`). A memo re-checks the second alone when only they moved.
SilentStage = tuple[float | None] | None


def _silent_stage(
    w: _World, key: VridKey, claims: Sequence[float | None], mine: Sequence[WirePeer], hold: float
) -> SilentStage:
    if not w.instances_known or not w.wire_known or w.stopped or not claims:
        return None
    now = w.now
    if any(t is not None and now - t <= hold for t in claims):
        return None  # just became MASTER: its first adverts may still be on their way
    listening = w.listening
    if listening is None or not listening.covers(key[0]) or listening.listened(now) < hold:
        return None
    if any(p.priority == 0 for p in mine):
        return None  # its latest advert resigned (SIGTERM, FAULT): a MASTER claim is from before that
    return (max((p.last_seen for p in mine), default=None),)


def _silent(stage: SilentStage, fresh: bool, changed: float | None, now: float, hold: float) -> bool:
    if stage is None or not fresh:
        return False  # not a claim, or the state is older than the last address change: not current
    last = stage[0]
    if changed is not None and (last is None or changed > last):
        last = changed  # it took its VIPs then: its claim is no older than that
    return last is None or now - last > hold


def silent_master(
    snap: Snapshot,
    key: VridKey,
    peers: Sequence[WirePeer],
    hold: float,
    masters: Mapping[VridKey, Sequence[InstanceView]] | None = None,
) -> bool:
    """Local keepalived claims MASTER for `key`, but this host was not heard advertising it for `hold`.

    `masters`: the MASTER instances by VRID (`master_claims(snap)`), when judging many VRIDs."""
    w = _world(snap, frozenset())
    claims = tuple(
        v.last_transition for v in (master_claims(snap) if masters is None else masters).get(key, ())
    )
    stage = _silent_stage(w, key, claims, [p for p in peers if p.local], hold)
    return _silent(stage, w.fresh, w.changed, w.now, hold)


def master_claims(snap: Snapshot) -> dict[VridKey, list[InstanceView]]:
    """The instances keepalived reports MASTER, by VRID."""
    out: dict[VridKey, list[InstanceView]] = {}
    for v in snap.instances or ():
        if v.state == VrrpState.MASTER:
            out.setdefault((v.interface, v.family, v.vrid), []).append(v)
    return out


def l2_witness(answers: Sequence[VipAnswers], held: frozenset[str], changed: float | None) -> bool:
    """Two holders of one VIP on the link (see the module docstring)."""
    for a in answers:
        probe = a.last_probe_answers or 0
        if len(a.answerers) >= 2 or probe >= 2:
            return True
        recent = a.last_probe is not None and (changed is None or a.last_probe >= changed)
        if a.vip in held and probe >= 1 and recent:
            return True
    return False


def dead_vips(
    answers: Sequence[VipAnswers], held: frozenset[str], peers: Sequence[WirePeer], now: float
) -> tuple[str, ...]:
    """VIPs a completed probe found unanswered while some router advertises the VRID."""
    if not any(advertising(p, now) for p in peers):
        return ()
    return tuple(
        sorted(
            a.vip
            for a in answers
            if a.probing and a.last_probe_answers == 0 and not a.answerers and a.vip not in held
        )
    )


Since = tuple[float | None, bool, tuple[WirePeer, ...]]  # this host's last advert, talking, candidates


def _others(since_of: Since, changed: float | None) -> bool:
    """Does a candidate (another router master on the wire, with a run of two adverts, sharing the
    VIPs) count as a second holder after `since` (see `active_other`)?"""
    mine_last, talking, candidates = since_of
    since = changed
    if mine_last is not None and not talking and (since is None or mine_last > since):
        since = mine_last
    after = -math.inf if since is None else since
    return any(p.last_seen - after >= max(p.interval / 2.0, ADDRESS_GRACE) for p in candidates)


class _Judged:
    """One VRID's verdict and what it read, for `Memo`: the parts that depend on the addresses' change
    time or the state's freshness (to check them alone when only those moved), and the instant
    from which time alone could change it (`edge`)."""

    __slots__ = (
        "answers",
        "edge",
        "held_mine",
        "l2",
        "others",
        "serial",
        "silent",
        "since",
        "stage",
        "static",
        "verdict",
        "wire",
    )

    def __init__(self) -> None:
        self.verdict: FusedVerdict
        self.wire: VridVerdict | None = None
        self.static = _NOT_LOCAL
        self.stage: SilentStage = None
        self.silent = False
        self.since: Since | None = None
        self.others = False
        self.answers: tuple[VipAnswers, ...] = ()
        self.held_mine: frozenset[str] = frozenset()
        self.l2 = False
        self.edge = math.inf
        self.serial = 0

    def reads_changed(self) -> bool:
        return self.stage is not None or self.since is not None or bool(self.answers)

    def still(self, w: _World) -> bool:
        """Is the verdict unchanged with `w`'s freshness and address change time (nothing else moved)?"""
        hold = self.static.hold
        if self.stage is not None and _silent(self.stage, w.fresh, w.changed, w.now, hold) != self.silent:
            return False
        if self.since is not None and _others(self.since, w.changed) != self.others:
            return False
        return not self.answers or l2_witness(self.answers, self.held_mine, w.changed) == self.l2


#: A time-driven edge is taken this much early (floating-point rounding of `last + hold` against the
#: verdicts' `now - last <= hold`): a re-judge a microsecond early is harmless, one late is stale.
EDGE_EARLY = 1e-6


def _judge_one(
    w: _World,
    key: VridKey,
    *,
    st: _Vrid,
    group: Sequence[WirePeer],
    claims: Sequence[float | None],
    answers: tuple[VipAnswers, ...],
    v: VridVerdict | None,
) -> _Judged:
    """The fused verdict of one VRID (see the module docstring), with what it read."""
    now = w.now
    mine = st.mine
    out = _Judged()
    out.static, out.wire, out.answers = st, v, answers
    witnesses: set[str] = set()
    if v is not None and v.split_brain:
        witnesses.add("wire")
    held_mine = out.held_mine = mine & w.held

    # Only routers advertising (some of) this VRID's VIPs hold them: another cluster reusing the VRID
    # with its own VIPs (a VRID collision, `keepalived_wire_conflict{kind="vips"}`) is not a second
    # holder of ours. VIPs not known (no config): any router counts. An instance whose VIPs are all
    # excluded advertises none: a router advertising none is then one of ours.
    def shares(p: WirePeer) -> bool:
        if not mine or any(canonical_ip(a) in mine for a in p.addresses):
            return True
        return st.bare and not p.addresses

    mine_rows = [p for p in group if p.local]
    stage = out.stage = _silent_stage(w, key, claims, mine_rows, st.hold)
    silent = out.silent = _silent(stage, w.fresh, w.changed, now, st.hold)
    if (w.addresses_known and held_mine) or silent:
        # This node's own adverts: while it still advertises (within 1.5 of its intervals) it is
        # master by its own word, and holding its VIPs while another router advertises is two
        # holders (this also holds the verdict through a lost advert of the other, which the wire's
        # runs may not); once it fell quiet, the other router must advertise on for the grace after
        # its last advert (a preempted node's VIP removal may reach the store late).
        mine_last = max((p.last_seen for p in mine_rows), default=None)
        talking = any(p.priority > 0 and now - p.last_seen <= 1.5 * p.interval for p in mine_rows)
        candidates = tuple(
            p
            for p in group
            if not p.local
            and advertising(p, now)
            and p.last_seen - p.first_seen >= p.interval / 2.0
            and shares(p)
        )
        if candidates:
            out.since = (mine_last, talking, candidates)
            out.others = _others(out.since, w.changed)
        # (pairwise: bounded like the wire's own search; a crowd on one VRID is split brain anyway)
        others_or_presumed = out.others or (
            len(group) <= MAX_CONCURRENT
            and any(not p.local and shares(p) and presumed_master(p, group, now) for p in group)
        )
        if w.addresses_known and held_mine and others_or_presumed:
            witnesses.add("address")
        if silent and others_or_presumed:
            witnesses.add("liveness")
    if answers and l2_witness(answers, held_mine, w.changed):
        out.l2 = True
        witnesses.add("l2")
    foreign: tuple[str, ...] = ()
    if st.allow is not None:
        allow = st.allow
        foreign = tuple(
            sorted(
                p.source
                for p in group
                if not p.local and advertising(p, now) and canonical_ip(p.source) not in allow
            )
        )
    out.verdict = FusedVerdict(
        interface=key[0],
        family=key[1],
        vrid=key[2],
        witnesses=frozenset(witnesses),
        silent_master=silent,
        foreign=foreign,
        dead_vips=dead_vips(answers, held_mine, group, now),
        routers=tuple(
            sorted(f"{p.source}{' (this host)' if p.local else ''} priority {p.priority}" for p in group)
        ),
        masters=v.masters if v is not None else 0,
    )
    out.edge = _edge(w, st.hold, group, claims)
    return out


def _edge(w: _World, hold: float, group: Sequence[WirePeer], claims: Sequence[float | None]) -> float:
    """The first instant after `w.now` at which time alone can change a VRID's verdicts (wire and
    fused): every threshold they compare `now` with (a superset: a re-judge at a threshold that
    changes nothing is only work)."""
    now = w.now
    times: list[float] = []
    for p in group:
        last, interval = p.last_seen, p.interval
        times += (
            last + hold_time(interval, p.version),  # present, a master (wire)
            last + RUN_GAP * interval,  # advertising
            last + PRESUMED_FOR,  # presumed master
            last + 1.5 * interval,  # this host still talking
            last + hold,  # this host silent for the hold time
        )
    if w.listening is not None:
        times.append(w.listening.since + hold)  # listened for a hold time (no master, liveness)
    times += (t + hold for t in claims if t is not None)  # a MASTER claim no longer fresh
    if w.changed is not None:
        times.append(w.changed + hold)  # silent since its VIPs were taken
    return min((t - EDGE_EARLY for t in times if t + EDGE_EARLY > now), default=math.inf)


def _statics(snap: Snapshot) -> dict[VridKey, _Vrid]:
    """`_Vrid` of every VRID keepalived.conf (else keepalived's instance list) knows."""
    vips = vrid_vips(snap)
    sent = vrid_vips(snap, advertised=True)
    allowed = ours(snap)
    holds = vrid_holds(snap)
    conf = set(configured_vrids(snap))
    return {
        key: _Vrid(
            vips.get(key, frozenset()),
            not sent.get(key),
            allowed.get(key),
            holds.get(key, DEFAULT_HOLD),
            key in conf,
        )
        for key in {*vips, *allowed, *holds, *conf}
    }


def _claims(snap: Snapshot) -> dict[VridKey, tuple[float | None, ...]]:
    """What the verdicts read of the MASTER claims: their last transitions, by VRID."""
    return {key: tuple(v.last_transition for v in views) for key, views in master_claims(snap).items()}


def _static_of(v: InstanceView) -> tuple[object, ...]:
    # What `_statics` reads of an instance (when keepalived.conf does not list them).
    return (v.interface, v.family, v.vrid, v.vips, v.vips_excluded, v.advert_int, v.version)


def _same_statics(old: object, new: tuple[InstanceView, ...] | None) -> bool:
    """Do two instance lists give the same `_statics`? (by position: the store's unchanged views are
    the same objects, so only the new ones are compared)"""
    if not isinstance(old, tuple) or new is None or len(old) != len(new):
        return False
    return all(a is b or _static_of(a) == _static_of(b) for a, b in zip(old, new, strict=True))


def _view_key(v: InstanceView) -> VridKey:
    return (v.interface, v.family, v.vrid)


def _groups(peers: Sequence[WirePeer]) -> dict[VridKey, tuple[WirePeer, ...]]:
    out: dict[VridKey, list[WirePeer]] = {}
    for p in peers:
        out.setdefault((p.interface, p.family, p.vrid), []).append(p)
    return {k: tuple(v) for k, v in out.items()}


def _by_vip(l2: Sequence[VipAnswers] | None) -> dict[str, tuple[VipAnswers, ...]]:
    out: dict[str, list[VipAnswers]] = {}
    for a in l2 or ():
        out.setdefault(canonical_ip(a.vip), []).append(a)
    return {k: tuple(v) for k, v in out.items()}


def _answers(
    by_vip: Mapping[str, Sequence[VipAnswers]], mine: frozenset[str], key: VridKey
) -> tuple[VipAnswers, ...]:
    return tuple(a for vip in sorted(mine) for a in by_vip.get(vip, ()) if a.interface == key[0])


def judge(
    snap: Snapshot,
    configured: Sequence[VridKey] | None = None,
    wire_verdicts: Sequence[VridVerdict] | None = None,
    memo: Memo | None = None,
) -> tuple[FusedVerdict, ...]:
    """The fused verdict of every VRID seen on the wire or configured locally, sorted by key.

    `wire_verdicts`: `judge_snapshot(snap, configured)` when the caller has it already. `memo`: the
    caller's `Memo`, which judges again only the VRIDs whose verdict can have moved since its last
    snapshot (the same verdicts: it is only faster)."""
    if memo is not None and configured is None and wire_verdicts is None:
        return memo.judge(snap)
    w = _world(snap)
    keys = set(configured_vrids(snap) if configured is None else configured)
    judged = judge_snapshot(snap, keys) if wire_verdicts is None else wire_verdicts
    wire = {v.key: v for v in judged}
    keys |= set(wire)
    groups = _groups(snap.wire_peers or ())
    statics = _statics(snap)
    claims = _claims(snap)
    by_vip = _by_vip(snap.l2)
    out: list[FusedVerdict] = []
    for key in sorted(keys):
        st = statics.get(key, _NOT_LOCAL)
        answers = _answers(by_vip, st.mine, key)
        got = _judge_one(
            w,
            key,
            st=st,
            group=groups.get(key, ()),
            claims=claims.get(key, ()),
            answers=answers,
            v=wire.get(key),
        )
        out.append(got.verdict)
    return tuple(out)


_UNSET: object = object()


def _l2_basis(answers: tuple[VipAnswers, ...]) -> tuple[object, ...]:
    # What the verdicts read of the L2 witness's records (not its counters and timestamps).
    return tuple(
        (a.vip, a.interface, a.answerers, a.last_probe_answers, a.last_probe, a.probing) for a in answers
    )


class Memo:
    """`judge(snap)` over successive snapshots, judging again only the VRIDs whose verdict can have
    moved: those whose own inputs changed (their routers' records, keepalived.conf's entry, their
    MASTER claims, this node's holding of their VIPs, the L2 witness's records of their VIPs), those
    that read something every VRID shares that moved (the time of the last address change, the
    state's freshness: checked alone first, `_Judged.still`), and those whose next time-driven edge
    (a hold time running out, a run ending: `_edge`) the snapshot's time reached. Everything else a
    snapshot holds that a verdict reads (listening, keepalived running, a section known or not) moving
    judges every VRID again, as does time going backwards.

    The verdicts are always those `judge(snap)` gives for the same snapshot (tests/test_fused_verdicts
    compares them on random sequences); `wire` holds the wire verdicts of the same VRIDs
    (`judge_snapshot(snap)`), judged with them. One caller at a time (not thread-safe).
    """

    def __init__(self) -> None:
        self._config: object = _UNSET
        self._static_views: object = _UNSET
        self._instances: object = _UNSET
        self._peers: object = _UNSET
        self._addresses: object = _UNSET
        self._l2: object = _UNSET
        self._world: _World | None = None
        self._statics: dict[VridKey, _Vrid] = {}
        self._index: dict[str, set[VridKey]] = {}  # VIP -> the VRIDs whose VIPs include it
        self._claims: dict[VridKey, tuple[float | None, ...]] = {}
        self._views_at: dict[VridKey, list[int]] = {}  # the places of each VRID's instances
        self._groups: dict[VridKey, tuple[WirePeer, ...]] = {}
        self._held: frozenset[str] = frozenset()
        self._by_vip: dict[str, tuple[VipAnswers, ...]] = {}
        self._l2_bases: dict[str, tuple[object, ...]] = {}
        self._entries: dict[VridKey, _Judged] = {}
        self._readers: set[VridKey] = set()  # entries whose verdict read the address change time
        self._heap: list[tuple[float, int, VridKey]] = []
        self._serial = 0
        self._keys: list[VridKey] = []
        self._at: dict[VridKey, int] = {}  # a VRID's place in _keys
        self._verdicts: list[FusedVerdict] = []  # in _keys' order
        self._wires: list[VridVerdict | None] = []
        self._out: tuple[FusedVerdict, ...] = ()
        self.wire: tuple[VridVerdict, ...] = ()  # the wire verdicts of the last snapshot judged
        self.judged = 0  # VRIDs judged, in all (tests and benches)
        # What callers make of a VRID's verdicts, kept with them (`conditions`: its conditions, reused
        # while its verdict objects are the same ones); bounded by the VRIDs judged (dropped with them).
        self.kept: dict[object, tuple[object, ...]] = {}

    @property
    def next_edge(self) -> float:
        """The first instant (snapshot time) at which time alone can change a verdict of the last
        snapshot judged: until then, the same records give the same verdicts."""
        edge = self._heap[0][0] if self._heap else math.inf
        w = self._world
        if w is not None and w.changed is not None and w.changed > w.now:
            edge = min(edge, w.changed)  # a state current "now" becomes as fresh as the addresses then
        return edge

    def judge(self, snap: Snapshot) -> tuple[FusedVerdict, ...]:
        """`judge(snap)`, judging only what can have moved since the last call (see the class)."""
        dirty: set[VridKey] = set()
        keys_moved = self._records(snap, dirty)
        w = _world(snap, self._held)
        everything = self._shared(w, dirty)
        heap = self._heap
        while heap and heap[0][0] <= w.now:
            _edge_at, serial, key = heapq.heappop(heap)
            got = self._entries.get(key)
            if got is not None and got.serial == serial:
                dirty.add(key)
        if keys_moved or everything:
            self._rekey(w)
        if everything:
            todo = self._keys
        elif keys_moved:
            entries = self._entries
            todo = [k for k in self._keys if k in dirty or k not in entries]
        else:
            at = self._at
            todo = [k for k in dirty if k in at]
        moved = [key for key in todo if self._judge(w, key)]
        entries = self._entries
        if keys_moved or everything:
            self._verdicts = [entries[k].verdict for k in self._keys]
            self._wires = [entries[k].wire for k in self._keys]
        elif moved:  # the same VRIDs: only the moved ones' places change
            at = self._at
            for key in moved:
                got = entries[key]
                self._verdicts[at[key]] = got.verdict
                self._wires[at[key]] = got.wire
        if keys_moved or everything or moved:
            self._out = tuple(self._verdicts)
            # (every VRID has its wire verdict while the wire is known, none otherwise)
            self.wire = cast("tuple[VridVerdict, ...]", tuple(self._wires)) if w.wire_known else ()
        if len(heap) > 4 * len(entries) + 64:  # edges of entries judged again since: drop them
            self._heap = [(e.edge, e.serial, k) for k, e in entries.items() if e.edge < math.inf]
            heapq.heapify(self._heap)
        return self._out

    def _records(self, snap: Snapshot, dirty: set[VridKey]) -> bool:
        """Take the snapshot's records (each compared by identity first: the store hands out the same
        objects while they have not changed), adding the VRIDs whose own inputs moved to `dirty`.
        True when the set of VRIDs may have changed."""
        keys_moved = False
        config = snap.config
        views = None if config is not None and config.instances else snap.instances
        if (
            config is self._config
            and views is not self._static_views
            and _same_statics(self._static_views, views)
        ):
            self._static_views = views  # new view objects, but none moved in what the statics read
        if config is not self._config or views is not self._static_views:
            statics = _statics(snap)
            if statics != self._statics:
                old = self._statics
                dirty.update(k for k in {*old, *statics} if old.get(k) != statics.get(k))
                self._statics = statics
                self._index = {}
                for key, st in statics.items():
                    for vip in st.mine:
                        self._index.setdefault(vip, set()).add(key)
                keys_moved = True
            self._config, self._static_views = config, views
        if snap.instances is not self._instances:
            self._take_claims(snap, dirty)
        if snap.wire_peers is not self._peers:
            groups, old_groups = _groups(snap.wire_peers or ()), self._groups
            keys_moved = keys_moved or groups.keys() != old_groups.keys()
            dirty.update(k for k in {*old_groups, *groups} if old_groups.get(k) != groups.get(k))
            self._groups, self._peers = groups, snap.wire_peers
        if snap.addresses is not self._addresses:
            held = held_addresses(snap.addresses) if snap.addresses is not None else frozenset()
            for vip in held ^ self._held:
                dirty.update(self._index.get(vip, ()))
            self._held, self._addresses = held, snap.addresses
        if snap.l2 is not self._l2:
            by_vip = _by_vip(snap.l2)
            bases = {vip: _l2_basis(a) for vip, a in by_vip.items()}
            old_bases = self._l2_bases
            for vip in {*old_bases, *bases}:
                if old_bases.get(vip) != bases.get(vip):
                    dirty.update(self._index.get(vip, ()))
            self._by_vip, self._l2_bases, self._l2 = by_vip, bases, snap.l2
        return keys_moved

    def _take_claims(self, snap: Snapshot, dirty: set[VridKey]) -> None:
        """The MASTER claims of the snapshot's instances. The store hands out the same view objects
        while they did not change: when only some are new objects (one instance's transition), only
        their VRIDs' claims are looked at again."""
        old, new = self._instances, snap.instances
        self._instances = new
        if isinstance(old, tuple) and new is not None and len(old) == len(new) and self._views_at:
            changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a is not b]
            if all(_view_key(old[i]) == _view_key(new[i]) for i in changed):
                claims = self._claims
                for key in {_view_key(new[i]) for i in changed}:
                    mine = tuple(
                        v.last_transition
                        for j in self._views_at[key]
                        if (v := new[j]).state == VrrpState.MASTER
                    )
                    if mine != claims.get(key, ()):
                        dirty.add(key)
                        if mine:
                            claims[key] = mine
                        else:
                            claims.pop(key, None)
                return
        claims, old_claims = _claims(snap), self._claims
        if claims != old_claims:
            dirty.update(k for k in {*old_claims, *claims} if old_claims.get(k) != claims.get(k))
            self._claims = claims
        self._views_at = {}
        for j, v in enumerate(new or ()):
            self._views_at.setdefault(_view_key(v), []).append(j)

    def _shared(self, w: _World, dirty: set[VridKey]) -> bool:
        """Take what every VRID reads (`_World`); True when every VRID is to be judged again."""
        old = self._world
        self._world = w
        if (
            old is None
            or w.now < old.now
            or (w.instances_known, w.wire_known, w.stopped, w.addresses_known, w.listening)
            != (old.instances_known, old.wire_known, old.stopped, old.addresses_known, old.listening)
            or (old.changed is not None and (w.changed is None or w.changed < old.changed))
        ):
            return True
        if (w.changed, w.fresh) != (old.changed, old.fresh):
            for key in self._readers:
                if key in dirty:
                    continue
                got = self._entries[key]
                if not got.still(w):
                    dirty.add(key)
                elif got.stage is not None and w.changed is not None:
                    # Unchanged, but the liveness rule now counts from the new change time too.
                    edge = w.changed + got.static.hold
                    if edge + EDGE_EARLY > w.now and edge - EDGE_EARLY < got.edge:
                        got.edge = edge - EDGE_EARLY
                        heapq.heappush(self._heap, (got.edge, got.serial, key))
        return False

    def _rekey(self, w: _World) -> None:
        conf = [k for k, st in self._statics.items() if st.configured]
        keys = sorted({*conf, *self._groups}) if w.wire_known else sorted(conf)
        if keys != self._keys:
            gone = set(self._keys).difference(keys)
            for key in gone:
                self._entries.pop(key, None)
            if self.kept:
                self.kept = {
                    k: v for k, v in self.kept.items() if not (isinstance(k, tuple) and k[-1] in gone)
                }
            self._readers -= gone
            self._keys = keys
            self._at = {k: i for i, k in enumerate(keys)}

    def _judge(self, w: _World, key: VridKey) -> bool:
        """Judge one VRID again; True if its verdicts moved (equal ones keep their objects, so a row
        whose verdict did not move is the same object as before)."""
        st = self._statics.get(key, _NOT_LOCAL)
        group = self._groups.get(key, ())
        wire = (
            judge_vrid(key, group, w.now, st.configured, listening=w.listening, hold=st.hold)
            if w.wire_known
            else None
        )
        answers = _answers(self._by_vip, st.mine, key)
        got = _judge_one(
            w, key, st=st, group=group, claims=self._claims.get(key, ()), answers=answers, v=wire
        )
        old = self._entries.get(key)
        moved = True
        if old is not None:
            if got.verdict == old.verdict:
                got.verdict = old.verdict
            if got.wire == old.wire:
                got.wire = old.wire
            moved = got.verdict is not old.verdict or got.wire is not old.wire
        self._serial += 1
        got.serial = self._serial
        self._entries[key] = got
        self.judged += 1
        if got.reads_changed():
            self._readers.add(key)
        else:
            self._readers.discard(key)
        if got.edge < math.inf:
            heapq.heappush(self._heap, (got.edge, got.serial, key))
        return moved
