"""keepalived daemonizes: one start, never counted as a restart.

keepalived's `xdaemon()` (core/daemon.c) forks; the fork calls setsid() and carries on as the daemon
(it writes the pid file, then forks the VRRP and checker children), and the first process exits. A
pass of the process source (or of `--discover`) that lands between the fork and that exit sees the
first process as keepalived's parent and then the daemon replacing it. Counted as a restart, that made
`keepalived_restarts_total` one too high and the KeepalivedRestarted alert fire on a plain start (CI
saw `keepalived started: pid 16392`, then `keepalived restarted: pid 16392 -> 16393` 0.19 s later).

The processes here daemonize as keepalived does: a copy of the Python interpreter named `keepalived`
(so /proc/PID/exe and comm both say keepalived) runs a script that sleeps, forks, calls setsid() in the
fork, writes the pid file from there and exits in the first process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ka_exporter.linux.procfs import DAEMONIZE_WINDOW, daemonized
from ka_exporter.model import ProcessInfo
from ka_exporter.sources.discovery import Discoverer
from ka_exporter.sources.fleet import _handoff
from ka_exporter.sources.process import ProcessSource
from ka_exporter.store import Store
from ka_exporter.store.fleet import Daemon

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="keepalived is adopted only as root")

# argv: pid file, seconds before the fork, number of keepalived children the daemon forks
DAEMONIZE = """
import os, sys, time
pid_file, delay, kids = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
time.sleep(delay)
if os.fork():
    time.sleep(0.05)
    os._exit(0)
os.setsid()
for _ in range(kids):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
with open(pid_file + ".tmp", "w") as fh:
    fh.write(f"{os.getpid()}\\n")
os.rename(pid_file + ".tmp", pid_file)
time.sleep(600)
"""


@pytest.fixture
def keepalived_exe(tmp_path: Path) -> Path:
    exe = tmp_path / "bin" / "keepalived"
    exe.parent.mkdir()
    shutil.copy(sys.executable, exe)
    return exe


class Daemonizing:
    """One daemonizing start: `first` is the process started, `daemon()` the pid its fork wrote."""

    def __init__(self, exe: Path, pid_file: Path, delay: float = 0.3, kids: int = 0) -> None:
        pid_file.unlink(missing_ok=True)
        self.pid_file = pid_file
        self.proc = subprocess.Popen(
            [str(exe), "-c", DAEMONIZE, str(pid_file), str(delay), str(kids)], stdin=subprocess.DEVNULL
        )
        self.first = self.proc.pid

    def daemon(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        pid = self.daemon()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the daemon leads its session and process group
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _watch(
    src: ProcessSource, store: Store, until: float, done: Callable[[ProcessInfo], bool]
) -> tuple[set[int], ProcessInfo]:
    """Pass after pass (as the source's own loop, only faster): the parents adopted on the way."""
    seen: set[int] = set()
    info: ProcessInfo | None = None
    while time.monotonic() < until:
        src.run_once()
        info = store.snapshot().process
        assert info is not None
        if info.running and info.pid is not None:
            seen.add(info.pid)
        if done(info):
            return seen, info
        time.sleep(0.005)
    raise AssertionError(f"not reached in time; adopted {sorted(seen)}, last {info}")


def test_the_handoff_rule() -> None:
    # the daemon its first process forked: leads a session, started within the window, the first
    # process had no other keepalived child
    assert daemonized(100.0, (), 201, 100.3, True)
    assert daemonized(100.0, (201,), 201, 100.3, True)
    # a parent that had VRRP or checker children ran: whatever replaces it is a new start
    assert not daemonized(100.0, (201, 202), 201, 100.3, True)
    assert not daemonized(100.0, (202,), 201, 100.3, True)
    # an orphaned child of a dead parent does not lead a session
    assert not daemonized(100.0, (201,), 201, 100.3, False)
    # a start long after the old one, or before it, is not its fork
    assert not daemonized(100.0, (), 201, 100.0 + DAEMONIZE_WINDOW, True)
    assert not daemonized(100.0, (), 201, 99.0, True)


@needs_root
def test_a_daemonizing_start_is_one_start_and_a_restart_after_it_counts_once(
    tmp_path: Path, keepalived_exe: Path
) -> None:
    pid_file = tmp_path / "keepalived.pid"
    store = Store()
    src = ProcessSource(store, pid_file, interval=0.01)
    first = Daemonizing(keepalived_exe, pid_file)
    second: Daemonizing | None = None
    try:
        seen, info = _watch(
            src, store, time.monotonic() + 10, lambda i: i.running and i.pid == first.daemon()
        )
        assert first.first in seen, f"no pass saw the first process {first.first}: {sorted(seen)}"
        assert info.pid != first.first
        assert info.restarts == 0, f"a daemonizing start counted as {info.restarts} restarts"
        # It stays one start once the first process is gone for good.
        assert first.proc.wait(5) == 0
        src.run_once()
        info2 = store.snapshot().process
        assert info2 is not None and info2.running and info2.restarts == 0

        # keepalived killed, then started again (daemonizing again): one restart, not two.
        first.kill()
        _watch(src, store, time.monotonic() + 5, lambda i: not i.running)
        second = Daemonizing(keepalived_exe, pid_file)
        seen, info = _watch(
            src, store, time.monotonic() + 10, lambda i: i.running and i.pid == second.daemon()
        )
        assert second.first in seen, f"no pass saw the first process {second.first}: {sorted(seen)}"
        assert info.restarts == 1, f"a kill and a daemonizing start counted as {info.restarts} restarts"
    finally:
        first.kill()
        if second is not None:
            second.kill()


@needs_root
def test_discover_counts_a_daemonizing_start_once(tmp_path: Path, keepalived_exe: Path) -> None:
    pid_file = tmp_path / "keepalived.pid"
    disc = Discoverer()
    one = Daemonizing(keepalived_exe, pid_file, delay=0.5)
    two: Daemonizing | None = None
    three: Daemonizing | None = None

    def mine(pid: int) -> Daemon | None:
        return next((d for d in disc.scan() if d.pid == pid), None)

    try:
        deadline = time.monotonic() + 10
        before = None
        while before is None and time.monotonic() < deadline:
            before = mine(one.first)
            time.sleep(0.01)
        assert before is not None, "discovery never saw the first process"
        after = None
        while after is None and time.monotonic() < deadline:
            pid = one.daemon()
            after = mine(pid) if pid is not None else None
            time.sleep(0.01)
        assert after is not None, "discovery never saw the daemon"
        assert _handoff(before, after), (before, after)

        # A daemon that ran with children, killed, and keepalived started again at once: a restart,
        # though the new daemon started within the window of the old one.
        two = Daemonizing(keepalived_exe, tmp_path / "two.pid", delay=0.0, kids=2)
        ran = _daemon_of(two, mine, lambda d: len(d.children) == 2)
        two.kill()
        three = Daemonizing(keepalived_exe, tmp_path / "two.pid", delay=0.0)
        new = _daemon_of(three, mine, lambda _d: True)
        tick = os.sysconf("SC_CLK_TCK")
        assert (new.start_time - ran.start_time) / tick < DAEMONIZE_WINDOW
        assert not _handoff(ran, new), (ran, new)
    finally:
        for d in (one, two, three):
            if d is not None:
                d.kill()


def _daemon_of(d: Daemonizing, mine: Callable[[int], Daemon | None], ok: Callable[[Daemon], bool]) -> Daemon:
    deadline = time.monotonic() + 10
    got = None
    while time.monotonic() < deadline:
        pid = d.daemon()
        got = mine(pid) if pid is not None else None
        if got is not None and ok(got):
            return got
        time.sleep(0.01)
    raise AssertionError(f"discovery never saw the daemon as wanted: {got}")


@needs_root
def test_the_orphaned_child_of_a_killed_keepalived_is_never_adopted(
    tmp_path: Path, keepalived_exe: Path
) -> None:
    """SIGKILL the daemon and its VRRP child lives on for a moment, orphaned (here for good: it is a
    sleeping copy, where keepalived's own child would notice and stop). It is not keepalived's parent:
    keepalived_up drops to 0 and stays there, nothing is counted as a start, and `--discover` lists
    no daemon for it."""
    pid_file = tmp_path / "keepalived.pid"
    store = Store()
    src = ProcessSource(store, pid_file, interval=0.01)
    disc = Discoverer()
    ka = Daemonizing(keepalived_exe, pid_file, delay=0.0, kids=1)
    try:
        _, info = _watch(
            src, store, time.monotonic() + 10, lambda i: i.pid == ka.daemon() and len(i.vrrp_pids) == 1
        )
        daemon, (child,) = info.pid, info.vrrp_pids
        assert daemon is not None
        assert ka.proc.wait(5) == 0  # the first process is gone: the daemon is a parent
        assert any(d.pid == daemon and d.children == (child,) for d in disc.scan())
        os.kill(daemon, signal.SIGKILL)
        _watch(src, store, time.monotonic() + 5, lambda i: not i.running)
        until = time.monotonic() + 1.0
        scans = 0
        while time.monotonic() < until:
            src.run_once()
            now = store.snapshot().process
            assert now is not None and not now.running, f"the orphan {child} was adopted: {now}"
            assert all(d.pid != child for d in disc.scan()), f"discovery took the orphan {child}"
            scans += 1
            time.sleep(0.01)
        assert Path(f"/proc/{child}").exists(), "the orphan exited: the test proved nothing"
        assert scans > 20
        final = store.snapshot().process
        assert final is not None and final.restarts == 0
    finally:
        ka.kill()
