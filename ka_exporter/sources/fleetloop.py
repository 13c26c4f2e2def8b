"""The I/O of multi-namespace mode (`--discover`): one thread for every namespace's sockets.

`SharedLoop` is one thread polling every watched keepalived's sockets: its wire capture (AF_PACKET,
see `wire.py`) and its netlink address events (see `vips.py`). Sockets belong to the network
namespace they were created in, whatever thread reads them later, so the loop opens each daemon's
sockets inside its namespace (setns(2) on /proc/PID/ns/net, then back) and polls them all from one
`poll()`: the thread count does not grow with the number of namespaces. Each daemon keeps its own
peer table, failover accounts and store, exactly as with one namespace (`SharedWire` is the wire
source driven from here instead of from its own thread).

The same loop reads each daemon's notify FIFO (`SharedFifo`, keepalived.conf's `vrrp_notify_fifo` /
`notify_fifo`, opened through /proc/PID/root): keepalived writes it non-blocking and a read never
blocks either, so it costs the loop one fd, and its inode is looked at once a second (keepalived
unlinks the FIFO it made when it exits and makes a new one when it starts).

`Scheduler` runs the polled sources (keepalived.conf, the dumps) of every daemon from a small pool of
threads, each at its own interval, or soon after `request()` (a state change seen on the wire or a VIP
coming or going refreshes that daemon's dumps, never more often than `min_gap`).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka_exporter.linux import netns, rtnl
from ka_exporter.sources.base import Source
from ka_exporter.sources.capture import CaptureError
from ka_exporter.sources.fifo import FifoSource
from ka_exporter.sources.vips import GROUPS, read_addresses
from ka_exporter.sources.wire import WireSource
from ka_exporter.store import Store
from ka_exporter.store.fleet import DaemonKey

log = logging.getLogger("ka_exporter.sources.fleetloop")

TICK = 0.25  # seconds between two ticks of every peer table (expiry, listening gates)
VIP_SETTLE = 0.01  # seconds from a netlink event to the re-read of that namespace's addresses
VIP_RESYNC = 60.0  # seconds between two re-reads of a namespace's addresses without an event


class MemberLogged(Source):
    """A member's source whose lines name the member ("netns X: source fifo: ..."): one line per
    change of its health, as a source alone does, but 200 members' lines must say whose they are."""

    where = ""

    def ok(self) -> None:
        if self._last_error is not None:
            log.info("%s: source %s recovered", self.where, self.name)
        self._last_error = None
        self.store.report(self.name, None)

    def fail(self, error: str) -> None:
        if error != self._last_error:
            if error.startswith((f"{self.name}:", f"{self.name} ")):
                log.warning("%s: source %s", self.where, error)
            else:
                log.warning("%s: source %s: %s", self.where, self.name, error)
        self._last_error = error
        self.store.report(self.name, error)


class SharedFifo(MemberLogged, FifoSource):
    """The notify FIFO of one daemon, its fd polled by `SharedLoop` (never its own thread).

    `locate()` gives the FIFO's path as seen from here (through /proc/PID/root of the daemon's current
    pid): a restarted keepalived has another pid, and the old /proc path is gone with it.
    """

    def __init__(self, store: Store, locate: Callable[[], Path], **kwargs: Any) -> None:
        super().__init__(store, locate(), **kwargs)
        self.locate = locate

    def check(self) -> bool:
        """Open the FIFO if it is not open, else see that the path still names it; True when open."""
        with self.guarded():
            if self._fd is not None:
                self._check_inode()  # closes it when keepalived made a new one (or removed it)
            if self._fd is None:
                self.path = self.locate()
                self._open()
        return self._fd is not None

    def fd(self) -> int | None:
        return self._fd

    def still_there(self) -> bool:
        """The path still names the open FIFO (else it is closed: keepalived made a new one)."""
        with self.guarded():
            self._check_inode()
        return self._fd is not None

    def handle(self, events: int) -> bool:
        """The FIFO is ready: read it; True when every writer went away (keepalived stopped)."""
        with self.guarded():
            if events & select.POLLIN:
                self._read_available()
            if events & (select.POLLHUP | select.POLLERR) and not events & select.POLLIN:
                self._close()
        return self._fd is None

    def forget(self) -> None:
        """A new keepalived process: what the old one wrote is history (not exported)."""
        self._close()
        self._states = {}
        self.store.set_instances(None, self.name)

    def unexpected(self, exc: Exception) -> str:
        self._close()
        return super().unexpected(exc)


class SharedWire(WireSource):
    """The wire source of one daemon, its sockets polled by `SharedLoop` (never its own thread)."""

    def check(self, poller: select.poll) -> bool:
        """(Re)open what is missing; report; True when healthy. Call inside the daemon's namespace."""
        return self._report(self._open(poller))

    def fds(self) -> list[int]:
        return list(self._by_fd)

    def handle(self, fd: int, events: int, poller: select.poll) -> tuple[bool, bool]:
        """One ready socket: (a verdict changed, a socket broke)."""
        sock = self._by_fd.get(fd)
        if sock is None:
            return False, False
        try:
            if events & (select.POLLIN | select.POLLERR):
                return self._drain(sock), False
            return False, True
        except CaptureError as exc:
            if exc.code != errno.ENETDOWN:  # down: the kernel re-hooks it when the link is back
                self._close(sock, poller)
            return False, True

    def tick(self, now: float, slow: bool) -> None:
        gate = bool(self._gates) and now >= self._gates[0]
        while self._gates and now >= self._gates[0]:
            del self._gates[0]
        if self.table.tick(now) or gate:
            self.store.wire_changed()
        if slow:  # once a second: failover accounts and kernel drop counters
            self.observe_failover(now)
            self._update_kernel_stats()

    def close_all(self, poller: select.poll) -> None:
        self._close_all(poller)


@dataclass(eq=False)
class Watch:
    """What the loop holds for one daemon."""

    key: DaemonKey
    store: Store
    pid: Callable[[], int]  # the daemon's current pid (its namespace is /proc/PID/ns/net)
    wire: SharedWire | None
    vips: bool
    on_change: Callable[[], None] | None = None  # a wire verdict or the address set changed
    fifo: SharedFifo | None = None
    next_check: float = 0.0
    events: socket.socket | None = None
    dump: socket.socket | None = None
    addresses: object = None
    vips_due: float | None = None
    vips_resync: float = 0.0
    fds: list[int] = field(default_factory=list)


class LoopThread:
    """A thread that polls, with a pipe other threads write to (`_wake`) when they queued it work."""

    thread_name = "fleet-loop"
    what = "a loop of --discover"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._guarded, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wfd, b"x")

    def _woken(self, fd: int) -> bool:
        """True (and the pipe drained) when `fd`, ready in a poll, is the wake-up pipe."""
        if fd != self._rfd:
            return False
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 4096)
        return True

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:
            log.exception("%s stopped", self.what)
            # Nothing restarts the thread: every member it served says so in its health, rather than
            # keep the last "up" while no event of theirs is read any more.
            with contextlib.suppress(Exception):
                self._died(f"{self.what} stopped: {type(exc).__name__}: {exc}")

    def _died(self, error: str) -> None:
        """The thread ended on an error: mark what it served down (each loop knows what that is)."""

    def _run(self) -> None:
        raise NotImplementedError


class SharedLoop(LoopThread):
    """One thread, every daemon's sockets (see the module docstring)."""

    thread_name = "fleet-io"
    what = "the shared I/O loop of --discover"

    def __init__(self, check_interval: float = 5.0, retry_interval: float = 1.0) -> None:
        super().__init__()
        self.check_interval = check_interval
        self.retry_interval = retry_interval
        self._lock = threading.Lock()
        self._adds: list[Watch] = []
        self._removes: list[DaemonKey] = []
        self._restarts: list[DaemonKey] = []
        self._watches: dict[DaemonKey, Watch] = {}
        self._by_fd: dict[int, tuple[Watch, str]] = {}
        self.checks = 0  # namespace entries made (for the bench)
        self._checks: list[tuple[float, int, Watch]] = []  # (when, seq, watch): a heap of checks due
        self._seq = 0
        self._vips_pending: dict[DaemonKey, float] = {}  # re-reads of addresses due, by daemon

    def _died(self, error: str) -> None:
        for w in list(self._watches.values()):  # one line said it (above), not one per member
            self._fail(w, error)
            if w.fifo is not None:
                w.store.report(w.fifo.name, f"{w.fifo.name}: {error}")

    # -- from other threads -------------------------------------------------------------------------

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._adds.append(watch)
        self._wake()

    def remove(self, key: DaemonKey) -> None:
        with self._lock:
            self._removes.append(key)
        self._wake()

    def restarted(self, key: DaemonKey) -> None:
        """The daemon's keepalived is a new process: its FIFO is opened again, its old states dropped."""
        with self._lock:
            self._restarts.append(key)
        self._wake()

    # -- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        next_tick = time.monotonic() + TICK
        next_slow = 0.0
        try:
            while not self._stop.is_set():
                self._apply(poller)
                mono = time.monotonic()
                # Only what is due is visited: a wake-up (every advert of every namespace) costs the
                # same with 200 namespaces as with one.
                while self._checks and self._checks[0][0] <= mono:
                    when, _seq, w = heapq.heappop(self._checks)
                    if self._watches.get(w.key) is w and when == w.next_check:
                        self._check(w, poller, home)
                        self._plan(w)
                due = min(next_tick, self._checks[0][0] if self._checks else next_tick)
                if self._vips_pending:
                    due = min(due, *self._vips_pending.values())
                timeout = max(0.0, due - time.monotonic())
                for fd, ev in poller.poll(timeout * 1000.0):
                    if self._woken(fd):
                        continue
                    self._ready(fd, ev, poller)
                mono = time.monotonic()
                self._read_due_vips(mono)
                if mono >= next_tick:
                    slow = mono >= next_slow
                    self._tick(mono, slow, poller)
                    next_tick = mono + TICK
                    if slow:
                        next_slow = mono + 1.0
        finally:
            for w in list(self._watches.values()):
                self._close(w, poller)
            os.close(home)

    def _read_due_vips(self, mono: float) -> None:
        for key, when in list(self._vips_pending.items()):
            if mono >= when:
                del self._vips_pending[key]
                pending = self._watches.get(key)
                if pending is not None:
                    pending.vips_due = None
                    self._read_vips(pending, mono)

    def _tick(self, mono: float, slow: bool, poller: select.poll) -> None:
        now = time.time()
        for w in self._watches.values():
            if w.wire is not None:
                w.wire.tick(now, slow)
            if slow and w.fifo is not None and w.fifo.fd() is not None and not w.fifo.still_there():
                self._drop_fifo(w, poller)  # keepalived removed it or made a new one: open that soon
                w.next_check = mono + 0.2
                self._plan(w)
            if slow and w.dump is not None and w.vips_due is None and mono >= w.vips_resync:
                self._vips_soon(w, mono)  # a missed event cannot last longer than this

    def _apply(self, poller: select.poll) -> None:
        with self._lock:
            adds, self._adds = self._adds, []
            removes, self._removes = self._removes, []
            restarts, self._restarts = self._restarts, []
        for key in restarts:
            w = self._watches.get(key)
            if w is not None and w.fifo is not None:
                self._drop_fifo(w, poller)
                w.fifo.forget()
                w.next_check = time.monotonic()
                self._plan(w)
        for key in removes:
            w = self._watches.pop(key, None)
            self._vips_pending.pop(key, None)
            if w is not None:
                self._close(w, poller)
        for w in adds:
            old = self._watches.pop(w.key, None)
            if old is not None:
                self._close(old, poller)
            self._watches[w.key] = w
            w.next_check = time.monotonic()
            self._plan(w)

    def _plan(self, w: Watch) -> None:
        self._seq += 1
        heapq.heappush(self._checks, (w.next_check, self._seq, w))

    def _vips_soon(self, w: Watch, when: float) -> None:
        w.vips_due = when
        self._vips_pending[w.key] = when

    def _check(self, w: Watch, poller: select.poll, home: int) -> None:
        """Inside the daemon's namespace: (re)open its sockets; then back home."""
        self.checks += 1
        healthy = True
        pid = w.pid()
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._fail(w, f"cannot open the network namespace of pid {pid}: {exc.strerror or exc}")
            w.next_check = time.monotonic() + self.retry_interval
            return  # the caller plans the next check
        try:
            netns.enter_fd(fd, f"of pid {pid}")
            try:
                if w.wire is not None:
                    healthy = w.wire.check(poller)
                if w.vips and w.events is None:
                    healthy = self._open_vips(w, poller) and healthy
                if w.fifo is not None:
                    healthy = self._check_fifo(w.fifo, poller) and healthy
            finally:
                netns.enter_fd(home, "of the exporter")
        except netns.NetnsError as exc:
            self._fail(w, str(exc))
            healthy = False
        finally:
            os.close(fd)
        for old in w.fds:
            if self._by_fd.get(old, (None, ""))[0] is w:
                del self._by_fd[old]
        w.fds = w.wire.fds() if w.wire is not None else []
        for f in w.fds:
            self._by_fd[f] = (w, "wire")
        if w.events is not None:
            w.fds.append(w.events.fileno())
            self._by_fd[w.events.fileno()] = (w, "vips")
        if w.fifo is not None and (fifo_fd := w.fifo.fd()) is not None:
            w.fds.append(fifo_fd)
            self._by_fd[fifo_fd] = (w, "fifo")
        w.next_check = time.monotonic() + (self.check_interval if healthy else self.retry_interval)

    @staticmethod
    def _check_fifo(fifo: SharedFifo, poller: select.poll) -> bool:
        before = fifo.fd()
        healthy = fifo.check()
        after = fifo.fd()
        if before is not None and after != before:
            with contextlib.suppress(KeyError, ValueError, OSError):
                poller.unregister(before)
        if after is not None and after != before:
            poller.register(after, select.POLLIN | select.POLLHUP | select.POLLERR)
        return healthy

    def _drop_fifo(self, w: Watch, poller: select.poll) -> None:
        """Stop polling the FIFO's fd (the FIFO may be closed already: the fd is the loop's record)."""
        for fd in [f for f in w.fds if self._by_fd.get(f) == (w, "fifo")]:
            with contextlib.suppress(KeyError, ValueError, OSError):
                poller.unregister(fd)
            del self._by_fd[fd]
            w.fds.remove(fd)

    @staticmethod
    def _fail(w: Watch, error: str) -> None:
        for name, on in (("wire", w.wire is not None), ("vips", w.vips)):
            if on:
                w.store.report(name, f"{name}: {error}")

    def _open_vips(self, w: Watch, poller: select.poll) -> bool:
        try:
            events = rtnl.subscribe(GROUPS)
        except OSError as exc:
            w.store.report("vips", f"vips: netlink: {exc}")
            return False
        try:
            dump = rtnl.open_socket()
        except OSError as exc:
            events.close()
            w.store.report("vips", f"vips: netlink: {exc}")
            return False
        w.events, w.dump = events, dump
        poller.register(events.fileno(), select.POLLIN)
        self._read_vips(w, time.monotonic())
        return True

    def _read_vips(self, w: Watch, mono: float) -> None:
        if w.dump is None:
            return
        try:
            addresses = read_addresses(w.dump)
        except Exception as exc:
            w.store.report("vips", f"vips: cannot read addresses over netlink: {exc}")
            return
        changed = w.addresses is not None and addresses != w.addresses
        w.addresses = addresses
        w.vips_resync = mono + VIP_RESYNC
        w.store.set_addresses(addresses)
        w.store.report("vips", None)
        if changed and w.on_change is not None:
            w.on_change()

    def _ready(self, fd: int, ev: int, poller: select.poll) -> None:
        owner = self._by_fd.get(fd)
        if owner is None:
            return
        w, kind = owner
        if kind == "fifo":
            if w.fifo is not None and w.fifo.handle(ev):
                # closed: keepalived stopped (every writer gone) or the FIFO broke; look again soon
                self._drop_fifo(w, poller)
                w.next_check = time.monotonic() + 0.2
                self._plan(w)
            return
        if kind == "vips":
            if w.events is not None:
                try:
                    rtnl.drain(w.events)
                except OSError:
                    log.debug("netlink drain", exc_info=True)
                if w.vips_due is None:
                    self._vips_soon(w, time.monotonic() + VIP_SETTLE)
            return
        if w.wire is None:
            return
        changed, broken = w.wire.handle(fd, ev, poller)
        if broken and w.next_check > time.monotonic() + 0.2:
            w.next_check = time.monotonic() + 0.2
            self._plan(w)
        if changed:
            w.store.wire_changed()
            if w.on_change is not None:
                w.on_change()

    def _close(self, w: Watch, poller: select.poll) -> None:
        if w.wire is not None:
            w.wire.close_all(poller)
        if w.fifo is not None:
            self._drop_fifo(w, poller)
            w.fifo.close()
        for sock in (w.events, w.dump):
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    poller.unregister(sock.fileno())
                sock.close()
        w.events = w.dump = None
        for f in w.fds:
            if self._by_fd.get(f, (None, ""))[0] is w:
                del self._by_fd[f]
        w.fds = []

    def watched(self) -> int:
        return len(self._watches)


@dataclass(eq=False)
class _Task:
    source: Source
    interval: float
    due: float = 0.0
    running: bool = False
    last: float = -1e9


class Scheduler:
    """Polled sources of every daemon on a few threads (see the module docstring)."""

    def __init__(self, workers: int = 4, min_gap: float = 1.0) -> None:
        self.min_gap = min_gap
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-poll")
        self._cond = threading.Condition()
        self._tasks: dict[DaemonKey, dict[str, _Task]] = {}
        self._stop = False
        self._thread: threading.Thread | None = None

    def add(self, key: DaemonKey, source: Source, interval: float, *, first: float = 0.0) -> None:
        with self._cond:
            self._tasks.setdefault(key, {})[source.name] = _Task(source, interval, time.monotonic() + first)
            self._cond.notify()

    def remove(self, key: DaemonKey) -> None:
        with self._cond:
            self._tasks.pop(key, None)

    def request(self, key: DaemonKey, name: str) -> None:
        """Run that source soon (at most every `min_gap` seconds), never blocking the caller."""
        with self._cond:
            task = self._tasks.get(key, {}).get(name)
            if task is not None:
                task.due = min(task.due, max(time.monotonic(), task.last + self.min_gap))
                self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-sched", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                nearest = now + 1.0
                for tasks in self._tasks.values():
                    for task in tasks.values():
                        if task.running:
                            continue
                        if task.due <= now:
                            task.running = True
                            task.last = now
                            task.due = now + task.interval
                            try:
                                self._pool.submit(self._one, task)
                            except RuntimeError:  # shut down
                                return
                        nearest = min(nearest, task.due)
                self._cond.wait(max(0.0, nearest - now))

    def _one(self, task: _Task) -> None:
        try:
            task.source.run_once()  # never raises (the Source contract)
        finally:
            with self._cond:
                task.running = False
                self._cond.notify()
