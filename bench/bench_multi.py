"""Multi-namespace mode at the issue's scale: 200 keepalived in 200 namespaces, one ka-exporter.

Setup (root): the "routers" lab (ka_exporter/lab/routers.py) with PAIRS routers = 2 * PAIRS
namespaces, each with one keepalived (VRRPv3, advert_int 1, one instance: half MASTER, half BACKUP),
SPLITS of them split by nft (a split brain in both namespaces of the pair).

Two runs of `ka-exporter --discover`, one after the other, each watching a set of the lab's namespaces
(`--discover.match`): SMALL routers first (the baseline), then all of them. For each run:
- full view: seconds from the exporter's start until every watched namespace shows its VRRP state,
  and the expected split brains;
- idle: CPU of the exporter (ms per second, /proc/PID/stat) over IDLE seconds without scrapes, while
  every keepalived advertises (the wire of every namespace is sniffed), its RSS and thread count;
- scrapes: SCRAPES scrapes, one every 0.1 s, on fresh connections: p50 / p99 latency, body size.
Then, with all routers watched: a router added and one removed, seconds until the scrape shows it.
Cost per watched keepalived = (all - baseline) / (daemons all - daemons baseline), for RSS and CPU.
Event sources: one router in EVENTS (--events, 10) has a private dbus-daemon per side (enable_dbus),
the next one a vrrp_notify_fifo per side, in the baseline and in the whole set alike; each run prints
how many members have D-Bus and the FIFO attached (ka_exporter_source_up), and the thread count must
not grow with them (one D-Bus poll thread and a pool of two for every member's bus).

Run: .venv/bin/python bench/bench_multi.py [--pairs 100] [--small 10] [--splits 5] [--idle 20] [--events 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (
    EXPORTER,
    Process,
    Target,
    cpu_seconds,
    exit_on_sigterm,
    free_port,
    get,
    load,
    median,
    percentile,
    result,
    rss_kib,
    threads,
    wait_http,
)
from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.lab.routers import RoutersLab


def view(port: int, up: dict[str, float] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(state per netns, split brain per netns) as the exporter shows them; `up`: event sources up."""
    states: dict[str, float] = {}
    splits: dict[str, float] = {}
    _status, body, _s = get(port)
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            ns = s.labels.get("netns")
            if ns is None:
                continue
            if s.name == "keepalived_vrrp_state":
                states[ns] = s.value
            elif s.name == "keepalived_wire_split_brain":
                splits[ns] = s.value
            elif (
                up is not None
                and s.name == "ka_exporter_source_up"
                and s.labels["source"] in ("dbus", "fifo")
            ):
                key = f"{s.labels['source']}_attached"
                up[key] = up.get(key, 0.0) + s.value
    return states, splits


def features(pairs: int, every: int) -> dict[int, str]:
    """Router index -> its event source: one router in `every` with D-Bus, the next with a FIFO."""
    if every <= 0:
        return {}
    out: dict[int, str] = {}
    for i in range(pairs):
        if i % every == 1:
            out[i] = "dbus"
        elif i % every == 2:
            out[i] = "fifo"
    return out


def wanted(lab: RoutersLab, indexes: list[int]) -> tuple[dict[str, float], dict[str, float]]:
    states: dict[str, float] = {}
    splits: dict[str, float] = {}
    for i in indexes:
        a, b = lab.routers[i]
        split = i in lab.split_routers
        states[a.netns], states[b.netns] = 2.0, 2.0 if split else 1.0
        splits[a.netns] = splits[b.netns] = 1.0 if split else 0.0
    return states, splits


def wait(pred: object, timeout: float, step: float = 0.05) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(step)
    return None


def measure(lab: RoutersLab, indexes: list[int], idle: float, scrapes: int, work: Path) -> dict[str, float]:
    every = len(indexes) == len(lab.routers)  # all: routers added later match too
    regex = f"{lab.prefix}-.*" if every else f"{lab.prefix}-({'|'.join(map(str, indexes))})[ab]"
    port = free_port()
    t0 = time.monotonic()
    proc = Process(
        [*EXPORTER, "--discover", f"--discover.match={regex}", f"--web.listen-address=127.0.0.1:{port}"],
        work / f"exporter-{len(indexes)}.log",
    )
    try:
        wait_http(port, proc, timeout=60.0)
        want = wanted(lab, indexes)
        full = wait(lambda: view(port) == want, 120.0, 0.2)
        if full is None:
            got = view(port)
            bad = [ns for ns in want[0] if got[0].get(ns) != want[0][ns] or got[1].get(ns) != want[1][ns]]
            raise RuntimeError(f"the exporter never showed the lab as it is: {len(bad)} namespaces differ")
        full_view = time.monotonic() - t0
        time.sleep(3.0)  # let the first dump round settle
        c0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        idle_ms = (cpu_seconds(proc.pid) - c0) * 1000.0 / (time.monotonic() - w0)
        rss = rss_kib(proc.pid)[0]
        nthreads = threads(proc.pid)
        attached: dict[str, float] = {"dbus_attached": 0.0, "fifo_attached": 0.0}
        view(port, attached)
        lat: list[float] = []
        size = 0
        c0 = cpu_seconds(proc.pid)
        for _ in range(scrapes):
            status, body, seconds = get(port)
            assert status == 200
            lat.append(seconds * 1000.0)
            size = len(body)
            time.sleep(0.1)
        cpu_per_scrape = (cpu_seconds(proc.pid) - c0) * 1000.0 / scrapes
        out = {
            "daemons": 2.0 * len(indexes),
            "full_view_s": round(full_view, 2),
            "idle_cpu_ms_per_s": round(idle_ms, 2),
            "rss_mib": round(rss / 1024, 1),
            "threads": float(nthreads),
            **attached,
            "scrape_p50_ms": round(median(lat), 2),
            "scrape_p99_ms": round(percentile(lat, 99), 2),
            "cpu_ms_per_scrape": round(cpu_per_scrape, 2),
            "body_kib": round(size / 1024, 1),
        }
        if every:
            out.update(churn(lab, port))
        return out
    finally:
        proc.stop()


def churn(lab: RoutersLab, port: int) -> dict[str, float]:
    """Seconds until a router added (and one removed) shows in the scrape."""
    t0 = time.monotonic()
    index = lab.add_router()
    added_at = time.monotonic() - t0
    a, b = lab.routers[index]
    seen = wait(lambda: {a.netns, b.netns} <= set(view(port)[0]), 30.0)
    gone_index = next(i for i in lab.routers if i not in lab.split_routers)
    ga, gb = lab.routers[gone_index]
    t1 = time.monotonic()
    lab.remove_router(gone_index)
    removed_at = time.monotonic() - t1
    gone = wait(lambda: not ({ga.netns, gb.netns} & set(view(port)[0])), 30.0)
    return {
        "add_seen_s": round(seen, 2) if seen is not None else float("nan"),
        "add_lab_s": round(added_at, 2),
        "remove_seen_s": round(gone, 2) if gone is not None else float("nan"),
        "remove_lab_s": round(removed_at, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--events", type=int, default=10, help="one router in N with D-Bus, one with a FIFO")
    args = parser.parse_args()
    exit_on_sigterm()
    lab_setup = RoutersLab(pairs=args.pairs, features=features(args.pairs, args.events))
    with tempfile.TemporaryDirectory(prefix="bench-multi-") as tmp, lab_setup as lab:
        t0 = time.monotonic()
        step = max(1, args.pairs // max(1, args.splits))
        for i in range(0, args.pairs, step)[: args.splits]:
            lab.split(i)
        if not lab.wait_for(lab.settled, 30.0):
            raise RuntimeError(f"the split brains did not appear: {lab.summary()}")
        print(
            f"lab: {2 * args.pairs} keepalived in {2 * args.pairs} namespaces, {args.splits} split brains "
            f"(settled {time.monotonic() - t0:.1f} s), load {load():.2f}",
            flush=True,
        )
        indexes = sorted(lab.routers)
        small = measure(lab, indexes[: args.small], args.idle, args.scrapes, Path(tmp))
        print(f"baseline ({small['daemons']:.0f} keepalived): {small}", flush=True)
        kinds = [lab.features.get(i, "") for i in indexes]
        full = measure(lab, indexes, args.idle, args.scrapes, Path(tmp))
        print(f"all ({full['daemons']:.0f} keepalived): {full}", flush=True)
        n = full["daemons"] - small["daemons"]
        per = {
            "rss_kib_per_daemon": round((full["rss_mib"] - small["rss_mib"]) * 1024 / n, 1),
            "idle_cpu_ms_per_s_per_daemon": round(
                (full["idle_cpu_ms_per_s"] - small["idle_cpu_ms_per_s"]) / n, 3
            ),
            "scrape_p99_ms_per_daemon": round((full["scrape_p99_ms"] - small["scrape_p99_ms"]) / n, 3),
            "cpu_ms_per_scrape_per_daemon": round(
                (full["cpu_ms_per_scrape"] - small["cpu_ms_per_scrape"]) / n, 3
            ),
        }
        print(f"per watched keepalived: {per}")
        print(f"load {load():.2f}")
        figures = {"baseline": small, "all": full, "per_daemon": per}
        targets = [
            Target("threads with all watched == baseline", full["threads"], "==", small["threads"]),
            Target("members with D-Bus attached", full["dbus_attached"], "==", 2.0 * kinds.count("dbus")),
            Target("members reading their FIFO", full["fifo_attached"], "==", 2.0 * kinds.count("fifo")),
            Target("added router seen (s)", full.get("add_seen_s"), "<=", 5.0),
            Target("removed router gone (s)", full.get("remove_seen_s"), "<=", 5.0),
        ]
        result("multi", figures, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
