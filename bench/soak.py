"""Soak (`make soak`, not in CI): ka-exporter watching a lab pair that fails over every 5 s, for N minutes.

Usage: python -m bench.soak [MINUTES] [--failover-every S] [--sample-every S] [--warmup S]

A real keepalived pair (lab profile "fast", VRRPv3 at advert_int 0.1, D-Bus on) with one ka-exporter per
node, as `ka-exporter demo` runs them. Every `--failover-every` seconds the master changes: SIGTERM to the
master (the backup takes over), then at the next step the old master is started again and preempts back.
So node a's keepalived stops and starts every 10 s (new pid, D-Bus name lost and taken again, dumps
re-read) while node b's goes BACKUP -> MASTER -> BACKUP. Each exporter is scraped every 0.5 s, as a fast
Prometheus would (every scrape must answer 200 and parse).

Every `--sample-every` seconds, just before a failover (the lab settled, no scrape in flight), each
exporter's RSS (VmRSS), open file descriptors (/proc/PID/fd) and thread count (/proc/PID/status Threads)
and CPU time are read. After `--warmup` seconds the growth is judged against the targets: RSS growth
<= 2 MiB (last three samples' median minus the first three's), fds and threads at rest constant (one value
after the warm-up; see proc_figures).

Prints a table, the growth, and one line `RESULT {json}`. Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.lab import Lab, LabError
from ka_exporter.lab.demo import exporter_args
from ka_exporter.testing import free_port, stop_process

RSS_TARGET_MIB = 2.0


def proc_figures(pid: int, reads: int = 3) -> dict[str, float]:
    """RSS (MiB), open fds, threads and CPU seconds (user+system) of one process.

    fds and threads are the least of `reads` looks 50 ms apart: what the process holds at rest. A dump
    refresh (every 15 s and after each transition) holds an inotify fd and a pidfd for a few ms, and a
    sample that lands on one would otherwise look like growth; the most seen is kept as *_peak.
    """
    fds: list[int] = []
    threads: list[int] = []
    for i in range(reads):
        if i:
            time.sleep(0.05)
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        threads.append(int(fields["Threads"].strip()))
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
    rss_kib = int(fields["VmRSS"].split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    return {
        "rss_mib": rss_kib / 1024,
        "fds": min(fds),
        "fds_peak": max(fds),
        "threads": min(threads),
        "threads_peak": max(threads),
        "cpu_s": cpu,
    }


class Scraper(threading.Thread):
    """Scrapes one exporter every `every` seconds; counts answers, errors and unparsable bodies."""

    def __init__(self, url: str, every: float, quiet: threading.Lock) -> None:
        super().__init__(daemon=True, name=f"scrape-{url}")
        self.url = url
        self.every = every
        self.quiet = quiet  # held while scraping, so samples are taken with no request in flight
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            with self.quiet:
                try:
                    with urllib.request.urlopen(self.url, timeout=5) as resp:
                        status = resp.status
                        text = resp.read().decode()
                    list(text_string_to_metric_families(text))
                    if status != 200:
                        raise ValueError(f"status {status}")
                    self.ok += 1
                except Exception as exc:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")


def growth(rows: list[dict[str, float]], key: str) -> float:
    """Median of the last three samples minus median of the first three (robust to one odd sample)."""
    head = [r[key] for r in rows[:3]]
    tail = [r[key] for r in rows[-3:]]
    return statistics.median(tail) - statistics.median(head)


def spread(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows]
    return max(values) - min(values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("minutes", nargs="?", type=float, default=10.0, help="how long to soak (default 10)")
    ap.add_argument("--failover-every", type=float, default=5.0, help="seconds between master changes")
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before growth is measured")
    ap.add_argument("--scrape-every", type=float, default=0.5, help="seconds between scrapes")
    args = ap.parse_args(argv)
    duration = args.minutes * 60.0
    workdir = Path(tempfile.mkdtemp(prefix="ka-soak-"))
    print(
        f"soak: {args.minutes:g} min, failover every {args.failover_every:g} s, sample every "
        f"{args.sample_every:g} s, warm-up {args.warmup:g} s; logs in {workdir}",
        flush=True,
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    scrapers: list[Scraper] = []
    quiet = threading.Lock()
    samples: dict[str, list[dict[str, float]]] = {}
    failovers = 0
    failover_errors: list[str] = []
    try:
        with Lab(profile="fast", nodes=2, dbus=True) as lab:
            for name, node in sorted(lab.nodes.items()):
                port = free_port()
                with open(workdir / f"exporter-{name}.log", "wb") as log:
                    procs[name] = subprocess.Popen(
                        exporter_args(node, port, f"node-{name}"), stdout=log, stderr=subprocess.STDOUT
                    )
                scrapers.append(Scraper(f"http://127.0.0.1:{port}/metrics", args.scrape_every, quiet))
            if not lab.wait_for(lambda: all(_answers(s.url) for s in scrapers), 20.0):
                raise SystemExit("soak: the exporters did not come up")
            for s in scrapers:
                s.start()
            names = sorted(procs)
            head = "  ".join(
                f"{'node-' + n + ' rss MiB':>16} {'fds':>4} {'thr':>4} {'cpu s':>7}" for n in names
            )
            print(f"{'t s':>6}  {head}", flush=True)
            started = time.monotonic()
            step = 0
            per_sample = max(1, round(args.sample_every / args.failover_every))
            while time.monotonic() - started < duration:
                step += 1
                # The step's deadline: everything below keeps to the schedule, however long an action took.
                due = started + step * args.failover_every
                if step % per_sample == 0:
                    # Sample at the end of a quiet period (the lab settled), with no scrape in flight.
                    time.sleep(max(0.0, due - 0.3 - time.monotonic()))
                    with quiet:
                        time.sleep(0.1)
                        now = time.monotonic() - started
                        row = []
                        for n in names:
                            fig = proc_figures(procs[n].pid)
                            fig["t"] = now
                            samples.setdefault(n, []).append(fig)
                            row.append(
                                f"{fig['rss_mib']:16.2f} {fig['fds']:4.0f} {fig['threads']:4.0f} {fig['cpu_s']:7.2f}"
                            )
                    print(f"{now:6.0f}  " + "  ".join(row), flush=True)
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if lab.stopped_master is None:
                        lab.failover()
                    else:
                        lab.start_master()
                    failovers += 1
                except LabError as exc:
                    failover_errors.append(f"{time.monotonic() - started:.0f}s {exc}".splitlines()[0])
                for n, p in procs.items():
                    if p.poll() is not None:
                        raise SystemExit(f"soak: the exporter for node {n} exited with {p.returncode}")
            for s in scrapers:
                s.stop.set()
            for s in scrapers:
                s.join(10)
    finally:
        for p in procs.values():
            if p.poll() is None:
                stop_process(p)
    return report(
        args,
        samples=samples,
        scrapers=scrapers,
        failovers=failovers,
        failover_errors=failover_errors,
        workdir=workdir,
    )


def report(
    args: argparse.Namespace,
    *,
    samples: dict[str, list[dict[str, float]]],
    scrapers: list[Scraper],
    failovers: int,
    failover_errors: list[str],
    workdir: Path,
) -> int:
    result: dict[str, Any] = {
        "minutes": args.minutes,
        "failover_every_s": args.failover_every,
        "failovers": failovers,
        "failover_errors": len(failover_errors),
        "scrapes": sum(s.ok for s in scrapers),
        "scrape_errors": sum(len(s.errors) for s in scrapers),
        "exporters": {},
    }
    ok = result["scrape_errors"] == 0 and failovers > 0
    print()
    for name, rows in sorted(samples.items()):
        steady = [r for r in rows if r["t"] >= args.warmup]
        if len(steady) < 2:
            print(f"node-{name}: too few samples after the warm-up to judge growth")
            ok = False
            continue
        fig = {
            "samples": len(steady),
            "rss_start_mib": round(steady[0]["rss_mib"], 2),
            "rss_end_mib": round(steady[-1]["rss_mib"], 2),
            "rss_growth_mib": round(growth(steady, "rss_mib"), 3),
            "rss_max_minus_min_mib": round(spread(steady, "rss_mib"), 3),
            "fds": sorted({int(r["fds"]) for r in steady}),
            "threads": sorted({int(r["threads"]) for r in steady}),
            "fds_peak": int(max(r["fds_peak"] for r in steady)),
            "threads_peak": int(max(r["threads_peak"] for r in steady)),
            "cpu_percent": round(
                100.0
                * (steady[-1]["cpu_s"] - steady[0]["cpu_s"])
                / max(1e-9, steady[-1]["t"] - steady[0]["t"]),
                2,
            ),
        }
        good = fig["rss_growth_mib"] <= RSS_TARGET_MIB and len(fig["fds"]) == 1 and len(fig["threads"]) == 1
        ok = ok and good
        result["exporters"][f"node-{name}"] = fig
        print(
            f"node-{name}: RSS {fig['rss_start_mib']} -> {fig['rss_end_mib']} MiB after warm-up, growth "
            f"{fig['rss_growth_mib']:+.3f} MiB (target <= {RSS_TARGET_MIB:g}); fds {fig['fds']}; "
            f"threads {fig['threads']}; CPU {fig['cpu_percent']}% of a core  [{'ok' if good else 'MISSED'}]"
        )
    print(f"failovers: {failovers} ({len(failover_errors)} refused by the lab)")
    for line in failover_errors[:5]:
        print(f"  {line}")
    print(f"scrapes: {result['scrapes']} ok, {result['scrape_errors']} errors")
    for s in scrapers:
        for line in s.errors[:5]:
            print(f"  {s.url}: {line}")
    result["ok"] = ok
    print(f"logs: {workdir}")
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0 if ok else 1


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
