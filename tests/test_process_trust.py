"""Process detection trusts only what it can verify: owner, pid file, start time, namespace.

The lab test runs the documented unprivileged deployment (uid 65534, no capability) inside a lab node's
namespace, with two impostors on the host: the other node's keepalived (another namespace) and a
program called `keepalived` that another user started in the same namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ka_exporter.lab import Lab
from ka_exporter.linux.procfs import parent_and_start, read_pid_file
from ka_exporter.sources.process import ProcessSource
from ka_exporter.store import Store
from tests.conftest import REPO, free_port, in_netns, parse_metrics, sample, scrape, wait_until

NOBODY = 65534
STRANGER = 4242
SETPRIV = shutil.which("setpriv")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv (util-linux)"
)


def fake_keepalived(directory: Path, uid: int, netns: str | None = None) -> subprocess.Popen[bytes]:
    """`sleep` renamed keepalived (exe basename and comm both say keepalived), run as `uid`."""
    assert SETPRIV is not None
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    exe = directory / "keepalived"
    shutil.copy("/bin/sleep", exe)
    exe.chmod(0o755)
    argv = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", str(exe), "600"]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    assert wait_until(lambda: _comm(proc.pid) == "keepalived", timeout=10), "the impostor did not start"
    return proc


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


# ---------------------------------------------------------------- as root, no lab


@needs_root
def test_a_keepalived_of_another_user_is_never_adopted(world_dir):
    fake = fake_keepalived(world_dir / "bin", STRANGER)
    try:
        store = Store()
        src = ProcessSource(store, world_dir / "keepalived.pid")
        src.run_once()
        proc = store.snapshot().process
        assert proc is not None
        assert proc.running is False
        assert proc.rejected >= 1  # it was considered, and refused
        # Named by a pid file: still refused, and the source says why in one line.
        (world_dir / "keepalived.pid").write_text(f"{fake.pid}\n")
        src.run_once()
        proc = store.snapshot().process
        assert proc is not None and proc.running is False
        assert proc.pidfile_problem is not None
        assert f"uid {STRANGER}, not root" in proc.pidfile_problem
    finally:
        _end(fake)


def test_a_pid_file_with_a_20_digit_number_does_not_disable_detection(tmp_path):
    pidfile = tmp_path / "keepalived.pid"
    pidfile.write_text("12345678901234567890\n")
    assert read_pid_file(pidfile).pid is None
    store = Store()
    src = ProcessSource(store, pidfile)
    src.run_once()
    health = store.snapshot().source("process")
    assert health is not None
    assert health.error is not None and "does not hold a pid" in health.error  # said, not a crash
    proc = store.snapshot().process
    assert proc is not None and proc.running is False  # the scan still ran


def test_a_symlinked_pid_file_is_not_followed(tmp_path):
    real = tmp_path / "real.pid"
    real.write_text(f"{os.getpid()}\n")
    (tmp_path / "keepalived.pid").symlink_to(real)
    pf = read_pid_file(tmp_path / "keepalived.pid")
    assert pf.pid is None
    assert pf.problem is not None and "keepalived.pid" in pf.problem


# ---------------------------------------------------------------- unprivileged, against a lab


def _up(netns: str, url: str) -> float | None:
    try:
        text = in_netns(netns, lambda: scrape(url, timeout=3), timeout=10)
    except OSError:
        return None
    return sample(parse_metrics(text), "keepalived_up")


@needs_root
@pytest.mark.lab
@pytest.mark.slow
def test_unprivileged_exporter_sees_a_sigkilled_keepalived_at_once_and_adopts_no_impostor(world_dir):
    assert SETPRIV is not None
    with Lab(profile="fast", nodes=2, workdir=world_dir) as lab:
        a, b = lab.nodes["a"], lab.nodes["b"]
        fake = fake_keepalived(world_dir / "bin", STRANGER, a.netns)
        port = free_port()
        log = world_dir / "exporter.log"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
        argv = [
            *("ip", "netns", "exec", a.netns),
            *(SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"),
            *(sys.executable, "-m", "ka_exporter", "--web.listen-address", f"127.0.0.1:{port}"),
            *(
                "--keepalived.pid-file",
                str(a.pidfile),
                "--no-collector.config",
                "--no-collector.wire",
                "--no-collector.l2",
            ),
            *("--no-collector.dbus", "--no-collector.dumps"),
        ]
        with open(log, "wb") as out:
            exp = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            assert wait_until(lambda: _up(a.netns, url) == 1.0, timeout=20), log.read_text()
            assert a.pid is not None and b.pid is not None
            killed_at = time.monotonic()
            lab.stop("a", signal.SIGKILL, wait=False)
            seen = wait_until(lambda: _up(a.netns, url) == 0.0, timeout=1.5, step=0.05)
            took = time.monotonic() - killed_at
            assert seen, f"keepalived_up still not 0 {took:.2f} s after SIGKILL: {log.read_text()}"
            print(f"keepalived_up 0 observed {took:.2f} s after SIGKILL (unprivileged exporter)")
            # It stays 0 with the other namespace's keepalived and the impostor running.
            assert b.running() and fake.poll() is None
            for _ in range(20):
                assert _up(a.netns, url) == 0.0, log.read_text()
                time.sleep(0.1)
            text = log.read_text()
            # Both were really looked at and refused (not merely missed).
            assert f"not adopting keepalived candidate pid {fake.pid} " in text, text
            assert f"uid {STRANGER}, not root" in text
            assert f"not adopting keepalived candidate pid {b.pid} " in text, text
            for line in text.splitlines():
                assert line.startswith(("ts=", "{")), f"unformatted line on stderr: {line!r}"
        finally:
            exp.terminate()
            exp.wait(10)
            _end(fake)


def _once_as_nobody(world_dir: Path, pidfile: Path) -> tuple[float | None, str]:
    assert SETPRIV is not None
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    r = subprocess.run(
        [
            *(SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"),
            *(sys.executable, "-m", "ka_exporter", "--once", "--keepalived.pid-file", str(pidfile)),
            *(
                "--no-collector.config",
                "--no-collector.wire",
                "--no-collector.l2",
                "--no-collector.dbus",
                "--no-collector.dumps",
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    return sample(parse_metrics(r.stdout), "keepalived_up"), r.stderr


@needs_root
def test_unprivileged_the_pid_file_vouches_only_if_root_wrote_it_after_the_process_started(world_dir):
    """As nobody the namespace of a root process cannot be read: the pid file decides. Root's fresh pid
    file is believed; the same file dated before the process started (a recycled pid) is not, nor is
    one that another user owns."""
    fake = fake_keepalived(world_dir / "bin", 0)  # root's, in this namespace: only the pid file can tell
    try:
        pidfile = world_dir / "keepalived.pid"
        pidfile.write_text(f"{fake.pid}\n")
        up, err = _once_as_nobody(world_dir, pidfile)
        assert up == 1.0, err
        old = time.time() - 3600
        os.utime(pidfile, (old, old))
        up, err = _once_as_nobody(world_dir, pidfile)
        assert up == 0.0, err
        os.utime(pidfile)
        os.chown(pidfile, STRANGER, STRANGER)
        up, err = _once_as_nobody(world_dir, pidfile)
        assert up == 0.0, err
        assert "not owned by root" in err
    finally:
        _end(fake)


def test_parent_and_start_reads_what_psutil_reads(tmp_path: Path) -> None:
    """The process source's one read of /proc/PID/stat gives psutil's ppid() and create_time(), also
    for a command name with spaces and parentheses (the name is split off after its last ')')."""
    odd = tmp_path / "a (b) c"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    child = subprocess.Popen([str(odd), "30"])
    try:
        wait_until(lambda: psutil.Process(child.pid).name() == "a (b) c", 5.0, 0.01)
        for pid in (1, os.getpid(), child.pid):
            p = psutil.Process(pid)
            assert parent_and_start(pid) == (p.ppid(), p.create_time())
    finally:
        child.kill()
        child.wait()
    assert parent_and_start(child.pid) is None  # reaped: gone
