"""The L2 witness without a lab: probe frames byte by byte, the decoder, the kernel filter on a real
veth pair, the pure verdicts, the collector (promtool-clean), item 8's use_vmac parsing and item 7's
"keepalived not running" merge."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import replace

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.l2 import collect_l2
from ka_exporter.model import (
    ConfInstance,
    ConfVip,
    InstanceView,
    KeepalivedConfig,
    LocalAddress,
    Snapshot,
    VipAnswers,
    VrrpState,
    WirePeer,
    WireStats,
)
from ka_exporter.parse.dumps import combine, parse_data, parse_json
from ka_exporter.sources.l2 import (
    QUICK,
    L2Source,
    _Watch,
    arp_probe,
    configured_targets,
    dad_probe,
    decode,
    open_socket,
)
from ka_exporter.store import Store, merge_views
from ka_exporter.verdicts.fused import l2_witness
from ka_exporter.verdicts.l2 import judge, judge_snapshot
from tests.conftest import PEERS, PEERS_ABSENT, in_netns, sh

MAC = bytes.fromhex("020000000009")
OTHER = bytes.fromhex("020000000001")
VIP4 = ipaddress.ip_address("10.9.8.100").packed
VIP6 = ipaddress.ip_address("fd00:9:8::100").packed


def test_arp_probe_claims_no_address() -> None:
    f = arp_probe(MAC, VIP4)
    assert len(f) == 60
    assert f[0:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", f, 14)
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert f[22:28] == MAC  # sender MAC
    assert f[28:32] == b"\0\0\0\0"  # sender IP 0.0.0.0: RFC 5227, no cache can learn from it
    assert f[32:38] == b"\0" * 6
    assert f[38:42] == VIP4


def test_dad_probe_is_a_dad_neighbour_solicitation_without_source_link_layer_option() -> None:
    f = dad_probe(MAC, VIP6)
    assert len(f) == 14 + 40 + 24  # no option at all
    assert f[0:6] == bytes.fromhex("3333ff000100") and f[12:14] == b"\x86\xdd"
    assert f[20] == 58 and f[21] == 255
    assert struct.unpack_from("!H", f, 18)[0] == 24  # payload length: the bare NS
    assert f[22:38] == b"\0" * 16  # source ::
    assert ipaddress.ip_address(f[38:54]) == ipaddress.ip_address("ff02::1:ff00:100")
    assert f[54] == 135 and f[55] == 0
    assert f[62:78] == VIP6
    # the ICMPv6 checksum verifies (pseudo-header included)
    data = f[22:38] + f[38:54] + struct.pack("!I3xB", 24, 58) + f[54:78]
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


def _arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes, *, dst: bytes) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, tha, tpa)
    return dst + sha + b"\x08\x06" + body


def test_decode_tells_probe_answers_from_gratuitous_arp() -> None:
    reply = _arp(2, OTHER, VIP4, MAC, b"\0\0\0\0", dst=MAC)
    a = decode(reply, MAC)
    assert a is not None and a.vip == VIP4 and a.mac == OTHER and a.to_probe
    garp = _arp(1, OTHER, VIP4, b"\xff" * 6, VIP4, dst=b"\xff" * 6)
    g = decode(garp, MAC)
    assert g is not None and g.mac == OTHER and not g.to_probe
    # someone else's probe (sender 0.0.0.0) claims nothing; an ordinary request names no VIP holder
    assert decode(_arp(1, OTHER, b"\0\0\0\0", b"\0" * 6, VIP4, dst=b"\xff" * 6), MAC) is None
    assert decode(_arp(1, OTHER, b"\x0a\x09\x08\x01", b"\0" * 6, VIP4, dst=b"\xff" * 6), MAC) is None


def test_kernel_filter_passes_answers_and_drops_the_rest(netns: str) -> None:
    """A real veth pair: frames sent from peer0 reach an l2 socket on eth0 only if they are answers."""
    sh("ip", "-n", netns, "link", "set", "eth0", "address", "02:00:00:00:00:09")

    def run() -> list[bytes]:
        rx = open_socket("eth0")
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind(("peer0", 0))
        frames = [
            _arp(2, OTHER, VIP4, MAC, b"\0\0\0\0", dst=MAC),  # reply: passes
            _arp(1, OTHER, VIP4, b"\xff" * 6, VIP4, dst=b"\xff" * 6),  # gratuitous: passes
            _arp(1, OTHER, b"\x0a\x09\x08\x01", b"\0" * 6, VIP4, dst=b"\xff" * 6),  # request: dropped
            MAC + OTHER + b"\x08\x00" + bytes(46),  # IPv4: dropped
            dad_probe(OTHER, VIP6),  # an NS: dropped
        ]
        for f in frames:
            tx.send(f.ljust(60, b"\0"))
        got: list[bytes] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(got) < 2:
            try:
                got.append(rx.recv(256))
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.2)
        with contextlib.suppress(BlockingIOError):
            got.append(rx.recv(256))
        rx.close()
        tx.close()
        return got

    got = in_netns(netns, run)
    assert [g[20:22] for g in got] == [b"\x00\x02", b"\x00\x01"]


def rec(**kw: object) -> VipAnswers:
    base: dict[str, object] = {"vip": "10.9.8.100", "interface": "eth0", "family": "inet", "probing": True}
    base.update(kw)
    return VipAnswers(**base)  # type: ignore[arg-type]


def test_verdicts_one_two_vmac_and_nobody() -> None:
    one = judge(rec(answerers=("02:00:00:00:00:01",), last_probe_answers=1))
    assert (one.answerers, one.two_answerers, one.silent) == (1, False, False)
    # this node holds the VIP (netlink) and nobody else answers: one answerer, not two
    mine = judge(rec(answerers=(), last_probe_answers=0), held={"10.9.8.100"})
    assert (mine.answerers, mine.two_answerers, mine.silent) == (1, False, False)
    # held here and another host answers: two holders
    assert judge(
        rec(answerers=("02:00:00:00:00:02",), last_probe_answers=1), held={"10.9.8.100"}
    ).two_answerers
    two = judge(rec(answerers=("02:00:00:00:00:01", "02:00:00:00:00:02"), last_probe_answers=2))
    assert two.two_answerers and two.answerers == 2
    vmac = judge(rec(answerers=("00:00:5e:00:01:33",), last_probe_answers=2))  # one MAC, two answers
    assert vmac.two_answerers and vmac.answerers == 1
    nobody = judge(rec(answerers=(), last_probe_answers=0))
    assert nobody.silent and not nobody.two_answerers
    # no probe completed yet, or not probing: never silent
    assert not judge(rec(answerers=(), last_probe_answers=None)).silent
    assert not judge(rec(answerers=(), last_probe_answers=0, probing=False)).silent


def _promtool(text: bytes) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed")
    r = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_collector_series_and_promtool() -> None:
    snap = Snapshot(
        time=1.0,
        hostname="n",
        addresses=(LocalAddress("10.9.8.100", 24, "eth0", "inet"),),
        l2=(
            rec(
                answerers=("02:00:00:00:00:02",),
                last_probe_answers=1,
                probes_sent=5,
                answers_seen=7,
                no_answerer_seconds=0.5,
                one_answerer_seconds=9.0,
                multi_answerer_seconds=2.0,
                observed_seconds=11.5,
                unobserved_seconds=1.25,
            ),
            rec(vip="fd00:9:8::100", family="inet6", answerers=(), last_probe_answers=0),
        ),
    )
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap, [collect_l2]))
    text = generate_latest(reg)
    _promtool(text)
    body = text.decode()
    assert 'keepalived_l2_vip_answerers{family="inet",interface="eth0",vip="10.9.8.100"} 2.0' in body
    assert 'keepalived_l2_vip_two_answerers{family="inet",interface="eth0",vip="10.9.8.100"} 1.0' in body
    assert 'keepalived_l2_vip_silent{family="inet6",interface="eth0",vip="fd00:9:8::100"} 1.0' in body
    assert 'mac="02:00:00:00:00:02"' in body
    assert 'keepalived_l2_probes_total{family="inet",interface="eth0",vip="10.9.8.100"} 5.0' in body
    for name, value in (("no", 0.5), ("one", 9.0), ("multi", 2.0)):
        assert (
            f'keepalived_l2_vip_{name}_answerer_seconds_total{{family="inet",interface="eth0",vip="10.9.8.100"}} '
            f"{value}" in body
        )
    assert (
        'keepalived_l2_vip_observed_seconds_total{family="inet",interface="eth0",vip="10.9.8.100"} 11.5'
        in body
    )
    assert (
        'keepalived_l2_vip_unobserved_seconds_total{family="inet",interface="eth0",vip="10.9.8.100"} 1.25'
        in body
    )
    assert [v.two_answerers for v in judge_snapshot(snap)] == [True, False]
    assert list(collect_l2(Snapshot(time=1.0, hostname="n"))) == []  # witness off: no series


def test_configured_targets_use_the_base_interface_and_dev() -> None:
    conf = KeepalivedConfig(
        instances=(
            ConfInstance("VI_1", "eth0", 1, vips=(ConfVip("10.0.0.1"), ConfVip("FD00::0:1", dev="eth1"))),
            ConfInstance("VI_2", "eth0", 2, vips=(ConfVip("10.0.0.1"),)),
        )
    )
    assert configured_targets(conf) == (("eth0", "10.0.0.1"), ("eth1", "fd00::1"))


@pytest.mark.skipif(not (PEERS / "pqarmitage-issue1808-post").exists(), reason=PEERS_ABSENT)
def test_use_vmac_data_dump_names_the_base_interface() -> None:
    """keepalived.data says `Interface = vrrp.1, vmac on vlan1`: the instance's interface is vlan1."""
    text = (PEERS / "pqarmitage-issue1808-post" / "keepalived.data").read_text()
    assert "Interface = vrrp.1, vmac on vlan1" in text
    got = {v.name: v.interface for v in parse_data(text)}
    assert got == {"vrrp.1": "vlan1", "vrrp.wan": "wan", "vrrp.8": "vlan8", "vrrp-ha": "ha"}


def test_use_vmac_json_names_the_macvlan_and_the_data_dump_wins() -> None:
    data = (
        "------< VRRP Topology >------\n VRRP Instance = VI_1\n   State = MASTER\n"
        "   Interface = vrrp.63, vmac on eth0\n   Virtual Router ID = 63\n"
    )
    js = (
        '[{"data":{"iname":"VI_1","vmac_ifname":"vrrp.63","ifp_ifname":"vrrp.63","vrid":63,"state":2,'
        '"wantstate":2,"version":3,"vips":["10.1.1.100/24 dev vrrp.63 scope global set"]},"stats":{}}]'
    )
    d = parse_data(data)
    j = parse_json(js)
    assert d[0].interface == "eth0" and j[0].interface == "vrrp.63"
    assert [v.interface for v in combine(d, None, j)] == ["eth0"]


def test_keepalived_not_running_every_instance_reads_stop_in_both_modes() -> None:
    conf = KeepalivedConfig(instances=(ConfInstance("VI_1", "eth0", 51, vips=(ConfVip("10.0.0.1"),)),))
    master = InstanceView("VI_1", "eth0", 51, state=VrrpState.MASTER, wanted_state=VrrpState.MASTER)
    dumps_mode = merge_views({"dumps": (master,)}, stopped=True, config=conf)  # last dump: MASTER
    dbus_mode = merge_views({"dbus": ()}, stopped=True, config=conf)  # the bus forgot it
    assert dumps_mode is not None and dbus_mode is not None
    assert [(v.name, v.interface, v.vrid, v.state) for v in dumps_mode] == [
        ("VI_1", "eth0", 51, VrrpState.STOP)
    ]
    assert [(v.name, v.interface, v.vrid, v.state) for v in dbus_mode] == [
        ("VI_1", "eth0", 51, VrrpState.STOP)
    ]
    # running: unchanged behaviour
    assert merge_views({"dumps": (master,)}) == (master,)


A_MAC, B_MAC = b"\x02" + b"\0" * 4 + b"\x01", b"\x02" + b"\0" * 4 + b"\x02"


def _probe(w: _Watch, at: float, *answers: bytes) -> bool:
    """One probe of `w` sent at `at`, these answers, closed 0.2 s later; True if the result was published."""
    w.opened(at, 1.0)
    w.probe_macs.extend(answers)
    return w.close(at + 0.2, 8)


def test_a_probe_result_is_published_when_the_next_probe_agrees() -> None:
    w = _Watch("10.9.8.100", "eth0", "inet", VIP4)
    assert not _probe(w, 1.0, A_MAC) and w.last_probe is None  # a first result: not yet
    assert w.next_probe == 1.2  # ... re-checked at once, not at the next round
    assert _probe(w, 1.3, A_MAC)
    assert (w.last_probe, w.last_probe_macs) == (1.0, (A_MAC,))  # the pair's FIRST probe
    assert w.next_probe == 2.3  # agreed: back to the periodic round


def test_a_preemption_overlap_in_one_probe_never_publishes_two_answerers() -> None:
    """The old master answered one probe a fraction of a millisecond before it dropped the VIP: that
    probe got two answers; the quick re-check does not, and two is never published."""
    w = _Watch("10.9.8.100", "eth0", "inet", VIP4)
    _probe(w, 1.0, B_MAC)
    _probe(w, 1.3, B_MAC)
    assert w.last_probe_macs == (B_MAC,)
    published = []
    for at, answers in ((2.3, (A_MAC, B_MAC)), (2.6, (A_MAC,)), (2.9, (A_MAC,))):
        _probe(w, at, *answers)
        published.append(w.last_probe_macs)
    assert published == [(B_MAC,), (B_MAC,), (A_MAC,)]
    assert w.next_probe == 3.9


def test_two_holders_are_published_after_a_quick_second_probe() -> None:
    w = _Watch("10.9.8.100", "eth0", "inet", VIP4)
    _probe(w, 1.0, A_MAC)
    _probe(w, 1.3, A_MAC)
    _probe(w, 2.3, A_MAC, B_MAC)
    assert w.last_probe_macs == (A_MAC,) and w.next_probe == 2.5
    _probe(w, 2.5, A_MAC, B_MAC)
    assert w.last_probe_macs == (A_MAC, B_MAC) and w.last_probe == 2.3
    # use_vmac: both masters answer with one MAC; two answers per probe are two holders as well
    v = _Watch("10.9.8.100", "eth0", "inet", VIP4)
    for at in (1.0, 1.3, 2.3, 2.5):
        _probe(v, at, A_MAC, A_MAC)
    assert v.last_probe_macs == (A_MAC, A_MAC)


def test_quick_probes_are_bounded_when_the_result_keeps_changing() -> None:
    w = _Watch("10.9.8.100", "eth0", "inet", VIP4)
    w.opened(1.0, 1.0)
    at, quick = 1.0, 0
    for i in range(3 * QUICK):
        w.probe_macs.extend((A_MAC,) * (1 + i % 2))
        w.close(at + 0.2, 8)
        if w.next_probe > at + 0.2:
            break
        quick += 1
        at = w.next_probe
        w.opened(at, 1.0)
    assert quick == QUICK and w.next_probe == w.due  # then the periodic round again


def test_ipv6_counts_distinct_macs_and_needs_both_in_two_probes_in_a_row() -> None:
    w = _Watch("fd00:9:8::100", "eth0", "inet6", VIP6)
    _probe(w, 1.0, A_MAC, A_MAC, A_MAC)  # one MAC, however many advertisements
    _probe(w, 1.3, A_MAC)
    assert w.last_probe_macs == (A_MAC,)
    _probe(w, 2.3, A_MAC, B_MAC)  # a failover's overlap (old answers, new announces)
    _probe(w, 2.6, B_MAC)
    _probe(w, 2.9, B_MAC)
    assert w.last_probe_macs == (B_MAC,)
    _probe(w, 3.9, A_MAC, B_MAC)
    _probe(w, 4.2, B_MAC, A_MAC)  # a dual holder keeps answering: two
    assert w.last_probe_macs == (A_MAC, B_MAC)


def _source(store: Store, clock: list[float]) -> L2Source:
    store.set_config(
        KeepalivedConfig(instances=(ConfInstance("VI_1", "eth0", 51, vips=(ConfVip("10.9.8.100"),)),))
    )
    src = L2Source(store, clock=lambda: clock[0])
    src._sync_watches()
    return src


def test_a_vip_taken_over_here_is_probed_at_once_and_twice_after_the_store_has_it() -> None:
    """b takes the VIP over while a keeps it (a split): two probes sent after the store has b's new
    address agree that a answers, and the verdict reads two holders about 0.3 s later, not at the
    periodic rounds (before: the next round and the one after it, ~3 s after the split)."""
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    src = _source(store, clock)
    w = next(iter(src._watches.values()))
    _probe(w, 99.0, A_MAC)
    _probe(w, 99.3, A_MAC)  # b is BACKUP, a answers: published, next round at 100.3
    src._check_store(store.snapshot())
    assert w.next_probe == 100.3 and not w.held
    clock[0] = 100.05
    store.set_addresses((LocalAddress("10.9.8.100", 24, "eth0", "inet"),))  # b takes the VIP
    clock[0] = 100.06
    src._check_store(store.snapshot())
    assert w.held and w.next_probe == 100.06 and w.hurry == 100.05
    w.opened(100.06, 1.0)
    w.probe_macs.append(A_MAC)
    assert w.enough()  # held here and one answer: known before the answer window ends
    w.close(100.061, 8)
    assert w.last_probe == 99.3 and w.next_probe == 100.061  # agreed, but its pair is older: again
    w.opened(100.161, 1.0)
    w.probe_macs.append(A_MAC)
    w.close(100.162, 8)
    assert w.last_probe == 100.06 and w.hurry is None and w.next_probe == 101.161
    src._publish(100.162, force=True)
    snap = store.snapshot()
    assert snap.l2 is not None and snap.l2[0].last_probe == 100.06
    assert l2_witness(snap.l2, frozenset({"10.9.8.100"}), snap.addresses_changed)


def test_an_announcement_or_a_new_master_on_the_wire_makes_a_probe_due_now() -> None:
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    src = _source(store, clock)
    w = next(iter(src._watches.values()))
    w.next_probe = w.due = 100.5
    garp = decode(_arp(1, B_MAC, VIP4, b"\xff" * 6, VIP4, dst=b"\xff" * 6), MAC)
    reply = decode(_arp(2, B_MAC, VIP4, OTHER, b"\x0a\x09\x08\x07", dst=OTHER), MAC)
    assert garp is not None and garp.announce and reply is not None and not reply.announce
    src._heard(w, reply, 100.0)  # an ordinary reply to some client: no news
    assert w.next_probe == 100.5
    src._heard(w, garp, 100.0)
    assert w.next_probe == 100.0 and w.hurry == 100.0
    w.next_probe, w.hurry = 100.5, None
    w.last_probe_macs = (B_MAC,)
    src._heard(w, garp, 100.2)  # a burst from the MAC answering now: once per probe interval
    assert w.next_probe == 100.5
    other = decode(_arp(1, A_MAC, VIP4, b"\xff" * 6, VIP4, dst=b"\xff" * 6), MAC)
    assert other is not None
    src._heard(w, other, 100.3)  # ... but another host announcing is news at once
    assert w.next_probe == 100.0 and w.hurry == 100.0
    w.next_probe, w.hurry = 100.5, None
    peer = WirePeer("eth0", "inet", 51, "10.9.8.1", 90.0, 99.9, 150, 1.0, 2, ("10.9.8.100",), 0, None, 9)
    store.set_wire_provider(lambda: ((peer,), WireStats()))
    src._check_store(store.snapshot())
    assert w.next_probe == 100.5  # the first look at the wire is no news
    new = replace(peer, source="10.9.8.2", first_seen=99.95)
    store.set_wire_provider(lambda: ((peer, new), WireStats()))
    src._check_store(store.snapshot())
    assert w.next_probe == 100.0  # a second router advertises the VIP's VRID: probe now


def test_this_node_and_another_answerer_need_a_probe_after_the_local_address_change() -> None:
    # b just took the VIP over (addresses changed at t=10); the latest probe (t=9.5) still has a's
    # answer from before a let it go: not two holders
    stale = rec(answerers=("02:00:00:00:00:01",), last_probe_answers=1, last_probe=9.5)
    v = judge(stale, held={"10.9.8.100"}, held_since=10.0)
    assert (v.two_answerers, v.answerers) == (False, 1)
    fresh = rec(answerers=("02:00:00:00:00:01",), last_probe_answers=1, last_probe=10.2)
    assert judge(fresh, held={"10.9.8.100"}, held_since=10.0).two_answerers  # a still answers: split


def test_a_wakeup_rebuilds_only_the_records_that_moved_and_publishes_only_verdict_news() -> None:
    """Per wakeup the witness costs what moved, not the number of VIPs (issue #12: every step rebuilt
    all records, 2.8 ms at 100 VIPs): a completed probe that changes no published result rebuilds
    nothing (its counters and time accounts wait for the refresh); a probe result a verdict reads is
    rebuilt and published at once, its VIP's record alone."""
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    vips = tuple(ConfVip(f"10.9.8.{100 + k}") for k in range(3))
    store.set_config(KeepalivedConfig(instances=(ConfInstance("VI_1", "eth0", 51, vips=vips),)))
    src = L2Source(store, clock=lambda: clock[0])
    src._sync_watches()
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for the capture
    src._attach("eth0", near, MAC)
    src._publish(100.0)
    first = store.snapshot().l2
    assert first is not None and len(first) == 3
    one, two, three = src._watches.values()
    kept = [w.rec for w in (one, two, three)]
    one.opened(100.1, 1.0)  # a probe out: a counter moves, no record is rebuilt
    src._publish(100.1)
    assert store.snapshot().l2 is first and one.rec is kept[0]
    one.probe_macs.append(A_MAC)
    one.close(100.3, 8)  # completed, a first result: its record alone (unknown: unobserved time moves)
    src._publish(100.3)
    assert store.snapshot().l2 is first
    assert one.rec is not kept[0] and two.rec is kept[1] and three.rec is kept[2]
    _probe(one, 100.4, A_MAC)  # two agreeing probes: a result a verdict reads
    src._publish(100.6)
    published = store.snapshot().l2
    assert published is not None and published[0].last_probe_answers == 1
    assert published[0].probes_sent == 2 and published[0].last_probe == 100.1
    assert published[1] is kept[1] and published[2] is kept[2]
    again = published[0]
    _probe(one, 101.6, A_MAC)  # it agrees again: counters only, they wait for the refresh
    src._publish(101.8)
    assert store.snapshot().l2 is published and one.rec is again
    clock[0] = 106.0
    generation = store.generation
    src._publish(106.0)  # the refresh: every record again (counters, time accounts)
    refreshed = store.snapshot().l2
    assert refreshed is not None and refreshed[1] is not kept[1] and refreshed[1].observed_seconds >= 0
    assert refreshed[0].probes_sent == 3 and refreshed[0].last_probe == 100.4  # ... and now they show
    assert store.generation == generation  # ... which no verdict reads: the watchdog is not woken
    near.close()
    far.close()


def test_a_new_keepalived_conf_is_watched_at_once_not_at_the_next_socket_check() -> None:
    """Healthy sockets are checked every CHECK seconds, but the VIPs of a new keepalived.conf are
    watched as soon as the store's news reaches the loop; the same config is not parsed again."""
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    src = _source(store, clock)
    src._check_store(store.snapshot())
    src._resync = False
    before = dict(src._watches)
    src._sync_watches()  # the same config: the same watches, not made again
    assert src._watches == before
    vips = (ConfVip("10.9.8.100"), ConfVip("10.9.8.101"))
    store.set_config(KeepalivedConfig(instances=(ConfInstance("VI_1", "eth0", 51, vips=vips),)))
    src._check_store(store.snapshot())
    assert src._resync
    src._sync_watches()
    assert sorted(w.vip for w in src._watches.values()) == ["10.9.8.100", "10.9.8.101"]


def test_a_window_ending_just_before_the_next_probe_is_closed_in_that_probes_wakeup() -> None:
    """At the rate cap, probe k's answer window ends a few ms before probe k+2 is due: one wakeup."""
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    vips = (ConfVip("10.9.8.100"), ConfVip("10.9.8.101"))
    store.set_config(KeepalivedConfig(instances=(ConfInstance("VI_1", "eth0", 51, vips=vips),)))
    src = L2Source(store, clock=lambda: clock[0], refresh=60.0)
    src._sync_watches()
    near, _far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for the capture
    src._attach("eth0", near, MAC)
    one, two = src._watches.values()
    one.opened(100.0, 1.0)  # its window (0.2 s) ends at 100.2
    assert two.next_probe < 100.0  # due, but the rate cap holds it until 100.205
    src._last_probe_sent = 100.205 - src.min_gap
    assert abs(src._next_wake(100.1) - 0.105) < 1e-9
    src._last_probe_sent = 100.5 - src.min_gap  # the next probe much later: the window's end wakes
    assert abs(src._next_wake(100.1) - 0.1) < 1e-9
    near.close()
    _far.close()
