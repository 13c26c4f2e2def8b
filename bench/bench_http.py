"""/metrics latency of a real ka-exporter process against a static registry of the same series.

Target: p99 <= 1.5x the floor, with 1, 255 and 1,000 keepalived instances and 64 wire routers.

Setup (root): two fresh namespaces joined by a veth. In one, a sender process replays 64 routers'
VRRPv3 adverts (each the master of its own VRID, 1 advert/s each, evenly spread). In the other, a real
`ka-exporter` process (`--netns`, serving on the host's 127.0.0.1) sniffs them with the wire source and
reads keepalived dumps with N instances from a directory (`--no-keepalived.signal`; the dumps are built
from real 2.2.8 fixture blocks, see common.build_dumps). Its scrapes then hold N instances and 64 routers.

The floor: the exporter's own exposition, once everything is in, copied into an ordinary
prometheus_client registry of Gauges/Counters (values set once; same series, checked) and served by
  - "same stack": ka-exporter's HTTP server (ka_exporter.outputs.http) in a separate process: only the render differs;
  - "client": prometheus_client's start_http_server in a separate process.
The three servers are scraped in rotation (one fresh connection per scrape, plain text, as one client),
so the machine's noise falls on all three alike. The exporter's CPU time per scrape is also compared
(from /proc, all threads): the less noisy figure on a shared machine.

Scrape counts (each server, each size): 2,000 with 1 instance, 100 with 255 and 25 with 1,000; the
prometheus_client floor only with 255 instances. A 1,000-instance scrape is ~2.8 MB and takes ~0.8 s
on a busy 2-core machine, so 2,000 x 3 of them would take over an hour, and the bench must stay near
3 minutes. `--scrapes 2000 --all-floors` runs the full count.

Run: /tmp/kavenv/bin/python bench/bench_http.py [--scrapes N] [--sizes 1,255,1000] [--all-floors]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import EXPORTER, Process, Target

ROUTERS = 64
DEFAULT_SCRAPES = {1: 2000, 255: 100, 1000: 25}
CLIENT_FLOOR_SIZES = (255,)  # the prometheus_client floor by default; all sizes with --all-floors
TARGET_RATIO = 1.5


def exporter_argv(port: int, netns: str, dumps: Path) -> list[str]:
    return [
        *EXPORTER,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--netns",
        netns,
        "--hostname",
        "bench",
        "--keepalived.dumps-dir",
        str(dumps),
        "--no-keepalived.signal",
        "--keepalived.pid-file",
        str(dumps / "keepalived.pid"),  # none: there is no keepalived process to look at
        "--no-collector.config",
        "--no-collector.dbus",
        "--wire.interface",
        "eth0",
        "--log.level",
        "warning",
    ]


def wait_complete(port: int, proc: Process, instances: int, timeout: float = 15.0) -> str:
    """The exporter's exposition once it shows every instance and every router."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    seen = (0, 0)
    while time.monotonic() < deadline:
        _status, body, _ = common.get(port)
        text = body.decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        states = len(fams["keepalived_vrrp_state"].samples) if "keepalived_vrrp_state" in fams else 0
        peers = fams.get("keepalived_wire_peers")
        routers = int(peers.samples[0].value) if peers and peers.samples else 0
        seen = (states, routers)
        if seen == (instances, ROUTERS):
            return text
        time.sleep(0.2)
    raise RuntimeError(
        f"exporter showed {seen} (instances, routers), wanted {(instances, ROUTERS)}:\n{proc.logs()}"
    )


FLOORS = {"floor_same_stack": "ka", "floor_client": "client"}
LABELS = {
    "exporter": "ka-exporter",
    "floor_same_stack": "static, same HTTP",
    "floor_client": "static, client",
}


def measure(n: int, scrapes: int, floors: list[str], netns: str, workdir: Path) -> dict[str, Any]:
    dumps = common.write_dumps(workdir / f"dumps-{n}", n)
    port = common.free_port()
    servers: dict[str, tuple[Process, int]] = {}
    with Process(exporter_argv(port, netns, dumps), workdir / f"exporter-{n}.log") as exporter:
        common.wait_http(port, exporter)
        text = wait_complete(port, exporter, n)
        try:
            for floor in floors:
                servers[floor] = common.start_floor(FLOORS[floor], text, workdir)
            targets = {"exporter": (exporter, port), **servers}
            bodies = {name: common.get(p)[1] for name, (_proc, p) in targets.items()}
            ours = common.series(bodies["exporter"].decode())
            for name, body in bodies.items():
                if common.series(body.decode()) != ours:
                    raise RuntimeError(f"{name} does not serve the exporter's series")
            for _ in range(3):  # warm up
                for _proc, p in targets.values():
                    common.get(p)
            names = list(targets)
            run = common.rotate_scrapes(targets, scrapes)
        finally:
            for proc, _p in servers.values():
                proc.stop()
    row: dict[str, Any] = {
        "instances": n,
        "routers": ROUTERS,
        "samples": len(ours),
        "body_kib": round(len(bodies["exporter"]) / 1024, 1),
        "scrapes": scrapes,
        "errors": run.errors,
        "seconds": round(run.seconds, 1),
        "load": round(common.load(), 2),
        "floors": floors,
    }
    for k in names:
        row[k] = run.figures(k)
    for floor in floors:
        row[f"p99_ratio_{floor}"] = round(row["exporter"]["p99_ms"] / row[floor]["p99_ms"], 3)
        row[f"median_ratio_{floor}"] = round(row["exporter"]["median_ms"] / row[floor]["median_ms"], 3)
        row[f"cpu_ratio_{floor}"] = round(
            row["exporter"]["cpu_ms_per_scrape"] / max(row[floor]["cpu_ms_per_scrape"], 1e-9), 3
        )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scrapes", type=int, default=None, help="scrapes per server and size (default: by size)"
    )
    ap.add_argument("--sizes", default="1,255,1000", help="instance counts, comma-separated")
    ap.add_argument(
        "--all-floors",
        action="store_true",
        help="the prometheus_client floor at every size (default: 255 instances only)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    common.exit_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-http-"))
    rows: list[dict[str, Any]] = []
    try:
        with (
            common.veth_pair("kbh") as (tx, rx),
            common.start_sender(tx, "vx", common.adverts(ROUTERS), 1.0, workdir / "sender.log"),
        ):
            for n in sizes:
                scrapes = args.scrapes or DEFAULT_SCRAPES.get(n, 100)
                floors = ["floor_same_stack"]
                if n in CLIENT_FLOOR_SIZES or args.all_floors:
                    floors.append("floor_client")
                rows.append(measure(n, scrapes, floors, rx, workdir))
                print(
                    f"  ({n} instances: {scrapes} x {1 + len(floors)} scrapes in {rows[-1]['seconds']} s)",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"/metrics over HTTP, {ROUTERS} wire routers; latency: connect to last byte, a new connection each")
    print(
        f"{'instances':>9} {'samples':>7} {'KiB':>6} {'n':>5} {'server':<17} {'median ms':>9} "
        f"{'p99 ms':>8} {'cpu ms/scrape':>13} {'RSS MiB':>7}"
    )
    targets: list[Target] = []
    for r in rows:
        n = r["instances"]
        for k in ("exporter", *r["floors"]):
            f = r[k]
            print(
                f"{n:>9} {r['samples']:>7} {r['body_kib']:>6.0f} {r['scrapes']:>5} {LABELS[k]:<17} "
                f"{f['median_ms']:>9.2f} {f['p99_ms']:>8.2f} {f['cpu_ms_per_scrape']:>13.2f} {f['rss_mib']:>7.1f}"
            )
        for floor in r["floors"]:
            print(
                f"{'':>9} ka-exporter / {LABELS[floor]}: p99 {r[f'p99_ratio_{floor}']:.2f}x, "
                f"median {r[f'median_ratio_{floor}']:.2f}x, cpu per scrape {r[f'cpu_ratio_{floor}']:.2f}x"
            )
            targets.append(
                Target(f"{n} instances: p99 / {LABELS[floor]}", r[f"p99_ratio_{floor}"], "<=", TARGET_RATIO)
            )
        print(f"{'':>9} failed scrapes {r['errors']}; load {r['load']}")
        targets.append(Target(f"{n} instances: failed scrapes", r["errors"], "==", 0))
    common.result("http", {"rows": rows}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
