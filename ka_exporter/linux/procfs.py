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


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first), None if PID is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces or ')': split after the last ')'
    return raw[raw.rfind(b")") + 2 :].split()


def parent_and_start(pid: int) -> tuple[int, float] | None:
    """(ppid, start time in seconds since the epoch) of a process, None if it is gone: psutil's
    ppid() and create_time() (starttime / CLK_TCK + btime), from one read of /proc/PID/stat instead
    of psutil's two, and without reading /proc/stat for btime every time."""
    fields = _stat(pid)
    try:
        return None if fields is None else (int(fields[1]), int(fields[19]) / _CLOCK_TICKS + boot_time())
    except (IndexError, ValueError):
        return None


def is_session_leader(pid: int) -> bool:
    """True if PID leads its session (/proc/PID/stat's session field is PID): what keepalived's
    daemon is once it has daemonized (core/daemon.c xdaemon calls setsid() in the fork)."""
    fields = _stat(pid)
    try:
        return fields is not None and int(fields[3]) == pid
    except (IndexError, ValueError):
        return False


#: keepalived daemonizes (core/daemon.c, xdaemon): the process started forks; the fork calls setsid()
#: and carries on as the daemon (it writes the pid file and forks the VRRP and checker children); the
#: first process exits. A look between the fork and that exit sees the first process as keepalived's
#: parent, and the daemon as its replacement a moment later: one start, not a restart. Seconds from the
#: first process's start to the daemon's.
DAEMONIZE_WINDOW = 2.0


def daemonized(
    old_start: float, old_children: tuple[int, ...], new_pid: int, new_start: float, new_leads: bool
) -> bool:
    """True when a new keepalived parent is the daemon its predecessor forked as it daemonized, not a
    new start: the new one leads its own session, started within DAEMONIZE_WINDOW of the old one, and
    the old one was never seen with a keepalived child other than it (a daemon that ran had VRRP or
    checker children; one of those left orphaned by its parent's death is no new parent: it does not
    lead a session either)."""
    return new_leads and set(old_children) <= {new_pid} and 0.0 <= new_start - old_start < DAEMONIZE_WINDOW
