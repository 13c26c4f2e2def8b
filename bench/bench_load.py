"""Load: 10,000 scrapes by 50 concurrent scrapers while the lab pair fails over every 2 s.

The issue's load figure (tests/test_load.py makes 2,000 of them, to stay short). A real keepalived pair
(lab profile "fast", D-Bus on) and one ka-exporter watching node a, started as `ka-exporter demo` starts
it; node a's keepalived is SIGTERMed and started again every 2 s (the master moves each time). Every
answer is kept and checked afterwards (tests/fault_helpers.py: 200, parses with prometheus_client's
parser, complete, every family, series and instance once).

Floor, measured in the same run with the same client: the same number of scrapes of a static file with
the body of one of the exporter's answers, served by Python's own threaded http.server (one process):
what serving that many bytes through Python's HTTP stack costs, without rendering.

Targets: zero errors and zero torn scrapes. Also printed: throughput, latency p50/p99/max, the
exporter's CPU per scrape (from /proc/PID/stat), and the master changes made.

Run: /tmp/kavenv/bin/python bench/bench_load.py [SCRAPES] (default 10000)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ka_exporter.lab import Lab  # noqa: E402
from ka_exporter.lab.demo import exporter_args  # noqa: E402
from ka_exporter.testing import free_port, wait_until  # noqa: E402
from tests.fault_helpers import Failovers, LoadResult, fetch, run_load, scrape_once, value  # noqa: E402

SCRAPERS = 50


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def wait_answering(url: str, timeout: float) -> bool:
    return wait_until(lambda: fetch(url, 1.0)[1] == 200, timeout, 0.1)


def row(name: str, r: LoadResult, extra: str = "") -> str:
    return (
        f"{name:<22} {len(r.answers):>7} {r.seconds:>7.1f} {len(r.answers) / r.seconds:>7.0f} "
        f"{r.percentile(0.5) * 1000:>7.0f} {r.percentile(0.99) * 1000:>7.0f} "
        f"{max(r.latencies) * 1000:>7.0f}  {extra}"
    )


def floor(body: str, total: int) -> LoadResult:
    """The same client against python -m http.server serving `body` as a static file."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "metrics").write_text(body)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", d, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            if not wait_answering(url, 10.0):
                raise SystemExit("the floor's http.server did not start")
            return run_load(url, total, SCRAPERS)
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with Lab(profile="fast", nodes=2, dbus=True) as lab, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        iname = lab.instances[0].name
        with open(Path(tmp, "exporter.log"), "wb") as log:
            proc = subprocess.Popen(
                exporter_args(lab.nodes["a"], port, "node-a"), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            if not wait_answering(url, 20.0):
                raise SystemExit("the exporter did not start")
            if not lab.wait_for(
                lambda: value(scrape_once(url).metrics, "keepalived_vrrp_state", iname=iname) == 2.0, 10
            ):
                raise SystemExit("node-a's exporter never showed it MASTER")
            body = fetch(url)[3]
            cpu0 = cpu_seconds(proc.pid)
            with Failovers(lab, 2.0) as moves:
                result = run_load(url, total, SCRAPERS)
            cpu = cpu_seconds(proc.pid) - cpu0
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(10)
    scrapes = result.check((iname,))
    errors = [s for s in scrapes if s.status != 200 or s.error]
    torn = [s for s in scrapes if s.status == 200 and not s.error and s.problems]
    states = sorted(
        {
            v
            for s in scrapes
            if s.good and (v := value(s.metrics, "keepalived_vrrp_state", iname=iname)) is not None
        }
    )
    base = floor(body, total)
    print(
        f"{SCRAPERS} scrapers; lab master moved {moves.done} times (every 2 s; {len(moves.errors)} refused)"
    )
    print(f"{'':<22} {'scrapes':>7} {'s':>7} {'per s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    print(row("ka-exporter", result, f"exporter CPU {cpu * 1000 / total:.2f} ms/scrape"))
    print(row("floor: static file", base))
    ratio = (len(base.answers) / base.seconds) / (len(result.answers) / result.seconds)
    print(
        f"throughput floor / exporter: {ratio:.2f}x; errors {len(errors)}, torn {len(torn)}; states seen {states}"
    )
    for s in (errors + torn)[:5]:
        print(f"  bad: status {s.status} {s.error or ''} {s.problems[:2]}")
    figures = {
        "scrapes": len(scrapes),
        "scrapers": SCRAPERS,
        "seconds": round(result.seconds, 2),
        "per_second": round(len(scrapes) / result.seconds, 1),
        "p50_ms": round(result.percentile(0.5) * 1000, 1),
        "p99_ms": round(result.percentile(0.99) * 1000, 1),
        "max_ms": round(max(result.latencies) * 1000, 1),
        "exporter_cpu_ms_per_scrape": round(cpu * 1000 / total, 3),
        "floor_per_second": round(len(base.answers) / base.seconds, 1),
        "floor_p99_ms": round(base.percentile(0.99) * 1000, 1),
        "master_changes": moves.done,
        "states_seen": states,
    }
    targets = [
        {"name": "errors", "value": len(errors), "op": "==", "limit": 0, "ok": not errors},
        {"name": "torn scrapes", "value": len(torn), "op": "==", "limit": 0, "ok": not torn},
        {"name": "exporter still running", "value": alive, "op": "==", "limit": True, "ok": alive},
    ]
    ok = all(t["ok"] for t in targets)
    print("RESULT " + json.dumps({"bench": "load", "figures": figures, "targets": targets, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
