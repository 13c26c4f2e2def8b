"""L2 witness: idle cost of the lab pair with ARP probing on, and how fast the fused verdict follows.

Targets: each exporter of the lab pair ("basic" profile: VRRPv2, advert_int 1, D-Bus on), every source
on with the defaults (the L2 witness probing each VIP every 1 s), CPU <= 0.5% of one core and RSS <= 64
MiB over the window; next to it the same pair with --no-collector.l2, so the witness's own share shows.

1. Idle: one real ka-exporter per node, scraped every 15 s; CPU is user + system from /proc over the
   window (after a 5 s warm-up), RSS is VmRSS at the end (VmHWM beside it).
2. Detection: the L2 witness alone (an L2Source, probe interval 1 s, and on node b a VipSource for
   "this node holds it") with keepalived.conf's instance in its store, in the observer and in node b;
   b is split from VRRP by a host firewall (`lab.split(mode="firewall")`) and becomes a second master.
   From b's first ARP frame for the VIP on the wire (its first gratuitous ARP, seen by an independent
   capture in the observer: kernel timestamp) to the fused verdict (`verdicts.fused.judge`) in that
   store showing the `l2` witness, judged by a store listener on every change; repeated `rounds`
   times (heal, wait for one holder, split again). p50 / p95 printed per vantage point.

3. The witness's own thread (issue #12): an L2Source in a namespace with N VIPs on one veth, probing
   at the rate cap (nobody answers), with and without N VRRP adverts a second arriving (a backup's
   view of a master with N instances): the thread's CPU (schedstat) and wakeups per second.

Run: .venv/bin/python bench/bench_l2.py [seconds] [rounds]
     .venv/bin/python bench/bench_l2.py witness [VIPs] [seconds]   (part 3 alone; PYTHONPATH picks the code)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common
from common import Process, Target

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ka_exporter.lab import Lab  # noqa: E402
from ka_exporter.lab.demo import exporter_args  # noqa: E402
from ka_exporter.model import ConfInstance, ConfVip, KeepalivedConfig  # noqa: E402
from ka_exporter.sources.l2 import SO_TIMESTAMPNS, L2Source, _kernel_time  # noqa: E402
from ka_exporter.sources.vips import VipSource  # noqa: E402
from ka_exporter.store import Store  # noqa: E402
from ka_exporter.verdicts.fused import judge  # noqa: E402
from tests.conftest import in_netns  # noqa: E402

SCRAPE_EVERY = 15.0


def idle(lab: Lab, seconds: float, workdir: Path, extra: list[str]) -> dict[str, Any]:
    procs: list[tuple[str, Process, int]] = []
    try:
        for name in ("a", "b"):
            port = common.free_port()
            args = exporter_args(lab.nodes[name], port, f"node-{name}") + extra
            p = Process(args, workdir / f"exporter-{name}-{len(extra)}.log")
            procs.append((name, p, port))
        for _name, p, port in procs:
            common.wait_http(port, p)
        time.sleep(5.0)
        start = {name: common.cpu_seconds(p.pid) for name, p, _ in procs}
        t0 = time.monotonic()
        next_scrape = t0
        while time.monotonic() - t0 < seconds:
            if time.monotonic() >= next_scrape:
                for _name, _p, port in procs:
                    common.get(port)
                next_scrape += SCRAPE_EVERY
            time.sleep(0.2)
        wall = time.monotonic() - t0
        out: dict[str, Any] = {}
        for name, p, _port in procs:
            cpu = common.cpu_seconds(p.pid) - start[name]
            rss, hwm = common.rss_kib(p.pid)
            out[name] = {"cpu_percent": 100.0 * cpu / wall, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024}
        return out
    finally:
        for _name, p, _port in procs:
            p.stop()


class FirstFrame:
    """Kernel receive time of the first ARP frame naming `vip` sent from `mac`, after `arm()`."""

    def __init__(self, netns: str, vip: bytes) -> None:
        self.vip = vip
        self.mac: bytes | None = None
        self.at: float | None = None
        self.sock = in_netns(
            netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        )
        in_netns(netns, lambda: self.sock.bind(("eth0", 0x0806)))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def arm(self, mac: bytes) -> None:
        self.at = None
        self.mac = mac

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _f, _a = self.sock.recvmsg(256, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            if (
                self.mac is not None
                and self.at is None
                and data[6:12] == self.mac
                and data[28:32] == self.vip
            ):
                self.at = _kernel_time(anc) or time.time()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class Flagged:
    """A store listener: when the fused verdict of `vrid` first showed the l2 witness after `arm()`."""

    def __init__(self, store: Store, vrid: int) -> None:
        self.store, self.vrid = store, vrid
        self.at: float | None = None
        self.armed = False
        store.add_listener(self)

    def arm(self) -> None:
        self.at, self.armed = None, True

    def __call__(self) -> None:
        if not self.armed or self.at is not None:
            return
        t = time.time()
        if any(v.vrid == self.vrid and "l2" in v.witnesses for v in judge(self.store.snapshot())):
            self.at = t

    def l2_now(self) -> bool:
        return any(v.vrid == self.vrid and "l2" in v.witnesses for v in judge(self.store.snapshot()))


def detection(lab: Lab, rounds: int) -> dict[str, list[float]]:
    obs, b = lab.observer, lab.nodes["b"]
    inst = lab.instances[0]
    vip = inst.vips[0]
    packed = socket.inet_aton(vip)
    b_mac = bytes.fromhex(lab.addressing.mac(2).replace(":", ""))
    config = KeepalivedConfig(
        instances=(
            ConfInstance(
                inst.name, inst.interface, inst.vrid, advert_int=1.0, version=2, vips=(ConfVip(vip, 24),)
            ),
        )
    )
    stores = {"observer": Store(), "node b": Store()}
    flags: dict[str, Flagged] = {}
    sources: list[Any] = []
    for name, store in stores.items():
        store.set_config(config)
        flags[name] = Flagged(store, inst.vrid)
    first = FirstFrame(obs.netns, packed)
    delays: dict[str, list[float]] = {name: [] for name in stores}
    try:
        src = L2Source(stores["observer"], [(obs.interface, vip)], probe_interval=1.0)
        sources.append(src)
        in_netns(obs.netns, src.start)
        for s in (
            VipSource(stores["node b"]),
            L2Source(stores["node b"], [(b.interface, vip)], probe_interval=1.0),
        ):
            sources.append(s)
            in_netns(b.netns, s.start)

        def clear() -> bool:
            return lab.master() == "a" and not any(f.l2_now() for f in flags.values())

        for _ in range(rounds):
            assert lab.wait_for(clear, 20)
            time.sleep(1.0)
            first.arm(b_mac)
            for f in flags.values():
                f.arm()
            lab.split(mode="firewall", node="b")
            if not lab.wait_for(lambda: all(f.at is not None for f in flags.values()), 15):
                raise RuntimeError(
                    f"the fused verdict never showed l2: {[(n, f.at) for n, f in flags.items()]}"
                )
            time.sleep(0.1)
            if first.at is not None:
                for name, f in flags.items():
                    assert f.at is not None
                    delays[name].append(f.at - first.at)
            lab.heal()
    finally:
        for s in sources:
            s.stop()
        first.close()
    return delays


def _advert_frame(vrid: int) -> bytes:
    vrrp = bytes([0x31, vrid, 200, 1, 0, 100, 0, 0]) + socket.inet_aton(
        f"10.9.{vrid // 200}.{vrid % 200 + 1}"
    )
    ip = bytes([0x45, 0, 0, 20 + len(vrrp), 0, 0, 0, 0, 255, 112, 0, 0])
    ip += socket.inet_aton("10.9.250.1") + socket.inet_aton("224.0.0.18")
    return bytes.fromhex("01005e000012") + bytes.fromhex("02aabbccdd01") + b"\x08\x00" + ip + vrrp


def witness(n: int, seconds: float, adverts: bool) -> dict[str, float]:
    """Part 3: the witness thread's CPU and wakeups per second, N VIPs (and N adverts/s)."""
    from ka_exporter.model import ConfInstance, ConfVip, KeepalivedConfig

    ns = f"bl2w{os.getpid()}"
    run = lambda *a: subprocess.run(a, check=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "peer0", "up")
        store = Store()
        vips = [f"10.9.{k // 200}.{k % 200 + 1}" for k in range(n)]
        insts = tuple(ConfInstance(f"VI_{k}", "eth0", k + 1, vips=(ConfVip(v),)) for k, v in enumerate(vips))
        store.set_config(KeepalivedConfig(instances=insts))
        src = L2Source(store)
        tx = in_netns(ns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
        in_netns(ns, lambda: tx.bind(("peer0", 0)))
        stop = threading.Event()
        frames = [_advert_frame(k + 1) for k in range(n)]

        def send() -> None:
            t = time.monotonic()
            while not stop.is_set():
                for f in frames:
                    if stop.is_set():
                        return
                    tx.send(f)
                    t += 1.0 / n
                    time.sleep(max(0.0, t - time.monotonic()))

        in_netns(ns, src.start)
        sender = threading.Thread(target=send, daemon=True)
        if adverts:
            sender.start()
        time.sleep(2 * n / src.max_probe_rate + 3)  # the first round: every VIP has a result
        thread = src._thread
        if thread is None or thread.native_id is None:
            raise RuntimeError("the witness's thread did not start")
        path = f"/proc/self/task/{thread.native_id}/schedstat"

        def cpu() -> float:
            with open(path) as f:
                return int(f.read().split()[0]) / 1e6

        c0, t0, s0, w0 = cpu(), time.monotonic(), src.sent, getattr(src, "wakeups", 0)
        time.sleep(seconds)
        c1, t1, s1, w1 = cpu(), time.monotonic(), src.sent, getattr(src, "wakeups", 0)
        stop.set()
        if adverts:
            sender.join()
        src.stop()
        tx.close()
        span = t1 - t0
        return {
            "cpu_ms_per_s": round((c1 - c0) / span, 2),
            "probes_per_s": round((s1 - s0) / span, 1),
            "wakeups_per_s": round((w1 - w0) / span, 1) if hasattr(src, "wakeups") else -1.0,
        }
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def witness_part(n: int, seconds: float) -> dict[str, dict[str, float]]:
    out = {"quiet": witness(n, seconds, False), "adverts": witness(n, seconds, True)}
    print(
        f"the witness's thread, {n} VIPs probed at the cap, nobody answering, {seconds:g} s (load {common.load():.2f}):"
    )
    for k, v in out.items():
        what = f"+ {n} adverts/s" if k == "adverts" else "no adverts"
        print(
            f"  {what:>16}: {v['cpu_ms_per_s']} ms/s CPU, {v['probes_per_s']} probes/s, "
            f"{v['wakeups_per_s']} wakeups/s (-1: not counted by this version)"
        )
    return out


def main() -> int:
    common.exit_on_sigterm()
    if len(sys.argv) > 1 and sys.argv[1] == "witness":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
        seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 15.0
        common.result("l2_witness", witness_part(n, seconds), [])
        return 0
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    workdir = Path(tempfile.mkdtemp(prefix="bench-l2-"))
    with Lab(profile="basic", dbus=True) as lab:
        on = idle(lab, seconds, workdir, [])
        off = idle(lab, seconds, workdir, ["--no-collector.l2"])
        delays = detection(lab, rounds)
    own = witness_part(100, 15.0)
    print(f"idle, {seconds:g} s window, scraped every {SCRAPE_EVERY:g} s (load {common.load():.2f}):")
    for name in ("a", "b"):
        print(
            f"  node {name}: l2 on  cpu {on[name]['cpu_percent']:.3f}% rss {on[name]['rss_mib']:.1f} MiB"
            f" (hwm {on[name]['hwm_mib']:.1f}) | l2 off cpu {off[name]['cpu_percent']:.3f}%"
            f" rss {off[name]['rss_mib']:.1f} MiB"
        )
    for name, vals in delays.items():
        shown = ", ".join(f"{d * 1000:.0f}" for d in vals)
        print(
            f"{name}: second holder's first ARP frame -> fused l2 witness in the store (ms), {len(vals)} rounds: {shown}"
        )
        if vals:
            p50, p95 = common.percentile(vals, 50), common.percentile(vals, 95)
            print(f"  p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (probe interval 1 s)")
    targets = [
        Target(f"node {n} cpu % of one core (l2 on)", on[n]["cpu_percent"], "<=", 0.5) for n in ("a", "b")
    ] + [Target(f"node {n} rss MiB (l2 on)", on[n]["rss_mib"], "<=", 64.0) for n in ("a", "b")]
    stats = {
        n: {"p50_s": common.percentile(v, 50), "p95_s": common.percentile(v, 95)}
        for n, v in delays.items()
        if v
    }
    common.result("l2", {"on": on, "off": off, "detect_s": delays, "detect": stats, "witness": own}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
