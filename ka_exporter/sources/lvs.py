"""The lvs source: keepalived's health-checker view and the kernel's IPVS table, every `interval`.

- keepalived's view: the checker child writes `keepalived_check.data` (in keepalived's TMPDIR) when it
  gets SIGUSR1. The signal goes to the checker child (`checker_child`: its pid file, checked to name a
  child of keepalived), else to keepalived's parent, which passes it on to its children (the VRRP child
  then writes keepalived.data too). The file is 0600 root: reading it needs root (or keepalived's user).
- IPVS: generic netlink (family "IPVS") gives every service and destination with 64-bit counters and
  rates; the kernel answers it only with CAP_NET_ADMIN. Without it the source falls back to
  `/proc/net/ip_vs` (any user: weights and connections, no counters) and says so once.

A kernel without IPVS (no `/proc/net/ip_vs`) is one line: the source reports itself down with that
reason, keeps exporting keepalived's checker view, and the other sources are untouched.
"""

from __future__ import annotations

import errno
import logging
import os
import signal as signals
import socket
import stat
import time
from dataclasses import replace
from pathlib import Path

from ka_exporter.linux.procfs import status
from ka_exporter.linux.rtnl import netlink_dump
from ka_exporter.model import IpvsService, KeepalivedConfig, LvsView, VirtualServerView
from ka_exporter.parse import ipvs as nl
from ka_exporter.parse.checker import parse_check_data
from ka_exporter.parse.dumps import DumpError
from ka_exporter.settings import default
from ka_exporter.sources.base import Registration, Source, Wiring
from ka_exporter.sources.dumps import DumpRefusedError, read_dump
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.lvs")

CHECK_FILE = "keepalived_check.data"
PROC_IP_VS = Path("/proc/net/ip_vs")
NETLINK_GENERIC = 16
MAX_DUMP = 16 << 20


class IpvsNetlink:
    """Reads IPVS over generic netlink (the socket is opened per read, so no state goes stale)."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._seq = int(time.monotonic() * 1000) & 0xFFFFFF

    def _dump(self, sock: socket.socket, family: int, body: bytes) -> list[bytes]:
        self._seq += 1
        return netlink_dump(sock, family, body, self._seq)

    def read(self) -> tuple[IpvsService, ...]:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as sock:
            sock.settimeout(self.timeout)
            sock.bind((0, 0))
            family = nl.parse_family_id(self._dump(sock, nl.GENL_ID_CTRL, nl.family_body()))
            if family is None:
                raise nl.IpvsError("no IPVS generic netlink family (ip_vs not loaded?)")
            services: list[IpvsService] = []
            for service, ident in nl.parse_services(self._dump(sock, family, nl.service_body())):
                af = socket.AF_INET6 if service.key.startswith("[") else socket.AF_INET
                dests = nl.parse_dests(self._dump(sock, family, nl.dest_body(ident)), af)
                services.append(replace(service, dests=tuple(sorted(dests, key=lambda d: d.key))))
            return tuple(sorted(services, key=lambda s: (s.key, s.protocol)))


def read_file(path: Path) -> bytes:
    """A dump file's bytes: a regular file, not followed through a symlink, size-capped."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        if st.st_size > MAX_DUMP:
            raise OSError(errno.EFBIG, f"{path} is larger than {MAX_DUMP} bytes")
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class LvsSource(Source):
    name = "lvs"

    def __init__(
        self,
        store: Store,
        dumps_dir: Path | None = None,
        *,
        signal: bool = default("keepalived_signal"),
        interval: float = default("lvs_interval"),
        netlink: IpvsNetlink | None = None,
        proc_path: Path = PROC_IP_VS,
        wait: float = 3.0,
        pid_file: Path | None = None,
    ) -> None:
        super().__init__(store)
        self.pid_file = pid_file
        self.dumps_dir = dumps_dir
        self.signal = signal
        self.interval = interval
        self.netlink = netlink if netlink is not None else IpvsNetlink()
        self.proc_path = proc_path
        self.wait = wait
        self._view = LvsView()
        self._said_proc = False

    # -- IPVS -------------------------------------------------------------------------------------

    def _read_ipvs(self) -> tuple[tuple[IpvsService, ...] | None, str | None, str | None]:
        """(services, via, error)."""
        if not self.proc_path.exists():
            return None, None, "this kernel has no IPVS (no /proc/net/ip_vs): no LVS table or counters"
        try:
            return self.netlink.read(), "netlink", None
        except (OSError, nl.IpvsError) as exc:
            reason = str(exc)
        if not self._said_proc:
            log.warning(
                "lvs: IPVS over netlink failed (%s; it needs CAP_NET_ADMIN): reading %s, no counters",
                reason,
                self.proc_path,
            )
            self._said_proc = True
        try:
            return nl.parse_proc_ip_vs(read_file(self.proc_path), str(self.proc_path)), "proc", None
        except (OSError, nl.IpvsError) as exc:
            return None, None, f"IPVS: {exc}"

    # -- keepalived's checker view ----------------------------------------------------------------

    def _checker_target(self) -> tuple[int | None, Path]:
        snap = self.store.snapshot()
        proc = snap.process
        pid = None
        if proc is not None and proc.running and proc.pid is not None:
            # The checker child alone when known; else the parent, which passes SIGUSR1 on to its
            # children (the VRRP child then writes keepalived.data too, and keepalived logs it).
            pid = proc.checker_pids[0] if proc.checker_pids else checker_child(proc.pid, self.pid_file)
            pid = pid or proc.pid
        directory = self.dumps_dir or Path((proc.tmpdir if proc is not None else None) or "/tmp")
        return pid, directory / CHECK_FILE

    def _read_checker(self) -> tuple[tuple[VirtualServerView, ...] | None, str | None]:
        pid, path = self._checker_target()
        if not self.signal:
            return self._parse_checker(path)  # only what is there (a support bundle)
        if pid is None:
            return None, None  # keepalived (or its checker child) is not running: nothing to ask
        owner = status(pid)
        if owner is None or owner.uid != 0:
            # never signal what is not the root daemon (a pid file naming another user's "keepalived")
            return None, f"keepalived (pid {pid}) does not run as root: not signalled for its checker dump"
        if path.is_symlink():  # keepalived (root) would write through it: never ask it to
            return (
                None,
                f"{path} is a symlink: not signalling keepalived (remove it so keepalived can write there)",
            )
        before = _stamp(path)
        try:
            os.kill(pid, signals.SIGUSR1)
        except OSError as exc:
            return None, f"cannot signal keepalived (pid {pid}) for its checker dump: {exc.strerror}"
        deadline = time.monotonic() + self.wait
        error = f"{path}: no fresh dump within {self.wait:g} s of SIGUSR1"
        last: tuple[int, int, int] | None = None
        while True:
            stamp = _stamp(path)
            # keepalived rewrites the file in place: parse once it changed and then held still
            if stamp is not None and stamp != before and stamp == last:
                checker, problem = self._parse_checker(path)
                if problem is None:
                    return checker, None
                error = problem  # keepalived may still be writing it: try again until the deadline
            last = stamp
            if time.monotonic() >= deadline or not self.sleep(0.05):
                return None, error

    @staticmethod
    def _parse_checker(path: Path) -> tuple[tuple[VirtualServerView, ...] | None, str | None]:
        """The dump, read by the dumps source's rules (no symlink, a regular file owned by root or this
        exporter's user, in a directory others cannot write to unless sticky, size-capped)."""
        try:
            raw = read_dump(path, frozenset({0, os.geteuid()}), MAX_DUMP)
            return parse_check_data(raw, str(path)), None
        except (DumpError, DumpRefusedError) as exc:
            return None, str(exc)
        except OSError as exc:
            return None, f"{path}: {exc.strerror or exc}"

    # -- the pass ---------------------------------------------------------------------------------

    def poll(self) -> None:
        # keepalived first, IPVS second: keepalived changes IPVS before its dump says so, so the IPVS
        # read is never older than the state it is checked against.
        checker, checker_error = self._read_checker()
        services, via, ipvs_error = self._read_ipvs()
        now = self.store.clock()
        view = self._view
        if services is not None:
            view = replace(view, ipvs=services, ipvs_time=now, ipvs_via=via, ipvs_error=None)
        else:
            view = replace(
                view,
                ipvs_error=ipvs_error,
                ipvs=None if ipvs_error and "no IPVS" in ipvs_error else view.ipvs,
            )
        if checker_error is None:
            view = replace(
                view, checker=checker, checker_time=now if checker is not None else None, checker_error=None
            )
        else:
            view = replace(view, checker_error=checker_error)  # last good view kept (stale)
        self._view = view
        self.store.set_lvs(view)
        errors = [e for e in (ipvs_error, checker_error) if e]
        if errors:
            self.fail("; ".join(errors))
        else:
            self.ok()


def checker_child(parent: int, pid_file: Path | None) -> int | None:
    """The pid of keepalived's checker child: from its pid file (`-c`/`--checkers_pid` on the parent's
    command line, else `checkers.pid` next to the parent's pid file, keepalived's default), trusted only
    if that process really is a child of `parent`."""
    try:
        argv = Path(f"/proc/{parent}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    path: str | None = None
    for i, arg in enumerate(argv):
        if arg.startswith("--checkers_pid="):
            path = arg.split("=", 1)[1]
        elif arg in ("-c", "--checkers_pid") and i + 1 < len(argv):
            path = argv[i + 1]
    if path is None:
        path = str((pid_file.parent if pid_file is not None else Path("/run")) / "checkers.pid")
    try:
        pid = int(Path(path).read_text().split()[0])
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError, IndexError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return pid if len(fields) > 1 and fields[1] == str(parent) else None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def lvs_wanted(config: KeepalivedConfig | None) -> bool:
    """The lvs source runs only when keepalived.conf was read and has virtual_server blocks.

    Without this, every VRRP-only keepalived (most of them) would show a permanently failed lvs source.
    """
    return config is not None and bool(config.virtual_servers)


def build(w: Wiring) -> LvsSource | None:
    if not lvs_wanted(w.config):
        return None
    s = w.settings
    return LvsSource(
        w.store,
        s.keepalived_dumps_dir,
        signal=s.keepalived_signal,
        interval=s.lvs_interval,
        pid_file=s.keepalived_pid_file,
    )


REGISTRATION = Registration(
    "lvs",
    "LVS: keepalived's checker view and IPVS (runs only when keepalived.conf has `virtual_server` "
    "blocks), see [LVS](#lvs-virtual-and-real-servers)",
    90,
    build,
    parts=("lvs:collect_lvs",),
    uses=("config",),
)
