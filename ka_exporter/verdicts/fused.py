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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ka_exporter.model import InstanceView, Snapshot, VipAnswers, VrrpState, WirePeer, canonical_ip
from ka_exporter.verdicts.vips import held_addresses
from ka_exporter.verdicts.wire import (
    DEFAULT_HOLD,
    MAX_CONCURRENT,
    VridKey,
    VridVerdict,
    advertising,
    configured_vrids,
    judge_snapshot,
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


def silent_master(
    snap: Snapshot,
    key: VridKey,
    peers: Sequence[WirePeer],
    hold: float,
    masters: Mapping[VridKey, Sequence[InstanceView]] | None = None,
) -> bool:
    """Local keepalived claims MASTER for `key`, but this host was not heard advertising it for `hold`.

    `masters`: the MASTER instances by VRID (`master_claims(snap)`), when judging many VRIDs."""
    if snap.instances is None or snap.wire_peers is None:
        return False
    if snap.process is not None and not snap.process.running:
        return False
    claims = (master_claims(snap) if masters is None else masters).get(key, ())
    if not claims:
        return False
    fresh = snap.state_fresh_since()
    if fresh is None or (snap.addresses_changed is not None and fresh < snap.addresses_changed):
        return False  # the state is older than the last address change: not a current claim
    now = snap.time
    if any(v.last_transition is not None and now - v.last_transition <= hold for v in claims):
        return False  # just became MASTER: its first adverts may still be on their way
    listening = listening_from(snap.wire_stats)
    if listening is None or not listening.covers(key[0]) or listening.listened(now) < hold:
        return False
    mine = [p for p in peers if p.local]
    if any(p.priority == 0 for p in mine):
        return False  # its latest advert resigned (SIGTERM, FAULT): a MASTER claim is from before that
    last = max((p.last_seen for p in mine), default=None)
    if snap.addresses_changed is not None and (last is None or snap.addresses_changed > last):
        last = snap.addresses_changed  # it took its VIPs then: its claim is no older than that
    return last is None or now - last > hold


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


def judge(
    snap: Snapshot,
    configured: Sequence[VridKey] | None = None,
    wire_verdicts: Sequence[VridVerdict] | None = None,
) -> tuple[FusedVerdict, ...]:
    """The fused verdict of every VRID seen on the wire or configured locally, sorted by key.

    `wire_verdicts`: `judge_snapshot(snap, configured)` when the caller has it already."""
    now = snap.time
    keys = set(configured_vrids(snap) if configured is None else configured)
    judged = judge_snapshot(snap, keys) if wire_verdicts is None else wire_verdicts
    wire = {v.key: v for v in judged}
    keys |= set(wire)
    peers: dict[VridKey, list[WirePeer]] = {}
    for p in snap.wire_peers or ():
        peers.setdefault((p.interface, p.family, p.vrid), []).append(p)
    vips = vrid_vips(snap)
    sent = vrid_vips(snap, advertised=True)
    allowed = ours(snap)
    holds: Mapping[VridKey, float] = vrid_holds(snap)
    claims = master_claims(snap)
    held = held_addresses(snap.addresses) if snap.addresses is not None else frozenset()
    by_vip: dict[str, list[VipAnswers]] = {}
    for a in snap.l2 or ():
        by_vip.setdefault(canonical_ip(a.vip), []).append(a)
    out: list[FusedVerdict] = []
    for key in sorted(keys):
        group = peers.get(key, [])
        mine = vips.get(key, frozenset())
        witnesses: set[str] = set()
        v = wire.get(key)
        if v is not None and v.split_brain:
            witnesses.add("wire")

        # Only routers advertising (some of) this VRID's VIPs hold them: another cluster reusing the VRID
        # with its own VIPs (a VRID collision, `keepalived_wire_conflict{kind="vips"}`) is not a second
        # holder of ours. VIPs not known (no config): any router counts. An instance whose VIPs are all
        # excluded advertises none: a router advertising none is then one of ours.
        def shares(p: WirePeer, vips: frozenset[str] = mine, bare: bool = not sent.get(key)) -> bool:
            if not vips or any(canonical_ip(a) in vips for a in p.addresses):
                return True
            return bare and not p.addresses

        # This node's own adverts: while it still advertises (within 1.5 of its intervals) it is master
        # by its own word, and holding its VIPs while another router advertises is two holders (this
        # also holds the verdict through a lost advert of the other, which the wire's runs may not);
        # once it fell quiet, the other router must advertise on for the grace after its last advert
        # (a preempted node's VIP removal may reach the store late).
        mine_rows = [p for p in group if p.local]
        mine_last = max((p.last_seen for p in mine_rows), default=None)
        talking = any(p.priority > 0 and now - p.last_seen <= 1.5 * p.interval for p in mine_rows)
        since = snap.addresses_changed
        if mine_last is not None and not talking and (since is None or mine_last > since):
            since = mine_last
        others = [p for p in active_other(group, now, since) if shares(p)]
        # (pairwise: bounded like the wire's own search; a crowd on one VRID is split brain anyway)
        others_or_presumed = bool(others) or (
            len(group) <= MAX_CONCURRENT
            and any(not p.local and shares(p) and presumed_master(p, group, now) for p in group)
        )
        if snap.addresses is not None and mine & held and others_or_presumed:
            witnesses.add("address")
        silent = silent_master(snap, key, group, holds.get(key, DEFAULT_HOLD), claims)
        if silent and others_or_presumed:
            witnesses.add("liveness")
        answers = [a for vip in sorted(mine) for a in by_vip.get(vip, ()) if a.interface == key[0]]
        if answers and l2_witness(answers, held, snap.addresses_changed):
            witnesses.add("l2")
        allow = allowed.get(key)
        foreign: tuple[str, ...] = ()
        if allow is not None:
            foreign = tuple(
                sorted(
                    p.source
                    for p in group
                    if not p.local and advertising(p, now) and canonical_ip(p.source) not in allow
                )
            )
        out.append(
            FusedVerdict(
                interface=key[0],
                family=key[1],
                vrid=key[2],
                witnesses=frozenset(witnesses),
                silent_master=silent,
                foreign=foreign,
                dead_vips=dead_vips(answers, held, group, now),
                routers=tuple(
                    sorted(
                        f"{p.source}{' (this host)' if p.local else ''} priority {p.priority}" for p in group
                    )
                ),
                masters=v.masters if v is not None else 0,
            )
        )
    return tuple(out)
