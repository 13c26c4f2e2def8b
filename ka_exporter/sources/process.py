"""The process source: is keepalived running in the watched namespace, which pids, since when.

It adopts a process as "keepalived" only when it can verify it, and never on its name alone:

- it is keepalived (``/proc/PID/exe``, or the name when exe cannot be read) and not a zombie;
- it runs as root (keepalived needs it; a program called keepalived that another user started is not it);
- it is in the watched network namespace, judged by ``/proc/PID/ns/net``. Reading that link of a root
  process needs ptrace rights (root, or CAP_SYS_PTRACE). When it cannot be read, the process is adopted
  only through the pid file, and only if that file is a regular root-owned file (not a symlink) written
  no earlier than the process started (a pid recycled after keepalived died started later than its file
  was written). Without a pid file, an unverifiable process is ignored and counted, never adopted.
- a child of a keepalived parent that just died (orphaned for a moment before it exits) is never taken
  for a new parent;
- keepalived daemonizes: the process started forks the daemon and exits. A pass that saw the first
  process sees the daemon replace it; that is one start, not a restart (``linux.procfs.daemonized``).

An exit is seen as it happens: the source waits on a pidfd of the parent (poll), so ``keepalived_up``
drops at once rather than at the next poll. Processes stopped by SIGSTOP (State T) are reported as
frozen: keepalived is "up" but answers nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
from dataclasses import dataclass
from pathlib import Path

import psutil

from ka_exporter.linux import netns
from ka_exporter.linux.procfs import (
    PidFile,
    comm,
    daemonized,
    environ,
    is_keepalived,
    is_session_leader,
    parent_and_start,
    read_pid_file,
    status,
)
from ka_exporter.model import ProcessInfo
from ka_exporter.sources.base import Registration, Source, Wiring
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.process")

#: psutil's start time comes from /proc/stat's btime, whole seconds: allow that much (and a little).
START_SLACK = 2.0
KEEPALIVED_UID = 0


@dataclass(frozen=True, slots=True)
class _Proc:
    pid: int
    ppid: int
    create_time: float


def read_pidfile(path: Path) -> int | None:
    """The pid in a pid file, or None when absent, not a regular file or not a plausible pid."""
    return read_pid_file(path).pid


class ProcessSource(Source):
    """Watches keepalived's processes (see the module docstring for what is verified)."""

    name = "process"

    def __init__(self, store: Store, pid_file: Path, interval: float = 1.0) -> None:
        super().__init__(store)
        self.pid_file = pid_file
        self.interval = interval
        self._netns = netns.current_inode()
        self._parent: _Proc | None = None
        self._restarts = 0
        self._child_pids: tuple[int, ...] = ()
        self._orphans: frozenset[int] = frozenset()  # children of a parent that died: never a parent
        self._child_restarts = 0
        self._rejected: dict[int, str] = {}  # pid -> why it was not adopted (logged once per pid)
        self._seen_before = False
        self._wake: tuple[int, int] | None = None  # a pipe close() writes to: stop() wakes the wait

    def run(self) -> None:
        # The thread inherits the daemon's namespace; remember it from inside the thread.
        self._netns = netns.current_inode()
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake = (rfd, wfd)
        try:
            while not self.stopping:
                self.run_once()
                if not self._wait_exit(self.interval):
                    break
        finally:
            self._wake = None
            os.close(rfd)
            os.close(wfd)

    def close(self) -> None:
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")

    def _wait_exit(self, timeout: float) -> bool:
        """Sleep up to `timeout`, waking at once if the parent exits (pidfd). False when stopping."""
        parent = self._parent
        fd = -1
        if parent is not None:
            try:
                fd = os.pidfd_open(parent.pid)
            except OSError:
                fd = -1
            if fd >= 0 and self._proc(parent.pid) != parent:
                os.close(fd)  # gone or recycled between the probe and the open: look again now
                return not self.stopping
        if fd < 0:
            return self.sleep(timeout)
        try:
            # One wakeup per interval: the parent's exit, stop() (through the pipe close() writes
            # to) or the timeout. Before, a quarter-second step for stop() woke the thread 4 times
            # a second for nothing.
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if self._wake is not None:
                poller.register(self._wake[0], select.POLLIN)
            if self.stopping:
                return False
            poller.poll(int(timeout * 1000))
            return not self.stopping
        finally:
            os.close(fd)

    def unexpected(self, exc: Exception) -> str:  # psutil races (process gone mid-read) are not fatal
        return f"process: cannot read the process table: {type(exc).__name__}: {exc}"

    def poll(self) -> None:
        info = self._probe()
        self.store.set_process(info)
        if info.pidfile_problem:
            self.fail(info.pidfile_problem)
        else:
            self.ok()

    # -- internals --------------------------------------------------------------------------------

    def _probe(self) -> ProcessInfo:
        problem: str | None = None
        parent: _Proc | None = None
        pf = read_pid_file(self.pid_file)
        if pf.pid is not None:
            parent, problem = self._from_pidfile(pf)
        elif pf.problem is not None and "does not exist" not in pf.problem:
            problem = pf.problem
        if parent is None:
            parent = self._scan_parent()
        if parent is None:
            if self._parent is not None:
                log.info("keepalived exited: pid %d", self._parent.pid)
                self._orphans = frozenset(self._child_pids)
            self._parent = None
            self._child_pids = ()
            return ProcessInfo(
                running=False, restarts=self._restarts, pidfile_problem=problem, rejected=len(self._rejected)
            )
        old = self._parent
        if old is not None and (old.pid, old.create_time) != (parent.pid, parent.create_time):
            if self._handoff(old, parent):
                log.debug("keepalived daemonized: pid %d -> %d", old.pid, parent.pid)
            else:
                self._restarts += 1
                log.info("keepalived restarted: pid %d -> %d", old.pid, parent.pid)
        elif old is None and self._seen_before:
            self._restarts += 1
            log.info("keepalived started: pid %d", parent.pid)
        self._seen_before = True
        self._parent = parent
        self._orphans = frozenset()
        children = self._children(parent.pid)
        if self._child_pids and children and set(children) != set(self._child_pids):
            self._child_restarts += 1
        self._child_pids = children
        try:
            exe: str | None = os.readlink(f"/proc/{parent.pid}/exe")
        except OSError:
            exe = None
        stopped = tuple(
            p for p in (parent.pid, *children) if (st := status(p)) is not None and st.state in ("T", "t")
        )
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
            stopped_pids=stopped,
            rejected=len(self._rejected),
        )

    def _handoff(self, old: _Proc, new: _Proc) -> bool:
        """True when NEW is the daemon OLD forked as it daemonized (see `linux.procfs.daemonized`)."""
        return daemonized(
            old.create_time, self._child_pids, new.pid, new.create_time, is_session_leader(new.pid)
        )

    def _from_pidfile(self, pf: PidFile) -> tuple[_Proc | None, str | None]:
        """The parent the pid file names, if it checks out; else (None, why not, when worth saying)."""
        pid = pf.pid
        if pid is None:
            return None, pf.problem
        if not is_keepalived(pid):
            if psutil.pid_exists(pid):
                return None, (
                    f"pid file {self.pid_file} names pid {pid} ({comm(pid)}), which is not keepalived;"
                    " ignoring it"
                )
            return None, None  # stale: keepalived died (SIGKILL leaves its pid file)
        why = self._untrusted(pid)
        if why is None:
            return self._proc(pid), None
        if why != "netns unknown":
            return None, f"pid file {self.pid_file} names pid {pid}, {why}; ignoring it"
        # The namespace cannot be read: trust the pid file only if keepalived (root) wrote it after
        # this process started.
        proc = self._proc(pid)
        if proc is None:
            return None, None
        if pf.uid != KEEPALIVED_UID:
            return None, f"pid file {self.pid_file} is not owned by root; not trusting pid {pid}"
        if pf.mtime is not None and proc.create_time > pf.mtime + START_SLACK:
            return None, None  # started after the file was written: a recycled pid, keepalived is gone
        return proc, None

    def _untrusted(self, pid: int) -> str | None:
        """None if PID passes the owner and namespace checks, else a short reason."""
        st = status(pid)
        if st is None:
            return "which is gone"
        if st.uid != KEEPALIVED_UID:
            return f"which runs as uid {st.uid}, not root"
        try:
            same = os.stat(f"/proc/{pid}/ns/net").st_ino == self._netns
        except PermissionError:
            return "netns unknown"  # needs ptrace access (root or CAP_SYS_PTRACE)
        except OSError:
            return "which is gone"
        return None if same else "which is in another network namespace"

    @staticmethod
    def _proc(pid: int) -> _Proc | None:
        got = parent_and_start(pid)  # as psutil's ppid() and create_time(), one read of /proc/PID/stat
        return None if got is None else _Proc(pid, got[0], got[1])

    def _reject(self, pid: int, why: str) -> None:
        if pid not in self._rejected:
            self._rejected[pid] = why
            if why == "netns unknown":
                why = (
                    "its network namespace cannot be read (needs root or CAP_SYS_PTRACE) and no pid file"
                    " vouches for it"
                )
            # Another namespace's keepalived is normal (containers, the lab): not worth an info line.
            level = logging.DEBUG if "another network namespace" in why else logging.INFO
            log.log(level, "not adopting keepalived candidate pid %d (%s): %s", pid, comm(pid), why)

    def _scan_parent(self) -> _Proc | None:
        # Fast path: the parent we know is still there.
        known = self._parent
        if known is not None and is_keepalived(known.pid) and self._untrusted(known.pid) is None:
            again = self._proc(known.pid)
            if again is not None and again.create_time == known.create_time:
                return again
        found = [p for pid in _named_keepalived() if (p := self._proc(pid)) is not None]
        ka_pids = {p.pid for p in found}
        live = {p.pid for p in found}
        self._rejected = {pid: why for pid, why in self._rejected.items() if pid in live}
        # The children of a parent that died (the one we knew, or the last one seen) are orphans
        # until they exit: never a new parent. keepalived's VRRP and checker children stay in their
        # parent's session; only the daemon forked as keepalived daemonized leads its own.
        orphans = self._orphans if known is None else self._orphans | set(self._child_pids)
        parents: list[_Proc] = []
        for p in found:
            if p.ppid in ka_pids or not is_keepalived(p.pid):
                continue
            if p.pid in orphans and not is_session_leader(p.pid):
                continue
            why = self._untrusted(p.pid)
            if why is None:
                parents.append(p)
            else:
                self._reject(p.pid, why)
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


def _named_keepalived() -> list[int]:
    """The pids whose command name is "keepalived", from /proc/PID/comm.

    This runs every second while no keepalived is found (stopped, or not started yet).
    psutil.process_iter built a Process object and parsed /proc/PID/stat for every process on the
    host: 12 ms per scan with 118 processes. One read of a 16-byte file each is enough to find the few
    worth a closer look (the checks that follow decide; a name alone adopts nothing).
    """
    pids: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/comm", os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile
        try:
            name = os.read(fd, 32)
        except OSError:
            continue
        finally:
            os.close(fd)
        if name == b"keepalived\n":
            pids.append(int(entry))
    return pids


def build(w: Wiring) -> ProcessSource:
    return ProcessSource(w.store, w.settings.keepalived_pid_file)


REGISTRATION = Registration("process", "keepalived's processes", 10, build, parts=("host:collect_process",))
