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

With `--baseline REV` (e.g. main), REV's exporter runs beside this tree's, from a copy of REV's
files (git archive) in a temporary directory, and is scraped in the same rotation: both measured in
one run, on the same wire and the same dumps.

Run: .venv/bin/python bench/bench_scrape_cost.py [--sizes 1,100,255,1000] [--scrapes N] [--baseline REV]
     [--quiet]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
from bench_http import ROUTERS, exporter_argv, wait_complete
from common import Process, Target

DEFAULT_SCRAPES = {1: 2000, 100: 1000, 255: 500, 1000: 200}
P99_100_MS = 5.0
RSS_MIB = 64.0
IDLE_SECONDS = 5.0


@contextlib.contextmanager
def exported_tree(rev: str) -> Iterator[Path]:
    """REV's files (`git archive`) in a temporary directory, removed afterwards; REV may also name a
    directory holding a tree already (used as it is).

    No worktree is registered (others may work in this repository at the same time). Run what comes
    from it with that directory as the working directory or first on PYTHONPATH: `python -m` puts the
    cwd first, so a tree run from here would import this tree's ka_exporter instead.
    """
    if Path(rev).is_dir():  # a tree already exported (or another checkout): used as it is
        yield Path(rev).resolve()
        return
    commit = subprocess.run(
        ["git", "-C", str(common.REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix=f"ka-bench-{rev.replace('/', '_')}-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(common.REPO), "archive", "--format=tar", commit],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def build_reference(workdir: Path) -> Path:
    exe = workdir / "refserver"
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("no C compiler (apt-get install gcc)")
    subprocess.run([cc, "-O2", "-o", str(exe), str(common.BENCH / "refserver.c")], check=True)
    return exe


def measure(  # noqa: PLR0917 - the bench's own call
    n: int, scrapes: int, netns: str, workdir: Path, ref: Path, baseline: Path | None = None
) -> dict[str, Any]:
    """One size: this tree's exporter (and `baseline`'s, a tree run from its own directory) against
    the reference serving this tree's bytes, scraped in rotation."""
    dumps = common.write_dumps(workdir / f"dumps-{n}", n)
    with contextlib.ExitStack() as stack:
        exporters: dict[str, tuple[Process, int]] = {}
        trees = {"exporter": None} | ({"baseline": baseline} if baseline is not None else {})
        for name, tree in trees.items():
            port = common.free_port()
            # `python -m` puts the cwd first on the path: a baseline runs from its own tree.
            where = {} if tree is None else {"cwd": tree, "env": {**os.environ, "PYTHONPATH": str(tree)}}
            proc = stack.enter_context(
                Process(exporter_argv(port, netns, dumps), workdir / f"{name}-{n}.log", **where)
            )
            exporters[name] = (proc, port)
        for proc, port in exporters.values():
            common.wait_http(port, proc)
            wait_complete(port, proc, n, timeout=60.0)
        port = exporters["exporter"][1]
        body = common.get(port)[1]
        (workdir / f"body-{n}.prom").write_bytes(body)
        ref_port = common.free_port()
        refp = stack.enter_context(
            Process([str(ref), str(ref_port), str(workdir / f"body-{n}.prom")], workdir / "ref.log")
        )
        common.wait_http(ref_port, refp)
        if common.get(ref_port)[1] != body:
            raise RuntimeError("the reference does not serve the exporter's bytes")
        targets = {**exporters, "reference": (refp, ref_port)}
        # The exporters' background cost (64 adverts/s, polls) with no scrape, for comparison.
        c0 = {name: common.cpu_seconds(proc.pid) for name, (proc, _p) in exporters.items()}
        t0 = time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = {
            name: round((common.cpu_seconds(proc.pid) - c0[name]) * 1000.0 / (time.monotonic() - t0), 2)
            for name, (proc, _p) in exporters.items()
        }
        for _ in range(5):  # warm up
            for _proc, p in targets.values():
                common.get(p)
        hashes = [hash(body)]  # of the exporter's bodies: a change is a re-render (advert, poll)

        def on_body(name: str, got: bytes) -> None:
            if name == "exporter":
                hashes.append(hash(got))

        run = common.rotate_scrapes(targets, scrapes, on_body)
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
        "idle_cpu_ms_per_s": idle["exporter"],
    }
    if baseline is not None:
        row["baseline_idle_cpu_ms_per_s"] = idle["baseline"]
    for k in targets:
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


def print_rows(rows: list[dict[str, Any]], baseline: str | None = None) -> list[Target]:
    print(f"/metrics, {ROUTERS} wire routers; one client, a new connection per scrape, plain text")
    print(
        f"{'instances':>9} {'KiB':>6} {'n':>5} {'server':<14} "
        + " ".join(f"{t:>{w}}" for t, w, _f, _k in COLUMNS)
    )
    servers = [("exporter", "ka-exporter")]
    if baseline is not None:
        baseline = Path(baseline).name if Path(baseline).is_dir() else baseline
        servers.append(("baseline", f"base {baseline}"[:14]))
    servers.append(("reference", "C reference"))
    targets: list[Target] = []
    for r in rows:
        n = r["instances"]
        for k, label in servers:
            cells = " ".join(f"{r[k][key]:>{w}{f}}" for _t, w, f, key in COLUMNS)
            print(f"{n:>9} {r['body_kib']:>6.0f} {r['scrapes']:>5} {label:<14} {cells}")
        ex, ref = r["exporter"], r["reference"]
        cpu_ratio = ex["cpu_ms_per_scrape"] / max(ref["cpu_ms_per_scrape"], 1e-9)
        print(
            f"{'':>9} ka-exporter / reference: p99 {ex['p99_ms'] / ref['p99_ms']:.2f}x, cpu per scrape "
            f"{cpu_ratio:.2f}x; exporter idle {r['idle_cpu_ms_per_s']} ms/s; bodies changed "
            f"{r['bodies_changed']}; failed {r['errors']}; load {r['load']}"
        )
        if baseline is not None:
            base = r["baseline"]
            print(
                f"{'':>9} ka-exporter / {baseline}: median {ex['median_ms'] / base['median_ms']:.2f}x, p99 "
                f"{ex['p99_ms'] / base['p99_ms']:.2f}x, cpu per scrape "
                f"{ex['cpu_ms_per_scrape'] / max(base['cpu_ms_per_scrape'], 1e-9):.2f}x; "
                f"{baseline} idle {r['baseline_idle_cpu_ms_per_s']} ms/s"
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
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also run REV's exporter (git archive of REV in a temporary directory, run from there; "
        "or a directory holding a tree), scraped in the same rotation",
    )
    ap.add_argument(
        "--quiet", action="store_true", help="no progress lines and no in-process render costs: the table"
    )
    args = ap.parse_args()
    common.exit_on_sigterm()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-cost-"))
    rows: list[dict[str, Any]] = []
    try:
        ref = build_reference(workdir)
        with contextlib.ExitStack() as stack:
            baseline = stack.enter_context(exported_tree(args.baseline)) if args.baseline else None
            tx, rx = stack.enter_context(common.veth_pair("kbc"))
            stack.enter_context(
                common.start_sender(tx, "vx", common.adverts(ROUTERS), 1.0, workdir / "sender.log")
            )
            for n in sizes:
                scrapes = args.scrapes or DEFAULT_SCRAPES.get(n, 500)
                rows.append(measure(n, scrapes, rx, workdir, ref, baseline))
                if not args.quiet:
                    servers = 3 if baseline is not None else 2
                    print(
                        f"  ({n} instances: {scrapes} x {servers} scrapes, {rows[-1]['seconds']} s)",
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    costs = {} if args.quiet else {n: render_costs(n) for n in sizes}
    targets = print_rows(rows, args.baseline)
    if costs:
        print(
            "Renderer.render in-process, median ms: unchanged state / after one advert / after one "
            "instance changed"
        )
        for n, c in costs.items():
            print(f"{n:>9} instances: {c['cached']:.3f} / {c['advert']:.3f} / {c['instance']:.3f}")
    print(f"load {common.load():.2f} (a shared 2-core machine)")
    common.result("scrape_cost", {"rows": rows, "render_ms": costs, "baseline": args.baseline}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
