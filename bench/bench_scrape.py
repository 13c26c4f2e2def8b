"""A scrape with 255 instances through the keepalived collector vs a static registry (target <= 1.5x).

Both sides render the same series with ``generate_latest()`` in the same run, interleaved:

- ours: a store holding 255 parsed instances (built from real fixture blocks, see bench_parse.py), one
  snapshot per scrape rendered by ``SnapshotCollector`` + ``collect_keepalived`` (what /metrics does);
- static: a CollectorRegistry of ordinary prometheus_client Gauges/Counters holding exactly the samples
  our collector produced (``_created`` series disabled, since ours has none).

Run: /tmp/kavenv/bin/python bench/bench_scrape.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_parse import build

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.keepalived import collect_keepalived
from ka_exporter.model import LocalAddress
from ka_exporter.parse.dumps import combine, parse_data, parse_stats
from ka_exporter.store import Store


def ours(n: int) -> CollectorRegistry:
    data, stats = build(n)
    store = Store(hostname="bench")
    store.set_instances(combine(parse_data(data), parse_stats(stats)), "dumps")
    store.set_addresses(tuple(LocalAddress(f"10.97.0.{k}", 24, "eth0", "inet") for k in range(1, 200)))
    store.report("dbus")
    store.report("dumps")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store.snapshot, [collect_keepalived]))
    return registry


def static_copy(registry: CollectorRegistry) -> tuple[CollectorRegistry, int]:
    """The same series as ordinary client metrics, values set once."""
    prometheus_client.disable_created_metrics()
    static = CollectorRegistry(auto_describe=False)
    count = 0
    for family in registry.collect():
        if family.name == "ka_exporter_scrape_duration_seconds":
            continue
        labelnames = sorted({k for s in family.samples for k in s.labels})
        cls = Counter if family.type == "counter" else Gauge
        metric = cls(family.name, family.documentation, labelnames, registry=static)
        for s in family.samples:
            child = metric.labels(**s.labels) if labelnames else metric
            if isinstance(child, Counter):
                child.inc(s.value)
            else:
                child.set(s.value)
            count += 1
    return static, count


def timed(registry: CollectorRegistry) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    generate_latest(registry)
    return (time.perf_counter() - w0) * 1000.0, (time.process_time() - c0) * 1000.0


def main() -> int:
    registry = ours(255)
    static, samples = static_copy(registry)
    mine_text = generate_latest(registry).decode()
    static_text = generate_latest(static).decode()
    # the same series: identical exposition apart from our scrape-duration gauge
    mine_lines = sorted(line for line in mine_text.splitlines() if "scrape_duration" not in line)
    assert mine_lines == sorted(static_text.splitlines()), "static registry differs from the collector"
    for _ in range(5):  # warm up
        timed(registry)
        timed(static)
    mine_w, mine_c, static_w, static_c = [], [], [], []
    for _ in range(60):
        w, c = timed(registry)
        mine_w.append(w)
        mine_c.append(c)
        w, c = timed(static)
        static_w.append(w)
        static_c.append(c)
    mw, sw = statistics.median(mine_w), statistics.median(static_w)
    mc, sc = statistics.median(mine_c), statistics.median(static_c)
    ratio = mc / sc
    print(f"scrape with 255 instances, {samples} samples, {len(mine_text) / 1024:.0f} KiB exposition")
    print(f"  collector (snapshot + render + generate_latest): median cpu {mc:.2f} ms, wall {mw:.2f} ms")
    print(f"  static registry generate_latest:                 median cpu {sc:.2f} ms, wall {sw:.2f} ms")
    print(
        f"  ratio (cpu medians) {ratio:.2f}x, wall {mw / sw:.2f}x "
        f"(target <= 1.5x: {'OK' if ratio <= 1.5 else 'MISSED'}; load {os.getloadavg()[0]:.2f})"
    )
    from common import Target, result

    figures = {"samples": samples, "cpu_ms_median": mc, "wall_ms_median": mw, "static_cpu_ms_median": sc}
    figures |= {"static_wall_ms_median": sw, "cpu_ratio": ratio, "wall_ratio": mw / sw}
    result("scrape", figures, [Target("255 instances: collector / static cpu (medians)", ratio, "<=", 1.5)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
