"""ka_exporter.testing, the helpers the tests and benches share, on real processes and a real exporter."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ka_exporter.testing import (
    Process,
    Sampler,
    free_port,
    sample,
    start_exporter,
    stop_exporter,
    stop_process,
    wait_until,
)

NO_KA = ("--no-collector.wire", "--no-collector.dbus", "--no-collector.dumps", "--no-collector.l2")


def test_wait_until_says_whether_it_came_true_and_stops_waiting_when_it_does() -> None:
    t0 = time.monotonic()
    assert wait_until(lambda: time.monotonic() - t0 > 0.1, timeout=5)
    assert time.monotonic() - t0 < 4
    assert not wait_until(lambda: False, timeout=0.1)


def test_stop_process_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    with Process([sys.executable, "-c", code], tmp_path / "stubborn.log") as p:
        assert wait_until(lambda: "ready" in p.logs(), 10)
        stop_process(p.popen, timeout=0.5)
        assert not p.alive()
        assert p.popen.returncode == -9
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    stop_process(gone)  # already reaped: a no-op
    assert gone.returncode == 0


def test_start_exporter_raises_with_the_log_when_it_exits(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="exporter exited 2"):
        start_exporter(tmp_path, "--no-such-flag")


def test_a_sampler_sees_an_exporter_come_and_go(tmp_path: Path) -> None:
    port = free_port()
    with Sampler(f"http://127.0.0.1:{port}/metrics", step=0.05) as s:
        exp = start_exporter(tmp_path, *NO_KA, "--hostname", "node-s", port=port)
        try:
            up = s.wait_for(
                lambda m: sample(m, "keepalived_process_status", hostname="node-s") is not None, timeout=10
            )
            assert up is not None, "the sampler never scraped the exporter"
            latest = s.latest()
            assert latest is not None
            assert sample(latest, "keepalived_process_status", hostname="node-s") == 0.0
        finally:
            stop_exporter(exp)
        gone = time.monotonic()
        assert wait_until(lambda: any(x.metrics is None for x in s.history(gone)), 5)
    assert s.ever(bool)
    assert s.first(bool, since=gone + 60) is None
    before = [x for x in s.history() if x.at < up]
    assert before and all(x.metrics is None for x in before)  # nothing answered before it started
