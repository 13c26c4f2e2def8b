"""The process source: is keepalived running in the watched namespace, which pids, since when."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from ka_exporter import netns
from ka_exporter.model import ProcessInfo
from ka_exporter.procfs import comm, environ, is_keepalived
from ka_exporter.sources.base import Source
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.process")


@dataclass(frozen=True, slots=True)
class _Proc:
    pid: int
    ppid: int
    create_time: float


def read_pidfile(path: Path) -> int | None:
    """The pid in a pid file, or None when absent or not a number."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class ProcessSource(Source):
    """Watches keepalived's processes with psutil.

    The parent is taken from the pid file only if that pid really is keepalived; otherwise (missing,
    stale or foreign pid file) from a scan for a keepalived whose parent is not keepalived, limited
    to processes in the watched network namespace so that several keepalived on one host (the lab,
    containers) are told apart. A pid file naming another program is reported, never trusted.
    """

    name = "process"

    def __init__(self, store: Store, pid_file: Path, interval: float = 1.0) -> None:
        super().__init__(store)
        self.pid_file = pid_file
        self.interval = interval
        self._netns = netns.current_inode()
        self._parent: _Proc | None = None
        self._restarts = 0
        self._child_pids: tuple[int, ...] = ()
        self._child_restarts = 0

    def run(self) -> None:
        # The thread inherits the daemon's namespace; remember it from inside the thread.
        self._netns = netns.current_inode()
        super().run()

    def run_once(self) -> None:
        try:
            info = self._probe()
        except Exception as exc:  # psutil races (process gone mid-read) are not fatal
            self.fail(f"process: cannot read the process table: {exc}")
            return
        self.store.set_process(info)
        if info.pidfile_problem:
            self.fail(info.pidfile_problem)
        else:
            self.ok()

    # -- internals --------------------------------------------------------------------------------

    def _probe(self) -> ProcessInfo:
        problem: str | None = None
        parent: _Proc | None = None
        pid = read_pidfile(self.pid_file)
        if pid is not None:
            if is_keepalived(pid) and self._in_netns(pid):
                parent = self._proc(pid)
            elif psutil.pid_exists(pid) and not is_keepalived(pid):
                problem = (
                    f"pid file {self.pid_file} names pid {pid} ({comm(pid)}), which is not keepalived;"
                    " ignoring it"
                )
        if parent is None:
            parent = self._scan_parent()
        if parent is None:
            self._parent = None
            self._child_pids = ()
            return ProcessInfo(running=False, restarts=self._restarts, pidfile_problem=problem)
        old = self._parent
        if old is not None and (old.pid, old.create_time) != (parent.pid, parent.create_time):
            self._restarts += 1
            log.info("keepalived restarted: pid %d -> %d", old.pid, parent.pid)
        elif old is None and self._seen_before:
            self._restarts += 1
            log.info("keepalived started: pid %d", parent.pid)
        self._seen_before = True
        self._parent = parent
        children = self._children(parent.pid)
        if self._child_pids and children and set(children) != set(self._child_pids):
            self._child_restarts += 1
        self._child_pids = children
        try:
            exe: str | None = os.readlink(f"/proc/{parent.pid}/exe")
        except OSError:
            exe = None
        return ProcessInfo(
            running=True,
            pid=parent.pid,
            start_time=parent.create_time,
            vrrp_pids=children,
            restarts=self._restarts,
            child_restarts=self._child_restarts,
            exe=exe,
            tmpdir=environ(parent.pid, "TMPDIR"),
            pidfile_problem=problem,
        )

    _seen_before = False

    def _in_netns(self, pid: int) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == self._netns
        except PermissionError:
            # Reading another user's namespace link needs ptrace access: an unprivileged exporter
            # cannot tell, so it trusts the pid file and the name (one keepalived per host is the
            # normal case; several in namespaces need root to be told apart).
            return True
        except OSError:
            return False

    @staticmethod
    def _proc(pid: int) -> _Proc | None:
        try:
            p = psutil.Process(pid)
            return _Proc(pid, p.ppid(), p.create_time())
        except psutil.Error:
            return None

    def _scan_parent(self) -> _Proc | None:
        # Fast path: the parent we know is still there.
        known = self._parent
        if known is not None and is_keepalived(known.pid) and self._in_netns(known.pid):
            again = self._proc(known.pid)
            if again is not None and again.create_time == known.create_time:
                return again
        found: list[_Proc] = []
        ka_pids: set[int] = set()
        for p in psutil.process_iter(["pid", "ppid", "name", "create_time"]):
            if p.info["name"] != "keepalived":
                continue
            ka_pids.add(p.info["pid"])
            found.append(_Proc(p.info["pid"], p.info["ppid"], p.info["create_time"]))
        parents = [
            p for p in found if p.ppid not in ka_pids and is_keepalived(p.pid) and self._in_netns(p.pid)
        ]
        if not parents:
            return None
        return min(parents, key=lambda p: p.create_time)

    @staticmethod
    def _children(pid: int) -> tuple[int, ...]:
        # /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) names them directly; psutil's
        # children() reads the stat file of every process on the host, every second.
        pids: set[int] = set()
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                    pids.update(int(x) for x in fh.read().split())
        except FileNotFoundError:
            try:
                pids = {k.pid for k in psutil.Process(pid).children()}
            except psutil.Error:
                return ()
        except (OSError, ValueError):
            return ()
        return tuple(sorted(k for k in pids if is_keepalived(k)))
