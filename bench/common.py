"""Helpers shared by the bench scripts: result lines, processes, namespaces, scrapes, floors.

Every bench prints its own table and one line ``RESULT {json}`` (see :func:`result`)::

    {"bench": "http", "figures": {...}, "targets": [{"name": ..., "value": 1.2, "op": "<=",
     "limit": 1.5, "ok": true}, ...], "ok": true}

``ok`` is false if any target was missed; a target whose value could not be measured (``None``) counts
as missed. Benches are scripts (``python bench/bench_x.py``), so this module is imported as ``common``.

Cleanup: everything here that starts something (a process, a namespace) is meant to be used as a
context manager or with ``try/finally``; :func:`exit_on_sigterm` turns SIGTERM into SystemExit so that
those ``finally`` blocks run when ``make bench`` is interrupted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ka_exporter.testing import Process, free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FIXTURES = REPO / "tests" / "fixtures"
EXPORTER = [sys.executable, "-m", "ka_exporter"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One figure against its target: `value op limit` (op is "<=", ">=", "<", ">" or "==")."""

    name: str
    value: float | None
    op: str
    limit: float

    @property
    def ok(self) -> bool:
        v = self.value
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return False
        return {
            "<=": v <= self.limit,
            ">=": v >= self.limit,
            "<": v < self.limit,
            ">": v > self.limit,
            "==": v == self.limit,
        }[self.op]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "op": self.op, "limit": self.limit, "ok": self.ok}

    def verdict(self) -> str:
        return "OK" if self.ok else "MISSED"


def result(bench: str, figures: dict[str, Any], targets: Sequence[Target]) -> dict[str, Any]:
    """Print the targets' verdicts and the `RESULT {json}` line; return the dict."""
    out = {
        "bench": bench,
        "figures": figures,
        "targets": [t.as_dict() for t in targets],
        "ok": all(t.ok for t in targets),
    }
    if targets:
        width = max(len(t.name) for t in targets)
        print("targets:")
        for t in targets:
            shown = "n/a" if t.value is None else f"{t.value:.4g}"
            print(f"  {t.name:{width}}  {shown:>10} {t.op} {t.limit:<8g} {t.verdict()}")
    print("RESULT " + json.dumps(out, sort_keys=True, default=str), flush=True)
    return out


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so `finally` blocks (labs down, processes killed) still run."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def load() -> float:
    return os.getloadavg()[0]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of values; NaN when empty."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(q / 100 * len(v)) - 1))
    return v[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- names, commands, namespaces --------------------------------------------------------------------


def tag(prefix: str) -> str:
    """A short name unique to this run (<= 15 characters with a prefix of up to 5)."""
    return f"{prefix}{os.getpid() % 10000:04d}{random.randrange(65536):04x}"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def in_ns(name: str, fn: Callable[[], Any]) -> Any:
    """fn() in a thread that entered network namespace `name`; None if it raised (the thread prints
    the traceback): the benches treat a failed setup step as a missing figure, not a crash."""
    from ka_exporter.linux import netns

    out: list[Any] = []
    t = threading.Thread(target=lambda: (netns.enter(name), out.append(fn())))
    t.start()
    t.join()
    return out[0] if out else None


@contextlib.contextmanager
def veth_pair(prefix: str, left: str = "vx", right: str = "eth0") -> Iterator[tuple[str, str]]:
    """Two fresh namespaces joined by a veth (`left` in the first, `right` in the second), links up.

    Yields (first namespace, second namespace); both are deleted afterwards, whatever happened.
    """
    if os.geteuid() != 0:
        raise SystemExit("this bench needs root (network namespaces)")
    t = tag(prefix)
    names = (f"{t}t", f"{t}r")
    made: list[str] = []
    try:
        for ns in names:
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh(
            "ip",
            "-n",
            names[0],
            "link",
            "add",
            left,
            "type",
            "veth",
            "peer",
            "name",
            right,
            "netns",
            names[1],
        )
        for ns, dev in ((names[0], left), (names[1], right)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield names
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


# -- processes: Process and free_port are ka_exporter.testing's (shared with the tests) ---------------


def wait_http(port: int, proc: Process, path: str = "/-/healthy", timeout: float = 20.0) -> None:
    """Return once http://127.0.0.1:port/path answers; raise with the log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.argv[:4]} exited {proc.popen.returncode}:\n{proc.logs()[-2000:]}")
        try:
            status, _body, _ = get(port, path, timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.argv[:4]} did not answer on port {port}:\n{proc.logs()[-2000:]}")


def get(port: int, path: str = "/metrics", timeout: float = 30.0) -> tuple[int, bytes, float]:
    """One GET on a fresh connection: (status, body, seconds from connect to the body's last byte)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "text/plain"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.perf_counter() - t0
    finally:
        conn.close()


@dataclass
class Rotation:
    """What `rotate_scrapes` measured, by server name."""

    latency_ms: dict[str, list[float]]
    cpu_ms_per_scrape: dict[str, float]
    rss_kib: dict[str, int]
    errors: int
    seconds: float

    def figures(self, name: str) -> dict[str, float]:
        """median / p99 latency (ms), CPU ms per scrape and RSS (MiB) of one server."""
        return {
            "median_ms": round(median(self.latency_ms[name]), 3),
            "p99_ms": round(percentile(self.latency_ms[name], 99), 3),
            "cpu_ms_per_scrape": round(self.cpu_ms_per_scrape[name], 3),
            "rss_mib": round(self.rss_kib[name] / 1024, 1),
        }


def rotate_scrapes(
    targets: dict[str, tuple[Process, int]],
    scrapes: int,
    on_body: Callable[[str, bytes], None] | None = None,
) -> Rotation:
    """`scrapes` rounds of one scrape of each server, rotating who goes first; CPU from /proc."""
    names = list(targets)
    lat: dict[str, list[float]] = {k: [] for k in names}
    cpu0 = {k: cpu_seconds(pr.pid) for k, (pr, _p) in targets.items()}
    errors = 0
    t0 = time.monotonic()
    for i in range(scrapes):
        first = i % len(names)
        for k in names[first:] + names[:first]:  # rotate who goes first
            status, body, seconds = get(targets[k][1])
            errors += status != 200
            lat[k].append(seconds * 1000.0)
            if on_body is not None:
                on_body(k, body)
    elapsed = time.monotonic() - t0
    cpu = {k: (cpu_seconds(pr.pid) - cpu0[k]) * 1000.0 / scrapes for k, (pr, _p) in targets.items()}
    rss = {k: rss_kib(pr.pid)[0] for k, (pr, _p) in targets.items()}
    return Rotation(lat, cpu, rss, errors, elapsed)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a running process, in KiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(rest.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) and of its children it has reaped."""
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def thread_runtime(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process by thread id, to the nanosecond (schedstat).

    /proc/PID/stat counts in clock ticks (10 ms here): too coarse for a thread that works
    microseconds per advert. /proc/PID/task/TID/schedstat's first field is its time on a CPU, in ns.
    """
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                out[int(tid)] = int(fh.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                rest = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(tid)] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return out


def py_spy() -> str | None:
    """A py-spy binary ($PY_SPY, PATH, the venv's or /tmp/bench-tools/bin); None if there is none."""
    import shutil

    venv = str(Path(sys.executable).parent / "py-spy")
    for cand in (os.environ.get("PY_SPY"), shutil.which("py-spy"), venv, "/tmp/bench-tools/bin/py-spy"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native thread id (from `py-spy dump`); empty without py-spy."""
    spy = py_spy()
    if spy is None:
        return {}
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'Thread (\d+) \(\w+\): "([^"]+)"', out)}


@dataclass(frozen=True)
class Run:
    """How a short-lived command went: wall seconds, CPU seconds, peak RSS (KiB), exit code, output."""

    wall: float
    cpu: float
    maxrss_kib: int
    code: int
    output: str


def bytecode_env(cache: Path) -> dict[str, str]:
    """The environment with Python's bytecode cache on, kept under `cache` (PYTHONPYCACHEPREFIX).

    This machine sets PYTHONDONTWRITEBYTECODE=1, and the repository has no __pycache__: every run of
    `python -m ka_exporter` would compile ka_exporter from source (~0.15 s), which no installed
    exporter does (pip and packages compile at install time). The first run with this environment
    fills the cache; time the runs after it.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def run_measured(argv: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> Run:
    """Run argv to completion; its own rusage (wait4), not that of other children of this process.

    ru_maxrss counts the memory the child inherited from this process until it exec'd: for the peak
    RSS of the program itself, have it read its VmHWM (see bench_footprint's wrapper).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_kib=int(usage.ru_maxrss),
        code=proc.returncode,
        output=b"".join(out).decode(errors="replace"),
    )


# -- keepalived dumps with many instances ------------------------------------------------------------


def build_dumps(n: int) -> tuple[str, str]:
    """keepalived.data + keepalived.stats with `n` instances, from real 2.2.8 fixture blocks.

    As bench_parse.build() does (same fixture, same block splitter), with one change so that more than
    255 instances stay valid: instance k is on interface eth{k // 255} with VRID k % 255 + 1, as a router
    with 1,000 instances on four VLANs would have them. Up to 255 instances: eth0, VRIDs 1..n.
    """
    sys.path.insert(0, str(BENCH))
    from bench_parse import SOURCE, _blocks

    data = (SOURCE / "keepalived.data").read_text()
    stats = (SOURCE / "keepalived.stats").read_text()
    head, blocks, tail = _blocks(data, " VRRP Instance = ")
    shead, sblocks, _ = _blocks(stats, "VRRP Instance: ")
    out_d, out_s = [head], [shead]
    for k in range(n):
        i = k % len(blocks)
        iname = f"VI_{k:04d}"
        block = re.sub(r"(VRRP Instance = )\S+", rf"\g<1>{iname}", blocks[i])
        block = re.sub(r"(Virtual Router ID = )\d+", rf"\g<1>{k % 255 + 1}", block)
        block = re.sub(r"(\n   Interface = )\S+", rf"\g<1>eth{k // 255}", block, count=1)
        out_d.append(block)
        out_s.append(re.sub(r"(VRRP Instance: )\S+", rf"\g<1>{iname}", sblocks[i]))
    out_d.append(tail)
    return "".join(out_d), "".join(out_s)


def write_dumps(directory: Path, n: int) -> Path:
    """Write keepalived.data and keepalived.stats with `n` instances into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    data, stats = build_dumps(n)
    (directory / "keepalived.data").write_text(data)
    (directory / "keepalived.stats").write_text(stats)
    return directory


# -- the floor: a static prometheus_client registry holding the same series ---------------------------

SKIP_FAMILIES = ("ka_exporter_scrape_duration_seconds",)  # a per-scrape timing, not part of the data


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(sample name, sorted labels) of every sample in an exposition, scrape duration left out."""
    from prometheus_client.parser import text_string_to_metric_families

    out: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for fam in text_string_to_metric_families(text):
        if fam.name in SKIP_FAMILIES:
            continue
        for s in fam.samples:
            out.add((s.name, tuple(sorted(s.labels.items()))))
    return out


def static_registry(text: str) -> tuple[Any, int]:
    """An ordinary prometheus_client registry of Gauges/Counters holding exactly the samples of `text`.

    What a simple exporter that sets its metrics ahead of time would serve: values set once, rendered
    by `generate_latest()`. `_created` series are disabled, since ka-exporter has none.
    """
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge
    from prometheus_client.parser import text_string_to_metric_families

    prometheus_client.disable_created_metrics()
    registry = CollectorRegistry(auto_describe=False)
    count = 0
    for fam in text_string_to_metric_families(text):
        if fam.name in SKIP_FAMILIES or not fam.samples:
            continue  # an empty family (e.g. no keepalived process: no start time) renders nothing
        labelnames = sorted({k for s in fam.samples for k in s.labels})
        if fam.type == "counter":
            counter = Counter(fam.name, fam.documentation, labelnames, registry=registry)
            for s in fam.samples:
                (counter.labels(**s.labels) if labelnames else counter).inc(s.value)
                count += 1
        else:
            gauge = Gauge(fam.name, fam.documentation, labelnames, registry=registry)
            for s in fam.samples:
                (gauge.labels(**s.labels) if labelnames else gauge).set(s.value)
                count += 1
    return registry, count


def floor_main(argv: Sequence[str]) -> int:
    """`python bench/common.py floor ka|client TEXTFILE PORT`: serve a static copy of TEXTFILE's series.

    ka: through ka-exporter's own HTTP stack (ka_exporter.outputs.http), so only the rendering differs;
    client: through prometheus_client's start_http_server (WSGI, HTTP/1.0).
    """
    stack, textfile, port = argv[0], argv[1], int(argv[2])
    from prometheus_client import generate_latest

    registry, count = static_registry(Path(textfile).read_text())
    ours, static = series(Path(textfile).read_text()), series(generate_latest(registry).decode())
    if ours != static:
        print(
            f"static registry differs from the exposition: missing {sorted(ours - static)[:3]}, "
            f"extra {sorted(static - ours)[:3]}",
            flush=True,
        )
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if stack == "ka":
        from ka_exporter.outputs.http import App, HttpServer

        server = HttpServer("127.0.0.1", port, App(registry))
        server.start()
    else:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1", registry=registry)
    print(f"serving {count} samples on {port}", flush=True)
    stop.wait()
    return 0


def start_floor(stack: str, text: str, workdir: Path) -> tuple[Process, int]:
    """A floor server process (see floor_main) for `text`, answering; returns (process, port)."""
    textfile = workdir / f"floor-{stack}.prom"
    textfile.write_text(text)
    port = free_port()
    proc = Process(
        [sys.executable, str(BENCH / "common.py"), "floor", stack, str(textfile), str(port)],
        workdir / f"floor-{stack}.log",
    )
    try:
        wait_http(port, proc, "/-/healthy", timeout=60)
    except BaseException:
        proc.stop()
        raise
    return proc, port


# -- VRRP routers on a wire -------------------------------------------------------------------------------

MCAST4 = "01:00:5e:00:00:12"

SENDER = r"""
import socket, sys, time
pkts = [bytes.fromhex(h) for h in sys.stdin.read().split()]
dev, period = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
addr = (dev, 0x0800, 0, 0, b"\x01\x00\x5e\x00\x00\x12")
gap = period / len(pkts)
t = time.monotonic()
while True:
    for p in pkts:
        s.sendto(p, addr)
        t += gap
        time.sleep(max(0.0, t - time.monotonic()))
"""


def adverts(
    count: int, subnet: str = "10.251.0", vip_subnet: str = "10.251.1", centis: int = 100
) -> list[bytes]:
    """`count` routers, each master of its own VRID (1..count): one VRRPv3 advert (IPv4 packet) each."""
    from scapy.layers.inet import IP
    from scapy.layers.vrrp import VRRPv3

    out = []
    for k in range(1, count + 1):
        pkt = IP(src=f"{subnet}.{k}", dst="224.0.0.18", ttl=255, proto=112) / VRRPv3(
            vrid=k, priority=100 + k % 100, adv=centis, addrlist=[f"{vip_subnet}.{k}"]
        )
        out.append(bytes(pkt))
    return out


def start_sender(netns: str, dev: str, packets: list[bytes], period: float, log: Path) -> Process:
    """A process in `netns` sending each packet once per `period` seconds on `dev`, evenly spread."""
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", SENDER, dev, str(period)]
    return Process(argv, log, stdin=" ".join(p.hex() for p in packets).encode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor"]:
        sys.exit(floor_main(sys.argv[2:]))
    raise SystemExit("usage: common.py floor ka|client TEXTFILE PORT")
