"""Serving under attack, for real: the exporter runs with the shipped unit's limits (a cgroup with its
TasksMax and MemoryMax, its LimitNOFILE), hostile clients hold connections on loopback, and a real
TLS + basic-auth scraper must still be served; rotated certificates reach new handshakes.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import REPO, free_port, parse_metrics, sample, stop_process, wait_ready, wait_until
from tests.test_serve import write_conf
from tests.test_webconfig import (
    PASSWORD,
    _ca,
    _leaf,
    _write_cert,
    _write_key,
    basic,
    users_block,
    web_exporter_argv,
    write_config,
)
from tests.unit_limits import UnitCgroup, cgroups_available, unit_limits

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca = _ca("attack CA")
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert, key = _leaf(ca, "localhost", sans, server=True)
    return Certs(
        _write_cert(d / "ca.crt", ca[0]), _write_cert(d / "s.crt", cert), _write_key(d / "s.key", key)
    )


LOGFMT = re.compile(r'^ts=\S+Z level=(debug|info|warning|error|critical) logger=\S+ msg=".*"$')


@dataclass
class Limited:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    cgroup: UnitCgroup | None
    threads_seen: list[int] = field(default_factory=list)

    def threads(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_limited(tmp: Path, config: Path, *args: str) -> Limited:
    """The real exporter in a cgroup with the unit's limits (when the machine has one to give)."""
    port = free_port()
    log = tmp / f"exporter-{port}.log"
    cgroup = UnitCgroup(unit_limits()) if cgroups_available() else None
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            web_exporter_argv(port, config, *args),
            stdout=subprocess.DEVNULL,
            stderr=out,
            preexec_fn=cgroup.preexec() if cgroup else None,  # noqa: PLW1509 - writes two files, sets one rlimit
        )
    exp = Limited(proc, port, log, cgroup)
    try:
        wait_ready(proc, lambda: "listening on" in exp.logs(), exp.logs, timeout=20)
    except AssertionError:
        stop_limited(exp)
        raise
    return exp


def stop_limited(exp: Limited) -> None:
    if exp.proc.poll() is None:
        stop_process(exp.proc, 15)
    if exp.cgroup is not None:
        exp.cgroup.remove()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[list[Limited]]:
    started: list[Limited] = []
    yield started
    for exp in started:
        stop_limited(exp)


class Attackers:
    """tests.attackers in its own process; `ready()` once every connection is open."""

    def __init__(self, port: int, slowloris: int, idle: int, *, tls: bool, delay: float = 0.1) -> None:
        argv = [sys.executable, "-m", "tests.attackers", "--port", str(port)]
        argv += ["--slowloris", str(slowloris), "--idle", str(idle), "--reconnect-delay", str(delay)]
        self.proc = subprocess.Popen(
            [*argv, *(["--tls"] if tls else [])], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def ready(self, timeout: float) -> bool:
        return wait_until(lambda: any('"ready"' in line for line in self.lines), timeout, 0.1)

    def stop(self) -> dict[str, int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        self._reader.join(5)
        return dict(json.loads(self.lines[-1])) if self.lines else {}


@dataclass
class Scrapes:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def scrape_tls(port: int, ctx: ssl.SSLContext, auth: str, timeout: float = 5.0) -> str:
    """One scrape on a fresh TLS connection, as a Prometheus that has just (re)connected does."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": auth})
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise AssertionError(f"status {resp.status}")
        return body
    finally:
        conn.close()


def scrape_every(port: int, ctx: ssl.SSLContext, auth: str, period: float, seconds: float) -> Scrapes:
    out = Scrapes()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            body = scrape_tls(port, ctx, auth)
            if "ka_exporter_build_info" not in body:
                raise AssertionError("no ka_exporter_build_info")
            out.latencies.append(time.monotonic() - t0)
        except (OSError, http.client.HTTPException, AssertionError) as exc:
            out.failures.append(f"{type(exc).__name__}: {exc}")
        time.sleep(max(0.0, period - (time.monotonic() - t0)))
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def unformatted(log: str) -> list[str]:
    return [line for line in log.splitlines() if not LOGFMT.match(line)]


def test_slowloris_and_idle_connections_do_not_stop_tls_scrapes(tmp_path, certs, limited, netns):
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")
    tls = f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
    cfg = write_config(tmp_path / "web.yml", tls + users_block())
    conf = write_conf(tmp_path / "keepalived.conf", "10.77.1.100")
    exp = start_limited(
        tmp_path,
        cfg,
        "--netns",
        netns,
        "--keepalived.config",
        str(conf),
        "--keepalived.pid-file",
        str(tmp_path / "keepalived.pid"),
        "--no-collector.wire",
        "--no-collector.l2",
        "--no-collector.dbus",
        "--no-collector.dumps",
    )
    limited.append(exp)
    ctx, auth = ssl.create_default_context(cafile=str(certs.ca)), basic("prometheus", PASSWORD)
    before = parse_metrics(scrape_tls(exp.port, ctx, auth))
    sources = {"process", "vips", "config"}
    assert {s for s in sources if sample(before, "ka_exporter_source_up", source=s) == 1.0} == sources
    threads_quiet = exp.threads()

    attack = Attackers(exp.port, slowloris=300, idle=1500, tls=True)
    try:
        assert attack.ready(60), attack.lines
        held = exp.fds()
        assert held >= 1800, f"the exporter holds only {held} descriptors"
        threads: list[int] = []
        sampler_stop = threading.Event()

        def sample_threads() -> None:
            while not sampler_stop.wait(0.5):
                threads.append(exp.threads())

        sampler = threading.Thread(target=sample_threads, daemon=True)
        sampler.start()
        result = scrape_every(exp.port, ctx, auth, period=0.1, seconds=20)
        sampler_stop.set()
        sampler.join(5)
        during = parse_metrics(scrape_tls(exp.port, ctx, auth))
        rss = exp.rss()
    finally:
        stats = attack.stop()

    total = len(result.latencies) + len(result.failures)
    print(
        f"\nscrapes {total}, ok {len(result.latencies)}, p99 {p99(result.latencies):.3f} s, "
        f"threads quiet {threads_quiet} max {max(threads)}, fds held {held}, rss {rss / 2**20:.0f} MiB, "
        f"attackers {stats}, cgroup {exp.cgroup.dirs if exp.cgroup else 'none (nofile limit only)'}"
    )
    assert total >= 100
    assert len(result.latencies) >= 0.99 * total, result.failures[:5]
    assert p99(result.latencies) < 1.0
    assert stats["max_open"] >= 1800
    assert stats["dropped_by_server"] > 0  # the deadlines dropped slowloris and idle connections
    assert max(threads) <= threads_quiet + 3, threads
    assert {s for s in sources if sample(during, "ka_exporter_source_up", source=s) == 1.0} == sources
    if exp.cgroup is not None:
        assert exp.cgroup.peak_memory() < exp.cgroup.limits["MemoryMax"]
    stop_limited(exp)
    assert exp.proc.returncode == 0
    log = exp.logs()
    assert unformatted(log) == []
    assert "Traceback" not in log
    assert PASSWORD not in log
    assert len(log.splitlines()) < 2000  # client errors are rate-limited


def test_when_full_the_oldest_unfinished_connection_makes_room(tmp_path, limited):
    """200 silent connections against a cap of 64: the scraper and a kept-alive client still get in."""
    exp = start_limited(
        tmp_path,
        write_config(tmp_path / "web.yml", ""),
        "--web.max-connections",
        "64",
        "--no-collector.wire",
        "--no-collector.l2",
        "--no-collector.dbus",
        "--no-collector.dumps",
        "--no-collector.config",
    )
    limited.append(exp)
    kept = http.client.HTTPConnection("127.0.0.1", exp.port, timeout=5)
    kept.request("GET", "/-/healthy")
    assert kept.getresponse().read() == b"OK\n"
    kept_sock = kept.sock
    silent = [socket.create_connection(("127.0.0.1", exp.port)) for _ in range(200)]
    try:
        for _ in range(20):
            fresh = http.client.HTTPConnection("127.0.0.1", exp.port, timeout=5)
            fresh.request("GET", "/metrics")
            resp = fresh.getresponse()
            assert resp.status == 200
            assert "ka_exporter_build_info" in resp.read().decode()
            fresh.close()
        # The kept-alive connection completed a request: it was not evicted, it is the same socket.
        kept.request("GET", "/-/healthy")
        assert kept.getresponse().read() == b"OK\n"
        assert kept.sock is kept_sock

        def dropped() -> int:
            count = 0
            for s in silent:
                s.setblocking(False)
                try:
                    count += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    count += 1
            return count

        # 200 silent + 1 kept against 64 places: at least 137 silent ones were evicted.
        assert wait_until(lambda: dropped() >= 137, 5)
    finally:
        for s in silent:
            s.close()
        kept.close()
    stop_limited(exp)
    assert unformatted(exp.logs()) == []


def test_refused_credentials_close_the_connection_and_cost_no_scrape(tmp_path, limited):
    """A wrong password gets 401 and a closed connection; a cached right one is served meanwhile."""
    cfg = write_config(tmp_path / "web.yml", users_block())
    exp = start_limited(
        tmp_path,
        cfg,
        "--no-collector.wire",
        "--no-collector.l2",
        "--no-collector.dbus",
        "--no-collector.dumps",
    )
    limited.append(exp)
    good, bad = basic("prometheus", PASSWORD), basic("prometheus", "guess")

    def get(auth: str) -> tuple[int, bool]:
        conn = http.client.HTTPConnection("127.0.0.1", exp.port, timeout=10)
        conn.request("GET", "/metrics", headers={"Authorization": auth})
        resp = conn.getresponse()
        resp.read()
        closed = resp.getheader("Connection", "").lower() == "close"
        conn.close()
        return resp.status, closed

    assert get(good) == (200, False)  # now cached
    guesses: list[tuple[int, bool]] = []
    stop = threading.Event()

    def guess() -> None:
        while not stop.is_set():
            guesses.append(get(bad))

    guessers = [threading.Thread(target=guess, daemon=True) for _ in range(8)]
    for t in guessers:
        t.start()
    try:
        served = [get(good) for _ in range(20)]
    finally:
        stop.set()
        for t in guessers:
            t.join(15)
    assert served == [(200, False)] * 20
    assert guesses
    assert set(guesses) <= {(401, True), (429, True)}
    assert (401, True) in guesses
    stop_limited(exp)
    assert unformatted(exp.logs()) == []
    assert "guess" not in exp.logs()
