"""Discovery (multi-namespace mode, `--discover`): every keepalived on the host, with where it lives.

Once a second (`Discoverer.scan`) the process table is read: a process is a keepalived parent when
its comm and its binary (/proc/PID/exe) say keepalived, it runs as root, and its parent is not a
keepalived (that would be a VRRP or checker child). For each one:

- its network namespace: the inode of /proc/PID/ns/net, named after the /run/netns entry with that
  inode (`ip netns add` makes them), `host` when it is the exporter's own, else `inode:N`
  (a container runtime's namespace without a name);
- keepalived.conf, its pid file and --config-id from its command line (keepalived's defaults when
  absent), and TMPDIR (where it writes its dumps) from /proc/PID/environ;
- its keepalived children (the VRRP, checker and BFD processes).

Reading another process's ns links and environment needs root or CAP_SYS_PTRACE; a process whose
namespace cannot be read is skipped (and counted in `skipped`). Paths are as the process sees them;
the wiring reads them through /proc/PID/root, so a keepalived in another mount namespace (a
container) is read as it sees its own files. The pid is the one this exporter's pid namespace sees
(the host's, under hostPID); the pid file says the one keepalived's own pid namespace gives it (in a
container often 1 or 2), so the wiring takes keepalived's pid from here, never from the pid file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ka_exporter.linux.procfs import environ, is_keepalived, is_session_leader, status
from ka_exporter.store.fleet import Daemon

log = logging.getLogger("ka_exporter.sources.discovery")

DEFAULT_CONFIG = "/etc/keepalived/keepalived.conf"
DEFAULT_PID_FILE = "/run/keepalived.pid"
NETNS_RUN_DIR = "/run/netns"
FULL_SCAN_EVERY = 30  # scans between two reads of every process (see Discoverer.scan)

# keepalived's options that take a value (getopt_long in keepalived/core/main.c), by what we need.
_OPTIONS = {
    "-f": "config",
    "--use-file": "config",
    "-p": "pid_file",
    "--pid": "pid_file",
    "-i": "config_id",
    "--config-id": "config_id",
}
# other options with a separate value, so "-r /x" is not taken for an argument of ours
_OTHER_VALUED = {"-r", "--vrrp_pid", "-c", "--checkers_pid", "-b", "--bfd_pid", "-S", "--log-facility"}


def parse_cmdline(argv: Sequence[str]) -> dict[str, str]:
    """keepalived's config, pid_file and config_id from its argv (only those given)."""
    out: dict[str, str] = {}
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and "=" in arg:
            opt, value = arg.split("=", 1)
            if opt in _OPTIONS:
                out[_OPTIONS[opt]] = value
            continue
        if arg in _OPTIONS or arg in _OTHER_VALUED:
            if i < len(args):
                if arg in _OPTIONS:
                    out[_OPTIONS[arg]] = args[i]
                i += 1
            continue
        if len(arg) > 2 and arg[:2] in _OPTIONS and not arg.startswith("--"):
            out[_OPTIONS[arg[:2]]] = arg[2:]  # -f/etc/k.conf
    return out


def _stat_fields(pid: str) -> tuple[str, int, int] | None:
    """(comm, ppid, start time in ticks) from /proc/PID/stat, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    lpar, rpar = raw.find(b"("), raw.rfind(b")")
    fields = raw[rpar + 2 :].split()
    try:
        return raw[lpar + 1 : rpar].decode(errors="replace"), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def netns_names(run_dir: str = NETNS_RUN_DIR) -> dict[int, str]:
    """Inode -> name of every named network namespace (`ip netns list`)."""
    names: dict[int, str] = {}
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return names
    for entry in entries:
        try:
            names.setdefault(os.stat(entry.path).st_ino, entry.name)
        except OSError:
            continue  # being deleted
    return names


class Discoverer:
    """Finds keepalived parents (see the module docstring); `match` filters on the namespace name."""

    def __init__(self, match: str | None = None, proc: str = "/proc") -> None:
        self.match = re.compile(match) if match else None
        self.proc = proc
        self.host_inode = os.stat("/proc/self/ns/net").st_ino
        self.skipped = 0  # keepalived processes whose namespace could not be read, last scan
        self.scans = 0
        self._known: dict[tuple[int, int], Daemon] = {}  # (pid, start time) -> what was read of it
        self._names_mark: tuple[int, int] | None = None
        self._names_cache: dict[int, str] = {}
        self._last_names: dict[int, str] | None = None
        self._cache: dict[int, tuple[str, int, int, int]] = {}  # pid -> (comm, ppid, start, reads)
        self._children: set[tuple[int, int]] = set()  # (pid, start) of the daemons' children, last scan
        self._orphans: set[tuple[int, int]] = set()  # children of a daemon that died, until they exit

    def scan(self) -> list[Daemon]:
        procs: dict[int, tuple[int, int]] = {}  # keepalived pid -> (ppid, start time)
        # A process's comm changes only when it execs: a pid read twice (two scans in a row) as
        # something else is not read again until the next full scan, so a scan of a busy host reads a
        # few new processes, not all of them. `ip netns exec` forks and then execs keepalived: a pid
        # first read as "ip" is read again at the next scan.
        full = self.scans % FULL_SCAN_EVERY == 0
        self.scans += 1
        cache: dict[int, tuple[str, int, int, int]] = {}
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            kept = None if full else self._cache.get(pid)
            if kept is not None and kept[3] >= 2 and kept[0] != "keepalived":
                cache[pid] = kept
                continue
            got = _stat_fields(entry.name)
            if got is None:
                continue
            reads = kept[3] + 1 if kept is not None and kept[:3] == got else 1
            cache[pid] = (*got, reads)
            if got[0] == "keepalived":
                procs[pid] = (got[1], got[2])
        self._cache = cache
        names = self._names()
        found: list[Daemon] = []
        skipped = 0
        known: dict[tuple[int, int], Daemon | None] = {}
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _start) in procs.items():
            kids.setdefault(ppid, []).append(pid)
        # A child of a daemon that died is an orphan until it exits (keepalived's VRRP and checker
        # children notice their parent's death and stop): never a daemon of its own. They stay in their
        # parent's session; only the fork of a daemonizing keepalived leads its own (setsid).
        # A child is known by (pid, start time): a pid recycled into a new keepalived is not an orphan.
        children_now = {(c, procs[c][1]) for p, cs in kids.items() if p in procs for c in cs}
        were_children = self._children | self._orphans
        orphans: set[tuple[int, int]] = set()
        for pid, (ppid, start) in sorted(procs.items()):
            if ppid in procs:
                continue  # a child
            if (pid, start) in were_children and not is_session_leader(pid):
                orphans.add((pid, start))
                continue
            children = tuple(sorted(kids.get(pid, ())))
            # A daemon already read (same pid, same start) is not read again: its command line,
            # environment and namespace do not change while it runs; only its children do.
            daemon = self._known.get((pid, start)) if names is self._last_names else None
            if daemon is None:
                daemon = self._daemon(pid, start, children, names)
            elif daemon.children != children:
                daemon = replace(daemon, children=children)
            known[(pid, start)] = daemon
            if daemon is None:
                skipped += 1
            elif self.match is None or self.match.fullmatch(daemon.netns_name):
                found.append(daemon)
        self._known = {k: v for k, v in known.items() if v is not None}
        self._orphans = orphans
        self._children = children_now
        self._last_names = names
        self.skipped = skipped
        return found

    def _names(self) -> dict[int, str]:
        """netns_names(), read again only when /run/netns changed (a namespace added or deleted)."""
        try:
            st = os.stat(NETNS_RUN_DIR)
            mark = (st.st_mtime_ns, st.st_ino)
        except OSError:
            mark = None
        if mark is None or mark != self._names_mark:
            self._names_mark = mark
            self._names_cache = netns_names()
        return self._names_cache

    def _daemon(
        self, pid: int, start: int, children: tuple[int, ...], names: dict[int, str]
    ) -> Daemon | None:
        if not is_keepalived(pid):
            return None
        owner = status(pid)
        if owner is None or owner.uid != 0 or owner.state in ("Z", "X"):
            return None
        try:
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        opts = parse_cmdline(argv)
        name = "host" if inode == self.host_inode else names.get(inode, f"inode:{inode}")
        return Daemon(
            pid=pid,
            start_time=start,
            netns_inode=inode,
            netns_name=name,
            pid_file=opts.get("pid_file", DEFAULT_PID_FILE),
            config=opts.get("config", DEFAULT_CONFIG),
            tmpdir=environ(pid, "TMPDIR"),
            config_id=opts.get("config_id"),
            children=children,
        )
