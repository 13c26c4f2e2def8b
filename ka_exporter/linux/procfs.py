"""Small /proc readers shared by the sources: is a pid keepalived, its comm, owner, state, environment;
and the one pid file reader (a number that cannot be a pid is refused, never passed to the kernel)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

_PID_MAX_FALLBACK = 4_194_304  # the kernel's hard limit (PID_MAX_LIMIT on 64-bit)


def pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return _PID_MAX_FALLBACK


@dataclass(frozen=True, slots=True)
class PidFile:
    """What a pid file says, with what is needed to judge it (owner, when it was written)."""

    pid: int | None  # None: absent, unreadable or not a pid (then `problem` says why)
    uid: int | None = None
    mtime: float | None = None
    problem: str | None = None


def read_pid_file(path: Path) -> PidFile:
    """Read a pid file without following a symlink; only a regular file holding 1..pid_max counts."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return PidFile(None, problem=f"pid file {path} does not exist (is keepalived running?)")
    except OSError as exc:
        return PidFile(None, problem=f"cannot read pid file {path}: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return PidFile(None, problem=f"pid file {path} is not a regular file")
        raw = os.read(fd, 64)
    except OSError as exc:
        return PidFile(None, problem=f"cannot read pid file {path}: {exc.strerror or exc}")
    finally:
        os.close(fd)
    text = raw.decode("ascii", errors="replace").strip()
    # A 20-digit number must not reach psutil or pidfd_open (OverflowError): judged as text first.
    if not text.isdigit() or len(text) > 10 or not 0 < int(text) <= pid_max():
        return PidFile(None, st.st_uid, st.st_mtime, f"pid file {path} does not hold a pid")
    return PidFile(int(text), st.st_uid, st.st_mtime)


def is_keepalived(pid: int) -> bool:
    """True if PID is a live (not zombie) keepalived process, judged by /proc/PID/exe or comm."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            head = f.read(512)
    except OSError:
        return False
    if "\nState:\tZ" in head or "\nState:\tX" in head:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    if exe:
        return os.path.basename(exe.removesuffix(" (deleted)")) == "keepalived"
    return head.startswith("Name:\tkeepalived\n")


@dataclass(frozen=True, slots=True)
class Status:
    """The fields of /proc/PID/status the process source judges by."""

    state: str  # one letter: R S D T t Z X I ...
    uid: int  # real uid
    euid: int


def status(pid: int) -> Status | None:
    """State and owner of PID (readable for any process, privileged or not), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read(4096)
    except OSError:
        return None
    state = "?"
    uids: list[int] = []
    for line in text.splitlines():
        if line.startswith("State:"):
            state = line[6:].strip()[:1] or "?"
        elif line.startswith("Uid:"):
            try:
                uids = [int(x) for x in line[4:].split()]
            except ValueError:
                return None
            break
    if len(uids) < 2:
        return None
    return Status(state, uids[0], uids[1])


def comm(pid: int) -> str:
    """The process's command name, "gone" when there is no such process."""
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip() or "?"
    except OSError:
        return "gone"


def environ(pid: int, name: str) -> str | None:
    """One variable of a process's environment (needs the same uid or CAP_SYS_PTRACE)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_boot_time: float | None = None


def boot_time() -> float:
    """btime of /proc/stat: the boot time in whole seconds (read once; it does not change)."""
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    _boot_time = float(line.split()[1])
                    break
            else:
                raise OSError("no btime in /proc/stat")
    return _boot_time


def parent_and_start(pid: int) -> tuple[int, float] | None:
    """(ppid, start time in seconds since the epoch) of a process, None if it is gone: psutil's
    ppid() and create_time() (starttime / CLK_TCK + btime), from one read of /proc/PID/stat instead
    of psutil's two, and without reading /proc/stat for btime every time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces or ')': split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[19]) / _CLOCK_TICKS + boot_time()
    except (IndexError, ValueError):
        return None
