"""Scrape cost: ka-exporter's /metrics against a compiled static server of the same bytes.

Targets (issue #12): at 1, 100, 255 and 1,000 keepalived instances with 64 routers on the wire,
ka-exporter's scrape p99 and CPU per scrape at most those of the compiled reference; p99 <= 5 ms at
100 instances; RSS < 64 MiB at 255 instances.

Setup (root), as bench_http: two fresh namespaces joined by a veth; in one a sender replays 64 routers'
VRRPv3 adverts (each master of its own VRID, 1 advert/s each, evenly spread); in the other a real
`ka-exporter` process (`--netns`, serving on the host's 127.0.0.1) sniffs them with the wire source and
reads keepalived dumps with N instances (built from real 2.2.8 fixture blocks, common.build_dumps).

The reference: `refserver.c` beside this file, built here with gcc -O2: it reads the exporter's
exposition (taken once everything is in) and serves those bytes to every request, one request per
connection. Both are scraped in rotation by one client (a fresh connection per scrape, plain text,
common.get: connect to last byte), so the machine's noise falls on both alike. CPU per scrape is
user + system of all the process's threads (/proc) over the scrapes, divided by their number; the
exporter's own background cost in the same time (sniffing 64 adverts/s, polling) is measured before
the scrapes and printed too ("idle ms/s"), not subtracted. The machine is shared: the load average is
printed with each row.

Run: .venv/bin/python bench/bench_scrape_cost.py [--sizes 1,100,255,1000] [--scrapes N]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from bench_http import ROUTERS, exporter_argv, wait_complete
from common import Process, Target

DEFAULT_SCRAPES = {1: 2000, 100: 1000, 255: 500, 1000: 200}
P99_100_MS = 5.0
RSS_MIB = 64.0
IDLE_SECONDS = 5.0


def build_reference(workdir: Path) -> Path:
    exe = workdir / "refserver"
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("no C compiler (apt-get install gcc)")
    subprocess.run([cc, "-O2", "-o", str(exe), str(common.BENCH / "refserver.c")], check=True)
    return exe


def measure(n: int, scrapes: int, netns: str, workdir: Path, ref: Path) -> dict[str, Any]:
    dumps = common.write_dumps(workdir / f"dumps-{n}", n)
    port = common.free_port()
    with Process(exporter_argv(port, netns, dumps), workdir / f"exporter-{n}.log") as exporter:
        common.wait_http(port, exporter)
        wait_complete(port, exporter, n, timeout=60.0)
        body = common.get(port)[1]
        (workdir / f"body-{n}.prom").write_bytes(body)
        ref_port = common.free_port()
        with Process([str(ref), str(ref_port), str(workdir / f"body-{n}.prom")], workdir / "ref.log") as refp:
            common.wait_http(ref_port, refp)
            if common.get(ref_port)[1] != body:
                raise RuntimeError("the reference does not serve the exporter's bytes")
            targets = {"exporter": (exporter, port), "reference": (refp, ref_port)}
            # The exporter's background cost (64 adverts/s, polls) with no scrape, for comparison.
            c0, t0 = common.cpu_seconds(exporter.pid), time.monotonic()
            time.sleep(IDLE_SECONDS)
            idle = (common.cpu_seconds(exporter.pid) - c0) * 1000.0 / (time.monotonic() - t0)
            for _ in range(5):  # warm up
                for _proc, p in targets.values():
                    common.get(p)
            hashes = [hash(body)]  # of the exporter's bodies: a change is a re-render (advert, poll)

            def on_body(name: str, got: bytes) -> None:
                if name == "exporter":
                    hashes.append(hash(got))

            run = common.rotate_scrapes(targets, scrapes, on_body)
    names = list(targets)
    changed = sum(a != b for a, b in itertools.pairwise(hashes))
    row: dict[str, Any] = {
        "instances": n,
        "routers": ROUTERS,
        "body_kib": round(len(body) / 1024, 1),
        "scrapes": scrapes,
        "errors": run.errors,
        "bodies_changed": changed,
        "seconds": round(run.seconds, 1),
        "load": round(common.load(), 2),
        "idle_cpu_ms_per_s": round(idle, 2),
    }
    for k in names:
        row[k] = run.figures(k)
    return row


def render_costs(n: int, rounds: int = 200) -> dict[str, float]:
    """In-process cost of `Renderer.render` (the /metrics callable) with n instances, 64 routers.

    A store with n dumped instances and a wire source fed 64 routers' adverts (through its own
    ingest, plus the tick's failover accounts), rendered by the daemon's parts: the median time of
    a render of an unchanged state, after one advert (+ a tick), and after one instance changed.
    """
    from dataclasses import replace

    from ka_exporter.daemon import build_parts
    from ka_exporter.model import VrrpState
    from ka_exporter.outputs.exposition import Renderer
    from ka_exporter.parse.dumps import parse_dumps
    from ka_exporter.settings import Settings
    from ka_exporter.sources.wire import WireSource
    from ka_exporter.store import Store

    data, stats = common.build_dumps(n)
    views = list(parse_dumps(data.encode(), stats.encode()))
    store = Store(hostname="bench")
    store.set_instances(tuple(views), "dumps")
    wire = WireSource(store, ["eth0"])
    packets = common.adverts(ROUTERS)
    now = time.time() - 10.0
    wire.table.set_listening({"eth0": now})
    for k in range(4 * ROUTERS):
        wire.ingest("eth0", [(packets[k % ROUTERS], now, False)])
        now += 1.0 / ROUTERS
    wire.observe_failover(now)
    parts = build_parts(Settings(collectors=frozenset({"process", "vips", "dumps", "wire"})))
    renderer = Renderer(store.snapshot_versions, parts, stamp=store.stamp)
    renderer.render("", "")
    out: dict[str, list[float]] = {"cached": [], "advert": [], "instance": []}
    for k in range(rounds):
        t0 = time.perf_counter()
        if renderer.cached("", "") is None:  # what the HTTP loop does first
            renderer.render("", "")
        out["cached"].append(time.perf_counter() - t0)
        wire.ingest("eth0", [(packets[k % ROUTERS], now, False)])
        now += 1.0 / ROUTERS
        if k % 16 == 0:
            wire.observe_failover(now)  # the tick, 4 times a second at 64 adverts/s
        t0 = time.perf_counter()
        renderer.render("", "")
        out["advert"].append(time.perf_counter() - t0)
        i = k % n
        views[i] = replace(
            views[i], state=VrrpState.FAULT if views[i].state != VrrpState.FAULT else VrrpState.MASTER
        )
        store.set_instances(tuple(views), "dumps")
        t0 = time.perf_counter()
        renderer.render("", "")
        out["instance"].append(time.perf_counter() - t0)
    return {k: round(common.median(v) * 1000.0, 3) for k, v in out.items()}


COLUMNS = (  # (title, width, format, row figure)
    ("median ms", 9, ".3f", "median_ms"),
    ("p99 ms", 8, ".3f", "p99_ms"),
    ("cpu ms/scrape", 13, ".3f", "cpu_ms_per_scrape"),
    ("RSS MiB", 7, ".1f", "rss_mib"),
)


def print_rows(rows: list[dict[str, Any]]) -> list[Target]:
    print(f"/metrics, {ROUTERS} wire routers; one client, a new connection per scrape, plain text")
    print(
        f"{'instances':>9} {'KiB':>6} {'n':>5} {'server':<12} "
        + " ".join(f"{t:>{w}}" for t, w, _f, _k in COLUMNS)
    )
    targets: list[Target] = []
    for r in rows:
        n = r["instances"]
        for k, label in (("exporter", "ka-exporter"), ("reference", "C reference")):
            cells = " ".join(f"{r[k][key]:>{w}{f}}" for _t, w, f, key in COLUMNS)
            print(f"{n:>9} {r['body_kib']:>6.0f} {r['scrapes']:>5} {label:<12} {cells}")
        ex, ref = r["exporter"], r["reference"]
        cpu_ratio = ex["cpu_ms_per_scrape"] / max(ref["cpu_ms_per_scrape"], 1e-9)
        print(
            f"{'':>9} ka-exporter / reference: p99 {ex['p99_ms'] / ref['p99_ms']:.2f}x, cpu per scrape "
            f"{cpu_ratio:.2f}x; exporter idle {r['idle_cpu_ms_per_s']} ms/s; bodies changed "
            f"{r['bodies_changed']}; failed {r['errors']}; load {r['load']}"
        )
        targets += [
            Target(f"{n} instances: p99 ms <= reference", ex["p99_ms"], "<=", ref["p99_ms"]),
            Target(
                f"{n} instances: cpu ms/scrape <= ref",
                ex["cpu_ms_per_scrape"],
                "<=",
                ref["cpu_ms_per_scrape"],
            ),
            Target(f"{n} instances: failed scrapes", r["errors"], "==", 0),
        ]
        if n == 100:
            targets.append(Target("100 instances: p99 ms", ex["p99_ms"], "<=", P99_100_MS))
        if n == 255:
            targets.append(Target("255 instances: RSS MiB", ex["rss_mib"], "<", RSS_MIB))
    return targets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=None, help="scrapes per server and size")
    ap.add_argument("--sizes", default="1,100,255,1000", help="instance counts, comma-separated")
    args = ap.parse_args()
    common.exit_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-cost-"))
    rows: list[dict[str, Any]] = []
    try:
        ref = build_reference(workdir)
        with (
            common.veth_pair("kbc") as (tx, rx),
            common.start_sender(tx, "vx", common.adverts(ROUTERS), 1.0, workdir / "sender.log"),
        ):
            for n in (int(s) for s in args.sizes.split(",")):
                rows.append(measure(n, args.scrapes or DEFAULT_SCRAPES.get(n, 500), rx, workdir, ref))
                print(
                    f"  ({n} instances: {rows[-1]['scrapes']} x 2 scrapes, {rows[-1]['seconds']} s)",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    costs = {n: render_costs(n) for n in (int(s) for s in args.sizes.split(","))}
    targets = print_rows(rows)
    print(
        "Renderer.render in-process, median ms: unchanged state / after one advert / after one instance changed"
    )
    for n, c in costs.items():
        print(f"{n:>9} instances: {c['cached']:.3f} / {c['advert']:.3f} / {c['instance']:.3f}")
    print(f"load {common.load():.2f} (a shared 2-core machine)")
    common.result("scrape_cost", {"rows": rows, "render_ms": costs}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
