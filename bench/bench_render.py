"""In-process render cost: `Renderer.render` (the /metrics callable) and the watchdog's evaluation
after each kind of change, at 100 and 1,000 instances with 64 routers on the wire.

As bench_scrape_cost's in-process part: a store with n dumped keepalived instances (real 2.2.8 fixture
blocks, common.build_dumps), with or without a keepalived.conf listing them ("conf"), this node holding
the VIPs of its MASTER instances, and a wire source fed 64 routers' adverts through its own ingest
(plus the tick's failover accounts), rendered by the daemon's parts. Median ms of:

  unchanged  a render of an unchanged state (after `cached`, as the HTTP loop does)
  advert     a render after one advert (+ a tick every 16)
  one        a render after one instance changed state (its VIP moved with it)
  all        a render after every instance changed state at once (MASTER <-> FAULT)
  watchdog   conditions.evaluate after one instance changed (with the watchdog's memo where the
             build has one)
  all+wd     conditions.evaluate after every instance changed state at once
  burst      every instance changing state in runs of BURST_RUN, each run published as the D-Bus
             source shows one (a FAULT of 100 instances arrives as runs of signals), with a render
             and a watchdog evaluation after each run: their sum over the burst, the CPU a daemon
             spends on it when a scrape and an evaluation follow every run (compare with all +
             all+wd: the same burst published once)

`--compare DIR` runs the same bench against the tree in DIR (e.g. /work/main) in the same run,
alternating the two builds `--rounds` times, and prints both side by side (medians of the rounds).

Run: .venv/bin/python bench/bench_render.py [--sizes 100,1000] [--compare /work/main]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROUTERS = 64
CASES = ("unchanged", "advert", "one", "all", "watchdog", "all+wd", "burst")
BURST_RUN = 10  # instances per run of the burst case


def measure(n: int, conf: bool, rounds: int) -> dict[str, float]:
    import inspect
    from dataclasses import replace

    import common

    from ka_exporter.daemon import build_parts
    from ka_exporter.model import ConfInstance, ConfVip, KeepalivedConfig, LocalAddress, VrrpState
    from ka_exporter.outputs.exposition import Renderer
    from ka_exporter.parse.dumps import parse_dumps
    from ka_exporter.settings import Settings
    from ka_exporter.sources.wire import WireSource
    from ka_exporter.store import Store
    from ka_exporter.verdicts import conditions

    data, stats = common.build_dumps(n)
    views = list(parse_dumps(data.encode(), stats.encode()))
    store = Store(hostname="bench")
    if conf:
        store.set_config(
            KeepalivedConfig(
                instances=tuple(
                    ConfInstance(v.name, v.interface, v.vrid, vips=tuple(ConfVip(a, 24) for a in v.vips))
                    for v in views
                )
            )
        )

    def addresses() -> tuple[LocalAddress, ...]:
        return (
            LocalAddress("10.251.0.250", 24, "eth0", "inet"),
            *tuple(
                LocalAddress(a, 24, v.interface, "inet")
                for v in views
                if v.state == VrrpState.MASTER
                for a in v.vips
            ),
        )

    store.set_addresses(addresses())
    store.set_instances(tuple(views), "dumps")
    sender = _Sender(WireSource(store, ["eth0"]), common.adverts(ROUTERS), time.time() - 10.0)
    for k in range(4 * ROUTERS):  # every router heard four times, 64 adverts a second
        sender.send(k, tick=False)
    sender.wire.observe_failover(sender.now)
    parts = build_parts(Settings(collectors=frozenset({"process", "vips", "dumps", "wire", "config"})))
    renderer = Renderer(store.snapshot_versions, parts, stamp=store.stamp)
    renderer.render("", "")
    memo: dict[str, Any] = {}  # a tree whose watchdog keeps a memo: the watchdog's own
    if "memo" in inspect.signature(conditions.evaluate).parameters:
        from ka_exporter.verdicts.fused import Memo

        memo["memo"] = Memo()

    def evaluate() -> None:
        conditions.evaluate(store.snapshot(), **memo)

    evaluate()
    out: dict[str, list[float]] = {c: [] for c in CASES}

    def flip(i: int) -> None:
        state = views[i].state
        views[i] = replace(views[i], state=VrrpState.FAULT if state == VrrpState.MASTER else VrrpState.MASTER)

    def publish() -> None:
        store.set_instances(tuple(views), "dumps")
        store.set_addresses(addresses())

    def render_and_evaluate() -> tuple[float, float]:
        """The seconds a render and then the watchdog's evaluation took, of what was published."""
        t0 = time.perf_counter()
        renderer.render("", "")
        t1 = time.perf_counter()
        evaluate()
        return t1 - t0, time.perf_counter() - t1

    for k in range(rounds):
        t0 = time.perf_counter()
        if renderer.cached("", "") is None:
            renderer.render("", "")
        out["unchanged"].append(time.perf_counter() - t0)
        sender.send(k, tick=k % 16 == 0)
        t0 = time.perf_counter()
        renderer.render("", "")
        out["advert"].append(time.perf_counter() - t0)
        flip(k % n)
        publish()
        rendered, evaluated = render_and_evaluate()
        out["one"].append(rendered)
        out["watchdog"].append(evaluated)
        if k % 4 == 0:
            for i in range(n):
                flip(i)
            publish()
            rendered, evaluated = render_and_evaluate()
            out["all"].append(rendered)
            out["all+wd"].append(evaluated)
            spent = 0.0
            for start in range(0, n, BURST_RUN):
                for i in range(start, min(n, start + BURST_RUN)):
                    flip(i)
                publish()
                spent += sum(render_and_evaluate())
            out["burst"].append(spent)
    return {c: round(statistics.median(v) * 1000.0, 3) for c, v in out.items()}


class _Sender:
    """The routers' adverts, one at a time, into the wire source's own ingest (its table, its ticks)."""

    def __init__(self, wire: Any, packets: list[bytes], start: float) -> None:
        self.wire, self.packets, self.now = wire, packets, start
        wire.table.set_listening({"eth0": start})

    def send(self, k: int, *, tick: bool) -> None:
        self.wire.ingest("eth0", [(self.packets[k % len(self.packets)], self.now, False)])
        self.now += 1.0 / len(self.packets)
        if tick:  # the wire source's tick (4 a second at 64 adverts/s): the failover accounts
            self.wire.observe_failover(self.now)


def child(tree: str, sizes: list[int], rounds: int) -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, tree)
    import ka_exporter

    assert Path(ka_exporter.__file__).resolve().is_relative_to(Path(tree).resolve()), ka_exporter.__file__
    rows = {
        f"{n}{' conf' if conf else ''}": measure(n, conf, rounds) for n in sizes for conf in (False, True)
    }
    print("ROWS " + json.dumps(rows))


def run(tree: Path, sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(tree),
        "--sizes",
        ",".join(map(str, sizes)),
    ]
    argv += ["--per-child", str(rounds)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tree, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ROWS "))
    rows: dict[str, dict[str, float]] = json.loads(line.removeprefix("ROWS "))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--compare", default=None, help="another tree (e.g. /work/main), measured alternately")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each build (alternating)")
    ap.add_argument("--per-child", type=int, default=80, help="renders of each kind per run")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(args.child, sizes, args.per_child)
        return 0
    trees = {"this": HERE.parent}
    if args.compare:
        trees["other"] = Path(args.compare).resolve()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(run(tree, sizes, args.per_child))
    merged = {
        name: {row: {c: statistics.median(r[row][c] for r in got) for c in CASES} for row in got[0]}
        for name, got in runs.items()
    }
    import common

    head = f"{'instances':>10} {'build':<28}" + "".join(f"{c:>11}" for c in CASES)
    print("Renderer.render / conditions.evaluate in-process, median ms (medians of the runs); 64 routers")
    print(head)
    for row in merged["this"]:
        for name, tree in trees.items():
            cells = "".join(f"{merged[name][row][c]:>11.3f}" for c in CASES)
            print(f"{row:>10} {str(tree)[-28:]:<28}{cells}")
    print(f"load {common.load():.2f} (a shared 2-core machine)")
    common.result("render", {"trees": {k: str(v) for k, v in trees.items()}, "ms": merged}, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
