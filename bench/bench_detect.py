"""Split-brain detection latency, and the wire source's idle cost.

Target: split brain flagged in the store within 50 ms of the packet that makes it true (measured from
that packet's timestamp), and no more than two advert intervals after the second master's first
advert (the rule needs overlap: see ka_exporter/verdicts/wire.py). Idle cost with a keepalived pair
at advert_int 1: under 0.5% of one core.

Setup (root): a veth pair between two fresh namespaces. A WireSource runs (start(), its own capture
thread) in one; a store listener records the moment the store's wire view says split brain. From the
other namespace, router A advertises (VRRPv3) every interval; after a few adverts router B starts
advertising too, on a random phase. Each trial uses a new VRID. A third round repeats the first
(advert_int 0.1) while BURST other routers advertise all at once every interval, as 100 keepalived
instances do: the wire source then reads in batch windows (10 ms), and the figures show what that
costs a decisive advert that lands in one (at most the window). Latencies:
  processing: listener time - send time of the last packet sent before it (same host clock; the
              veth hands the packet over in microseconds), and - the packet's receive stamp;
  rule delay: listener time - B's first advert (what the verdict rule costs by design).
Idle: a real keepalived pair (lab profile "basic": VRRPv2, advert_int 1) and a WireSource on node a's
eth0; CPU of the capture thread over 20 s from /proc/self/task/TID/schedstat (ns).

Prints a table and one `RESULT {json}` line (bench/common.py) with the figures, the targets (p95
processing and receive-stamp latency <= 50 ms, worst rule delay <= 2 intervals, no trial missed,
idle CPU <= 0.5 %) and whether each was met.

Run: /tmp/kavenv/bin/python bench/bench_detect.py
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

from common import Target, in_ns, result, veth_pair
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3

from ka_exporter.sources.wire import WireSource
from ka_exporter.store import Store
from ka_exporter.verdicts.wire import judge

MCAST4 = b"\x01\x00\x5e\x00\x00\x12"
BURST = 100  # other routers advertising at once in the third round (100 instances' worth)


def advert(src: str, vrid: int, prio: int, centis: int) -> bytes:
    pkt = IP(src=src, dst="224.0.0.18", ttl=255, proto=112) / VRRPv3(
        vrid=vrid, priority=prio, adv=centis, addrlist=["10.250.0.100"]
    )
    return bytes(pkt)


def burst_sender(tx: str, count: int, interval: float, stop: threading.Event) -> threading.Thread:
    """`count` other routers (VRIDs 101...) advertising every `interval`, all at once as keepalived's
    instances do: the wire source then reads in batch windows (sources/wire.py BATCH_WINDOW)."""
    sock = in_ns(tx, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
    packets = [advert("10.250.0.50", 101 + k, 150, round(interval * 100)) for k in range(count)]

    def run() -> None:
        try:
            t_next = time.time()
            while not stop.is_set():
                for pkt in packets:
                    sock.sendto(pkt, ("vx", 0x0800, 0, 0, MCAST4))
                t_next += interval
                stop.wait(max(0.0, t_next - time.time()))
        finally:
            sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def trials(rx: str, tx: str, interval: float, count: int, background: int = 0) -> list[dict[str, float]]:
    store = Store(hostname="bench")
    src = WireSource(store, ["vr"], configured=())
    flagged: dict[int, float] = {}
    lock = threading.Lock()
    current = {"vrid": 0}

    def listener() -> None:
        vrid = current["vrid"]
        if vrid in flagged:
            return
        t = time.time()
        peers, _ = src.table.snapshot()
        if any(v.split_brain and v.vrid == vrid for v in judge(peers, t)):
            with lock:
                flagged.setdefault(vrid, t)
                stamps[vrid] = max(p.last_seen for p in peers if p.vrid == vrid)

    stamps: dict[int, float] = {}
    store.add_listener(listener)
    in_ns(rx, src.start)
    sender = in_ns(tx, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
    out: list[dict[str, float]] = []
    rng = random.Random(7)
    stop = threading.Event()
    bursts = burst_sender(tx, background, interval, stop) if background else None
    if bursts is not None:
        time.sleep(3 * interval + 0.5)  # the other routers known and steady before the trials
    try:
        for k in range(count):
            vrid = 1 + k
            current["vrid"] = vrid
            a = advert("10.250.0.1", vrid, 150, round(interval * 100))
            b = advert("10.250.0.2", vrid, 100, round(interval * 100))
            sent: list[float] = []
            t_next = time.time()
            for _ in range(3):
                time.sleep(max(0.0, t_next - time.time()))
                sent.append(time.time())
                sender.sendto(a, ("vx", 0x0800, 0, 0, MCAST4))
                t_next += interval
            phase = rng.uniform(0.05, 0.95) * interval
            t_b = t_next - interval + phase
            b_first = 0.0
            deadline = time.time() + 4 * interval + 1
            while vrid not in flagged and time.time() < deadline:
                nxt, pkt = (t_next, a) if t_next <= t_b else (t_b, b)
                time.sleep(max(0.0, nxt - time.time()))
                sent.append(time.time())
                sender.sendto(pkt, ("vx", 0x0800, 0, 0, MCAST4))
                if pkt is b:
                    b_first = b_first or sent[-1]
                    t_b += interval
                else:
                    t_next += interval
            time.sleep(0.05)
            with lock:
                t_flag = flagged.get(vrid)
            if t_flag is None:
                out.append({"missed": 1.0})
                continue
            decisive = max(s for s in sent if s <= t_flag)
            out.append(
                {
                    "processing_ms": (t_flag - decisive) * 1000,
                    "from_receive_stamp_ms": (t_flag - stamps[vrid]) * 1000,
                    "rule_delay_intervals": (t_flag - b_first) / interval,
                }
            )
            time.sleep(3 * interval)  # let both expire before the next trial
    finally:
        stop.set()
        if bursts is not None:
            bursts.join(5)
        sender.close()
        src.stop()
    return out


def idle_cost(seconds: float = 20.0) -> dict[str, float] | None:
    try:
        from ka_exporter.lab import Lab
    except ImportError:
        return None
    with Lab(profile="basic") as lab:
        node = lab.nodes["a"]
        store = Store(hostname="a")
        src = WireSource(store, [node.interface], configured=())
        in_ns(node.netns, src.start)
        time.sleep(2.0)
        thread = src._thread
        assert thread is not None
        tid = thread.native_id
        path = f"/proc/self/task/{tid}/schedstat"

        def cpu_ns() -> int:
            with open(path) as fh:
                return int(fh.read().split()[0])

        c0, w0, r0 = cpu_ns(), time.monotonic(), src.received
        time.sleep(seconds)
        c1, w1, r1 = cpu_ns(), time.monotonic(), src.received
        src.stop()
        return {
            "idle_cpu_percent": (c1 - c0) / 1e9 / (w1 - w0) * 100,
            "adverts_in_window": float(r1 - r0),
            "seconds": w1 - w0,
        }


def summarize(rows: list[dict[str, float]], key: str) -> tuple[float, float, float]:
    vals = sorted(r[key] for r in rows if key in r)
    if not vals:
        return (float("nan"),) * 3  # type: ignore[return-value]
    p95 = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
    return statistics.median(vals), p95, vals[-1]


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (namespaces)")
        result("detect", {}, [Target("bench ran (needs root)", None, ">=", 0)])
        return 0
    figures: dict[str, Any] = {"load_1min": os.getloadavg()[0]}
    targets: list[Target] = []
    with veth_pair("kd", "vx", "vr") as (tx, rx):
        print(f"{'figure':56} {'p50':>9} {'p95':>9} {'max':>9}  target")
        for interval, count, background in ((0.1, 20, 0), (1.0, 3, 0), (0.1, 20, BURST)):
            rows = trials(rx, tx, interval, count, background)
            what = f"I={interval:g}s" + (f" + {background} in bursts" if background else "")
            missed = sum(1 for r in rows if "missed" in r)
            summary: dict[str, dict[str, float]] = {}
            for key, label, target in (
                ("processing_ms", "ms, decisive packet sent -> flagged in store", "<= 50"),
                ("from_receive_stamp_ms", "ms, its receive stamp -> flagged", "<= 50"),
                ("rule_delay_intervals", "intervals, B's first advert -> flagged", "<= 2"),
            ):
                p50, p95, mx = summarize(rows, key)
                summary[key] = {"p50": p50, "p95": p95, "max": mx}
                print(f"{f'{what} ({count} trials): {label}':56} {p50:9.2f} {p95:9.2f} {mx:9.2f}  {target}")
            if missed:
                print(f"  {what}: {missed} trial(s) never flagged")
            suffix = f"_burst_{background}" if background else ""
            figures[f"interval_{interval:g}{suffix}"] = {"rows": rows, "missed": missed, "summary": summary}
            name = what
            targets += [
                Target(
                    f"{name} p95 ms decisive packet sent -> flagged",
                    summary["processing_ms"]["p95"],
                    "<=",
                    50,
                ),
                Target(
                    f"{name} p95 ms receive stamp -> flagged",
                    summary["from_receive_stamp_ms"]["p95"],
                    "<=",
                    50,
                ),
                Target(
                    f"{name} max intervals B's first advert -> flagged",
                    summary["rule_delay_intervals"]["max"],
                    "<=",
                    2,
                ),
                Target(f"{name} trials never flagged", missed, "==", 0),
            ]
    idle = idle_cost()
    if idle is not None:
        print(
            f"{'idle: capture thread CPU, keepalived pair at advert_int 1':56} "
            f"{idle['idle_cpu_percent']:9.3f} %  (<= 0.5 %; {idle['adverts_in_window']:.0f} adverts "
            f"in {idle['seconds']:.0f} s)"
        )
        figures["idle"] = idle
    targets.append(
        Target(
            "idle capture thread CPU % (lab pair, advert_int 1)",
            None if idle is None else idle["idle_cpu_percent"],
            "<=",
            0.5,
        )
    )
    result("detect", figures, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
