"""Footprint: RSS and CPU of ka-exporter serving the lab pair, and the cost of `--once`.

Targets: serving the lab pair ("basic" profile: VRRPv2, advert_int 1, PASS auth, D-Bus on) for 60 s,
RSS <= 64 MiB and CPU <= 0.5% of one core; `--once` with the wire source off <= 0.5 s wall time, and
scapy never imported (with the wire source off or on).

1. Serving: a real ka-exporter process watches node a of a lab (every source on: config, process,
   vips, wire, D-Bus, dumps; defaults otherwise) and is scraped every 15 s, as Prometheus would. Next
   to it, in the same window and scraped at the same moments, the floor: a static prometheus_client
   registry holding the same series (start_http_server, separate process). CPU is user + system of
   all threads from /proc over the window (after a 5 s warm-up); RSS is VmRSS at the end and VmHWM.
   With py-spy available (PATH, $PY_SPY or /tmp/bench-tools/bin) the CPU is broken down by thread.
2. `--once` against the same node: wall time and CPU (wait4) and peak RSS (VmHWM, recorded at exit by
   a small wrapper, which also lists the scapy modules loaded), wire off (9 runs) and on (2 runs,
   the default --wire.listen-seconds), next to the floor: a Python process that imports
   prometheus_client and renders its default registry (and a bare interpreter). Runs are interleaved
   (one of each in turn): single runs vary by +-30% on a busy machine. One more run of each under
   `-X importtime` names the imports that cost most. Bytecode: this machine sets
   PYTHONDONTWRITEBYTECODE=1, so ka_exporter would be compiled from source at every start, which an
   installed exporter never is; the runs use a bytecode cache of their own (PYTHONPYCACHEPREFIX,
   filled by an untimed first run), and "no bytecode cache" shows the difference.

Run: /tmp/kavenv/bin/python bench/bench_footprint.py [seconds]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import Process, Target

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args

SCRAPE_EVERY = 15.0
RSS_MIB = 64.0
CPU_PERCENT = 0.5
ONCE_SECONDS = 0.5
ONCE_RUNS = 9

# Runs `python -m ka_exporter ARGS` (or `-c CODE`) and, at exit, records the peak RSS of this process
# image (VmHWM: wait4's ru_maxrss would include the bench's own memory, inherited until exec), the
# scapy modules loaded and the number of modules.
WRAPPER = r"""
import atexit, json, runpy, sys
out, mode, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
def record():
    hwm = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    mods = sorted(m for m in sys.modules if m == "scapy" or m.startswith("scapy."))
    with open(out, "w") as fh:
        json.dump({"scapy": mods, "modules": len(sys.modules), "hwm_kib": hwm}, fh)
atexit.register(record)
if mode == "code":
    exec(compile(rest[0], "<floor>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = ["ka-exporter", *rest]
    runpy.run_module("ka_exporter", run_name="__main__", alter_sys=True)
"""


def serving(lab: Lab, workdir: Path, seconds: float) -> dict[str, Any]:
    node = lab.nodes["a"]
    port = common.free_port()
    env = common.bytecode_env(workdir / "pycache")
    with Process(exporter_args(node, port, "node-a"), workdir / "exporter.log", env=env) as exp:
        common.wait_http(port, exp)
        # keepalived's view, the VIPs and the adverts are in before the floor copies the series
        deadline = time.monotonic() + 15
        text = ""
        while time.monotonic() < deadline:
            text = common.get(port)[1].decode()
            if "keepalived_vrrp_state{" in text and "keepalived_wire_advert_priority{" in text:
                break
            time.sleep(0.2)
        floor, fport = common.start_floor("client", text, workdir)
        try:
            time.sleep(5.0)  # warm-up
            pids = {"exporter": exp.pid, "floor": floor.pid}
            c0 = {k: common.cpu_seconds(p) for k, p in pids.items()}
            t0c = common.thread_cpu(exp.pid)
            t0 = time.monotonic()
            scrapes = 0
            while True:
                for p in (port, fport):
                    status, _body, _s = common.get(p)
                    assert status == 200
                scrapes += 1
                left = t0 + seconds - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(SCRAPE_EVERY, left))
            wall = time.monotonic() - t0
            c1 = {k: common.cpu_seconds(p) for k, p in pids.items()}
            t1c = common.thread_cpu(exp.pid)
            names = common.thread_names(exp.pid)
            mem = {k: common.rss_kib(p) for k, p in pids.items()}
            out: dict[str, Any] = {
                "seconds": round(wall, 1),
                "scrapes": scrapes,
                "threads": common.threads(exp.pid),
                "samples": len(common.series(text)),
            }
            for k in pids:
                out[k] = {
                    "cpu_percent": round((c1[k] - c0[k]) / wall * 100, 3),
                    "rss_mib": round(mem[k][0] / 1024, 1),
                    "hwm_mib": round(mem[k][1] / 1024, 1),
                }
            out["exporter_threads_cpu_percent"] = {
                names.get(tid, str(tid)): round((t1c[tid] - t0c.get(tid, 0.0)) / wall * 100, 3)
                for tid in sorted(t1c)
            }
        finally:
            floor.stop()
    return out


def once_args(lab: Lab, *extra: str) -> list[str]:
    node = lab.nodes["a"]
    args = exporter_args(node, 0, "node-a")[3:]  # no interpreter, no -m, no module
    i = args.index("--web.listen-address")
    del args[i : i + 2]
    return [*args, "--once", *extra]


def once(lab: Lab, workdir: Path) -> dict[str, Any]:
    floor_code = "import sys, prometheus_client; sys.stdout.buffer.write(prometheus_client.generate_latest())"
    plan: dict[str, tuple[str, list[str], int]] = {
        "wire_off": ("module", once_args(lab, "--no-collector.wire"), ONCE_RUNS),
        "wire_off_no_pyc": ("module", once_args(lab, "--no-collector.wire"), 3),
        "wire_on": ("module", once_args(lab), 2),
        "floor": ("code", [floor_code], ONCE_RUNS),
        "python": ("code", ["pass"], ONCE_RUNS),
    }
    runs: dict[str, list[tuple[common.Run, dict[str, Any]]]] = {name: [] for name in plan}
    out: dict[str, Any] = {name: {} for name in plan}
    cached = common.bytecode_env(workdir / "pycache")
    inherited = dict(os.environ)  # this machine's PYTHONDONTWRITEBYTECODE=1: ka_exporter compiled each run

    def one(name: str, k: int, importtime: bool = False) -> None:
        mode, args, _count = plan[name]
        marker = workdir / f"once-{name}-{k}.json"
        x = ["-X", "importtime"] if importtime else []
        env = inherited if name.endswith("_no_pyc") else cached
        r = common.run_measured([sys.executable, *x, "-c", WRAPPER, str(marker), mode, *args], env=env)
        if r.code not in (0, 1):  # 1: a source failed (e.g. nothing heard on the wire): still output
            raise RuntimeError(f"{name}: exit {r.code}\n{r.output[-2000:]}")
        if importtime:
            out[name]["top_imports_ms"] = top_imports(r.output)
        elif k >= 0:
            runs[name].append((r, json.loads(marker.read_text()) if marker.exists() else {}))

    for name in ("wire_off", "floor", "python"):  # fill the bytecode cache: not timed
        one(name, -2)
    # interleaved, so that the machine's noise falls on the exporter and its floor alike
    for k in range(max(count for _m, _a, count in plan.values())):
        for name, (_mode, _args, count) in plan.items():
            if k < count:
                one(name, k)
    for name in plan:  # one more of each under -X importtime: not timed, imports listed
        one(name, -1, importtime=True)
    for name, rs in runs.items():
        out[name].update(
            {
                "runs": len(rs),
                "wall_s_median": round(common.median([r.wall for r, _ in rs]), 3),
                "wall_s_min": round(min(r.wall for r, _ in rs), 3),
                "wall_s_max": round(max(r.wall for r, _ in rs), 3),
                "cpu_s_median": round(common.median([r.cpu for r, _ in rs]), 3),
                "rss_mib": round(max(s.get("hwm_kib", 0) for _, s in rs) / 1024, 1),
                "exit_codes": sorted({r.code for r, _ in rs}),
                "scapy_modules": sorted({m for _, s in rs for m in s.get("scapy", ["(no record)"])}),
                "modules_loaded": max(s.get("modules", 0) for _, s in rs),
            }
        )
    return out


def top_imports(stderr: str, count: int = 6) -> dict[str, float]:
    """The top-level packages whose import took longest (cumulative, from -X importtime), in ms."""
    cost: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # a top-level import, not a nested one
            pkg = m.group(3).split(".")[0]
            cost[pkg] = cost.get(pkg, 0.0) + int(m.group(1)) / 1000.0
    return dict(sorted(cost.items(), key=lambda kv: -kv[1])[:count])


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    common.exit_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-footprint-"))
    try:
        with Lab(profile="basic", dbus=True) as lab:
            serve = serving(lab, workdir, seconds)
            one = once(lab, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    e, f = serve["exporter"], serve["floor"]
    print(
        f"serving the lab pair (basic profile, D-Bus on) for {serve['seconds']:.0f} s, "
        f"{serve['scrapes']} scrapes ({SCRAPE_EVERY:g} s apart), {serve['samples']} samples"
    )
    print(f"{'':34} {'ka-exporter':>12} {'floor':>9} {'ratio':>7}  target")
    print(
        f"{'CPU, % of one core':34} {e['cpu_percent']:>12.3f} {f['cpu_percent']:>9.3f} "
        f"{e['cpu_percent'] / max(f['cpu_percent'], 1e-9):>7.1f}  <= {CPU_PERCENT}"
    )
    print(
        f"{'RSS (VmRSS at the end), MiB':34} {e['rss_mib']:>12.1f} {f['rss_mib']:>9.1f} "
        f"{e['rss_mib'] / f['rss_mib']:>7.2f}  <= {RSS_MIB:g}"
    )
    print(f"{'peak RSS (VmHWM), MiB':34} {e['hwm_mib']:>12.1f} {f['hwm_mib']:>9.1f}")
    busy = {k: v for k, v in serve["exporter_threads_cpu_percent"].items() if v > 0}
    print(f"  exporter threads: {serve['threads']}; CPU % by thread: {busy or 'all idle'}")
    print()
    print("--once against node a (D-Bus on)")
    print(f"{'':34} {'wall s':>8} {'min s':>7} {'max s':>7} {'cpu s':>7} {'RSS MiB':>8}  target")
    for name, label in (
        ("wire_off", "--once --no-collector.wire"),
        ("wire_off_no_pyc", "  the same, no bytecode cache"),
        ("wire_on", "--once, wire on (default window)"),
        ("floor", "floor: import prometheus_client"),
        ("python", "bare python -c pass"),
    ):
        r = one[name]
        target = f"<= {ONCE_SECONDS} s" if name == "wire_off" else ""
        print(
            f"{label:34} {r['wall_s_median']:>8.3f} {r['wall_s_min']:>7.3f} {r['wall_s_max']:>7.3f} "
            f"{r['cpu_s_median']:>7.3f} "
            f"{r['rss_mib']:>8.1f}  {target}"
        )
    for name in ("wire_off", "wire_on"):
        r = one[name]
        print(
            f"  {name}: scapy modules loaded: {len(r['scapy_modules'])}; modules: {r['modules_loaded']}; "
            f"slowest imports (ms): {r['top_imports_ms']}"
        )
    ratio = one["wire_off"]["wall_s_median"] / one["floor"]["wall_s_median"]
    print(f"  --once (wire off) / floor wall time: {ratio:.2f}x; load {common.load():.2f}")
    targets = [
        Target("serving: CPU % of one core", e["cpu_percent"], "<=", CPU_PERCENT),
        Target("serving: RSS MiB", e["rss_mib"], "<=", RSS_MIB),
        Target("serving: peak RSS MiB", e["hwm_mib"], "<=", RSS_MIB),
        Target("--once wire off: wall s (median)", one["wire_off"]["wall_s_median"], "<=", ONCE_SECONDS),
        Target("--once wire off: scapy modules", len(one["wire_off"]["scapy_modules"]), "==", 0),
        Target("--once wire on: scapy modules", len(one["wire_on"]["scapy_modules"]), "==", 0),
    ]
    common.result("footprint", {"serving": serve, "once": one}, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
