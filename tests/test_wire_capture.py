"""The wire source on real sockets: two namespaces joined by a veth pair, crafted packets on the wire.

The sender is an AF_PACKET socket in namespace "tx"; the WireSource runs (its threads) in "rx".
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.wire import collect_wire
from ka_exporter.model import ConfInstance, KeepalivedConfig
from ka_exporter.sources.capture import PacketSocket
from ka_exporter.sources.wire import WireSource
from ka_exporter.store import Store
from ka_exporter.verdicts import conditions
from ka_exporter.verdicts.wire import CONFLICT_KINDS
from tests.conftest import in_netns, sh, unique, wait_until

pytestmark = pytest.mark.lab

T = TypeVar("T")
MCAST4 = b"\x01\x00\x5e\x00\x00\x12"
MCAST6 = b"\x33\x33\x00\x00\x00\x12"
PASSWORD = b"wIr3Pass"


@dataclass
class Pair:
    tx: str
    rx: str
    net: str  # "10.X.Y"

    def ip(self, host: int) -> str:
        return f"{self.net}.{host}"


def make_link(pair: Pair) -> None:
    sh("ip", "-n", pair.tx, "link", "add", "vx", "type", "veth", "peer", "name", "vr", "netns", pair.rx)
    sh("ip", "-n", pair.tx, "addr", "add", f"{pair.ip(1)}/24", "dev", "vx")
    sh("ip", "-n", pair.rx, "addr", "add", f"{pair.ip(2)}/24", "dev", "vr")
    sh("ip", "-n", pair.tx, "link", "set", "vx", "up")
    sh("ip", "-n", pair.rx, "link", "set", "vr", "up")


@pytest.fixture
def pair() -> Iterator[Pair]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tx, rx = unique("kwt"), unique("kwr")
    net = f"10.{random.randrange(200, 255)}.{random.randrange(0, 256)}"
    made: list[str] = []
    try:
        for name in (tx, rx):
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        p = Pair(tx, rx, net)
        make_link(p)
        yield p
    finally:
        for name in made:
            sh("ip", "netns", "del", name, check=False)


class Sender:
    """An AF_PACKET SOCK_DGRAM socket on `vx` in the tx namespace: sends raw IP packets."""

    def __init__(self, pair: Pair, iface: str = "vx", ns: str | None = None) -> None:
        self.iface = iface
        self.sock = in_netns(ns or pair.tx, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))

    def send(self, packet: bytes) -> None:
        v6 = packet[0] >> 4 == 6
        proto, mac = (0x86DD, MCAST6) if v6 else (0x0800, MCAST4)
        self.sock.sendto(packet, (self.iface, proto, 0, 0, mac))

    def close(self) -> None:
        self.sock.close()


def v2(
    src: str, vrid: int = 51, prio: int = 100, vips: tuple[str, ...] = ("10.9.9.100",), pw: bytes = PASSWORD
) -> bytes:
    a1, a2 = int.from_bytes(pw[:4], "big"), int.from_bytes(pw[4:8], "big")
    return bytes(
        IP(src=src, dst="224.0.0.18", ttl=255, proto=112)
        / VRRP(vrid=vrid, priority=prio, addrlist=list(vips), authtype=1, auth1=a1, auth2=a2)
    )


def v2_ah(src: str, vrid: int = 61, nh: int = 112) -> bytes:
    inner = bytes(VRRP(vrid=vrid, priority=150, addrlist=["10.9.9.161"], authtype=2))
    ah = bytes([nh, 4, 0, 0]) + bytes(4) + (1).to_bytes(4, "big") + bytes(12)
    return bytes(IP(src=src, dst="224.0.0.18", ttl=255, proto=51) / (ah + inner))


def v3_6(src: str = "fe80::1", vrid: int = 81) -> bytes:
    return bytes(
        IPv6(src=src, dst="ff02::12", hlim=255, nh=112)
        / VRRPv3(vrid=vrid, priority=150, adv=100, addrlist=["fd00::81"])
    )


class CountingStore(Store):
    """A real Store that also counts the wire source's change notifications."""

    def __init__(self) -> None:
        super().__init__(hostname="rx")
        self.wire_calls = 0
        self.wire_times: list[float] = []

    def wire_changed(self) -> None:
        self.wire_calls += 1
        self.wire_times.append(time.time())
        super().wire_changed()


def start_source(pair: Pair, **kw: object) -> tuple[WireSource, CountingStore]:
    store = CountingStore()
    kw.setdefault("check_interval", 0.2)
    kw.setdefault("retry_interval", 0.2)
    src = WireSource(store, ["vr"], **kw)  # type: ignore[arg-type]

    def go() -> None:
        src.start()

    in_netns(pair.rx, go)
    assert wait_until(lambda: (h := store.health("wire")) is not None and h.up, timeout=5), store.health(
        "wire"
    )
    return src, store


def test_kernel_filter_passes_only_vrrp_and_ah_carrying_vrrp(pair: Pair) -> None:
    src, store = start_source(pair)
    tx = Sender(pair)
    try:
        vrrp = (
            [v2(pair.ip(1)) for _ in range(10)]
            + [v2_ah(pair.ip(1)) for _ in range(5)]
            + [v3_6() for _ in range(5)]
        )
        garbage = [
            bytes(IP(src=pair.ip(1), dst="224.0.0.18", ttl=255, proto=112) / (b"\x99" * 12)) for _ in range(4)
        ]
        other = (
            [bytes(IP(src=pair.ip(1), dst=pair.ip(2)) / UDP(dport=9) / b"x") for _ in range(50)]
            + [bytes(IP(src=pair.ip(1), dst=pair.ip(2)) / ICMP()) for _ in range(50)]
            + [bytes(IPv6(src="fe80::1", dst="ff02::1") / UDP(dport=9)) for _ in range(20)]
            + [v2_ah(pair.ip(1), nh=6) for _ in range(10)]  # AH carrying TCP
            + [bytes(IP(src=pair.ip(1), dst="224.0.0.18", proto=113) / (b"\x21" * 20)) for _ in range(10)]
        )
        mixed = vrrp + garbage + other
        random.Random(5).shuffle(mixed)
        for pkt in mixed:
            tx.send(pkt)
        want = len(vrrp) + len(garbage)
        assert wait_until(lambda: store.snapshot().wire_stats.packets >= want, timeout=5)  # type: ignore[union-attr]
        time.sleep(0.3)  # anything else in flight would arrive now
        stats = store.snapshot().wire_stats
        assert stats is not None
        # Only VRRP reached Python: 130+ UDP/ICMP/IPv6/AH-TCP packets (and rx's ICMP replies,
        # port unreachables, MLD/ND traffic) were dropped in the kernel.
        assert src.received == want
        assert stats.packets == want
        invalid = dict(stats.invalid)
        assert sum(invalid.values()) == len(garbage)
        peers = store.snapshot().wire_peers
        assert peers is not None
        assert {(p.family, p.vrid, p.source, p.auth_type, p.adverts) for p in peers} == {
            ("inet", 51, pair.ip(1), 1, 10),
            ("inet", 61, pair.ip(1), 2, 5),
            ("inet6", 81, "fe80::1", 0, 5),
        }
        assert wait_until(lambda: store.snapshot().wire_stats.kernel_packets == want, timeout=2)  # type: ignore[union-attr]
    finally:
        tx.close()
        src.stop()


def test_own_outgoing_adverts_are_marked_local_and_stamped_at_receipt(pair: Pair) -> None:
    src, store = start_source(pair)
    own = Sender(pair, iface="vr", ns=pair.rx)
    peer = Sender(pair)
    try:
        before = time.time()
        own.send(v2(pair.ip(2), prio=150))
        peer.send(v2(pair.ip(1), prio=100))
        assert wait_until(lambda: len(store.snapshot().wire_peers or ()) == 2, timeout=5)
        after = time.time()
        rows = {p.source: p for p in store.snapshot().wire_peers or ()}
        assert rows[pair.ip(2)].local is True
        assert rows[pair.ip(1)].local is False
        for p in rows.values():
            assert before <= p.last_seen <= after
    finally:
        own.close()
        peer.close()
        src.stop()


def test_split_brain_on_the_wire_notifies_the_store_at_once(pair: Pair) -> None:
    src, store = start_source(pair)
    tx = Sender(pair)
    try:
        for _ in range(3):  # a: steady master, VRRPv3 every 0.2 s
            tx.send(_v3_4(pair.ip(1), 150, 20))
            time.sleep(0.2)
        assert wait_until(lambda: src.received == 3, timeout=2)
        # the new router, and its run reaching two adverts (a run of two can make a split brain:
        # verdicts.wire); its third advert changes nothing
        assert store.wire_calls == 2
        assert not any(v.split_brain for v in src.verdicts())
        tx.send(_v3_4(pair.ip(3), 100, 20))  # b starts advertising too
        assert wait_until(lambda: src.received == 4, timeout=2)
        assert store.wire_calls == 3  # masters 1 -> 2
        for _ in range(3):  # a and b interleaved: both masters
            time.sleep(0.1)
            tx.send(_v3_4(pair.ip(1), 150, 20))
            time.sleep(0.1)
            tx.send(_v3_4(pair.ip(3), 100, 20))
        assert wait_until(lambda: src.received == 10, timeout=2)
        assert any(v.split_brain for v in src.verdicts())
        split_calls = store.wire_calls
        assert split_calls in (4, 5)  # b's run of two, and split brain (one notification or two)
        for _ in range(2):  # more of the same: nothing changes, nobody is woken
            time.sleep(0.1)
            tx.send(_v3_4(pair.ip(1), 150, 20))
            time.sleep(0.1)
            tx.send(_v3_4(pair.ip(3), 100, 20))
        assert wait_until(lambda: src.received == 14, timeout=2)
        assert store.wire_calls == split_calls
        reg = CollectorRegistry(auto_describe=False)
        reg.register(SnapshotCollector(store.snapshot, [collect_wire]))
        labels = {"interface": "vr", "family": "inet", "vrid": "71"}
        assert reg.get_sample_value("keepalived_wire_split_brain", labels) == 1.0
        assert reg.get_sample_value("keepalived_wire_masters", labels) == 2.0
        # both stop: the tick clears split brain, then masters, without any packet
        assert wait_until(lambda: reg.get_sample_value("keepalived_wire_no_master", labels) == 1.0, timeout=3)
        assert reg.get_sample_value("keepalived_wire_split_brain", labels) == 0.0
        assert store.wire_calls > split_calls
    finally:
        tx.close()
        src.stop()


def _v3_4(src: str, prio: int, cs: int) -> bytes:
    return bytes(
        IP(src=src, dst="224.0.0.18", ttl=255, proto=112)
        / VRRPv3(vrid=71, priority=prio, adv=cs, addrlist=["10.9.9.171"])
    )


def read_packets(sock: PacketSocket, n: int, limit: int = 256) -> list[tuple[bytes, float, bool]]:
    """`n` packets from `sock` (asserted to come within 2 s), `limit` per recv_batch."""
    got: list[tuple[bytes, float, bool]] = []

    def more() -> bool:
        got.extend(sock.recv_batch(limit))
        return len(got) >= n

    assert wait_until(more, timeout=2), got
    assert len(got) == n, got
    return got


def test_packets_are_timed_when_they_reached_the_socket_not_when_read(pair: Pair) -> None:
    """Kernel receive times (SO_TIMESTAMPNS via recvmmsg): packets read late keep their arrival
    time, received and own (outgoing) ones alike; read the old way they would be timed at the read."""
    inbound = in_netns(pair.rx, lambda: PacketSocket("vr"))
    outbound = in_netns(pair.rx, lambda: PacketSocket("vr", outgoing=True))
    peer, own = Sender(pair), Sender(pair, iface="vr", ns=pair.rx)
    try:
        before = time.time()
        for k in range(3):
            peer.send(v2(pair.ip(1), vrid=51 + k))
        own.send(v2(pair.ip(2), prio=150))
        time.sleep(0.3)  # read late
        read_from = time.time()
        got = read_packets(inbound, 3) + read_packets(outbound, 1)
        assert [(data[12:16], out) for data, _ts, out in got] == [
            *[(socket.inet_aton(pair.ip(1)), False)] * 3,
            (socket.inet_aton(pair.ip(2)), True),
        ]
        stamps = [ts for _data, ts, _out in got]
        assert all(before <= ts < read_from for ts in stamps), (before, stamps, read_from)
        assert stamps[0] <= stamps[1] <= stamps[2]  # the order they came in
    finally:
        for s in (peer, own, inbound, outbound):
            s.close()


def test_without_recvmmsg_packets_are_read_one_by_one_and_timed_when_read(pair: Pair) -> None:
    """The fallback where libc has no recvmmsg: the same packets, timed by time.time() on return."""
    sock = in_netns(pair.rx, lambda: PacketSocket("vr"))
    sock._vectors = None  # as built where recvmmsg is missing
    tx = Sender(pair)
    try:
        for k in range(3):
            tx.send(v2(pair.ip(1), vrid=51 + k))
        time.sleep(0.1)
        read_from = time.time()
        got = read_packets(sock, 3, limit=2)
        assert [data[12:16] for data, _ts, _out in got] == [socket.inet_aton(pair.ip(1))] * 3
        assert all(read_from <= ts for _data, ts, _out in got)
    finally:
        tx.close()
        sock.close()


def test_adverts_flowing_are_read_in_one_wakeup_per_batch_window_with_their_own_times(pair: Pair) -> None:
    """Packets flowing (a third read within two windows) wait for the window's end and are read
    together (one wakeup, one store notification), each keeping the time it arrived; a packet after a
    quiet spell is read at once. (A long window here, so that a loaded machine cannot blur it.)"""
    window = 0.5
    src, store = start_source(pair, batch_window=window)
    tx = Sender(pair)
    try:
        woken = src.wakeups
        for k in range(3):  # after a quiet spell each is read at once; the third starts a window
            tx.send(v2(pair.ip(1 + k), vrid=51 + k))
            assert wait_until(lambda: src.received == k + 1, timeout=2)  # noqa: B023 - called at once
            assert src.wakeups == woken + k + 1
        sent = []
        for k in range(2):  # these wait for the window's end
            tx.send(v2(pair.ip(4 + k), vrid=54 + k))
            sent.append(time.time())
            time.sleep(0.02)
        held = {p.source for p in store.snapshot().wire_peers or ()}
        assert wait_until(lambda: src.received == 5, timeout=5)
        assert src.wakeups == woken + 4  # both in one wakeup
        assert not held & {pair.ip(4), pair.ip(5)}, held  # not published before the window ended
        rows = {p.source: p for p in store.snapshot().wire_peers or ()}
        # each timed when it arrived (the first before the second was sent), not when both were read
        assert rows[pair.ip(4)].last_seen < sent[1]
        assert rows[pair.ip(4)].last_seen < rows[pair.ip(5)].last_seen
    finally:
        tx.close()
        src.stop()


def test_interface_that_disappears_and_comes_back_is_reopened(pair: Pair) -> None:
    src, store = start_source(pair)
    tx = Sender(pair)
    try:
        tx.send(v2(pair.ip(1)))
        assert wait_until(lambda: src.received == 1, timeout=5)
        tx.close()
        sh("ip", "-n", pair.rx, "link", "del", "vr")
        assert wait_until(lambda: not store.health("wire").up, timeout=5)  # type: ignore[union-attr]
        err = store.health("wire").error  # type: ignore[union-attr]
        assert err == "wire: cannot open AF_PACKET socket on vr: no such interface"
        make_link(pair)
        assert wait_until(lambda: store.health("wire").up, timeout=5)  # type: ignore[union-attr]
        tx = Sender(pair)
        tx.send(v2(pair.ip(1)))
        assert wait_until(lambda: src.received == 2, timeout=5)
    finally:
        tx.close()
        src.stop()


def test_run_once_listens_for_the_window_and_closes(pair: Pair) -> None:
    store = Store(hostname="rx")
    src = WireSource(store, ["vr"], listen_seconds=1.0)
    tx = Sender(pair)

    def send_soon() -> None:
        time.sleep(0.3)
        tx.send(v3_6())

    sender = threading.Thread(target=send_soon)
    sender.start()
    in_netns(pair.rx, src.run_once)
    sender.join()
    tx.close()
    h = store.health("wire")
    assert h is not None
    assert h.up
    peers = store.snapshot().wire_peers
    assert peers is not None
    assert [(p.family, p.vrid) for p in peers] == [("inet6", 81)]
    # the sockets are closed; what was listened stays: where, and (as the time up to a read) how long
    snap = store.snapshot()
    assert snap.wire_stats is not None
    assert snap.wire_stats.interfaces == ("vr",)
    assert snap.wire_stats.listening_since is not None
    assert 0.99 <= snap.time - snap.wire_stats.listening_since <= 1.2


def test_once_window_shorter_than_the_hold_time_leaves_an_unheard_vrid_unjudged(pair: Pair) -> None:
    store = Store(hostname="rx")
    store.set_config(
        KeepalivedConfig(
            instances=(
                ConfInstance(name="VI_1", interface="vr", vrid=51),  # advert_int 1: hold ~4.15 s
                ConfInstance(name="VI_F", interface="vr", vrid=72, advert_int=0.1, version=3),  # 0.46 s
            )
        )
    )
    src = WireSource(store, ["vr"], listen_seconds=1.0)
    in_netns(pair.rx, src.run_once)
    time.sleep(0.5)  # as if the other sources were slower: not listened to, so not silence
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(store.snapshot, [collect_wire]))
    labels = {"interface": "vr", "family": "inet"}
    assert reg.get_sample_value("keepalived_wire_no_master", {**labels, "vrid": "51"}) == 0.0
    assert reg.get_sample_value("keepalived_wire_no_master", {**labels, "vrid": "72"}) == 1.0


def test_listening_starts_when_the_sockets_open_and_gates_no_master(pair: Pair) -> None:
    store = CountingStore()
    store.set_config(
        KeepalivedConfig(
            instances=(ConfInstance(name="VI_F", interface="vr", vrid=73, advert_int=0.1, version=3),)
        )
    )
    src = WireSource(store, ["vr"], check_interval=0.2, retry_interval=0.2, tick_interval=0.05)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(store.snapshot, [collect_wire]))
    labels = {"interface": "vr", "family": "inet", "vrid": "73"}
    before = time.time()
    in_netns(pair.rx, src.start)
    try:
        assert wait_until(
            lambda: (s := store.snapshot().wire_stats) is not None and s.interfaces == ("vr",), 5
        )
        stats = store.snapshot().wire_stats
        assert stats is not None
        assert stats.listening_since is not None
        assert before <= stats.listening_since <= time.time()
        since = stats.listening_since
        early = reg.get_sample_value("keepalived_wire_no_master", labels)
        if time.time() - since < 0.4:  # (only checkable this early)
            assert early == 0.0
        # nobody advertises VRID 73: after its hold time (0.46 s) of listening it is "no master",
        # and the source tells the store then, without any packet
        assert wait_until(lambda: reg.get_sample_value("keepalived_wire_no_master", labels) == 1.0, 3)
        assert time.time() - since >= 0.46
        assert wait_until(lambda: any(t >= since + 0.46 for t in store.wire_times), 2)
        assert src.received == 0
    finally:
        src.stop()


def test_a_spoofer_using_the_masters_own_address_marks_the_row_contested(pair: Pair) -> None:
    src, store = start_source(pair)
    tx = Sender(pair)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(store.snapshot, [collect_wire]))
    vrid = {"interface": "vr", "family": "inet", "vrid": "51"}
    try:
        real = v2(pair.ip(1), prio=150)
        for _ in range(3):
            tx.send(real)
            time.sleep(0.05)
        assert wait_until(lambda: src.received == 3, 2)
        assert reg.get_sample_value("keepalived_wire_conflict", {**vrid, "kind": "source"}) == 0.0
        # same source address, another password: the row would silently change; now it is contested
        tx.send(v2(pair.ip(1), prio=150, pw=b"sp00fed!"))
        time.sleep(0.05)
        tx.send(real)
        assert wait_until(
            lambda: reg.get_sample_value("keepalived_wire_conflict", {**vrid, "kind": "source"}) == 1.0, 2
        )
        (row,) = store.snapshot().wire_peers or ()
        assert row.contested
        assert row.source == pair.ip(1)
        found = [c for c in conditions.evaluate(store.snapshot()) if c.kind == "wire_conflict"]
        assert [dict(c.labels)["conflict"] for c in found] == ["source"]
        text = generate_latest(reg)
        assert PASSWORD not in text
        assert b"sp00fed!" not in text
        # a priority-only impersonation (VRRPv3, 0.1 s): the priority flips on every advert
        for _ in range(8):
            tx.send(_v3_4(pair.ip(1), 150, 10))
            time.sleep(0.02)
            tx.send(_v3_4(pair.ip(1), 255, 10))
            time.sleep(0.02)
        v3 = {"interface": "vr", "family": "inet", "vrid": "71"}
        assert wait_until(
            lambda: reg.get_sample_value("keepalived_wire_conflict", {**v3, "kind": "source"}) == 1.0, 2
        )
    finally:
        tx.close()
        src.stop()


def test_missing_interface_is_one_line_and_run_once_does_not_raise() -> None:
    store = Store(hostname="x")
    name = unique("nope")
    src = WireSource(store, [name, unique("nop2")], listen_seconds=0.0)
    src.run_once()
    h = store.health("wire")
    assert h is not None
    assert not h.up
    assert h.error is not None
    assert "\n" not in h.error
    assert h.error.startswith(f"wire: cannot open AF_PACKET socket on {name}, ")
    assert h.error.endswith(": no such interface")


NO_CAP_SCRIPT = r"""
import time
from ka_exporter.store import Store
from ka_exporter.sources.wire import WireSource
from ka_exporter.sources.vips import VipSource
store = Store(hostname="x")
wire = WireSource(store, ["lo"], retry_interval=0.05, listen_seconds=0.1)
wire.run_once()
print("ONCE", store.health("wire").error)
vips = VipSource(store)
vips.run_once()
wire.start()
time.sleep(0.6)
print("ATTEMPTS", wire.attempts)
print("VIPS", store.health("vips").up)
wire.stop()
"""


def test_without_cap_net_raw_the_source_says_so_in_one_line_and_others_go_on() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop the capability")
    res = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-c", NO_CAP_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    lines = dict(ln.split(" ", 1) for ln in res.stdout.splitlines())
    assert lines["ONCE"] == (
        "wire: cannot open AF_PACKET socket on lo: needs CAP_NET_RAW "
        "(run as root or grant AmbientCapabilities=CAP_NET_RAW)"
    )
    assert int(lines["ATTEMPTS"]) >= 3  # keeps retrying
    assert lines["VIPS"] == "True"
    warnings = [ln for ln in res.stderr.splitlines() if "CAP_NET_RAW" in ln]
    assert len(warnings) <= 2  # logged once per distinct error, not once per retry


def test_spoofed_flood_leaves_the_table_at_its_cap_and_the_exposition_bounded(pair: Pair) -> None:
    cap = 4096
    src, store = start_source(pair, cap=cap)
    rng = random.Random(11)
    n = 100_000
    packets = [
        v2(
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            vrid=rng.randrange(1, 256),
            prio=rng.randrange(256),
            pw=secrets.token_bytes(8),
        )
        for _ in range(2000)
    ]
    tx = Sender(pair)
    try:
        real = v2(pair.ip(1), prio=150)
        for i in range(n):
            pkt = bytearray(packets[i % len(packets)])
            # vary the source (and so the key) of every packet: fix up the IP header checksum only
            pkt[14:16] = i.to_bytes(4, "big")[2:]
            tx.send(bytes(pkt[:10]) + b"\0\0" + bytes(pkt[12:]))
            if i % 5000 == 0:
                tx.send(real)
        # The kernel counts every packet that passed the filter, read or dropped; wait until all
        # of them are counted and the source has read what was queued.
        assert wait_until(
            lambda: (
                (s := store.snapshot().wire_stats) is not None
                and s.kernel_packets >= n + 20
                and s.kernel_packets == s.packets + s.kernel_drops
            ),
            timeout=30,
        ), store.snapshot().wire_stats
        stats = store.snapshot().wire_stats
        assert stats is not None
        assert len(src.table) == cap
        # (from one consistent read of the table: src.received runs up to a batch ahead of it)
        assert stats.evictions >= stats.packets - cap - 100
        assert stats.kernel_packets == stats.packets + stats.kernel_drops
        reg = CollectorRegistry(auto_describe=False)
        reg.register(SnapshotCollector(store.snapshot, [collect_wire]))
        text = generate_latest(reg)
        series = [ln for ln in text.decode().splitlines() if ln and not ln.startswith("#")]
        assert len(series) <= 5 * cap + (4 + len(CONFLICT_KINDS)) * 255 + 40
        print(
            f"\nflood: sent {n}, read {src.received}, kernel drops {stats.kernel_drops}, "
            f"peers {len(src.table)}, evictions {stats.evictions}, exposition {len(text)} bytes, {len(series)} series"
        )
    finally:
        tx.close()
        src.stop()


def test_packet_socket_reports_a_bad_interface_name_cleanly() -> None:
    with pytest.raises(Exception, match="no such interface"):
        PacketSocket("x" * 14)
