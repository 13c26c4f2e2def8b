"""The lvs source on this machine's own kernel (no IPVS): its netlink read fails for real, /proc and the
checker dump are files (a support bundle's copies), and the source says what it could not read."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ka_exporter.linux.procfs import status
from ka_exporter.model import ProcessInfo
from ka_exporter.sources.lvs import LvsSource, checker_child, read_file
from ka_exporter.store import Store
from ka_exporter.verdicts.lvs import lvs_problems

LVS = Path(__file__).parent / "fixtures" / "lvs-2.2.7-uml"


def source(tmp_path: Path, phase: str, proc: Path | None = None) -> tuple[Store, LvsSource]:
    shutil.copy(LVS / phase / "keepalived_check.data", tmp_path / "keepalived_check.data")
    store = Store(hostname="lb1")
    return store, LvsSource(
        store, tmp_path, signal=False, proc_path=proc or LVS / phase / "proc-net-ip_vs.txt"
    )


def test_netlink_refused_falls_back_to_proc_and_the_checker_dump_is_read(tmp_path: Path) -> None:
    store, src = source(tmp_path, "after")
    src.run_once()
    snap = store.snapshot()
    assert snap.lvs is not None
    assert snap.lvs.ipvs_via == "proc"  # this kernel has no IPVS netlink family
    assert snap.lvs.checker is not None and [v.key for v in snap.lvs.checker] == [
        "10.140.0.100:80",
        "10.140.0.100:8080",
    ]
    assert lvs_problems(snap.lvs) == []
    health = snap.source("lvs")
    assert health is not None and health.up


def test_no_ipvs_in_the_kernel_is_one_line_and_the_checker_view_stays(tmp_path: Path) -> None:
    store, src = source(tmp_path, "before", proc=tmp_path / "no-such-proc-file")
    src.run_once()
    snap = store.snapshot()
    health = snap.source("lvs")
    assert health is not None and not health.up
    assert health.error == "this kernel has no IPVS (no /proc/net/ip_vs): no LVS table or counters"
    assert snap.lvs is not None and snap.lvs.ipvs is None and snap.lvs.checker is not None


def test_a_broken_checker_dump_keeps_the_last_good_view(tmp_path: Path) -> None:
    store, src = source(tmp_path, "before")
    src.run_once()
    good = store.snapshot().lvs
    (tmp_path / "keepalived_check.data").write_text(
        "------< LVS Topology >------\n ------< Virtual server >------\n"
    )
    src.run_once()
    snap = store.snapshot()
    assert snap.lvs is not None and good is not None and snap.lvs.checker == good.checker  # stale, kept
    health = snap.source("lvs")
    assert (
        health is not None
        and not health.up
        and "virtual server without its address line" in (health.error or "")
    )


def test_read_file_refuses_symlinks_and_non_regular_files(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(LVS / "before" / "keepalived_check.data")
    with pytest.raises(OSError):
        read_file(tmp_path / "link")
    with pytest.raises(OSError):
        read_file(tmp_path)


def test_checker_child_is_found_by_its_pid_file_and_must_be_a_child(tmp_path: Path) -> None:
    """keepalived's default: checkers.pid next to the parent's pid file; a pid that is not the parent's
    child (a stale file, a recycled pid) is not trusted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "checkers.pid"
    script = tmp_path / "parent.py"  # a stand-in parent: one child, its pid where keepalived would write it
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script), str(pidfile)])
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the test's parent never wrote its child's pid"
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert checker_child(parent.pid, tmp_path / "keepalived.pid") == child
        pidfile.write_text(str(parent.pid))  # not a child of itself
        assert checker_child(parent.pid, tmp_path / "keepalived.pid") is None
        pidfile.unlink()
        assert checker_child(parent.pid, tmp_path / "keepalived.pid") is None
    finally:
        if "child" in locals():
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()


def _stand_in(tmp_path: Path, *prefix: str) -> subprocess.Popen[bytes]:
    """A process standing where keepalived's parent would: SIGUSR1 kills it (sleep's default), so it
    stays alive only if the source never signalled it."""
    return subprocess.Popen([*prefix, "sleep", "30"])


@pytest.mark.parametrize("case", ["not_root", "symlink"])
def test_never_signals_what_it_must_not(tmp_path: Path, case: str) -> None:
    store = Store(hostname="lb1")
    if case == "not_root":
        proc = _stand_in(tmp_path, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        want = "does not run as root: not signalled"
    else:
        proc = _stand_in(tmp_path)
        (tmp_path / "keepalived_check.data").symlink_to("/etc/passwd")
        want = "is a symlink: not signalling keepalived"
    try:
        deadline = time.monotonic() + 10
        while (st := status(proc.pid)) is None or (case == "not_root" and st.uid != 65534):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        store.set_process(ProcessInfo(running=True, pid=proc.pid))
        src = LvsSource(
            store, tmp_path, signal=True, proc_path=LVS / "before" / "proc-net-ip_vs.txt", wait=0.5
        )
        src.run_once()
        health = store.snapshot().source("lvs")
        assert health is not None and not health.up and want in (health.error or ""), health
        time.sleep(0.2)
        assert proc.poll() is None  # still alive: never signalled
    finally:
        proc.kill()
        proc.wait()
