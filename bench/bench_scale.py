"""Per-event cost and freshness with many instances: a real keepalived pair with 1 and 100 instances.

Targets (issue #12): with 100 instances at advert_int 1, the exporter's idle CPU under 0.5% of a core
(5 ms/s); the cost per advert at 1 and 100 instances within 2x of each other; after
`ip link set eth0 down` on the master, every one of the 100 instances shows FAULT in a scrape within
50 ms of keepalived's own log line for it, 5 trials of 5.

Setup (root): a lab pair (ka_exporter.lab, D-Bus on), whose keepalived.conf is rewritten with N VRRPv3
instances (advert_int 1, node a the preferred master of all, one VIP each) and keepalived restarted;
a real ka-exporter watches node a as `ka-exporter demo` does (every source on).

- Idle: no scrapes for IDLE_SECONDS; CPU of the exporter's threads (/proc schedstat, in ns: the
  clock ticks of /proc/PID/stat are 10 ms), in all and by name (py-spy dump when there is one, else the
  kernel's names, which the daemon sets). Adverts: node a's own, counted by the exporter's wire source
  (keepalived_wire_packets_total before and after). Cost per advert = CPU / adverts, for the whole
  process and for the threads that do per-advert work (src-wire, watchdog).
- FAULT: a thread tails node a's keepalived log (every 1 ms) and records when each instance's
  "Entering FAULT STATE" line appears; the bench scrapes /metrics in a loop (SCRAPE_GAP between
  scrapes: a flood of scrapes would itself hold the GIL the D-Bus signals wait for) and records when
  each instance first shows keepalived_vrrp_state 3 (the figure includes up to one gap and a scrape). The figure is the worst instance's difference. Then the
  link comes back up and the bench waits for every instance to be MASTER again. Each trial also prints
  its slowest scrape, and what the exporter says that body took to render
  (ka_exporter_scrape_duration_seconds): the rest of a scrape is HTTP and waiting for the GIL.

The machine is shared: the load average is printed with the figures.

Run: .venv/bin/python bench/bench_scale.py [--instances 100] [--trials 5] [--idle 20] [--scrape-at-ms 50]
    [--baseline DIR]

With --baseline DIR (a checkout of another branch: `git archive main | tar -x -C DIR`), each lab is
watched first by DIR's exporter, then by this checkout's, one after the other, and both are printed:
the same keepalived pair and the same run, so the figures compare.

Besides the cost per advert (CPU / adverts) at 1 and N instances and their ratio, it prints the line
through those two points, CPU (ms/s) against adverts/s: the marginal cost of an advert and the fixed
part (what the threads spend per second whatever the adverts), for src-wire + watchdog and the process.

With --scrape-at-ms T a FAULT trial scrapes nothing until T ms after keepalived's last FAULT line: is it
visible to a scrape that starts then (no render of the states in between competing for the GIL)?
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import common
from common import Process, Target
from jeepney import MatchRule

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args
from ka_exporter.lab.profiles import render_config
from ka_exporter.linux.dbusclient import BusClient
from ka_exporter.sources.dbus import IFACE_INSTANCE, SERVICE
from ka_exporter.testing import wait_until

IDLE_PERCENT = 0.5
FRESH_MS = 50.0
SCRAPE_AT_MS: float | None = (
    None  # --scrape-at-ms: the trials' first scrape that long after the last FAULT line
)
SCRAPE_GAP = 0.005  # between the FAULT trial's scrapes: a scrape every ~5-10 ms, not a flood
STATE = re.compile(rb'^keepalived_vrrp_state\{iname="([^"]+)"[^}]*\} (\S+)$', re.M)
PACKETS = re.compile(rb"^keepalived_wire_packets_total (\S+)$", re.M)
RENDER = re.compile(rb"^ka_exporter_scrape_duration_seconds (\S+)$", re.M)
PROBED = re.compile(rb"^keepalived_l2_probe_answers\{", re.M)
FAULT_LINE = re.compile(r"\((\S+)\) Entering FAULT STATE")


def config(lab: Lab, node: str, n: int) -> str:
    """keepalived.conf for `node` with `n` VRRPv3 instances at advert_int 1 (node a preferred)."""
    base = render_config(lab.profile, lab.addressing, node, nodes=2, node_dir=lab.nodes[node].dir, dbus=True)
    head = base[: base.index("vrrp_instance")]
    first = lab.addressing.vrid
    blocks = []
    for k in range(n):
        # One VIP each: the lab's /24 holds 150 of them (from .100); the rest (255 instances) from
        # 198.18.0.0/15 (RFC 2544 benchmarking), on the lab's own namespaces' link only.
        vip = lab.addressing.v4(100 + k) if k < 150 else f"198.18.{lab.addressing.y}.{k - 149}"
        state, prio = ("MASTER", 150) if node == "a" else ("BACKUP", 100)
        blocks.append(
            f"vrrp_instance VI_{k + 1} {{\n    state {state}\n    interface eth0\n"
            f"    virtual_router_id {(first - 1 + k) % 255 + 1}\n    priority {prio}\n    advert_int 1\n"
            f"    virtual_ipaddress {{\n        {vip}/24\n    }}\n}}\n"
        )
    return head + "\n".join(blocks)


def scrape(port: int) -> bytes:
    return common.get(port, timeout=10.0)[1]


def states(body: bytes) -> dict[str, float]:
    return {m.group(1).decode(): float(m.group(2)) for m in STATE.finditer(body)}


def wait_states(port: int, n: int, value: float, timeout: float) -> bool:
    def there() -> bool:
        got = states(scrape(port))
        return len(got) == n and all(v == value for v in got.values())

    return wait_until(there, timeout, 0.1)


def packets(body: bytes) -> float:
    m = PACKETS.search(body)
    return float(m.group(1)) if m else float("nan")


def comm_names(pid: int) -> dict[int, str]:
    """Thread names as the kernel has them (the daemon names its threads: linux/threadname.py)."""
    out: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended
            out[int(task.name)] = (task / "comm").read_text().strip()
    return out


def idle(exporter: Process, port: int, seconds: float) -> dict[str, Any]:
    names = common.thread_names(exporter.pid) or comm_names(exporter.pid)
    p0 = packets(scrape(port))
    th0, t0 = common.thread_runtime(exporter.pid), time.monotonic()
    time.sleep(seconds)
    th1, t1 = common.thread_runtime(exporter.pid), time.monotonic()
    cpu0, cpu1 = sum(th0.values()), sum(th1.values())  # threads that ended meanwhile are left out
    adverts = packets(scrape(port)) - p0
    by_thread: dict[str, float] = {}
    for tid, c in th1.items():
        name = names.get(tid, str(tid))
        by_thread[name] = by_thread.get(name, 0.0) + (c - th0.get(tid, 0.0)) * 1000.0 / (t1 - t0)
    ms_per_s = (cpu1 - cpu0) * 1000.0 / (t1 - t0)
    per_event = sum(by_thread.get(k, 0.0) for k in ("src-wire", "watchdog")) if names else float("nan")
    rate = adverts / (t1 - t0)
    if rate:
        # How the bench defines the cost per advert, with the figures it is computed from: the CPU of
        # the threads an advert runs on (src-wire: receive, decode, peer table, verdict news to the
        # store; watchdog: re-judging on that news), per second, over the adverts per second node a's
        # exporter counted (keepalived_wire_packets_total). It includes what those threads do per
        # second whatever the adverts (ticks, failover accounts, kernel counters): with ~1 advert/s at
        # 1 instance that fixed part is most of it. "process" divides every thread's CPU instead.
        print(
            f"  idle: cost per advert = (src-wire + watchdog CPU) / adverts = "
            f"{per_event:.3f} ms/s / {rate:.1f} adverts/s = {per_event / rate:.4f} ms; process: "
            f"{ms_per_s:.2f} / {rate:.1f} = {ms_per_s / rate:.4f} ms; over {t1 - t0:.1f} s, load {common.load():.2f}"
        )
    return {
        "cpu_ms_per_s": round(ms_per_s, 2),
        "cpu_percent": round(ms_per_s / 10.0, 3),
        "adverts_per_s": round(rate, 1),
        "ms_per_advert": round(ms_per_s / rate, 4) if rate else None,
        "event_threads_ms_per_advert": round(per_event / rate, 4) if rate and names else None,
        "event_threads_ms_per_s": round(per_event, 3) if names else None,
        "threads_ms_per_s": {k: round(v, 2) for k, v in sorted(by_thread.items())},
        "load": round(common.load(), 2),
    }


class LogTail(threading.Thread):
    """Follows a log file from its current end; `seen[instance]` = when its FAULT line appeared."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self._fh = open(path, errors="replace")  # noqa: SIM115 - closed in run()
        self._fh.seek(0, 2)

    def run(self) -> None:
        buf = ""
        try:
            while not self.stop.is_set():
                chunk = self._fh.read()
                now = time.time()  # wall clock: compared with the exporter's render lines
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    for line in lines:
                        m = FAULT_LINE.search(line)
                        if m:
                            self.seen.setdefault(m.group(1), now)
                else:
                    time.sleep(0.001)
        finally:
            self._fh.close()


RENDER_LINE = re.compile(
    r"body rendered: duration=(\S+) snapshot_ms=(\S+) units=(\S+) snap_time=(\S+) views_published=(\S+)"
)
Render = tuple[float, dict[str, float], float, float | None]
Scrape = tuple[float, float, str | None, int]


def render_lines(logs: str) -> dict[str, Render]:
    """The exporter's debug line per rendered body (Renderer._log_render), by the body's duration
    text: (snapshot ms, ms per unit, snapshot time, when the D-Bus views it holds were published)."""
    out: dict[str, Render] = {}
    for m in RENDER_LINE.finditer(logs):
        units = {k: float(v) for k, _, v in (u.rpartition(":") for u in m.group(3).split(","))}
        # the D-Bus source's publication (the one that brings FAULT), else the latest
        times = {k: float(v) for k, _, v in (p.rpartition(":") for p in m.group(5).split(",") if ":" in p)}
        published = times.get("dbus", max(times.values(), default=None))
        out[m.group(1)] = (float(m.group(2)), units, float(m.group(4)), published)
    return out


def where_time_went(
    scrapes: list[Scrape], seen: dict[str, float], renders: dict[str, Render], n: int
) -> dict[str, Any]:
    """The first scrape showing FAULT for every instance, taken apart (ms after keepalived's last
    FAULT line, wall clock): keepalived's lines (first to last), the publication it was rendered
    from, when the scrape started and ended, how long its render waited (HTTP loop, GIL) and took
    (its slowest units), and where the scrape before it was."""
    out: dict[str, Any] = {"fault_counts": [c for _s, _e, _d, c in scrapes if c][:8]}
    starts = [s for s, _e, _d, _c in scrapes]
    gaps = [(b - a) * 1000.0 for a, b in itertools.pairwise(starts)]
    out["scrape_interval_ms"] = round(common.median(gaps), 1) if gaps else None
    if len(seen) < n or not seen:
        return out
    first, last = min(seen.values()), max(seen.values())
    out["log_spread_ms"] = round((last - first) * 1000.0, 1)
    full = next((k for k, (_s, _e, _d, c) in enumerate(scrapes) if c == n), None)
    if full is None:
        return out

    def ms(t: float) -> float:
        return round((t - last) * 1000.0, 1)

    start, end, duration, _count = scrapes[full]
    out["scrape_ms"] = (ms(start), ms(end))
    if full > 0:
        out["scrape_before_ms"] = (ms(scrapes[full - 1][0]), ms(scrapes[full - 1][1]))
        prior = renders.get(scrapes[full - 1][2] or "")
        if prior is not None:
            out["render_before_ms"] = (round(float(scrapes[full - 1][2] or 0) * 1000.0, 1), prior[1])
    got = renders.get(duration or "")
    if got is None:  # a body made for an earlier request, or no debug line
        return out
    snapshot_ms, units, snap_time, published = got
    render_ms = float(duration or 0) * 1000.0
    out["published_ms"] = None if published is None else ms(published)
    out["render_waited_ms"] = round((snap_time - start) * 1000.0 - snapshot_ms, 1)
    out["render_ms"] = round(render_ms, 1)
    out["snapshot_ms"] = snapshot_ms
    out["units_ms"] = dict(sorted(units.items(), key=lambda kv: -kv[1])[:5])
    out["after_render_ms"] = round((end - snap_time) * 1000.0 + snapshot_ms - render_ms, 1)
    return out


class BusWatch(threading.Thread):
    """A D-Bus client of node a's bus beside the exporter (own process, own GIL): `seen[path]` = when
    keepalived's VrrpStatusChange to FAULT for that instance reached a client, i.e. when the news
    was on the bus for anyone."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self._client = BusClient(address, timeout=2.0)
        self._client.add_match(MatchRule(type="signal", sender=SERVICE, interface=IFACE_INSTANCE))

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                sig = self._client.next_signal(0.05)
                now = time.time()
                if sig is not None and sig.member == "VrrpStatusChange" and sig.body[:1] == (3,):
                    self.seen.setdefault(sig.path, now)
        finally:
            self._client.close()


def fault_trial(lab: Lab, port: int, n: int, exporter: Process) -> dict[str, Any]:
    node = lab.nodes["a"]
    tail = LogTail(node.log_path)
    tail.start()
    bus = BusWatch(str(node.dbus_address))
    bus.start()
    shown: dict[str, float] = {}
    took: list[float] = []  # each scrape's time during the trial (ms)
    rendered: list[float] = []  # ... and the time its body took to render in the exporter (ms)
    # Each scrape: (start, end) on the wall clock, as the log tail and the exporter's render lines;
    # the body's ka_exporter_scrape_duration_seconds as written (its render line's key); how many
    # instances it shows in FAULT.
    scrapes: list[Scrape] = []
    names = comm_names(exporter.pid)
    cpu0 = common.thread_runtime(exporter.pid)
    cpu1: dict[int, float] = {}
    window = 0.0
    try:
        subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "down"], check=True)
        down = time.time()
        deadline = time.monotonic() + 20.0
        first_at = None
        if SCRAPE_AT_MS is not None:
            # A scraper that starts SCRAPE_AT_MS after keepalived's last FAULT line, with no scrape
            # before it (no render of the states in between competing with the D-Bus source).
            wait_until(lambda: len(tail.seen) >= n, 10.0, 0.001)
            first_at = max(tail.seen.values(), default=time.time()) + SCRAPE_AT_MS / 1000.0
            time.sleep(max(0.0, first_at - time.time()))
        while time.monotonic() < deadline and len(shown) < n:
            started = time.time()
            body = scrape(port)
            now = time.time()
            took.append((now - started) * 1000.0)
            m = RENDER.search(body)
            if m:
                rendered.append(float(m.group(1)) * 1000.0)
            faults = 0
            for name, value in states(body).items():
                if value == 3.0:
                    faults += 1
                    shown.setdefault(name, now)
            scrapes.append((started, now, m.group(1).decode() if m else None, faults))
            if faults == n and not cpu1:
                cpu1, window = common.thread_runtime(exporter.pid), now - down
            time.sleep(SCRAPE_GAP)
        time.sleep(0.3)  # the log lines of the last instances
    finally:
        tail.stop.set()
        bus.stop.set()
        tail.join(5)
        bus.join(5)
        subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "up"], check=True)
    lags = [(shown[k] - tail.seen[k]) * 1000.0 for k in shown if k in tail.seen]
    signalled = sorted(bus.seen.values())
    # The exporter's threads' CPU from the link going down to the first all-FAULT scrape: who held
    # the GIL while the D-Bus source and the render waited for it.
    busy: dict[str, float] = {}
    for tid, c in cpu1.items():
        name = names.get(tid, str(tid))
        busy[name] = busy.get(name, 0.0) + (c - cpu0.get(tid, 0.0)) * 1000.0
    last_line = max(tail.seen.values(), default=None)
    back = wait_states(port, n, 2.0, 60.0)
    return {
        "faults_logged": len(tail.seen),
        "faults_shown": len(shown),
        "worst_lag_ms": round(max(lags), 1) if len(lags) == n else None,
        "median_lag_ms": round(common.median(lags), 1) if lags else None,
        "master_again": back,
        "scrapes": len(took),
        "slowest_scrape_ms": round(max(took), 1) if took else None,
        "slowest_render_ms": round(max(rendered), 1) if rendered else None,
        "first_full": where_time_went(scrapes, tail.seen, render_lines(exporter.logs()), n),
        "threads_cpu_ms": {
            "window_ms": round(window * 1000.0, 1) if cpu1 else None,
            **{k: round(v, 1) for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.5},
        },
        # keepalived's FAULT signals on the bus: how many, the first and last (ms after its last line)
        "first_scrape": None
        if SCRAPE_AT_MS is None or not scrapes
        else {
            "started_ms": round((scrapes[0][0] - (first_at or 0.0)) * 1000.0 + SCRAPE_AT_MS, 1),
            "faults": scrapes[0][3],
            "took_ms": round((scrapes[0][1] - scrapes[0][0]) * 1000.0, 1),
        },
        "bus_signals": (
            len(signalled),
            *(round((t - last_line) * 1000.0, 1) for t in (signalled[:1] + signalled[-1:]) if last_line),
        ),
        "load": round(common.load(), 2),
    }


def run(
    n: int, trials: int, idle_seconds: float, workdir: Path, trees: list[Path | None]
) -> list[dict[str, Any]]:
    """One lab pair with `n` instances; on it, one exporter after the other, from each of `trees`
    (None: this checkout; a directory: a checkout of another branch, run from there, e.g. main's, so
    both are measured on the same keepalived pair, same phases of its adverts, same run)."""
    rows: list[dict[str, Any]] = []
    with Lab(profile="fast", dbus=True) as lab:
        for name in ("a", "b"):
            lab.stop(name)
        for name in ("a", "b"):
            lab.nodes[name].config_path.write_text(config(lab, name, n))
        for name in ("a", "b"):
            lab.start(name)
        for k, tree in enumerate(trees):
            port = common.free_port()
            env = common.bytecode_env(workdir / f"pycache-{k}")
            # Debug: the renderer's line per body (where a FAULT scrape's time went, fault_trial).
            argv = [*exporter_args(lab.nodes["a"], port, "node-a"), "--log.level", "debug"]
            where = {} if tree is None else {"cwd": str(tree)}  # python -m: the cwd's ka_exporter first
            with Process(argv, workdir / f"exp-{n}-{k}.log", env=env, **where) as exp:
                common.wait_http(port, exp)
                if not wait_states(port, n, 2.0, 90.0):
                    raise RuntimeError(f"node a did not show {n} MASTER instances:\n{exp.logs()[-2000:]}")
                # The L2 witness's first round: every VIP needs two agreeing probes, at most
                # l2.max-probe-rate (10/s) in all, so ~20 s for 100 VIPs, each first result news for the
                # watchdog. That start-up is not the idle state: measure once every VIP has a result.
                started = time.monotonic()
                if not wait_until(lambda p=port: len(PROBED.findall(scrape(p))) >= n, 120.0, 0.5):
                    raise RuntimeError(f"the L2 witness did not probe {n} VIPs:\n{exp.logs()[-2000:]}")
                settle = round(time.monotonic() - started, 1)
                time.sleep(3.0)  # dumps and first passes settle
                row: dict[str, Any] = {
                    "tree": "this checkout" if tree is None else str(tree),
                    "instances": n,
                    "settle_s": settle,
                    "idle": idle(exp, port, idle_seconds),
                }
                row["rss_mib"] = round(common.rss_kib(exp.pid)[0] / 1024, 1)
                row["trials"] = [fault_trial(lab, port, n, exp) for _ in range(trials)]
            rows.append(row)
    return rows


def fit(one: dict[str, Any], many: dict[str, Any], key: str) -> tuple[float, float] | None:
    """(marginal ms per advert, fixed ms/s): the line through the two idle points, CPU (ms/s) against
    adverts/s (1 and N instances). The marginal cost is what one more advert a second costs; the
    fixed part what the same threads spend per second whatever the adverts (ticks, accounts, checks),
    which at ~1 advert/s is most of the cost per advert the ratio compares."""
    r1, rn = one["idle"]["adverts_per_s"], many["idle"]["adverts_per_s"]
    c1, cn = one["idle"][key], many["idle"][key]
    if c1 is None or cn is None or rn == r1:
        return None
    marginal = (cn - c1) / (rn - r1)
    return marginal, c1 - marginal * r1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement")
    ap.add_argument(
        "--scrape-at-ms", type=float, default=None, help="FAULT trials: first scrape that long after"
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="also run the exporter from this checkout (e.g. `git archive main`), first, on the same labs",
    )
    args = ap.parse_args()
    global SCRAPE_AT_MS  # the FAULT trials' mode, set once here
    SCRAPE_AT_MS = args.scrape_at_ms
    common.exit_on_sigterm()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="ka-bench-scale-"))
    trees: list[Path | None] = [*args.baseline, None]
    ones = run(1, 0, args.idle, workdir, trees)
    manys = run(args.instances, args.trials, args.idle, workdir, trees)
    print("real keepalived pair, VRRPv3 advert_int 1, exporter on the master (node a), D-Bus on")
    figures: dict[str, Any] = {}
    targets: list[Target] = []
    for one, many in zip(ones, manys, strict=True):
        label = one["tree"]
        print(f"{label}:")
        for r in (one, many):
            i = r["idle"]
            print(
                f"  {r['instances']:>4} instances: idle {i['cpu_ms_per_s']} ms/s ({i['cpu_percent']}% of a core), "
                f"{i['adverts_per_s']} adverts/s, {i['ms_per_advert']} ms per advert (process), "
                f"{i['event_threads_ms_per_advert']} ms per advert (src-wire + watchdog); RSS {r['rss_mib']} MiB; "
                f"load {i['load']}; after the L2 witness's first round ({r['settle_s']} s)"
            )
            print(f"        threads ms/s: {i['threads_ms_per_s']}")
        for k, t in enumerate(many["trials"], 1):
            print(
                f"  FAULT trial {k}: logged {t['faults_logged']}, shown {t['faults_shown']}, worst lag "
                f"{t['worst_lag_ms']} ms, median {t['median_lag_ms']} ms, MASTER again {t['master_again']}; "
                f"{t['scrapes']} scrapes, slowest {t['slowest_scrape_ms']} ms (render {t['slowest_render_ms']} ms); "
                f"load {t['load']}"
            )
            print(
                f"        first all-FAULT scrape (ms after keepalived's last FAULT line): {t['first_full']}"
            )
            print(
                f"        keepalived's FAULT signals on the bus (n, first, last ms after that line): {t['bus_signals']}"
            )
            print(
                f"        exporter threads' CPU ms, link down to the all-FAULT scrape: {t['threads_cpu_ms']}"
            )
            if t["first_scrape"] is not None:
                print(
                    f"        first scrape, {SCRAPE_AT_MS:g} ms after keepalived's last FAULT line (none before): "
                    f"{t['first_scrape']}"
                )
        a, b = one["idle"]["event_threads_ms_per_advert"], many["idle"]["event_threads_ms_per_advert"]
        ratio = max(a, b) / min(a, b) if a and b else None
        shown = "n/a" if ratio is None else f"{ratio:.2f}"
        print(
            f"  cost per advert (src-wire + watchdog), 1 vs {many['instances']} instances: {a} vs {b} ms, ratio {shown}"
        )
        lines = {}
        for key, what in (("event_threads_ms_per_s", "src-wire + watchdog"), ("cpu_ms_per_s", "process")):
            got = fit(one, many, key)
            lines[key] = got
            if got is not None:
                print(
                    f"  fit of {what} CPU vs adverts/s (1 and {many['instances']} instances): marginal "
                    f"{got[0]:.4f} ms per advert, fixed {got[1]:.3f} ms/s"
                )
        n = many["instances"]
        fresh = [t for t in many["trials"] if t["worst_lag_ms"] is not None and t["worst_lag_ms"] <= FRESH_MS]
        figures[label] = {"one": one, "many": many, "ratio": ratio, "fit": lines}
        if one["tree"] != "this checkout":
            continue  # the baseline's figures are printed beside, the targets are this checkout's
        targets += [
            Target(f"{n} instances: idle CPU % of a core", many["idle"]["cpu_percent"], "<", IDLE_PERCENT),
            Target("per-advert cost, 1 vs N instances (ratio)", ratio, "<=", 2.0),
            Target(
                f"{n} instances: FAULT shown within {FRESH_MS:g} ms (trials)",
                len(fresh),
                "==",
                len(many["trials"]),
            ),
        ]
    common.result("scale", figures, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
