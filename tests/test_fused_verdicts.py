"""The silent-master rule of the wire verdict and the fused split-brain verdict, on plain data.

Timelines are judged every 20 ms of simulated time, as a watchdog polling fast would see them.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from ka_exporter.model import (
    ConfInstance,
    ConfVip,
    InstanceView,
    KeepalivedConfig,
    LocalAddress,
    ProcessInfo,
    Snapshot,
    SourceHealth,
    VipAnswers,
    VrrpState,
    WirePeer,
    WireStats,
)
from ka_exporter.verdicts import conditions
from ka_exporter.verdicts.fused import FusedVerdict, Memo, judge
from ka_exporter.verdicts.wire import PRESUMED_FOR, judge_snapshot, split_brain
from tests.test_wire_verdicts import KEY, adv, every, replay, split_times

VIP = "10.0.0.100"
ME, PEER = "10.0.0.1", "10.0.0.2"
AUTH_A, AUTH_B = (1, "digest-a"), (1, "digest-b")


# -- the wire: a master silenced by adverts it drops stays presumed master -------------------------


def alternating(period: float, until: float) -> list:  # type: ignore[type-arg]
    """Two masters with different passwords that silence each other for `period` seconds in turn."""
    out = []
    t, who = 0.0, 0
    while t < until:
        src, auth = (ME, AUTH_A) if who == 0 else (PEER, AUTH_B)
        out += every(src, t, min(t + period, until) - 0.5, auth=auth)
        t += period
        who ^= 1
    return out


def test_mismatched_masters_alternating_with_long_silences_are_split_brain_at_every_poll() -> None:
    # Both start at once (a restart after a password change): 6 s turns, each silent for 6 s.
    tl = replay(alternating(6.0, 40.0), until=40.0)
    wrong = [t for t, v in tl if t >= 6.0 and t <= 39.5 and not (v and v.split_brain)]
    assert wrong == []


def test_interval_mismatch_slower_master_silent_for_good_stays_split_until_the_bound() -> None:
    fast = every(PEER, 0.0, 400.0, interval=1.0)
    slow = every(ME, 0.0, 4.0, interval=2.0)  # re-armed by the 1 s adverts from 4 s on: never speaks again
    tl = replay([*fast, *slow], until=320.0, start=0.0)
    during = [t for t, v in tl if 2.0 <= t <= 4.0 + PRESUMED_FOR - 0.1 and not (v and v.split_brain)]
    assert during == []
    assert not any(v and v.split_brain for t, v in tl if t > 4.0 + PRESUMED_FOR + 0.1)


def test_a_faster_incompatible_router_does_not_explain_silence_of_a_slower_one() -> None:
    # The silent router has the shorter interval: the other's adverts cannot have kept it quiet.
    tl = replay([*every(ME, 0.0, 3.0, interval=1.0), *every(PEER, 0.0, 30.0, interval=2.0)], until=30.0)
    assert not any(v and v.split_brain for t, v in tl if t > 3.0 + 2.5 + 0.05)


def test_priority_zero_ends_the_presumption_at_once() -> None:
    fast = every(PEER, 0.0, 30.0, interval=1.0)
    slow = [*every(ME, 0.0, 4.0, interval=2.0), adv(ME, 10.0, prio=0, interval=2.0)]
    tl = replay([*fast, *slow], until=30.0)
    assert all(v and v.split_brain for t, v in tl if 2.0 <= t < 10.0)
    assert not any(v and v.split_brain for t, v in tl if t >= 10.0)


def test_a_router_that_was_already_silent_when_the_other_started_is_not_presumed() -> None:
    tl = replay([*every(ME, 0.0, 3.0, auth=AUTH_A), *every(PEER, 10.0, 30.0, auth=AUTH_B)], until=30.0)
    assert split_times(tl) == []


def test_compatible_routers_never_presume_a_silent_one_crash_and_preemption() -> None:
    crash = replay([*every(ME, 0.0, 5.0), *every(PEER, 8.6, 30.0)], until=30.0)
    assert split_times(crash) == []
    preempt = replay([*every(PEER, 0.0, 10.2), *every(ME, 10.0, 30.0, prio=150)], until=30.0)
    assert split_times(preempt) == []


def test_presumption_is_bounded_by_the_group_size() -> None:
    peers = [
        WirePeer("eth0", "inet", 51, f"10.0.{i // 250}.{i % 250}", 0.0, 1.0, 100, 1.0, 2, (VIP,), 0, None, 2)
        for i in range(70)
    ]
    talker = replace(peers[0], first_seen=0.0, last_seen=9.9, auth_digest="other", auth_type=1)
    assert not split_brain([*peers[1:], talker], 10.0)  # a flood is not searched pairwise
    assert split_brain([peers[1], talker], 10.0)


# -- the fused verdict ----------------------------------------------------------------------------

NOW = 1000.0


def peer(
    source: str, *, local: bool = False, first: float = NOW - 20, last: float = NOW - 0.2, **kw: object
) -> WirePeer:
    base = WirePeer("eth0", "inet", 51, source, first, last, 100, 1.0, 2, (VIP,), 0, None, 20, local=local)
    return replace(base, **kw)  # type: ignore[arg-type]


def snap(
    peers: tuple[WirePeer, ...] | None = (),
    *,
    held: bool = False,
    state: VrrpState | None = VrrpState.BACKUP,
    running: bool = True,
    l2: tuple[VipAnswers, ...] | None = None,
    unicast: tuple[str, ...] = (),
    addresses_changed: float | None = NOW - 100,
    last_transition: float | None = NOW - 50,
) -> Snapshot:
    inst = ConfInstance(
        "VI_1",
        "eth0",
        51,
        vips=(ConfVip(VIP, 24),),
        unicast_peers=unicast,
        unicast_src_ip=ME if unicast else None,
    )
    view = InstanceView(
        "VI_1", "eth0", 51, state=state, vips=(VIP,), advert_int=1.0, last_transition=last_transition
    )
    addrs = (LocalAddress(ME, 24, "eth0", "inet"),) + (
        (LocalAddress(VIP, 24, "eth0", "inet"),) if held else ()
    )
    return Snapshot(
        time=NOW,
        hostname="node-a",
        config=KeepalivedConfig(instances=(inst,)),
        process=ProcessInfo(running=running, pid=1),
        addresses=addrs,
        instances=(view,) if state is not None else (),
        wire_peers=peers,
        wire_stats=WireStats(interfaces=("eth0",), listening_since=NOW - 600) if peers is not None else None,
        sources=(SourceHealth("dbus", True),),
        views_time=(("dbus", NOW - 1),),
        addresses_changed=addresses_changed,
        l2=l2,
    )


def one(s: Snapshot) -> FusedVerdict:
    (v,) = judge(s)
    assert v.key == KEY
    return v


def test_healthy_master_and_healthy_backup_read_zero() -> None:
    master = snap((peer(ME, local=True),), held=True, state=VrrpState.MASTER)
    assert one(master).witnesses == frozenset() and not one(master).silent_master
    backup = snap((peer(PEER),), held=False, state=VrrpState.BACKUP)
    assert one(backup).witnesses == frozenset()
    assert [c.kind for c in conditions.evaluate(master)] == []
    assert [c.kind for c in conditions.evaluate(backup)] == []


def test_address_witness_holding_the_vip_while_another_router_is_master() -> None:
    # A SIGKILL left the VIP (no keepalived, no claim): only the addresses and the wire say so.
    v = one(snap((peer(PEER),), held=True, state=None, running=False))
    assert v.witnesses == frozenset({"address"})
    kinds = [c.kind for c in conditions.evaluate(snap((peer(PEER),), held=True, state=None, running=False))]
    assert "split_brain" in kinds


def test_address_witness_waits_for_the_second_advert_of_the_new_master() -> None:
    # Preemption: the new master's first advert (run 0) reaches us before we removed the VIP.
    first = peer(PEER, first=NOW - 0.01, last=NOW - 0.01, priority=150)
    assert (
        one(snap((peer(ME, local=True), first), held=True, state=VrrpState.MASTER)).witnesses == frozenset()
    )
    # A resigned router (priority 0) or one silent for longer than RUN_GAP is not master.
    gone = peer(PEER, last=NOW - 3.0)
    assert one(snap((gone,), held=True, state=VrrpState.MASTER)).witnesses <= {"liveness"}
    resigned = peer(PEER, priority=0)
    assert "address" not in one(snap((resigned,), held=True, state=VrrpState.MASTER)).witnesses


def test_liveness_a_hung_master_that_still_claims_master_while_the_backup_took_over() -> None:
    mine = peer(ME, local=True, last=NOW - 8.0)
    s = snap((mine, peer(PEER, first=NOW - 4.0)), held=True, state=VrrpState.MASTER)
    v = one(s)
    assert v.silent_master and v.witnesses == frozenset({"address", "liveness"})
    # The same claim without addresses (vips collector off) is still split brain, by liveness alone.
    v2 = one(replace(s, addresses=None))
    assert v2.witnesses == frozenset({"liveness"})


def test_liveness_alone_without_another_router_is_silent_master_not_split_brain() -> None:
    s = snap((peer(ME, local=True, last=NOW - 8.0),), held=True, state=VrrpState.MASTER)
    v = one(s)
    assert v.silent_master and not v.split_brain
    kinds = [c.kind for c in conditions.evaluate(s)]
    assert "master_silent" in kinds and "split_brain" not in kinds


def test_liveness_stays_zero_for_a_fresh_claim_a_stale_state_or_a_stopped_keepalived() -> None:
    silent = (peer(ME, local=True, last=NOW - 8.0), peer(PEER))
    just_became = snap(silent, held=True, state=VrrpState.MASTER, last_transition=NOW - 0.5)
    assert not one(just_became).silent_master
    # dumps mode: the last dump is older than the address change (the VIP left: it went BACKUP)
    stale = replace(
        snap(silent, held=False, state=VrrpState.MASTER, addresses_changed=NOW - 0.2),
        sources=(),
        views_time=(("dumps", NOW - 1),),
    )
    assert not one(stale).silent_master
    assert one(stale).witnesses == frozenset()
    stopped = snap(silent, held=False, state=VrrpState.MASTER, running=False)
    assert not one(stopped).silent_master


def test_l2_witness_two_answerers_or_two_answers_to_one_probe_or_one_while_we_hold_it() -> None:
    def ans(**kw: object) -> tuple[VipAnswers, ...]:
        return (VipAnswers(VIP, "eth0", "inet", **kw),)  # type: ignore[arg-type]

    two = snap((), l2=ans(answerers=("02:00:00:00:00:01", "02:00:00:00:00:02"), last_probe_answers=1))
    assert one(two).witnesses == frozenset({"l2"})
    vmac = snap((), l2=ans(answerers=("00:00:5e:00:01:33",), last_probe_answers=2, last_probe=NOW - 1))
    assert one(vmac).witnesses == frozenset({"l2"})
    held_and_answered = snap(
        (), held=True, l2=ans(answerers=("02:00:00:00:00:02",), last_probe_answers=1, last_probe=NOW - 1)
    )
    assert one(held_and_answered).witnesses == frozenset({"l2"})
    # One answerer, not held here: the normal case from a backup or an observer.
    normal = snap((), l2=ans(answerers=("02:00:00:00:00:02",), last_probe_answers=1, last_probe=NOW - 1))
    assert one(normal).witnesses == frozenset()
    # A probe sent before this node took the VIP (failover) answered by the old master: not split brain.
    before = snap(
        (),
        held=True,
        addresses_changed=NOW - 0.5,
        l2=ans(answerers=("02:00:00:00:00:02",), last_probe_answers=1, last_probe=NOW - 1),
    )
    assert one(before).witnesses == frozenset()


def test_dead_vip_and_foreign_master() -> None:
    foreign = peer("10.0.0.66", priority=254)
    l2 = (VipAnswers(VIP, "eth0", "inet", last_probe_answers=0, last_probe=NOW - 1, probing=True),)
    v = one(snap((foreign,), l2=l2, unicast=(PEER,)))
    assert v.dead_vips == (VIP,) and v.foreign == ("10.0.0.66",) and not v.split_brain
    kinds = {c.kind for c in conditions.evaluate(snap((foreign,), l2=l2, unicast=(PEER,)))}
    assert {"vip_unanswered", "foreign_master"} <= kinds
    # Our own unicast peer is not foreign; with multicast (no peer list) nothing is known locally.
    assert one(snap((peer(PEER),), unicast=(PEER,))).foreign == ()
    assert one(snap((foreign,))).foreign == ()
    # Nobody advertises: an unanswered VIP is not "dead while a master advertises" (that is no_master).
    assert one(snap((), l2=l2)).dead_vips == ()


def test_an_observer_without_addresses_or_keepalived_has_only_wire_and_l2() -> None:
    a = peer(ME, auth_type=1, auth_digest="x")
    b = peer(PEER, auth_type=1, auth_digest="y")
    obs = replace(snap((a, b)), addresses=None, instances=None, process=None)
    assert one(obs).witnesses == frozenset({"wire"})


def test_address_witness_quiet_while_this_node_preempts_the_old_master() -> None:
    # We took the VIP 0.3 s ago as our first advert went out; the old master's last (crossing) advert came
    # 0.05 s after that, and it is still "advertising" by the RUN_GAP rule: not a second holder.
    old = peer(PEER, last=NOW - 0.25)
    mine = peer(ME, local=True, first=NOW - 0.3, last=NOW - 0.01)
    s = snap(
        (mine, old), held=True, state=VrrpState.MASTER, addresses_changed=NOW - 0.3, last_transition=None
    )
    assert one(s).witnesses == frozenset()
    # Had the old master kept advertising while we advertise (it did not hear us): two holders.
    still = peer(PEER, last=NOW - 0.1)
    s2 = snap(
        (mine, still), held=True, state=VrrpState.MASTER, addresses_changed=NOW - 1.2, last_transition=None
    )
    assert one(s2).witnesses == frozenset({"address"})
    # We were preempted: our last advert 0.12 s ago, the new master's since then, our VIP removal not yet
    # in the store: inside the grace, not a second holder.
    preempted = peer(ME, local=True, first=NOW - 20, last=NOW - 0.2)
    new = peer(PEER, first=NOW - 0.2, last=NOW - 0.02, interval=0.1, version=3)
    s_pre = snap((replace(preempted, interval=0.1, version=3), new), held=True, state=VrrpState.MASTER)
    assert "address" not in one(s_pre).witnesses
    # We fell quiet (hung) while keeping the VIP, and the other router advertised on for half an interval
    # since our last advert: two holders.
    quiet_now = peer(ME, local=True, first=NOW - 0.9, last=NOW - 0.7)
    s2b = snap((quiet_now, still), held=True, state=VrrpState.MASTER, addresses_changed=NOW - 1.2)
    assert one(s2b).witnesses == frozenset({"address"})
    # A claim made as the VIPs arrived is not "silent" before a hold time has passed since then.
    quiet = peer(ME, local=True, last=NOW - 60)
    s3 = snap(
        (quiet, still), held=True, state=VrrpState.MASTER, addresses_changed=NOW - 0.3, last_transition=None
    )
    assert not one(s3).silent_master


def test_the_peer_table_reports_a_new_masters_second_advert() -> None:
    # The address witness turns true at a new master's second advert without any wire verdict changing:
    # the table must still say "changed" then, or the watchdog would not look until something else moved.
    from ka_exporter.store.peers import PeerTable

    table = PeerTable()
    for a in every(ME, 0.0, 3.0, interval=0.1, version=3):
        table.update(a)
    after = [table.update(a) for a in every(PEER, 3.2, 4.0, interval=0.1, version=3)]
    assert after[:3] == [True, True, False]  # a new router; its run reached two adverts; steady
    assert not any(after[2:])


def test_no_silent_master_after_this_hosts_own_priority_zero_advert() -> None:
    # SIGTERM: keepalived sends priority 0 and removes its VIPs, then takes a second to exit; a dump read
    # meanwhile may still say MASTER. It resigned on the wire: not a silent master, not split brain.
    resigned = peer(ME, local=True, last=NOW - 0.9, priority=0)
    s = snap(
        (resigned, peer(PEER, first=NOW - 0.6)),
        held=False,
        state=VrrpState.MASTER,
        addresses_changed=NOW - 0.9,
    )
    v = one(s)
    assert not v.silent_master and v.witnesses == frozenset()


def test_the_fused_metrics_are_promtool_clean_and_name_every_witness() -> None:
    import shutil
    import subprocess

    import pytest
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from ka_exporter.collectors import SnapshotCollector
    from ka_exporter.collectors.fused import collect_fused

    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    s = snap((peer(PEER),), held=True, state=None, running=False)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: s, [collect_fused]))
    text = generate_latest(reg).decode()
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'keepalived_split_brain{family="inet",interface="eth0",vrid="51"} 1.0' in text
    for w in ("wire", "address", "liveness", "l2"):
        value = "1.0" if w == "address" else "0.0"
        assert (
            f'keepalived_split_brain_witness{{family="inet",interface="eth0",vrid="51",witness="{w}"}} {value}'
            in text
        )
    # Nothing to judge (no VRID configured, no wire): no series at all.
    empty = Snapshot(time=NOW, hostname="x")
    assert list(collect_fused(empty)) == []


def test_a_vrid_collision_with_other_vips_is_no_second_holder_of_ours() -> None:
    # Another cluster's master advertises VRID 51 for its own VIP: the wire calls the two incompatible
    # routers split brain (and a vips conflict), but this node holding *its* VIP is not a second holder,
    # and a silent local master is not split brain because of that router either.
    other = peer("10.0.0.77", addresses=("10.0.0.200",))
    mine = peer(ME, local=True, last=NOW - 0.1)
    v = one(snap((mine, other), held=True, state=VrrpState.MASTER))
    assert "address" not in v.witnesses and "wire" in v.witnesses
    silenced = peer(ME, local=True, last=NOW - 8.0)
    v2 = one(snap((silenced, other), held=True, state=VrrpState.MASTER))
    assert v2.silent_master and "liveness" not in v2.witnesses and "address" not in v2.witnesses


def _all_excluded(s: Snapshot) -> Snapshot:
    """`s` with the instance's VIP under virtual_ipaddress_excluded: held, never advertised."""
    assert s.config is not None
    inst = replace(s.config.instances[0], vips=(ConfVip(VIP, 24, excluded=True),))
    views = tuple(replace(v, vips=(), vips_excluded=(VIP,)) for v in s.instances or ())
    return replace(s, config=KeepalivedConfig(instances=(inst,)), instances=views)


def test_an_instance_whose_vips_are_all_excluded_keeps_its_address_witness() -> None:
    """keepalived leaves excluded VIPs out of its adverts: the other router advertises no address, and
    that must not hide that this node holds the VIP while it is master (SIGKILL left the VIP)."""
    bare = peer(PEER, addresses=())
    v = one(_all_excluded(snap((bare,), held=True, state=None, running=False)))
    assert v.witnesses == frozenset({"address"})
    # the same from keepalived's instance list alone (dumps or D-Bus, no keepalived.conf)
    no_conf = replace(_all_excluded(snap((bare,), held=True, state=VrrpState.BACKUP)), config=None)
    assert one(no_conf).witnesses == frozenset({"address"})
    # healthy: this node BACKUP without the VIP, or MASTER alone: nothing
    assert one(_all_excluded(snap((bare,), held=False))).witnesses == frozenset()
    alone = snap((peer(ME, local=True, addresses=()),), held=True, state=VrrpState.MASTER)
    assert one(_all_excluded(alone)).witnesses == frozenset()
    # a router advertising other VIPs on the VRID is still another cluster's (a collision)
    other = peer("10.0.0.77", addresses=("10.0.0.200",))
    assert "address" not in one(_all_excluded(snap((other,), held=True, state=None, running=False))).witnesses


def test_excluded_vips_come_from_the_dumps_too() -> None:
    """keepalived.data's "Virtual IP Excluded" and the JSON's evips reach the instance view, and an
    instance whose VIPs are all excluded takes its address family from them."""
    from ka_exporter.parse.dumps import parse_data, parse_json

    data = (
        "------< VRRP Topology >------\n VRRP Instance = VI_6\n   State = MASTER\n"
        "   Interface = eth0\n   Virtual Router ID = 61\n"
        "   Virtual IP Excluded :\n     fd00::61/64 dev eth0 scope global\n"
    )
    (d,) = parse_data(data)
    assert (d.vips, d.vips_excluded, d.family) == ((), ("fd00::61",), "inet6")
    js = (
        '[{"data":{"iname":"VI_6","ifp_ifname":"eth0","vrid":61,"state":2,"wantstate":2,"version":3,'
        '"vips":[],"evips":["fd00::61/64 dev eth0 scope global set"]},"stats":{}}]'
    )
    (j,) = parse_json(js)
    assert (j.vips, j.vips_excluded, j.family) == ((), ("fd00::61",), "inet6")


# -- the memo: the same verdicts as a fresh judge, judging only what can have moved -----------------


class _World:
    """A small random world of VRIDs, routers, MASTER claims, addresses and L2 answers that hands out
    snapshots as the store does: the same objects while a part did not change (and now and then an
    equal copy), new ones when it did."""

    VRIDS = (1, 2, 3, 4, 5)
    SOURCES = (ME, PEER, "10.0.0.3")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 5000.0
        self.peers: dict[tuple[int, str], WirePeer] = {}
        self.states = dict.fromkeys(self.VRIDS, VrrpState.BACKUP)
        self.transitions: dict[int, float | None] = dict.fromkeys(self.VRIDS, self.now - 100)
        self.held: set[int] = set()
        self.changed: float | None = self.now - 200
        self.answers: dict[int, VipAnswers] = {}
        self.running = True
        self.fresh_source = "dbus"
        self.dumps_time = self.now - 300
        self.with_config = True
        self.with_instances = True
        self.with_wire = True
        self.listening = self.now - 1000
        self._config: KeepalivedConfig | None = None
        self._instances: tuple[InstanceView, ...] | None = None
        self._peers: tuple[WirePeer, ...] | None = None
        self._addresses: tuple[LocalAddress, ...] | None = None
        self._l2: tuple[VipAnswers, ...] | None = None
        self._process: ProcessInfo | None = None
        self._stats: WireStats | None = None
        self._views: dict[int, InstanceView] = {}
        self._moved = {"config", "instances", "peers", "addresses", "l2", "process", "stats"}

    @staticmethod
    def vip(vrid: int) -> str:
        return f"10.0.{vrid}.100"

    def interval(self, vrid: int) -> float:
        return 0.5 if vrid % 2 else 1.0

    def advert(self, vrid: int, source: str) -> None:
        old = self.peers.get((vrid, source))
        interval = self.interval(vrid)
        prio = self.rng.choice((100, 150, 200, 0) if source == ME else (100, 150, 0, 100))
        vips = (self.vip(vrid),) if self.rng.random() > 0.15 else ("10.9.9.9",)
        auth = (1, "a") if self.rng.random() > 0.1 else (1, "b")
        first = self.now - self.rng.choice((0, 0, 1, 3)) * interval  # a run heard from its start, or later
        if old is not None and old.priority > 0 and self.now - old.last_seen <= 2.5 * old.interval:
            first = old.first_seen
        self.peers[(vrid, source)] = WirePeer(
            "eth0",
            "inet",
            vrid,
            source,
            first,
            self.now,
            prio,
            interval,
            3,
            vips,
            auth[0],
            auth[1],
            (old.adverts + 1) if old else 1,
            local=source == ME,
            last_priority_zero=self.now if prio == 0 else (old.last_priority_zero if old else None),
        )
        self._moved.add("peers")

    def mutate(self) -> None:
        rng = self.rng
        r = rng.random()
        vrid = rng.choice(self.VRIDS)
        if r < 0.45:
            self.advert(vrid, rng.choice(self.SOURCES))
        elif r < 0.5 and self.peers:
            del self.peers[rng.choice(sorted(self.peers))]
            self._moved.add("peers")
        elif r < 0.6:
            self.states[vrid] = rng.choice(
                (VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT, VrrpState.MASTER)
            )
            self.transitions[vrid] = rng.choice((self.now, self.now - 10, None))
            self._moved.add("instances")
        elif r < 0.7:
            self.held ^= {vrid}
            self.changed = self.now
            self._moved.add("addresses")
        elif r < 0.78:
            self.answers[vrid] = VipAnswers(
                self.vip(vrid),
                "eth0",
                "inet",
                answerers=tuple(
                    sorted(rng.sample(("02:00:00:00:00:01", "02:00:00:00:00:02"), rng.randint(0, 2)))
                ),
                last_probe_answers=rng.choice((None, 0, 1, 2)),
                last_probe=rng.choice((self.now, self.now - 5, None)),
                probing=rng.random() > 0.3,
            )
            self._moved.add("l2")
        elif r < 0.8:
            self.running = not self.running
            self._moved.add("process")
        elif r < 0.84:
            self.fresh_source = rng.choice(("dbus", "dumps"))
            self.dumps_time = rng.choice((self.now, self.now - 30))
            self._moved.add("instances")
        elif r < 0.86:
            self.with_config = not self.with_config
            self._moved.add("config")
        elif r < 0.87:
            self.with_instances = not self.with_instances
            self._moved.add("instances")
        elif r < 0.88:
            self.with_wire = not self.with_wire
            self._moved.update(("peers", "stats"))
        elif r < 0.9:
            self._moved.update(
                ("config", "instances", "peers", "addresses", "l2", "process", "stats")
            )  # copies

    def thresholds(self) -> list[float]:
        out = [self.listening + h for h in (2.15, 4.15)]
        for p in self.peers.values():
            i = p.interval
            out += (p.last_seen + 3 * i + i + 0.1 * i + 0.05, p.last_seen + 2.5 * i, p.last_seen + 1.5 * i)
            out += (p.last_seen + 300.0, p.last_seen + 2.15, p.last_seen + 4.15, p.last_seen + i / 2)
        out += (t + h for t in self.transitions.values() if t is not None for h in (2.15, 4.15))
        if self.changed is not None:
            out += (self.changed + 2.15, self.changed + 4.15, self.changed + 0.25)
        return [t for t in out if t > self.now]

    def tick(self) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            self.now += rng.uniform(0.0, 1.5)
        elif r < 0.85 and (edges := self.thresholds()):
            edge = rng.choice(sorted(edges)[:6])
            self.now = rng.choice((edge, math.nextafter(edge, math.inf), math.nextafter(edge, -math.inf)))
        elif r < 0.97:
            pass  # the same instant again
        else:
            self.now -= rng.uniform(0.0, 2.0)  # the wall clock stepped back

    def snapshot(self) -> Snapshot:
        moved, self._moved = self._moved, set()
        if "config" in moved:
            insts = tuple(
                ConfInstance(
                    f"VI_{v}",
                    "eth0",
                    v,
                    advert_int=self.interval(v),
                    version=3,
                    vips=(ConfVip(self.vip(v), 24, excluded=v == 5),),
                    unicast_peers=(PEER,) if v == 3 else (),
                    unicast_src_ip=ME if v == 3 else None,
                )
                for v in self.VRIDS
            )
            self._config = KeepalivedConfig(instances=insts) if self.with_config else None
        if "instances" in moved:
            views = []
            for v in self.VRIDS:
                view = InstanceView(
                    f"VI_{v}",
                    "eth0",
                    v,
                    state=self.states[v],
                    vips=(self.vip(v),),
                    version=3,
                    advert_int=self.interval(v),
                    last_transition=self.transitions[v],
                )
                kept = self._views.get(v)
                if kept == view and self.rng.random() < 0.8:  # the store's merge keeps unchanged views
                    view = kept
                views.append(self._views.setdefault(v, view) if kept is None else view)
                self._views[v] = view
            self._instances = tuple(views) if self.with_instances else None
        if "peers" in moved:
            self._peers = tuple(self.peers[k] for k in sorted(self.peers)) if self.with_wire else None
        if "stats" in moved:
            self._stats = (
                WireStats(interfaces=("eth0",), listening_since=self.listening) if self.with_wire else None
            )
        if "addresses" in moved:
            self._addresses = (
                LocalAddress(ME, 24, "eth0", "inet"),
                *tuple(LocalAddress(self.vip(v), 32, "eth0", "inet") for v in sorted(self.held)),
            )
        if "l2" in moved:
            self._l2 = tuple(self.answers[v] for v in sorted(self.answers))
        if "process" in moved:
            self._process = ProcessInfo(running=self.running, pid=1)
        dbus = self.fresh_source == "dbus"
        return Snapshot(
            time=self.now,
            hostname="node-a",
            config=self._config,
            process=self._process,
            addresses=self._addresses,
            instances=self._instances,
            wire_peers=self._peers,
            wire_stats=self._stats,
            sources=(SourceHealth("dbus", True),) if dbus else (SourceHealth("dumps", True),),
            views_time=(("dbus", self.now - 1),) if dbus else (("dumps", self.dumps_time),),
            addresses_changed=self.changed,
            l2=self._l2,
        )


@pytest.mark.parametrize("seed", range(12))
def test_the_memo_gives_a_fresh_judges_verdicts_at_every_step_of_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    world = _World(rng)
    memo = Memo()
    for step in range(600):
        if rng.random() < 0.5:
            world.mutate()
        else:
            world.tick()
        s = world.snapshot()
        assert memo.judge(s) == judge(s), f"seed {seed} step {step} at {s.time!r}"
        assert memo.wire == judge_snapshot(s), f"seed {seed} step {step} at {s.time!r}"


def test_the_random_sequences_reach_every_kind_of_verdict() -> None:
    # What the memo is compared on: sequences that show every witness and rule, not only zeros.
    seen: set[str] = set()
    for seed in range(12):
        rng = random.Random(seed)
        world = _World(rng)
        for _step in range(600):
            world.mutate() if rng.random() < 0.5 else world.tick()
            for v in judge(world.snapshot()):
                seen |= (
                    v.witnesses
                    | ({"silent"} if v.silent_master else set())
                    | ({"dead"} if v.dead_vips else set())
                )
                seen |= {"foreign"} if v.foreign else set()
    assert seen == {"wire", "address", "liveness", "l2", "silent", "dead", "foreign"}


@pytest.mark.parametrize("seed", range(4))
def test_the_memoized_conditions_are_those_of_a_fresh_evaluation(seed: int) -> None:
    rng = random.Random(100 + seed)
    world = _World(rng)
    memo = Memo()
    seen: set[str] = set()
    for step in range(400):
        world.mutate() if rng.random() < 0.5 else world.tick()
        s = world.snapshot()
        fresh = conditions.evaluate(s)
        assert conditions.evaluate(s, memo) == fresh, f"seed {seed} step {step}"
        seen |= {c.kind for c in fresh}
    assert {"split_brain", "no_master", "wire_conflict"} <= seen, seen


def test_the_watchdog_loop_judges_with_its_memo_what_a_fresh_evaluation_does() -> None:
    from ka_exporter.outputs.watchdog import WatchdogStats
    from ka_exporter.outputs.watchdog_loop import WatchdogLoop
    from ka_exporter.settings import Settings
    from ka_exporter.store import Store

    clock = [NOW - 100]
    store = Store(hostname="node-a", clock=lambda: clock[0])
    s = snap((peer(PEER), peer(ME, local=True)), held=True, state=VrrpState.MASTER)
    others = tuple(
        ConfInstance(f"VI_{k}", "eth0", k, vips=(ConfVip(f"10.1.{k}.1", 24),)) for k in range(100, 158)
    )
    store.set_config(KeepalivedConfig(instances=(*(s.config.instances if s.config else ()), *others)))
    store.set_process(s.process)
    store.set_addresses(s.addresses)
    store.set_wire_provider(lambda: (s.wire_peers or (), s.wire_stats or WireStats()))
    store.report("dbus")
    clock[0] = NOW
    many = [
        InstanceView(f"VI_{k}", "eth0", k, state=VrrpState.BACKUP, vips=(f"10.1.{k}.1",))
        for k in range(100, 158)
    ]
    store.set_instances((*(s.instances or ()), *many), "dbus")
    loop = WatchdogLoop(Settings(), store, WatchdogStats())
    _now, _host, first = loop._evaluate()
    assert first == conditions.evaluate(store.snapshot())
    assert {c.kind for c in first} >= {"split_brain"}, first  # the address witness: both hold the VIP
    judged = loop.memo.judged
    assert judged == 59
    many[5] = replace(many[5], state=VrrpState.MASTER)  # one instance of 59 changes
    store.set_instances((*(s.instances or ()), *many), "dbus")
    _now, _host, after = loop._evaluate()
    assert after == conditions.evaluate(store.snapshot())
    assert {c.kind for c in after} >= {"split_brain", "vip_mismatch"}, after
    assert loop.memo.judged - judged == 1, "one instance changed: one VRID judged again"
