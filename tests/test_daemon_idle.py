"""The serving daemon's main thread sleeps until a signal: no periodic wakeup, and SIGTERM/SIGINT
still stop it cleanly (it sleeps on the pipe the signal wakes: daemon.sleep_until_signalled)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

NO_SOURCES = (
    "--no-collector.config",
    "--no-collector.wire",
    "--no-collector.dbus",
    "--no-collector.dumps",
    "--no-collector.l2",
    "--no-collector.fifo",
    "--no-collector.lvs",
    "--no-collector.process",
    "--no-collector.vips",
)


def main_thread_switches(pid: int) -> int:
    """Context switches of the process's main thread (the one whose id is the pid)."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return sum(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_main_thread_sleeps_until_a_signal_stops_the_daemon(exporter_factory, signum):
    exp = exporter_factory(*NO_SOURCES)
    pid = exp.proc.pid
    exp.metrics()  # serving
    before = main_thread_switches(pid)
    time.sleep(2.5)  # it used to wake every second
    assert main_thread_switches(pid) == before
    exp.proc.send_signal(signum)
    assert exp.proc.wait(10) == 0
    assert "shutting down" in exp.logs()
