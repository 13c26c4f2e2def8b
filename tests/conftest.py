"""Shared test helpers: fixture paths, unique namespaces, a real exporter subprocess, scraping."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
# The project's own recorded keepalived data, vendored (tests/fixtures/README.txt says how it was made).
FIXTURES = REPO / "tests" / "fixtures"
# Other projects' real dumps and captures: read from ../shared only, never committed; tests skip without.
PEERS = REPO.parent / "shared" / "fixtures" / "peers"
EXPORTER = [sys.executable, "-m", "ka_exporter"]


_TRAVERSE_GRANTED: list[tuple[Path, int]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Several tests run the exporter as an unprivileged user (uid 65534). It must be able to reach
    the checkout and its virtualenv: a checkout under a 0700 directory (mktemp -d) would hide them. As
    root, add search permission (o+x, no listing) to such ancestors for the session; restored after."""
    if os.geteuid() != 0:
        return
    for top in {REPO, Path(sys.prefix).resolve()}:
        for d in [top, *top.parents]:
            mode = d.stat().st_mode
            if not mode & 0o001:
                _TRAVERSE_GRANTED.append((d, mode))
                d.chmod(mode | 0o001)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _TRAVERSE_GRANTED:
        d, mode = _TRAVERSE_GRANTED.pop()
        with contextlib.suppress(OSError):
            d.chmod(mode & 0o7777)


def unique(prefix: str = "kt") -> str:
    """A short name unique to this test run (namespaces, interfaces: <= 15 characters)."""
    return f"{prefix}{os.getpid() % 10000:04d}{secrets.token_hex(2)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    want = tuple(sorted(labels.items()))
    return metrics.get((name, want))


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


class RunningExporter:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return parse_metrics(scrape(self.url))

    def text(self) -> str:
        return scrape(self.url)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_exporter(tmp: Path, *args: str, wait: bool = True) -> RunningExporter:
    port = free_port()
    log = tmp / f"exporter-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*EXPORTER, "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    exp = RunningExporter(proc, port, log)
    if wait:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"exporter exited {proc.returncode}: {exp.logs()}")
            try:
                scrape(f"http://127.0.0.1:{port}/-/healthy", timeout=1)
                return exp
            except OSError:
                time.sleep(0.05)
        stop_exporter(exp)
        raise AssertionError(f"exporter did not come up: {exp.logs()}")
    return exp


def stop_exporter(exp: RunningExporter) -> None:
    if exp.proc.poll() is None:
        exp.proc.terminate()
        try:
            exp.proc.wait(10)
        except subprocess.TimeoutExpired:
            exp.proc.kill()
            exp.proc.wait(5)


def in_netns(name: str, fn: Callable[[], T], timeout: float = 120.0) -> T:
    """Run fn in a new thread that entered network namespace `name` (threads it starts stay there);
    return its result or raise what it raised."""
    from ka_exporter.linux import netns

    out: list[T] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            netns.enter(name)
            out.append(fn())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} in netns {name} still running after {timeout:g} s")
    if err:
        raise err[0]
    return out[0]


def wait_until(pred: object, timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(step)
    return bool(pred())  # type: ignore[operator]


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with a veth pair (eth0 <-> peer0) up; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = unique("ktn")
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "peer0", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A temporary directory an unprivileged user can traverse (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="ka-world-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[object]:
    started: list[RunningExporter] = []

    def factory(*args: str, wait: bool = True) -> RunningExporter:
        exp = start_exporter(tmp_path, *args, wait=wait)
        started.append(exp)
        return exp

    yield factory
    for exp in started:
        stop_exporter(exp)
