"""L2 witness: idle cost of the lab pair with ARP probing on, and how fast a second answerer shows.

Targets: each exporter of the lab pair ("basic" profile: VRRPv2, advert_int 1, D-Bus on), every source
on with the defaults (the L2 witness probing each VIP every 1 s), CPU <= 0.5% of one core and RSS <= 64
MiB over the window; next to it the same pair with --no-collector.l2, so the witness's own share shows.

1. Idle: one real ka-exporter per node, scraped every 15 s; CPU is user + system from /proc over the
   window (after a 5 s warm-up), RSS is VmRSS at the end (VmHWM beside it).
2. Detection: an L2Source in the observer (probe interval 1 s); b is split from VRRP by a host firewall
   (`lab.split(mode="firewall")`) and becomes a second master. From b's first ARP frame for the VIP on
   the wire (an independent capture in the observer) to the witness's record in the store showing two
   answerers; repeated `rounds` times (heal, wait for one answerer, split again). p50 / p95 printed.

Run: /tmp/kavenv/bin/python bench/bench_l2.py [seconds] [rounds]
"""

from __future__ import annotations

import socket
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
from ka_exporter.sources.l2 import SO_TIMESTAMPNS, L2Source, _kernel_time  # noqa: E402
from ka_exporter.store import Store  # noqa: E402
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


def detection(lab: Lab, rounds: int) -> list[float]:
    obs = lab.observer
    vip = lab.vips[0]
    packed = socket.inet_aton(vip)
    b_mac = bytes.fromhex(lab.addressing.mac(2).replace(":", ""))
    store = Store()
    src = L2Source(store, [(obs.interface, vip)], probe_interval=1.0)
    first = FirstFrame(obs.netns, packed)
    delays: list[float] = []
    try:
        in_netns(obs.netns, src.start)

        def answerers() -> int:
            recs = store.snapshot().l2 or ()
            return max((r.last_probe_answers or 0 for r in recs), default=0)

        for _ in range(rounds):
            assert lab.wait_for(lambda: answerers() == 1 and lab.master() == "a", 20)
            first.arm(b_mac)
            lab.split(mode="firewall", node="b")
            if not lab.wait_for(lambda: answerers() >= 2, 15):
                raise RuntimeError("the witness never saw two answerers")
            seen = time.time()
            if first.at is not None:
                delays.append(seen - first.at)
            lab.heal()
            time.sleep(1.0)
    finally:
        src.stop()
        first.close()
    return delays


def main() -> int:
    common.exit_on_sigterm()
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    workdir = Path(tempfile.mkdtemp(prefix="bench-l2-"))
    with Lab(profile="basic", dbus=True) as lab:
        on = idle(lab, seconds, workdir, [])
        off = idle(lab, seconds, workdir, ["--no-collector.l2"])
        delays = detection(lab, rounds)
    print(f"idle, {seconds:g} s window, scraped every {SCRAPE_EVERY:g} s (load {common.load():.2f}):")
    for name in ("a", "b"):
        print(
            f"  node {name}: l2 on  cpu {on[name]['cpu_percent']:.3f}% rss {on[name]['rss_mib']:.1f} MiB"
            f" (hwm {on[name]['hwm_mib']:.1f}) | l2 off cpu {off[name]['cpu_percent']:.3f}%"
            f" rss {off[name]['rss_mib']:.1f} MiB"
        )
    p50 = common.percentile(delays, 50) if delays else None
    p95 = common.percentile(delays, 95) if delays else None
    shown = ", ".join(f"{d * 1000:.0f}" for d in delays)
    print(
        f"second answerer's first ARP frame -> two answerers in the store (ms), {len(delays)} rounds: {shown}"
    )
    if p50 is not None and p95 is not None:
        print(f"  p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (probe interval 1 s)")
    targets = [
        Target(f"node {n} cpu % of one core (l2 on)", on[n]["cpu_percent"], "<=", 0.5) for n in ("a", "b")
    ] + [Target(f"node {n} rss MiB (l2 on)", on[n]["rss_mib"], "<=", 64.0) for n in ("a", "b")]
    common.result("l2", {"on": on, "off": off, "detect_s": delays, "p50_s": p50, "p95_s": p95}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
