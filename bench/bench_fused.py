"""Fused split-brain verdict latency: from the second holder's first advert to the verdict in the store.

Setup (root): a veth pair between two fresh namespaces. A WireSource runs in one (its own capture
thread) next to a Store that also holds keepalived.conf's instances (one per trial VRID, VIP
10.250.0.100 on "vr") and this node's addresses; a store listener judges the fused verdict
(`ka_exporter.verdicts.fused.judge`) on every store change and records when it first says split
brain for the trial's VRID. From the other namespace routers advertise VRRPv3 at interval I:
  wire:     A advertises; after three adverts B starts too, on a random phase (a firewall split as an
            observer sees it). Second holder's first advert = B's first.
  mismatch: the same, B with another VIP list (keepalived drops its adverts: incompatible).
  address:  this node holds the VIP (its keepalived was SIGKILLed and left it) and only B advertises
            (B took over). The address witness needs B's second advert: about one interval.
Each latency is listener time - send time of B's first advert (same host clock; the veth hands the
packet over in microseconds), in ms and in intervals. Prints a table and one `RESULT {json}` line.

Run: .venv/bin/python bench/bench_fused.py
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import sys
import threading
import time
from typing import Any

from common import Target, in_ns, result, sh, veth_pair
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3

from ka_exporter.model import ConfInstance, ConfVip, KeepalivedConfig, LocalAddress
from ka_exporter.sources.wire import WireSource
from ka_exporter.store import Store
from ka_exporter.verdicts.fused import judge

MCAST4 = b"\x01\x00\x5e\x00\x00\x12"
VIP = "10.250.0.100"
TRIALS = 20
INTERVAL = 0.1


def advert(src: str, vrid: int, prio: int, vips: list[str]) -> bytes:
    pkt = IP(src=src, dst="224.0.0.18", ttl=255, proto=112) / VRRPv3(
        vrid=vrid, priority=prio, adv=round(INTERVAL * 100), addrlist=vips
    )
    return bytes(pkt)


def run(rx: str, tx: str) -> dict[str, list[float]]:
    store = Store(hostname="bench")
    vrids = list(range(1, 3 * TRIALS + 1))
    store.set_config(
        KeepalivedConfig(
            instances=tuple(
                ConfInstance(f"VI_{v}", "vr", v, advert_int=INTERVAL, version=3, vips=(ConfVip(VIP, 24),))
                for v in vrids
            )
        )
    )
    src = WireSource(store, ["vr"], configured=())
    flagged: dict[int, float] = {}
    current = {"vrid": 0}
    lock = threading.Lock()

    def listener() -> None:
        vrid = current["vrid"]
        if vrid in flagged:
            return
        t = time.time()
        snap = store.snapshot()
        if any(v.vrid == vrid and v.split_brain for v in judge(snap)):
            with lock:
                flagged.setdefault(vrid, t)

    store.add_listener(listener)
    in_ns(rx, src.start)
    sender = in_ns(tx, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
    rng = random.Random(11)
    out: dict[str, list[float]] = {"wire": [], "mismatch": [], "address": []}
    missed: dict[str, int] = dict.fromkeys(out, 0)
    try:
        for k, vrid in enumerate(vrids):
            case = ("wire", "mismatch", "address")[k % 3]
            held = (LocalAddress(VIP, 24, "vr", "inet"),) if case == "address" else ()
            store.set_addresses((LocalAddress("10.250.0.9", 24, "vr", "inet"), *held))
            time.sleep(0.3)  # the address change is older than the trial (as after a SIGKILL)
            current["vrid"] = vrid
            a = advert("10.250.0.1", vrid, 150, [VIP])
            b = advert("10.250.0.2", vrid, 100, ["10.250.0.101"] if case == "mismatch" else [VIP])
            t_a = time.time()
            if case != "address":
                for _ in range(3):
                    time.sleep(max(0.0, t_a - time.time()))
                    sender.sendto(a, ("vx", 0x0800, 0, 0, MCAST4))
                    t_a += INTERVAL
            t_b = t_a - INTERVAL + rng.uniform(0.05, 0.95) * INTERVAL
            b_first = 0.0
            deadline = time.time() + 6 * INTERVAL + 1
            while vrid not in flagged and time.time() < deadline:
                send_a = case != "address" and t_a <= t_b
                nxt, pkt = (t_a, a) if send_a else (t_b, b)
                time.sleep(max(0.0, nxt - time.time()))
                sent = time.time()
                sender.sendto(pkt, ("vx", 0x0800, 0, 0, MCAST4))
                if pkt is b:
                    b_first = b_first or sent
                    t_b += INTERVAL
                else:
                    t_a += INTERVAL
            time.sleep(0.05)
            with lock:
                t_flag = flagged.get(vrid)
            if t_flag is None:
                missed[case] += 1
            else:
                out[case].append(t_flag - b_first)
            time.sleep(5 * INTERVAL)  # both expire before the next trial
    finally:
        sender.close()
        src.stop()
    out["missed"] = [float(sum(missed.values()))]
    return out


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (namespaces)")
        result("fused", {}, [Target("bench ran (needs root)", None, ">=", 0)])
        return 0
    figures: dict[str, Any] = {"load_1min": os.getloadavg()[0], "interval": INTERVAL}
    targets: list[Target] = []
    with veth_pair("kf", "vx", "vr") as (tx, rx):
        sh("ip", "-n", rx, "addr", "add", "10.250.0.9/24", "dev", "vr")
        rows = run(rx, tx)
    print(f"{'second holder first advert -> fused verdict in the store':58} {'p50':>9} {'p95':>9}  target")
    for case in ("wire", "mismatch", "address"):
        vals = rows[case]
        p50, p95 = (statistics.median(vals) if vals else float("nan")), pct(vals, 0.95)
        label = f"I={INTERVAL:g}s {case} ({len(vals)} trials), ms"
        print(
            f"{label:58} {p50 * 1000:9.1f} {p95 * 1000:9.1f}  p95 <= 2 intervals ({2 * INTERVAL * 1000:.0f} ms)"
        )
        figures[case] = {"p50_ms": p50 * 1000, "p95_ms": p95 * 1000, "trials": len(vals)}
        targets.append(Target(f"{case}: p95 intervals to the fused verdict", p95 / INTERVAL, "<=", 2))
    targets.append(Target("trials never flagged", rows["missed"][0], "==", 0))
    result("fused", figures, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
