"""The dump source: keepalived's ``.data``/``.stats``/``.json`` dumps, asked for in the background.

Never on the scrape path: a dump makes keepalived's VRRP process stop and write files, so it is refreshed
every ``interval`` seconds (default 15) and when :meth:`DumpSource.request_refresh` is called (e.g. by the
D-Bus source after a state change), at most once per ``min_gap`` seconds. A scrape only renders the store.

How a refresh goes
------------------
1. Ask for fresh dumps. With a ``requester`` (the D-Bus source's ``request_dump``: PrintData/PrintStats,
   which return once the file is written) for data and stats; otherwise, or when it fails, by signalling
   keepalived's parent. The parent is taken from the pid file and signalled only if ``/proc/PID`` says it
   is keepalived (exe or comm, not a zombie), through a pidfd opened *before* the check so that a recycled
   pid is never signalled. A pid file naming another program is reported in one line, never signalled.
   Signal numbers come from ``<keepalived binary> --signum=DATA|STATS|JSON`` (the binary of the running
   process, once per binary), else 10 / 12; JSON is asked for only when the binary says it supports it:
   SIGRTMIN+2 is not handled by a keepalived built without JSON, and its default action would kill it.
2. Wait until each file is fresh (changed since just before the request) and complete (inotify
   IN_CLOSE_WRITE, or size and mtime stable across two looks when inotify is unavailable), with a timeout.
3. Parse (:mod:`ka_exporter.parse.dumps`), combine by instance name, publish with
   ``store.set_instances(views, "dumps")``. Any problem marks the source failed with a one-line reason;
   the store keeps the last good views (stale, and the health record says so).

JSON or data+stats: JSON carries state, priorities, VIPs and counters in one structured file, but not the
track script / interface status nor the sync group, which only ``.data`` has. So a refresh by signal asks
for JSON + data when keepalived supports JSON and data + stats otherwise (1.3, builds without JSON, or
when no keepalived.json appeared after the JSON signal: then it falls back and remembers that for this
pid). With a requester it asks D-Bus for data + stats (D-Bus has no JSON method) and sends no signal
unless a D-Bus call fails.

Where the files are: ``dumps_dir`` if given; else keepalived's ``TMPDIR`` (from ``/proc/PID/environ``) and
``/tmp`` (keepalived < 2.2 ignores TMPDIR), seen through ``/proc/PID/root`` when keepalived runs in another
mount namespace (systemd PrivateTmp, containers). File names: ``keepalived.data`` or, with
``data_use_instance``, ``keepalived_<netns>_<instance>.data``. keepalived in another network namespace
writes the same files (only the path matters).

``signal=False`` (``--no-keepalived.signal``) reads whatever dumps are there without asking keepalived
(support bundles): data, plus JSON or stats when present.

What is read, and what is refused (each refusal is one line, the source goes down, the others go on):

- a dump is opened relative to its directory with ``O_NOFOLLOW`` (a symlink planted in place of a dump
  is never followed) and ``O_NONBLOCK`` (a FIFO cannot hang the source);
- it must be a regular file owned by keepalived's user (the uid keepalived runs as, root when unknown)
  or by this exporter's own user: in a 1777 directory anyone can create ``keepalived.data`` first;
- its directory must not be writable by others unless it is sticky (/tmp is);
- at most ``max_bytes`` (64 MiB) are read: a larger file is refused from its size, before any read,
  so memory stays bounded whatever is planted;
- it must be complete: closed after writing (inotify) and not empty, and the same size and mtime after
  the read as before it; a file still growing is refused (and asked for again at the next refresh).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import signal as signals
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ka_exporter.linux.caps import explain
from ka_exporter.linux.procfs import comm, environ, is_keepalived, read_pid_file, status
from ka_exporter.model import InstanceView
from ka_exporter.parse.dumps import DumpError, combine, parse_data, parse_json, parse_stats
from ka_exporter.settings import default
from ka_exporter.sources.base import Registration, Source, Wiring, coalesced
from ka_exporter.sources.dbus import DbusSource
from ka_exporter.sources.vips import VipSource
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.dumps")

__all__ = ["DumpSource", "Requester", "signal_numbers"]

Requester = Callable[[str], bool]

FALLBACK_SIGNALS = {"DATA": int(signals.SIGUSR1), "STATS": int(signals.SIGUSR2)}
_JSON_FALLBACK = int(signals.SIGRTMIN) + 2  # only ever used when the binary confirms JSON support
_SIGNUM_CACHE: dict[str, dict[str, int]] = {}
_SIGNUM_LOCK = threading.Lock()

# files keepalived writes beside the VRRP dumps that are not ours to read
_OTHER_DATA = ("keepalived_parent", "keepalived_check", "keepalived_bfd")


def signal_numbers(binary: str | None) -> dict[str, int]:
    """{"DATA": n, "STATS": n[, "JSON": n]} from ``binary --signum=...``, cached once per binary.

    "JSON" is present only when the binary answers a number for it (keepalived built with JSON).
    Without a binary to ask (1.3 has no --signum): SIGUSR1 / SIGUSR2 and no JSON.
    """
    key = binary or ""
    with _SIGNUM_LOCK:
        cached = _SIGNUM_CACHE.get(key)
        if cached is not None:
            return dict(cached)
        numbers = dict(FALLBACK_SIGNALS)
        if binary:
            for name in ("DATA", "STATS", "JSON"):
                number = _ask_signum(binary, name)
                if number is not None:
                    numbers[name] = number
        _SIGNUM_CACHE[key] = numbers
        return dict(numbers)


def _ask_signum(binary: str, name: str) -> int | None:
    try:
        done = subprocess.run(
            [binary, f"--signum={name}"],
            capture_output=True,
            timeout=5,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.decode("ascii", errors="replace").strip()
    if done.returncode != 0 or not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number < 65 else None


# --------------------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------------------


def _read_pid(path: Path) -> tuple[int | None, str | None]:
    """(pid, None) or (None, one-line reason)."""
    pf = read_pid_file(path)
    return pf.pid, pf.problem


MAX_BYTES = 64 * 1024 * 1024


class DumpRefusedError(Exception):
    """A dump that must not be read; the message is the one line that says why."""


def read_dump(path: Path, owners: frozenset[int], max_bytes: int = MAX_BYTES) -> bytes:
    """The whole content of one dump, or DumpRefusedError / OSError (rules: the module docstring)."""
    directory = path.parent
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dst = os.fstat(dfd)
        if dst.st_mode & 0o022 and not dst.st_mode & stat.S_ISVTX and dst.st_uid not in owners:
            raise DumpRefusedError(
                f"dump directory {directory} is writable by others and not sticky: not reading it"
            )
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DumpRefusedError(f"{path} is a symlink: not following it") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DumpRefusedError(f"{path} is not a regular file: not reading it")
        if st.st_uid not in owners:
            want = " or ".join(f"uid {u}" for u in sorted(owners))
            raise DumpRefusedError(
                f"{path} is owned by uid {st.st_uid}, not keepalived's user ({want}): not reading it"
            )
        if st.st_size > max_bytes:
            raise DumpRefusedError(
                f"{path} is {st.st_size} bytes, over the {max_bytes}-byte cap: not reading it"
            )
        chunks: list[bytes] = []
        got = 0
        while got <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if got > max_bytes:
        raise DumpRefusedError(f"{path} grew past the {max_bytes}-byte cap while being read: not using it")
    if got != st.st_size or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise DumpRefusedError(f"{path} was still being written: not using it")
    return b"".join(chunks)


def _binary(pid: int) -> str | None:
    """The running keepalived's binary, to ask it for signal numbers (/proc/PID/exe works even if the
    file was replaced by an upgrade)."""
    path = f"/proc/{pid}/exe"
    return path if os.path.exists(path) else None


def _same_mount_ns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        return True  # cannot tell: use the plain path


# --------------------------------------------------------------------------------------------------
# inotify (close-write) through ctypes, with a polling fallback
# --------------------------------------------------------------------------------------------------

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_EVENT = struct.Struct("iIII")


class _Watch:
    """Names of files closed after writing (or renamed into place) in some directories, via inotify."""

    _libc: ctypes.CDLL | None = None

    def __init__(self, dirs: Iterable[Path]) -> None:
        self.fd = -1
        self.dirs: dict[int, Path] = {}
        try:
            libc = _Watch._libc or ctypes.CDLL(None, use_errno=True)
            _Watch._libc = libc
            fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
            if fd < 0:
                return
            self.fd = fd
            for d in dirs:
                wd = int(libc.inotify_add_watch(fd, os.fsencode(d), _IN_CLOSE_WRITE | _IN_MOVED_TO))
                if wd >= 0:
                    self.dirs[wd] = d
        except (OSError, AttributeError):
            self.close()
        if not self.dirs:
            self.close()

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def events(self, timeout: float) -> list[Path]:
        """Files closed-after-write within `timeout` seconds (empty list on timeout)."""
        if self.fd < 0:
            return []
        poller = select.poll()  # not select(): descriptors above 1023 are fine
        poller.register(self.fd, select.POLLIN)
        if not poller.poll(int(max(0.0, timeout) * 1000)):
            return []
        try:
            buf = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out: list[Path] = []
        offset = 0
        while offset + _EVENT.size <= len(buf):
            wd, _mask, _cookie, length = _EVENT.unpack_from(buf, offset)
            name = buf[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if wd in self.dirs and name:
                out.append(self.dirs[wd] / os.fsdecode(name))
        return out

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = -1


# --------------------------------------------------------------------------------------------------
# the source
# --------------------------------------------------------------------------------------------------

_Stat = tuple[int, int, int]  # (mtime_ns, size, inode)


def _stat(path: Path) -> _Stat | None:
    try:
        st = os.lstat(path)  # a planted symlink is judged as itself, never through its target
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _matches(name: str, kind: str) -> bool:
    """Is `name` a VRRP dump of `kind` ("data" / "stats" / "json"), data_use_instance names included?"""
    if not name.startswith("keepalived") or not name.endswith("." + kind):
        return False
    stem = name[: -len(kind) - 1]
    if stem == "keepalived":
        return True
    return stem.startswith("keepalived_") and not stem.startswith(_OTHER_DATA)


@dataclass(slots=True)
class _Target:
    """Where to look and whom to ask, resolved once per refresh."""

    dirs: list[Path]  # where keepalived may write, as this process can open them
    shown: list[str]  # the same, as the operator knows them (for messages)
    pid: int | None = None
    pidfd: int | None = None


class DumpSource(Source):
    """keepalived's dumps, refreshed in the background (see the module docstring)."""

    name = "dumps"

    def __init__(
        self,
        store: Store,
        dumps_dir: Path | None,
        pid_file: Path,
        signal: bool = default("keepalived_signal"),
        interval: float = default("keepalived_dump_interval"),
        *,
        requester: Requester | None = None,
        timeout: float = 3.0,
        min_gap: float = 1.0,
        inotify: bool = True,
        max_bytes: int = MAX_BYTES,
        pid_of: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(store)
        self.dumps_dir = dumps_dir
        self.pid_file = pid_file
        # Where keepalived's pid comes from instead of the pid file (--discover: discovery's pid, as
        # this exporter's pid namespace sees it). keepalived writes getpid() to its pid file: in a
        # container with its own pid namespace that is its pid there (often 1 or 2), which is another
        # process here, or none.
        self.pid_of = pid_of
        self.signal = signal
        self.interval = interval
        self.requester = requester
        self.timeout = timeout
        self.min_gap = min(min_gap, interval)
        self.max_bytes = max_bytes
        self._owners: frozenset[int] = frozenset({0, os.geteuid()})
        self.inotify = inotify  # False: size and mtime stable across two looks, 20 ms apart
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one refresh at a time (run loop vs --once callers)
        self._json_off_pid: int | None = None  # JSON found unsupported for this keepalived pid
        self._last_start = 0.0
        self.dir_check = 1.0  # seconds between looks at the dump directories while idle
        self._watched_dirs: tuple[Path, ...] = (dumps_dir,) if dumps_dir is not None else ()
        # what this source did, for tests and the status view
        self.signals_sent = 0
        self.requests_made = 0
        self.refreshes = 0
        self.last_files: tuple[Path, ...] = ()
        self.json_supported: bool | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Refresh soon (e.g. after a D-Bus state change): wakes the background loop, never blocks."""
        self._wake.set()

    def run(self) -> None:
        # The daemon makes a first pass (run_once) before starting the loop: do not ask keepalived
        # again right away, wait for the next refresh first.
        skip_first = self._last_start > 0 or self.refreshes > 0
        while not self.stopping:
            marks = self._dir_marks()  # before the refresh: a change during it is noticed after it
            if skip_first:
                skip_first = False
            else:
                self._last_start = time.monotonic()
                self.run_once()
            self._idle(marks)
            self._wake.clear()
            if self.stopping:
                break
            gap = self._last_start + self.min_gap - time.monotonic()
            if gap > 0 and not self.sleep(gap):
                break

    def _idle(self, marks: tuple[tuple[str, int | None], ...]) -> None:
        """Wait for the next refresh: `interval`, a request, or a dump directory removed or (re)created
        (checked every `dir_check` seconds: one stat, so such a fault shows within a couple of seconds
        rather than at the next interval)."""
        deadline = time.monotonic() + self.interval
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, self.dir_check)):
                return
            if self._dir_marks() != marks:
                log.debug("a dump directory was removed or created: refreshing")
                return

    def _dir_marks(self) -> tuple[tuple[str, int | None], ...]:
        """(path, inode or None if it is not a directory) of each directory the dumps may be written to."""
        out: list[tuple[str, int | None]] = []
        for path in self._watched_dirs:
            try:
                st = os.stat(path)
            except OSError:
                out.append((str(path), None))
                continue
            out.append((str(path), st.st_ino if stat.S_ISDIR(st.st_mode) else None))
        return tuple(out)

    def close(self) -> None:
        self._wake.set()

    # -- one refresh ------------------------------------------------------------------------------

    def unexpected(self, exc: Exception) -> str:
        log.debug("dump refresh failed", exc_info=True)
        return f"dump refresh failed: {type(exc).__name__}"

    def poll(self) -> None:
        with self._lock:
            error = self._refresh()
        if error is None:
            self.ok()
        else:
            self.fail(error)

    def _refresh(self) -> str | None:
        target = self._target()
        if isinstance(target, str):
            return target
        try:
            if not self.signal:
                return self._read_present(target)
            views, error, mismatch = self._ask(target)
            if mismatch:
                views, error, _ = self._ask(target)  # keepalived reloaded between two dumps: once more
            if views is None:
                return error or "no dumps"
            self.refreshes += 1
            self.store.set_instances(views, "dumps")
            return None
        finally:
            if target.pidfd is not None:
                os.close(target.pidfd)

    def _target(self) -> _Target | str:
        """Where to look and whom to ask, or the one-line reason why there is nothing to do."""
        if self.pid_of is not None:
            pid = self.pid_of()
            pid_error = None if pid is not None else f"no keepalived for {self.pid_file}"
        else:
            pid, pid_error = _read_pid(self.pid_file)
        pidfd: int | None = None
        if pid is not None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pid_error = f"pid file {self.pid_file} names pid {pid}, which is not running"
                pid = None
            except OSError:
                pidfd = None  # no pidfd support: plain kill() below, after the same check
            what: str | None = None
            if pid is not None and not is_keepalived(pid):
                what = "not keepalived"
            elif pid is not None and (owner := status(pid)) is not None and owner.uid != 0:
                what = f"a keepalived run by uid {owner.uid}, not root"  # not the daemon: never signalled
            if pid is not None and what is not None:
                pid_error = (
                    f"pid file {self.pid_file} names pid {pid} ({comm(pid)}), which is {what}:"
                    " not signalling it"
                )
                if pidfd is not None:
                    os.close(pidfd)
                pid, pidfd = None, None
        asking = self.signal
        if asking and pid is None and self.requester is None:
            return pid_error or f"no keepalived pid in {self.pid_file}"
        if pid_error is not None and asking:
            log.debug("%s; asking through D-Bus only", pid_error)
        ka = status(pid) if pid is not None else None
        self._owners = frozenset({ka.uid if ka is not None else 0, os.geteuid()})
        dirs, shown = self._dirs(pid)
        if not dirs:
            if pidfd is not None:
                os.close(pidfd)
            return f"dump directory {self.dumps_dir or '/tmp'} does not exist"
        return _Target(dirs=dirs, shown=shown, pid=pid, pidfd=pidfd)

    def _dirs(self, pid: int | None) -> tuple[list[Path], list[str]]:
        if self.dumps_dir is not None:
            self._watched_dirs = (self.dumps_dir,)
            if not self.dumps_dir.is_dir():
                return [], []
            return [self.dumps_dir], [str(self.dumps_dir)]
        names: list[str] = []
        tmpdir = environ(pid, "TMPDIR") if pid is not None else None
        for d in (tmpdir, "/tmp"):
            if d and d.startswith("/") and d.rstrip("/") not in names:
                names.append(d.rstrip("/") or "/")
        root = f"/proc/{pid}/root" if pid is not None and not _same_mount_ns(pid) else ""
        self._watched_dirs = tuple(Path(root + d) for d in names)
        dirs: list[Path] = []
        shown: list[str] = []
        for d in names:
            path = Path(root + d)
            if path.is_dir():
                dirs.append(path)
                shown.append(d + (f" (in pid {pid}'s mount namespace)" if root else ""))
        return dirs, shown

    # -- asking keepalived ------------------------------------------------------------------------

    def _kinds(self, target: _Target) -> list[str]:
        if target.pid is None or self.requester is not None:
            return ["data", "stats"]  # through D-Bus, which has no JSON method: no signal at all
        if self._json_off_pid == target.pid:
            return ["data", "stats"]
        numbers = signal_numbers(_binary(target.pid))
        if "JSON" not in numbers:
            self.json_supported = False
            return ["data", "stats"]
        return ["json", "data"]

    def _ask(self, target: _Target) -> tuple[tuple[InstanceView, ...] | None, str | None, bool]:
        """(views, error, dumps named different instances)."""
        kinds = self._kinds(target)
        files, error = self._request(target, kinds)
        if error is not None and "json" in kinds and "json" not in files and "data" in files:
            # keepalived took the JSON signal but wrote nothing: no JSON support. Remember, use stats.
            log.info(
                "keepalived (pid %s) wrote no keepalived.json after the JSON signal: using keepalived.stats",
                target.pid,
            )
            self._json_off_pid = target.pid
            self.json_supported = False
            more, error = self._request(target, ["stats"])
            files.update(more)
        if error is not None:
            return None, error, False
        if "json" in files:
            self.json_supported = True
        return self._parse(files)

    def _request(self, target: _Target, kinds: list[str]) -> tuple[dict[str, Path], str | None]:
        """Ask for each kind of dump and wait until the files are fresh and complete."""
        before = {p: _stat(p) for p in self._candidates(target.dirs, kinds)}
        for path in before:
            if path.is_symlink():  # keepalived will not write through it, and it is never followed
                return {}, f"{path} is a symlink: not following it (remove it so keepalived can write there)"
        watch = _Watch(target.dirs if self.inotify else ())
        try:
            sent: list[str] = []
            for kind in kinds:
                how, error = self._ask_one(target, kind)
                if error is not None:
                    return {}, error
                sent.append(how)
            return self._wait(target, kinds, before, watch, ", ".join(sent))
        finally:
            watch.close()

    def _ask_one(self, target: _Target, kind: str) -> tuple[str, str | None]:
        if self.requester is not None and kind in ("data", "stats"):
            self.requests_made += 1
            try:
                if self.requester(kind):
                    return f"D-Bus Print{kind.capitalize()}", None
            except Exception:  # a requester must not take the refresh down
                log.debug("dump requester failed", exc_info=True)
        if target.pid is None:
            return "", f"could not ask keepalived for its {kind} dump (D-Bus failed and no usable pid file)"
        number = signal_numbers(_binary(target.pid)).get(kind.upper())
        if number is None:
            return "", f"keepalived (pid {target.pid}) has no signal for a {kind} dump"
        try:
            if target.pidfd is not None:
                signals.pidfd_send_signal(target.pidfd, number)
            else:
                os.kill(target.pid, number)
        except ProcessLookupError:
            return "", f"keepalived (pid {target.pid}) exited"
        except PermissionError:
            return "", explain(
                "CAP_KILL",
                f"signal keepalived (pid {target.pid}) for fresh dumps",
                "dumps",
                instead="or turn this source off with --no-collector.dumps",
            )
        self.signals_sent += 1
        return f"signal {number}", None

    def _candidates(self, dirs: Iterable[Path], kinds: Iterable[str]) -> list[Path]:
        out: list[Path] = []
        wanted = tuple(kinds)
        for d in dirs:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            out.extend(d / n for n in names if any(_matches(n, k) for k in wanted))
        return out

    def _wait(
        self, target: _Target, kinds: list[str], before: dict[Path, _Stat | None], watch: _Watch, how: str
    ) -> tuple[dict[str, Path], str | None]:
        deadline = time.monotonic() + self.timeout
        found: dict[str, Path] = {}
        closed: set[Path] = set()
        seen: dict[Path, _Stat] = {}
        while True:
            for path in self._candidates(target.dirs, kinds):
                kind = path.suffix[1:]
                if kind in found:
                    continue
                now = _stat(path)
                if now is None or now == before.get(path):
                    continue  # not (re)written since the request
                if now[1] == 0:
                    continue  # created, not written yet (keepalived never writes an empty dump)
                if path in closed or (not watch.active and seen.get(path) == now):
                    found[kind] = path  # closed after writing, or stable across two looks
                seen[path] = now
            if all(k in found for k in kinds):
                return found, None
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [k for k in kinds if k not in found]
                names = " and ".join(f"keepalived.{k}" for k in missing)
                who = "keepalived" if target.pid is None else f"keepalived (pid {target.pid})"
                return found, (
                    f"{who} wrote no fresh {names} in {' or '.join(target.shown)}"
                    f" within {self.timeout:g} s of {how}"
                )
            if watch.active:
                closed.update(watch.events(min(left, 0.25)))
            else:
                time.sleep(min(left, 0.02))

    # -- reading ----------------------------------------------------------------------------------

    def _parse(self, files: dict[str, Path]) -> tuple[tuple[InstanceView, ...] | None, str | None, bool]:
        """(views, error, dumps named different instances) from the files of one refresh."""
        raw: dict[str, bytes] = {}
        for kind, path in files.items():
            try:
                raw[kind] = read_dump(path, self._owners, self.max_bytes)
            except DumpRefusedError as exc:
                return None, str(exc), False
            except FileNotFoundError:
                return None, f"{path} vanished before it could be read", False
            except PermissionError:
                why = f"read {path} (keepalived writes its dumps mode 0600)"
                return (
                    None,
                    explain(
                        "CAP_DAC_READ_SEARCH",
                        why,
                        "dumps",
                        instead="or turn this source off: --no-collector.dumps (D-Bus still gives states)",
                    ),
                    False,
                )
            except OSError as exc:
                return None, f"cannot read {path}: {exc.strerror or exc}", False
        self.last_files = tuple(files.values())
        try:
            data = parse_data(raw["data"], str(files["data"])) if "data" in raw else None
            stats = parse_stats(raw["stats"], str(files["stats"])) if "stats" in raw else None
            json_views = parse_json(raw["json"], str(files["json"])) if "json" in raw else None
            names = (
                str(files.get("data", "keepalived.data")),
                str(files.get("stats", "keepalived.stats")),
                str(files.get("json", "keepalived.json")),
            )
            views = combine(data, stats, json_views, names)
        except DumpError as exc:
            return None, str(exc), "name different instances" in str(exc)
        return views, None, False

    def _read_present(self, target: _Target) -> str | None:
        """signal=False: read the dumps that are there, once each is complete (not being written)."""
        files: dict[str, Path] = {}
        for kind in ("data", "json", "stats"):
            paths = self._candidates(target.dirs, [kind])
            if paths:
                files[kind] = max(paths, key=lambda p: (_stat(p) or (0, 0, 0))[0])
        if "json" in files and "stats" in files:
            del files["stats"]  # JSON has the counters
        if not files or ("data" not in files and "json" not in files):
            return f"no keepalived.data or keepalived.json in {' or '.join(target.shown)}"
        for _attempt in range(3):
            first = {p: _stat(p) for p in files.values()}
            views, error, _ = self._parse(files)
            if all(_stat(p) == s for p, s in first.items()):
                break  # nothing changed while reading: what was parsed is what is there
            time.sleep(0.05)
        else:
            return "the dump files kept changing while being read"
        if views is None:
            return error or "no dumps"
        self.refreshes += 1
        self.store.set_instances(views, "dumps")
        return None


DETAIL_DELAY = 0.25  # seconds from a D-Bus state change to the dump refresh it asks for


def build(w: Wiring) -> DumpSource:
    s = w.settings
    dbus = w.get("dbus", DbusSource)
    dumps = DumpSource(
        w.store,
        s.keepalived_dumps_dir,
        s.keepalived_pid_file,
        signal=s.keepalived_signal,
        interval=s.keepalived_dump_interval,
        requester=dbus.request_dump if dbus is not None else None,
    )
    if dbus is not None:
        # A state change seen on D-Bus refreshes the dump's detail soon after (never per scrape), once
        # the burst is over: a failover of 100 instances is 100 signals within milliseconds, and a dump
        # asked for in the middle of it has keepalived write 100 instances' detail before it sends the
        # next signals (the state the scrape waits for comes from those). It also tells D-Bus there is
        # a dump source to hand over to when the bus goes away.
        later = coalesced(dumps.request_refresh, DETAIL_DELAY)
        dbus.on_change = later
    vips = w.get("vips", VipSource)
    if vips is not None:
        # A VIP coming or going means a transition: refresh keepalived's view to match. While D-Bus
        # reads keepalived's states (and counts its transitions), the refresh waits for the burst to be
        # over, as D-Bus's own: a 100-instance FAULT removes 100 VIPs within milliseconds, and a dump
        # asked for then had keepalived write, and this source parse, 100 instances' detail while the
        # scrape that must show the FAULT was rendering (6-13 ms of the dump source's CPU in that window).
        if dbus is None:
            vips.on_change = dumps.request_refresh
        else:
            bus = dbus

            def vips_changed() -> None:
                if bus.counts_transitions():
                    later()
                else:
                    dumps.request_refresh()

            vips.on_change = vips_changed
    return dumps


REGISTRATION = Registration(
    "dumps",
    "keepalived's dump files",
    50,
    build,
    parts=("keepalived:collect_keepalived",),
    uses=("dbus", "vips"),
)
