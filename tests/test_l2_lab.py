"""The L2 witness against real keepalived pairs (ka_exporter.lab): who answers ARP / ND for the VIP.

An `L2Source` (plus a `VipSource`, for "this node holds it") runs in node a, node b and the observer;
each verdict is sampled every 50 ms. A second, independent capture in node a counts the observer's
probes on the wire and checks their bytes. Also here: keepalived SIGKILLed (issue item 7) in D-Bus and
dumps mode, and use_vmac's interface label (item 8), both through the real exporter.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ka_exporter.lab.demo import node_args
from ka_exporter.sources.l2 import SO_TIMESTAMPNS, L2Source, _kernel_time
from ka_exporter.sources.vips import VipSource
from ka_exporter.store import Store
from ka_exporter.verdicts.l2 import L2Verdict, judge_snapshot
from tests.conftest import in_netns, need_lab, sample, start_exporter, stop_exporter, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

lab_mod = pytest.importorskip("ka_exporter.lab")
Lab = lab_mod.Lab
POLL = 0.05
PROBE = 0.2  # probe interval of the witnesses under test


def wait(pred: Callable[[], bool], timeout: float) -> bool:
    return wait_until(pred, timeout, POLL)


@dataclass
class Witness:
    name: str
    store: Store
    sources: list[Any]
    samples: list[tuple[float, dict[str, L2Verdict]]] = field(default_factory=list)

    def sample(self) -> None:
        verdicts = {v.vip: v for v in judge_snapshot(self.store.snapshot())}
        self.samples.append((time.monotonic(), verdicts))

    def now(self, vip: str) -> L2Verdict | None:
        return self.samples[-1][1].get(vip) if self.samples else None

    def since(self, t: float, vip: str) -> list[L2Verdict | None]:
        return [s.get(vip) for at, s in self.samples if at >= t]

    def record(self, vip: str) -> Any:
        return next(r for r in self.store.snapshot().l2 or () if r.vip == vip)


class Witnesses:
    def __init__(self, lab: Any, names: tuple[str, ...] = ("a", "b", "o"), **kw: Any) -> None:
        self.lab = lab
        self.w: dict[str, Witness] = {}
        for name in names:
            host = lab.observer if name == "o" else lab.nodes[name]
            store = Store(hostname=name)
            targets = [(host.interface, vip) for vip in lab.vips]
            srcs: list[Any] = [VipSource(store), L2Source(store, targets, probe_interval=PROBE, **kw)]
            for s in srcs:
                in_netns(host.netns, s.start)
            self.w[name] = Witness(name, store, srcs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            for w in self.w.values():
                w.sample()

    def __getitem__(self, name: str) -> Witness:
        return self.w[name]

    def all(self, pred: Callable[[L2Verdict], bool], vips: list[str] | None = None) -> bool:
        return all(
            (v := w.now(vip)) is not None and pred(v)
            for w in self.w.values()
            for vip in vips or self.lab.vips
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for w in self.w.values():
            for s in w.sources:
                s.stop()


class WireCount:
    """An independent capture (plain AF_PACKET, no filter) in `netns`: frames sent by `mac`."""

    def __init__(self, netns: str, mac: bytes, ethertype: int, interface: str = "eth0") -> None:
        self.frames: list[tuple[float, bytes]] = []
        self._mac = mac
        self._sock: socket.socket = in_netns(
            netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        )
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        in_netns(netns, lambda: self._sock.bind((interface, ethertype)))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _f, _a = self._sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            if data[6:12] == self._mac:
                self.frames.append((_kernel_time(anc) or time.time(), data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def mac_of(netns: str) -> bytes:
    out = subprocess.run(["ip", "-n", netns, "-br", "link", "show", "eth0"], capture_output=True, text=True)
    return bytes.fromhex(out.stdout.split()[2].replace(":", ""))


def neighbours(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns, "neigh", "show"], capture_output=True, text=True).stdout.lower()


def assert_rate(times: list[float], rate: float) -> None:
    """No one-second window holds more than `rate` probes (+1 for the window's edge)."""
    times = sorted(times)
    for i, t in enumerate(times):
        within = sum(1 for u in times[i:] if u < t + 1.0)
        assert within <= rate + 1, (within, rate)


def failovers_never_show_two(lab: Any, ws: Witnesses, cycles: int = 2) -> None:
    """SIGTERM failovers and preemptions back, polled every 50 ms: two answerers must never show."""
    t0 = time.monotonic()
    for _ in range(cycles):
        lab.failover()
        assert lab.wait_for(lambda: lab.master() == "b", 5)
        time.sleep(0.6)
        lab.start_master()  # a comes back with the higher priority and preempts b
        assert lab.wait_for(lambda: lab.master() == "a", 5)
        time.sleep(0.6)
    time.sleep(0.5)
    for w in ws.w.values():
        for vip in lab.vips:
            seen = w.since(t0, vip)
            assert len(seen) >= 15, w.name
            bad = [v for v in seen if v is not None and v.two_answerers]
            assert bad == [], (w.name, vip, bad[:2])


def test_ipv4_one_two_and_no_answerer_and_the_probes_on_the_wire() -> None:
    need_lab()
    with Lab(profile="fast") as lab:
        vip = lab.vips[0]
        obs_mac = mac_of(lab.observer.netns)
        wire = WireCount(lab.nodes["a"].netns, obs_mac, 0x0806)
        ws = Witnesses(lab)
        try:
            # 1. normal: exactly one answerer everywhere (node a holds it; b and the observer hear a)
            assert wait(lambda: ws.all(lambda v: v.probe_answers is not None), 5)
            t0 = time.monotonic()
            time.sleep(1.0)
            for w in ws.w.values():
                seen = w.since(t0, vip)
                assert seen and all(
                    v is not None and v.answerers == 1 and not v.two_answerers for v in seen
                ), w.name
            assert ws["a"].now(vip).held_here  # type: ignore[union-attr]
            a_mac = ":".join(f"{b:02x}" for b in mac_of(lab.nodes["a"].netns))
            assert ws["o"].record(vip).answerers == (a_mac,)

            # 2. host firewall on b (VRRP dropped, ARP not): b becomes master too; two answerers everywhere
            lab.split(mode="firewall", node="b")
            t_split = time.monotonic()
            assert lab.wait_for(lambda: set(lab.vip_holders()) == {"a", "b"}, 10)
            t_second = time.monotonic()
            assert wait(lambda: ws.all(lambda v: v.two_answerers), 10)
            t_flag = time.monotonic()  # (how fast: bench/bench_l2.py; no test asserts a wall-clock time)
            time.sleep(1.0)
            for w in ws.w.values():  # and it stays flagged at every poll while the split lasts
                assert all(v is not None and v.two_answerers for v in w.since(t_flag, vip)), w.name
            b_mac = ":".join(f"{b:02x}" for b in mac_of(lab.nodes["b"].netns))
            assert ws["o"].record(vip).answerers == tuple(sorted((a_mac, b_mac)))
            assert ws["o"].record(vip).last_probe_answers == 2
            assert ws["a"].record(vip).answerers == (b_mac,)  # a hears b; itself via netlink
            assert t_split <= t_second <= t_flag
            lab.heal()
            assert wait(lambda: ws.all(lambda v: not v.two_answerers and v.answerers == 1), 5)
            failovers_never_show_two(lab, ws)

            # 3. nobody holds the VIP: keepalived stopped on both (SIGTERM removes the VIP)
            lab.stop("a")
            lab.stop("b")
            assert lab.wait_for(lambda: lab.vip_holders() == [], 10)
            assert wait(lambda: ws.all(lambda v: v.silent and v.answerers == 0), 5)

            # 4. the probes on the wire: RFC 5227 shape, never faster than the configured cap
            probes = [(t, f) for t, f in wire.frames if f[20:22] == b"\x00\x01"]
            assert len(probes) >= 10
            for _t, f in probes:
                assert f[28:32] == b"\0\0\0\0" and f[32:38] == b"\0" * 6 and f[22:28] == obs_mac
            assert obs_mac.hex(":") not in neighbours(lab.nodes["a"].netns)
            assert obs_mac.hex(":") not in neighbours(lab.nodes["b"].netns)
        finally:
            ws.close()
            wire.close()


def test_the_global_probe_rate_cap_holds_on_the_wire() -> None:
    """30 VIPs at a 0.1 s interval would be 300 probes/s; the cap of 20/s holds in every second, and
    between any two probes as they leave the observer (its own capture: the kernel's stamps of its
    outgoing frames), never closer than 1/20 s."""
    need_lab()
    with Lab(profile="fast") as lab:
        obs = lab.observer
        obs_mac = mac_of(obs.netns)
        wire = WireCount(lab.nodes["a"].netns, obs_mac, 0x0806)
        out = WireCount(obs.netns, obs_mac, 0x0003, obs.interface)  # ETH_P_ALL: taps see outgoing
        prefix = lab.vips[0].rsplit(".", 1)[0]
        targets = [(obs.interface, lab.vips[0])] + [(obs.interface, f"{prefix}.{h}") for h in range(150, 179)]
        store = Store()
        src = L2Source(store, targets, probe_interval=0.1, max_probe_rate=20)
        try:
            in_netns(obs.netns, src.start)
            time.sleep(3.0)
        finally:
            src.stop()
            time.sleep(0.3)
            wire.close()
            out.close()
        times = [t for t, f in wire.frames if f[20:22] == b"\x00\x01"]
        assert len(times) >= 40  # it did probe at about the cap (3 s x 20/s), not vacuously below it
        assert_rate(times, 20)
        left = sorted(
            t
            for t, f in out.frames
            if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[28:32] == bytes(4)
        )
        assert len(left) >= 40
        gaps = [b - a for a, b in itertools.pairwise(left)]
        assert min(gaps) >= 1 / 20, f"two probes {min(gaps) * 1000:.3f} ms apart"
        assert len(times) <= src.sent
        rec = next(r for r in store.snapshot().l2 or () if r.vip == lab.vips[0])
        assert rec.last_probe_answers == 1


def test_ipv6_dad_probes_see_one_then_two_answerers_and_teach_no_neighbour_cache() -> None:
    need_lab()
    with Lab(profile="fast-ipv6") as lab:
        obs_mac = mac_of(lab.observer.netns)
        wire = WireCount(lab.nodes["a"].netns, obs_mac, 0x86DD)
        ws = Witnesses(lab)
        try:
            assert wait(lambda: ws.all(lambda v: v.probe_answers is not None), 5)
            t0 = time.monotonic()
            time.sleep(1.0)
            for w in ws.w.values():
                for vip in lab.vips:
                    seen = w.since(t0, vip)
                    assert seen and all(v is not None and v.answerers == 1 for v in seen), (w.name, vip)
            lab.split(mode="firewall", node="b")
            assert lab.wait_for(lambda: set(lab.vip_holders()) == {"a", "b"}, 10)
            ok = wait(lambda: ws.all(lambda v: v.two_answerers), 10)
            assert ok, {n: [(w.now(v), w.record(v)) for v in lab.vips] for n, w in ws.w.items()}
            lab.heal()
            assert wait(lambda: ws.all(lambda v: not v.two_answerers), 5)
            failovers_never_show_two(lab, ws)  # keepalived's NA bursts at each takeover included
            ns = [f for _t, f in wire.frames if len(f) >= 55 and f[20] == 58 and f[54] == 135]
            assert len(ns) >= 5
            for f in ns:
                assert f[22:38] == b"\0" * 16  # source ::
                assert struct.unpack_from("!H", f, 18)[0] == 24  # no option: no source link-layer address
                assert f[38:51] == b"\xff\x02" + b"\0" * 9 + b"\x01\xff"  # ff02::1:ffXX:XXXX, solicited-node
            assert obs_mac.hex(":") not in neighbours(lab.nodes["a"].netns)
        finally:
            ws.close()
            wire.close()


@pytest.fixture
def vmac_lab() -> Iterator[Any]:
    need_lab()
    with Lab(profile="vmac", dbus=True) as lab:
        yield lab


def test_use_vmac_answers_are_counted_per_probe_and_the_exporter_labels_the_base_interface(
    vmac_lab: Any, tmp_path: Any
) -> None:
    lab = vmac_lab
    vip = lab.vips[0]
    vrid = lab.instances[0].vrid
    vmac = f"00:00:5e:00:01:{vrid:02x}"
    a = lab.nodes["a"]
    exp = start_exporter(tmp_path, "--netns", a.netns, *node_args(a), "--no-collector.wire")
    ws = Witnesses(lab, names=("o",))
    try:
        assert wait(lambda: ws.all(lambda v: v.probe_answers is not None), 5)
        t0 = time.monotonic()
        time.sleep(1.0)
        assert all(
            v is not None and v.probe_answers == 1 and v.answerers == 1 for v in ws["o"].since(t0, vip)
        )
        assert ws["o"].record(vip).answerers == (vmac,)
        # both masters answer with the one virtual MAC: one answerer, two answers to each probe
        lab.split(mode="firewall", node="b")
        assert wait(lambda: ws.all(lambda v: v.two_answerers and v.probe_answers == 2), 10)
        assert ws["o"].record(vip).answerers == (vmac,)
        # item 8: the exporter on node a (dumps + D-Bus) labels the instance with eth0, not vrrp.VRID
        assert wait(lambda: sample(exp.metrics(), "keepalived_vrrp_state", iname="VI_1", intf="eth0",
                                   vrid=str(vrid)) == 2.0, 10)  # fmt: skip
        assert f'intf="vrrp.{vrid}"' not in exp.text()
        # node a holds the VIP (netlink) and hears b answer with the same virtual MAC: two answerers
        labels = {"interface": "eth0", "family": "inet", "vip": vip}
        assert wait(lambda: sample(exp.metrics(), "keepalived_l2_vip_two_answerers", **labels) == 1.0, 10)
        assert sample(exp.metrics(), "keepalived_l2_vip_answerers", **labels) == 2.0
        lab.heal()
    finally:
        ws.close()
        stop_exporter(exp)


def test_sigkilled_keepalived_reads_stop_in_dbus_and_dumps_mode_alike(vmac_lab: Any, tmp_path: Any) -> None:
    """Issue item 7: after SIGKILL no scrape shows MASTER beside keepalived_up 0, and the series stays."""
    lab = vmac_lab
    a = lab.nodes["a"]
    vrid = str(lab.instances[0].vrid)
    base = ["--netns", a.netns, *node_args(a), "--no-collector.wire", "--no-collector.l2"]
    modes = {
        "dbus": start_exporter(tmp_path, *base),
        "dumps": start_exporter(tmp_path, *base, "--no-collector.dbus", "--keepalived.dump-interval", "1"),
    }
    try:

        def state(m: Any) -> float | None:
            return sample(m, "keepalived_vrrp_state", iname="VI_1", intf="eth0", vrid=vrid)

        for exp in modes.values():
            assert wait(lambda exp=exp: state(exp.metrics()) == 2.0, 15)
        pid = a.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert lab.wait_for(lambda: not a.running(), 5)
        scrapes: dict[str, list[tuple[float | None, float | None]]] = {k: [] for k in modes}
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for name, exp in modes.items():
                m = exp.metrics()
                scrapes[name].append((sample(m, "keepalived_up"), state(m)))
            time.sleep(0.1)
        for name, got in scrapes.items():
            assert all(st != 2.0 for up, st in got if up == 0.0), (name, got)
            down = [st for up, st in got if up == 0.0]
            assert down and down[-1] == 4.0, (name, got[-5:])  # kept, reading STOP, in both modes
    finally:
        for exp in modes.values():
            stop_exporter(exp)
