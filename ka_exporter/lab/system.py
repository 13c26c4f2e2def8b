"""The lab's contact with the host: commands (`ip`, `nft`), preconditions, and processes it started.

A process is identified by (pid, start time from /proc/PID/stat), so a recycled pid is never signalled.
A zombie counts as gone: keepalived started by a CLI call that has since exited is reparented to pid 1,
which may reap it late.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class LabError(RuntimeError):
    """A lab operation failed; the message is one line (plus log tails where they explain it)."""


def find_tool(name: str, package: str) -> str:
    """Absolute path of `name`, looking in sbin directories too; LabError says how to install it.

    KA_LAB_KEEPALIVED=/path/to/keepalived runs another keepalived build (e.g. a self-built 2.4.x) in the lab.
    """
    if name == "keepalived" and os.environ.get("KA_LAB_KEEPALIVED"):
        override = os.environ["KA_LAB_KEEPALIVED"]
        if not os.access(override, os.X_OK):
            raise LabError(
                f"keepalived is not installed: apt-get install keepalived ({override} is not executable)"
            )
        return override
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")
    if path is None:
        raise LabError(f"{name} is not installed: apt-get install {package}")
    return path


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, keepalived): run it as root")


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 10.0) -> str:
    """Run a command and return its stdout; on failure LabError names the command and its last error line."""
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise LabError(f"{' '.join(argv)}: {reason}")
    return proc.stdout


def ip_batch(ip: str, commands: Sequence[str], netns: str | None = None) -> None:
    """Run several `ip` commands in one process (`ip [-n NS] -batch -`)."""
    argv = [ip] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, stdin="\n".join(commands) + "\n")


class Stat(NamedTuple):
    state: str  # "R", "S", ... "Z" for a zombie
    pgrp: int
    start_time: int  # clock ticks since boot


def proc_stat(pid: int | str) -> Stat | None:
    """State, process group and start time of `pid`, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return Stat(fields[0], int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def live(stat: Stat | None) -> bool:
    return stat is not None and stat.state not in "ZXx"


def group_alive(pgid: int) -> bool:
    """True while a (non-zombie) process of process group `pgid` runs."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(entry.name)
            if stat is not None and stat.pgrp == pgid and live(stat):
                return True
    return False


@dataclass
class Proc:
    """A process the lab started: pid plus start time; `popen` when this Python process is its parent."""

    pid: int
    start_time: int
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    signalled: bool = field(default=False, compare=False)  # a stop signal was sent

    def alive(self) -> bool:
        """True while the very process we started runs (a zombie or a recycled pid is not alive)."""
        if self.popen is not None and self.popen.poll() is not None:
            return False
        stat = proc_stat(self.pid)
        return live(stat) and stat is not None and stat.start_time == self.start_time

    def send(self, sig: int, group: bool = False) -> None:
        """Send `sig` to the process (or its whole process group, which it leads) if it is still ours."""
        if not self.alive():
            return
        self.signalled = True
        try:
            if group and os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> bool:
        """Wait until the process is gone (or a zombie); reap it when it is our child. True if it is gone."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=min(0.02, max(deadline - time.monotonic(), 0.001)))
            if not self.alive():
                return True
            if time.monotonic() >= deadline:
                return False
            if self.popen is None:
                time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal the process (SIGKILL goes to its whole process group), then `finish()`."""
        self.send(sig, group=sig == signal.SIGKILL)
        self.finish(timeout)

    def finish(self, timeout: float) -> None:
        """Wait for an already signalled process and the rest of its process group (keepalived's VRRP
        child); whatever is still there after `timeout` gets SIGKILL. A no-op unless we signalled it."""
        if not self.signalled:
            return
        if not self.wait(timeout):
            self.send(signal.SIGKILL, group=True)
            self.wait(timeout)
        # The leader is gone, so its pid cannot be reused while members of its group remain.
        deadline = time.monotonic() + timeout
        while group_alive(self.pid):
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                deadline += timeout
            time.sleep(0.005)

    def to_json(self) -> list[int]:
        return [self.pid, self.start_time, int(self.signalled)]

    @classmethod
    def from_json(cls, value: object) -> Proc | None:
        """From `to_json()`'s [pid, start time, signalled]; None for anything else."""
        if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value):
            return cls(value[0], value[1], signalled=bool(value[2]))
        return None


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> Proc:
    """Start `argv` in its own session (so Ctrl-C in a terminal does not reach it), output appended to log."""
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    stat = proc_stat(popen.pid)
    # The child may already have exited (start time unknown): record 0, which never matches a live process.
    return Proc(popen.pid, stat.start_time if stat else 0, popen)


def log_tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"  ({path} is missing)"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in tail) if tail else f"  ({path} is empty)"
