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
)
from ka_exporter.parse.dumps import combine, parse_data, parse_json
from ka_exporter.sources.l2 import (
    _confirmed,
    arp_probe,
    configured_targets,
    dad_probe,
    decode,
    open_socket,
)
from ka_exporter.store import merge_views
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
            rec(answerers=("02:00:00:00:00:02",), last_probe_answers=1, probes_sent=5, answers_seen=7),
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


def test_ipv6_two_macs_count_only_when_both_answered_two_probes_in_a_row() -> None:
    a, b = b"\x02" + b"\0" * 4 + b"\x01", b"\x02" + b"\0" * 4 + b"\x02"
    assert _confirmed([a, a], None) == [a]  # one MAC, however many advertisements
    assert _confirmed([a, b], None) == [a]  # first probe: not yet two
    assert _confirmed([a, b], (a,)) == [a]  # a failover's overlap (old answers, new announces)
    assert _confirmed([b], (a, b)) == [b]
    assert _confirmed([a, b], (a, b)) == [a, b]  # a dual holder keeps answering: two


def test_this_node_and_another_answerer_need_a_probe_after_the_local_address_change() -> None:
    # b just took the VIP over (addresses changed at t=10); the latest probe (t=9.5) still has a's
    # answer from before a let it go: not two holders
    stale = rec(answerers=("02:00:00:00:00:01",), last_probe_answers=1, last_probe=9.5)
    v = judge(stale, held={"10.9.8.100"}, held_since=10.0)
    assert (v.two_answerers, v.answerers) == (False, 1)
    fresh = rec(answerers=("02:00:00:00:00:01",), last_probe_answers=1, last_probe=10.2)
    assert judge(fresh, held={"10.9.8.100"}, held_since=10.0).two_answerers  # a still answers: split
