"""Cost to keepalived: signals sent and dump files written per 100 scrapes, and the background rate.

Targets: 0 signals and 0 dump files per 100 scrapes, with D-Bus and without; with D-Bus, no signal at
all (dumps are asked for with PrintData/PrintStats); background refreshes no more often than
--keepalived.dump-interval (default 15 s).

Setup: a lab pair ("basic" profile, D-Bus on); a real ka-exporter watches node a with its defaults,
first with D-Bus, then with --no-collector.dbus (dumps asked for by signal). For each:
  - what keepalived did is read from keepalived itself: its log lines "Printing VRRP ... on signal"
    (one per signal its VRRP process got) and "... on DBus request", and the mtimes of the dump files
    in its TMPDIR, polled every 5 ms (a refresh = the files changed within 0.5 s of each other);
  - background: three successive refreshes with no scrapes give the gap between refreshes;
  - scrape path: right after a background refresh (so the next one is ~15 s away), 100 scrapes as
    fast as one client can; whatever keepalived printed or wrote meanwhile is charged to them.

Run: /tmp/kavenv/bin/python bench/bench_cost.py
"""

from __future__ import annotations

import itertools
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common
from common import Process, Target

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args

SCRAPES = 100
INTERVAL = 15.0  # the exporter's default --keepalived.dump-interval
SIGNAL_LINE = re.compile(r"Printing VRRP .* on signal")
DBUS_LINE = re.compile(r"Printing VRRP .* on DBus request")


class DumpWatch:
    """Changes of keepalived's dump files (mtime or size), polled every 5 ms in a thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.changes: list[tuple[float, str]] = []  # (monotonic time, file name)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _look(self) -> dict[str, tuple[int, int]]:
        out = {}
        for p in self.directory.glob("keepalived*"):
            try:
                st = p.stat()
            except OSError:
                continue
            out[p.name] = (st.st_mtime_ns, st.st_size)
        return out

    def _run(self) -> None:
        last = self._look()
        while not self._stop.wait(0.005):
            now = self._look()
            t = time.monotonic()
            with self._lock:
                for name, stamp in now.items():
                    if last.get(name) != stamp:
                        self.changes.append((t, name))
            last = now

    def since(self, t0: float, t1: float = float("inf")) -> list[tuple[float, str]]:
        with self._lock:
            return [c for c in self.changes if t0 <= c[0] < t1]

    def refreshes(self, t0: float, t1: float = float("inf")) -> list[float]:
        """Start times of refreshes (file changes grouped when within 0.5 s of each other)."""
        starts: list[float] = []
        for t, _name in self.since(t0, t1):
            if not starts or t - starts[-1] > 0.5:
                starts.append(t)
        return starts

    def wait_refresh(self, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.refreshes(after)
            if r and time.monotonic() - r[0] > 0.5:  # the whole refresh is written
                return r[0]
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def log_counts(text: str) -> dict[str, int]:
    lines = text.splitlines()
    return {
        "signals": sum(1 for line in lines if SIGNAL_LINE.search(line)),
        "dbus_requests": sum(1 for line in lines if DBUS_LINE.search(line)),
    }


def measure(lab: Lab, mode: str, workdir: Path) -> dict[str, Any]:
    node = lab.nodes["a"]
    log_path = node.log_path
    port = common.free_port()
    args = exporter_args(node, port, "node-a")
    if mode == "signals":
        args.append("--no-collector.dbus")
    offset0 = log_path.stat().st_size
    watch = DumpWatch(node.tmpdir)
    t_start = time.monotonic()
    try:
        with Process(args, workdir / f"exporter-{mode}.log") as exp:
            common.wait_http(port, exp)
            # background: three successive refreshes after the start-up one(s), no scrapes
            first = watch.wait_refresh(t_start, 10)
            if first is None:
                raise RuntimeError(f"{mode}: keepalived wrote no dump after the exporter started")
            at_start = log_counts(log_path.read_bytes()[offset0:].decode(errors="replace"))
            marks = [first]
            for _ in range(2):
                nxt = watch.wait_refresh(marks[-1] + 1.0, INTERVAL + 5)
                if nxt is None:
                    raise RuntimeError(f"{mode}: no background refresh within {INTERVAL + 5:g} s")
                marks.append(nxt)
            gaps = [b - a for a, b in itertools.pairwise(marks)]
            # scrape path: right after a background refresh, 100 scrapes
            time.sleep(0.6)
            offset = log_path.stat().st_size
            t0 = time.monotonic()
            failed = 0
            for _ in range(SCRAPES):
                status, _body, _s = common.get(port)
                failed += status != 200
            t1 = time.monotonic()
            time.sleep(0.5)  # anything the scrapes set off has had time to show
            during = log_counts(log_path.read_bytes()[offset:].decode(errors="replace"))
            files = len(watch.since(t0, t1 + 0.5))
            whole = log_counts(log_path.read_bytes()[offset0:].decode(errors="replace"))
            run_seconds = time.monotonic() - t_start
            startup = watch.refreshes(t_start, marks[0] + 0.5)
    finally:
        watch.close()
    return {
        "mode": mode,
        "scrapes": SCRAPES,
        "failed_scrapes": failed,
        "scrape_window_s": round(t1 - t0, 2),
        "signals_per_100_scrapes": during["signals"] * 100 / SCRAPES,
        "dbus_requests_per_100_scrapes": during["dbus_requests"] * 100 / SCRAPES,
        "files_written_per_100_scrapes": files * 100 / SCRAPES,
        "background_gap_s": [round(g, 2) for g in gaps],
        "background_per_minute": round(60.0 / common.median(gaps), 2),
        "startup_refreshes": len(startup),
        "startup_requests": at_start,
        "whole_run": {**whole, "seconds": round(run_seconds, 1), "refreshes": len(watch.refreshes(t_start))},
    }


def main() -> int:
    common.exit_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-cost-"))
    rows: list[dict[str, Any]] = []
    try:
        with Lab(profile="basic", dbus=True) as lab:
            for mode in ("dbus", "signals"):
                rows.append(measure(lab, mode, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"cost to keepalived (lab 'basic' pair, node a; exporter defaults, dump interval {INTERVAL:g} s)")
    print(
        f"{'mode':8} {'per 100 scrapes: signals':>25} {'D-Bus req':>10} {'files':>6} {'window s':>9}   "
        f"{'background: gap s':>18} {'per min':>8}   whole run: signals / D-Bus req / refreshes"
    )
    for r in rows:
        w = r["whole_run"]
        print(
            f"{r['mode']:8} {r['signals_per_100_scrapes']:>25g} {r['dbus_requests_per_100_scrapes']:>10g} "
            f"{r['files_written_per_100_scrapes']:>6g} {r['scrape_window_s']:>9}   "
            f"{', '.join(str(g) for g in r['background_gap_s']):>18} {r['background_per_minute']:>8}   "
            f"{w['signals']} / {w['dbus_requests']} / {w['refreshes']} in {w['seconds']} s "
            f"(start-up: {r['startup_requests']['signals']} / {r['startup_requests']['dbus_requests']})"
        )
    targets: list[Target] = []
    for r in rows:
        m = r["mode"]
        targets += [
            Target(f"{m}: signals per 100 scrapes", r["signals_per_100_scrapes"], "==", 0),
            Target(f"{m}: dump files written per 100 scrapes", r["files_written_per_100_scrapes"], "==", 0),
            Target(f"{m}: failed scrapes", r["failed_scrapes"], "==", 0),
            Target(f"{m}: shortest background gap s", min(r["background_gap_s"]), ">=", INTERVAL - 1.0),
        ]
        if m == "dbus":
            targets.append(Target("dbus: signals in the whole run", r["whole_run"]["signals"], "==", 0))
    common.result("cost", {"rows": rows}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
