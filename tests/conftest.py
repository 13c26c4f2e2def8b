"""Shared test fixtures: fixture paths, unique namespaces, the lab, the real exporter as a subprocess.

The helpers themselves (free_port, wait_until, stop_process, start_exporter, scrape, Sampler, ...) live
in ka_exporter.testing, shared with bench/ and the lab demo; they are re-exported here for the tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ka_exporter.testing import (  # noqa: F401 - re-exported for the tests
    EXPORTER,
    Metrics,
    Process,
    RunningExporter,
    Sampler,
    answers,
    free_port,
    parse_metrics,
    sample,
    scrape,
    start_exporter,
    stop_exporter,
    stop_process,
    wait_ready,
    wait_until,
)

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
# The project's own recorded keepalived data, vendored (tests/fixtures/README.txt says how it was made).
FIXTURES = REPO / "tests" / "fixtures"
# Other projects' real dumps and captures: read from ../shared only, never committed; tests skip without.
# KA_TEST_PEERS points elsewhere (a missing directory: what a clean clone without ../shared sees).
PEERS = Path(os.environ.get("KA_TEST_PEERS") or REPO.parent / "shared" / "fixtures" / "peers")
#: The one reason a test may skip under CI=true (the skip guard at the end of this file).
PEERS_ABSENT = "peers fixtures absent (../shared/fixtures/peers: other projects' data, never committed)"


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


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


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


# -- the lab ------------------------------------------------------------------------------------------


def need_lab(*tools: str) -> None:
    """Skip unless this is root with keepalived (and `tools`) installed: what a lab test needs."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    for tool in ("keepalived", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"the lab needs {tool}")


@pytest.fixture
def fast_lab() -> Iterator[Any]:
    """A running two-node keepalived lab, "fast" profile (no D-Bus); torn down afterwards."""
    need_lab()
    from ka_exporter.lab import Lab

    with Lab(profile="fast") as lab:
        yield lab


def start_node_exporter(tmp: Path, node: Any, label: str, *extra: str) -> RunningExporter:
    """The real exporter watching one lab node (the demo's command line plus `extra`), once healthy."""
    from ka_exporter.lab.demo import exporter_args

    port = free_port()
    return start_exporter(tmp, argv=[*exporter_args(node, port, label), *extra], port=port)


# -- the CI skip guard ------------------------------------------------------------------------------------


def skip_is_allowed(reason: str) -> bool:
    """Under CI every test runs: the only skip allowed is the peers fixtures' (other projects' data)."""
    return reason.removeprefix("Skipped: ") == PEERS_ABSENT


def _fail_unless_allowed(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not skip_is_allowed(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true ({reason}); only {PEERS_ABSENT!r} may skip in CI"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        _fail_unless_allowed(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A whole module skipped at collection (importorskip, a module-level skip) counts the same."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped:
        _fail_unless_allowed(report)
