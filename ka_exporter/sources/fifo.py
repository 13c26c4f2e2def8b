"""The notify FIFO source: keepalived's `vrrp_notify_fifo` / `notify_fifo` as an event stream.

keepalived writes a line to the FIFO on every VRRP transition and priority change (parse/fifo.py), at
no cost to itself: no signal, no dump, no D-Bus. Where D-Bus is not built in (several distributions),
this is the only event-driven view of keepalived's state; the dumps refresh is triggered by it.

How keepalived treats the FIFO decides how it can be read (core/notify.c, `fifo_open`):
- keepalived creates it (mode 0644) if it is missing and opens it O_RDWR | O_NONBLOCK. It is itself a
  reader that never reads, so lines written while nobody else reads pile up in the pipe (64 KiB), and
  once the pipe is full further lines are dropped (EAGAIN) without a word.
- So at open, what is buffered is the history since the last reader. If it is well under the pipe's
  size no line can have been dropped, and the last line per instance is its current state; a fuller
  backlog may have lost its newest lines and is discarded (one log line), states then come from the
  next events (or D-Bus / the dumps).
- A FIFO gives each line to one reader. If keepalived also runs a `*_notify_fifo_script` on it, reading
  it here would steal the operator's events: such a FIFO is never read (one line says so).
- A FIFO anyone can write to would let another user fake transitions: one writable by group or
  others, not owned by root (or this exporter's user), or not a FIFO at all, is refused.
- keepalived unlinks a FIFO it created when it exits and makes a new one at start: the source reopens
  when the path names another inode, and when the last writer went away (POLLHUP).

Health: up while the FIFO is open and valid; a missing or refused FIFO reports why, in one line, and
keeps the last states (stale). A restart of keepalived without a STOP line (SIGKILL) leaves the last
state here: the process source is the witness for that.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
from collections.abc import Callable
from pathlib import Path

from ka_exporter.model import InstanceView, KeepalivedConfig, VrrpState
from ka_exporter.parse.fifo import MAX_LINE, FifoEvent, parse_line
from ka_exporter.settings import Settings
from ka_exporter.sources.base import Registration, Source, Wiring, wiring_log
from ka_exporter.sources.dbus import DbusSource
from ka_exporter.sources.dumps import DumpSource
from ka_exporter.store import Store

__all__ = ["BACKLOG_TRUSTED", "FifoSource", "check_fifo"]

log = logging.getLogger("ka_exporter.sources.fifo")

PIPE_SIZE = 65536  # Linux's default pipe capacity (keepalived does not change it)
BACKLOG_TRUSTED = PIPE_SIZE - 2 * MAX_LINE  # a backlog this short cannot have lost a line
OnChange = Callable[[], None]


def check_fifo(st: os.stat_result, path: str, own_uid: int | None = None) -> str | None:
    """Why the file `st` (from lstat/fstat) must not be read as keepalived's FIFO, or None if it may."""
    own_uid = os.geteuid() if own_uid is None else own_uid
    if not stat.S_ISFIFO(st.st_mode):
        return f"{path} is not a FIFO"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): another user "
            "could write fake transitions; not read"
        )
    if st.st_uid not in (0, own_uid):
        return f"{path} is owned by uid {st.st_uid}, not root: not read"
    return None


class FifoSource(Source):
    """Reads keepalived's notify FIFO; publishes the instances it has events for as the "fifo" view."""

    name = "fifo"

    def __init__(
        self,
        store: Store,
        path: Path,
        *,
        on_change: OnChange | None = None,
        count_transitions: bool | Callable[[], bool] = True,
        interval: float = 1.0,
    ) -> None:
        super().__init__(store)
        self.path = path
        self.on_change = on_change
        # off while D-Bus counts them (a callable: asked at each transition, since D-Bus can be refused
        # the name or lose its bus, and then nobody else counts)
        self.count_transitions = count_transitions
        self.interval = interval  # how often the path is checked for a new inode while idle
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._partial = b""
        # name -> state, effective priority, when the transition was read live (None: from the backlog)
        self._states: dict[str, tuple[VrrpState | None, int, float | None]] = {}
        self.lines = 0  # lines read (events and others), for tests and the bench
        self.events = 0
        self.discarded = 0  # bytes of backlog not trusted

    # -- lifecycle --------------------------------------------------------------------------------

    def counting(self) -> bool:
        """Whether a transition read now is counted here (not when D-Bus counts it)."""
        c = self.count_transitions
        return c() if callable(c) else c

    def unexpected(self, exc: Exception) -> str:
        return f"{self.path}: {type(exc).__name__}: {exc}"

    def poll(self) -> None:
        """--once: read what the FIFO holds now (the backlog) and close it again."""
        try:
            if self._open():
                self._read_available()
                self.ok()
        finally:
            self._close()

    def run(self) -> None:
        while not self.stopping:
            try:
                if self._fd is None and not self._open():
                    self.sleep(self.interval)
                    continue
                self._wait_and_read()
            except Exception as exc:  # keep going: a bad line or a vanished FIFO never stops the source
                self._close()
                self.fail(self.unexpected(exc))
                self.sleep(self.interval)
        self._close()

    def close(self) -> None:
        self._close()

    # -- the FIFO ---------------------------------------------------------------------------------

    def _open(self) -> bool:
        path = str(self.path)
        try:
            problem = check_fifo(os.lstat(path), path)
        except FileNotFoundError:
            self.fail(f"{path} does not exist (keepalived creates it when it starts)")
            return False
        if problem is None:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            st = os.fstat(fd)  # what was opened, not what the path named a moment ago
            problem = check_fifo(st, path)
            if problem is not None:
                os.close(fd)
        if problem is not None:
            self.fail(problem)
            return False
        self._fd, self._ino, self._partial = fd, (st.st_dev, st.st_ino), b""
        self._backlog()
        self.ok()
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._partial = b""

    def _backlog(self) -> None:
        """Apply what was buffered before we opened, if it is short enough to be complete."""
        data = self._read_all()
        if len(data) < BACKLOG_TRUSTED:
            self._feed(data, live=False)
            return
        self.discarded += len(data)
        log.warning(
            "fifo %s held %d bytes when opened: lines may have been dropped while nobody read it, "
            "so its backlog is not used; states come from the next events",
            self.path,
            len(data),
        )

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while self._fd is not None:
            try:
                chunk = os.read(self._fd, PIPE_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _wait_and_read(self) -> None:
        if self._fd is None:
            return
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        events = poller.poll(self.interval * 1000)
        if not events:
            self._check_inode()
            return
        flags = events[0][1]
        if flags & select.POLLIN:
            self._read_available()
        if flags & (select.POLLHUP | select.POLLERR) and not flags & select.POLLIN:
            # Every writer closed it (keepalived stopped): reopen, so that the next keepalived's
            # writes are seen and poll does not report the hang-up forever.
            self._close()

    def _check_inode(self) -> None:
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self._close()  # keepalived removed the FIFO it had created; wait for the next one
                self.fail(f"{self.path} does not exist (keepalived creates it when it starts)")
                return
            raise
        if (st.st_dev, st.st_ino) != self._ino:
            self._close()

    def _read_available(self) -> None:
        self._feed(self._read_all(), live=True)

    def _feed(self, data: bytes, live: bool) -> None:
        if not data:
            return
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE:
            self._partial = b""  # not keepalived's: never let a line without an end grow
        changed = False
        for line in lines:
            self.lines += 1
            event = parse_line(line)
            if event is not None and event.kind == "INSTANCE":
                changed |= self._apply(event, live)
        if changed:
            self._publish()

    def _apply(self, event: FifoEvent, live: bool) -> bool:
        self.events += 1
        old = self._states.get(event.name)
        if event.state is None:  # a priority event: the state stays what it was
            state, when = (old[0], old[2]) if old else (None, None)
        else:
            state = event.state
            when = self.store.clock() if live else None  # a backlog line's time is not known
            if old is not None and old[0] == state:
                when = old[2]
        self._states[event.name] = (state, event.priority, when)
        if (
            self.counting()
            and event.state is not None
            and old is not None
            and old[0] is not None
            and old[0] != event.state
            and event.state is not VrrpState.STOP
        ):
            self.store.count_transition(event.name)
        return old is None or old[:2] != (state, event.priority)

    def _publish(self) -> None:
        # Interface and VRID come from keepalived.conf: a FIFO line names only the instance.
        config = self.store.config()
        known = {i.name: i for i in (config.instances if config is not None else ())}
        views: list[InstanceView] = []
        for name, (state, prio, when) in sorted(self._states.items()):
            conf = known.get(name)
            if conf is None or conf.interface is None or conf.vrid is None:
                continue  # not configured (yet): keepalived.conf is the list of what exists
            views.append(
                InstanceView(
                    name=name,
                    interface=conf.interface,
                    vrid=conf.vrid,
                    family=conf.family,
                    state=state,
                    effective_priority=prio,
                    last_transition=when,
                )
            )
        self.store.set_instances(tuple(views), self.name)
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("fifo: on_change callback failed")


def fifo_wanted(settings: Settings, config: KeepalivedConfig | None) -> Path | None:
    """The notify FIFO to read: keepalived.conf's `vrrp_notify_fifo`, else `notify_fifo`, if enabled.

    A FIFO that keepalived also feeds to a `*_notify_fifo_script` is never read: each line goes to one
    reader only, so the exporter would take events away from the operator's script.
    """
    if not settings.enabled("fifo") or config is None or not config.notify_fifos:
        return None
    by_kind = {f.kind: f for f in config.notify_fifos}
    for kind in ("vrrp_notify_fifo", "notify_fifo"):
        fifo = by_kind.get(kind)
        if fifo is None:
            continue
        if fifo.has_script:
            wiring_log.info(
                "%s %s is read by keepalived's %s_script: not read here (a FIFO line goes to one reader)",
                kind,
                fifo.path,
                kind,
            )
            continue
        return Path(fifo.path)
    return None


def build(w: Wiring) -> FifoSource | None:
    path = fifo_wanted(w.settings, w.config)
    if path is None:
        return None
    dumps = w.get("dumps", DumpSource)
    dbus = w.get("dbus", DbusSource)
    return FifoSource(
        w.store,
        path,
        # A transition read from the FIFO refreshes the dump's detail soon after (never per scrape).
        on_change=dumps.request_refresh if dumps is not None else None,
        # D-Bus counts them while it reads keepalived's name; the FIFO does whenever it does not
        count_transitions=True if dbus is None else (lambda: not dbus.counts_transitions()),
    )


REGISTRATION = Registration(
    "fifo",
    "keepalived's notify FIFO, when keepalived.conf sets `vrrp_notify_fifo` or `notify_fifo` (see "
    "[keepalived's notify FIFO](#keepaliveds-notify-fifo))",
    60,
    build,
    parts=("keepalived:collect_keepalived",),
    uses=("config", "dbus", "dumps"),
)
