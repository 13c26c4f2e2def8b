"""D-Bus per watched keepalived (`--discover`): its own bus, attached only where keepalived owns the name.

Which bus. keepalived (GDBus, `g_bus_own_name(G_BUS_TYPE_SYSTEM, ...)` in vrrp_dbus.c) uses the system
bus address of its own environment: $DBUS_SYSTEM_BUS_ADDRESS, else the system bus socket
(/run/dbus/system_bus_socket). So the address is read from /proc/PID/environ, and a `unix:path=` is
reached through /proc/PID/root when keepalived is in another mount namespace (a container with its own
bus, or `ip netns exec`'s private mount namespace: the same files then). Two limits, written where they
are decided: a `unix:abstract=` socket belongs to one network namespace, so it is used only when
keepalived is in ours; and an absolute symlink inside keepalived's root (e.g. /var/run -> /run) would be
followed from ours, so the default is the /run path, not /var/run. A path longer than sun_path's 107
bytes is reached through an O_PATH descriptor of its directory (/proc/self/fd/N/name).

Whose bus. One connection owns `org.keepalived.Vrrp1` on a bus. Several keepalived pointed at one bus
(the host's system bus, or one socket mounted into several containers) all ask for it; the first holds
it and the others export nothing there. A member attaches only when the owner is its own keepalived:
`GetConnectionUnixProcessID(owner)` is the pid the bus daemon got from SO_PEERCRED when keepalived
connected, which is its VRRP child (keepalived's D-Bus runs in the VRRP process; the parent is accepted
too), and the kernel gives it as seen in the bus daemon's pid namespace. The bus daemon's own pid, as we
see it, is SO_PEERCRED on our connection; with it:
- bus daemon in keepalived's pid namespace (a container with its own bus): the pid is compared with
  keepalived's pids as that namespace numbers them (the last column of /proc/PID/status NSpid);
- bus daemon in ours (the host's bus): with keepalived's pids as we number them;
- in between (nested): with the column at the bus daemon's depth;
- bus daemon not visible to us (its pid 0: it is above our pid namespace): with any column. Only there
  could an unrelated process of the bus's namespace pass for keepalived, by having one of its numbers.
Otherwise the member runs without D-Bus: `ka_exporter_source_up{source="dbus"}` 0, and one line says
whose the name is. It stays connected and is told by NameOwnerChanged when the owner changes.

How it runs. No thread per member: `BusLoop` is one thread polling every member's bus connection, and a
pool of two threads does what waits for the bus (connecting, reading keepalived's object tree, the State
read that confirms a VrrpStatusChange, the liveness call). While a member's work runs its connection is
not polled, so a connection is only ever used by one thread at a time. The liveness call (a frozen
dbus-daemon answers nothing, see `sources/dbus.py`) is made every `LIVENESS` seconds here, not every
second: 200 members would make 200 bus calls a second. Event driven as with one keepalived: signals are
read as they arrive; keepalived is never signalled for this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

from ka_exporter.linux.dbusclient import (
    BUS_NAME,
    BUS_PATH,
    SYSTEM_BUS_DEFAULT,
    BusClient,
    BusConnectionError,
    Call,
    DBusError,
)
from ka_exporter.linux.procfs import environ
from ka_exporter.sources.dbus import DbusSource, NotOnBusError, OnChange
from ka_exporter.sources.fleetloop import LoopThread, MemberLogged
from ka_exporter.store import Store
from ka_exporter.store.fleet import Daemon, DaemonKey

log = logging.getLogger("ka_exporter.sources.fleetbus")

LIVENESS = 5.0  # seconds between two liveness calls per member
RETRY = 2.0  # seconds before connecting again to a bus that could not be used
RETRY_MAX = 60.0  # the retry doubles per failure in a row up to this: a hung bus, whose every attempt
# holds one of the pool's two workers for the call timeout, does not take half the pool from the others
MAX_SUN_PATH = 107
_BUS_ERRORS = (BusConnectionError, TimeoutError, DBusError, OSError)


class UnattachableError(Exception):
    """This member's keepalived has no bus we may use (the message says why)."""


def _nspid(pid: int | str) -> list[int]:
    """The pid in each pid namespace from ours down to its own (/proc/PID/status NSpid)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line[6:].split()]
    except (OSError, ValueError):
        pass
    return []


def _pid_ns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def _children(d: Daemon) -> list[int]:
    """keepalived's children now (a restarted VRRP child is newer than discovery's last scan)."""
    try:
        with open(f"/proc/{d.pid}/task/{d.pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return list(d.children)


def owned_by(d: Daemon, owner_pid: int, bus_pid: int) -> bool:
    """Is `owner_pid` (as the bus daemon `bus_pid` numbers it) keepalived `d` or one of its children?"""
    bus_ns = _pid_ns(bus_pid) if bus_pid > 0 else None
    for pid in (d.pid, *_children(d)):
        chain = _nspid(pid)  # ours first, its own last
        if not chain:
            continue
        if bus_ns is None:
            columns = chain  # the bus daemon is above our namespace: any column (see the docstring)
        elif bus_ns == _pid_ns(pid):
            columns = chain[-1:]
        elif bus_ns == _pid_ns("self"):
            columns = chain[:1]
        else:
            depth = len(_nspid(bus_pid)) - 1
            columns = chain[depth : depth + 1] if depth >= 0 else []
        if owner_pid in columns:
            return True
    return False


def bus_path(d: Daemon, same_mount_ns: bool, host_netns: int) -> tuple[str, str]:
    """(keepalived's bus address as it sees it, the address to connect to from here); UnattachableError."""
    seen = environ(d.pid, "DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT
    for entry in seen.split(";"):
        kind, _, rest = entry.partition(":")
        params = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        if kind != "unix":
            continue
        if "path" in params:
            path = unquote(params["path"])
            return seen, f"unix:path={path if same_mount_ns else d.root + path}"
        if "abstract" in params:
            if d.netns_inode != host_netns:
                raise UnattachableError(
                    f"dbus: keepalived's bus {seen!r} is an abstract socket of its own network namespace:"
                    " not reachable from the exporter's"
                )
            return seen, entry
    raise UnattachableError(f"dbus: keepalived's bus {seen!r} has no unix socket the exporter can reach")


def _peer_pid(client: BusClient) -> int:
    """The bus daemon's pid as we number it (0 when it is not visible from our pid namespace)."""
    sock = socket.socket(fileno=os.dup(client.fileno()))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    finally:
        sock.close()
    return int(struct.unpack("3i", raw)[0])


class SharedDbus(MemberLogged, DbusSource):
    """One member's D-Bus source, stepped by `BusLoop` instead of its own thread."""

    def __init__(
        self,
        store: Store,
        daemon: Callable[[], Daemon],
        same_mount_ns: Callable[[int], bool],
        host_netns: int,
        on_change: OnChange,
    ) -> None:
        super().__init__(store, SYSTEM_BUS_DEFAULT, on_change, liveness_interval=LIVENESS)
        self.daemon = daemon
        self.same_mount_ns = same_mount_ns
        self.host_netns = host_netns
        self.refusals = 0  # times the name was found owned by another process
        self._lost = 0

    # -- steps (each in a pool thread, one at a time per member) -----------------------------------

    def attach(self) -> BusClient:
        """Connect to keepalived's bus, subscribe, read its tree if it is ours; raises on failure."""
        d = self.daemon()
        _seen, address = bus_path(d, self.same_mount_ns(d.pid), self.host_netns)
        self.address = address
        dirfd: int | None = None
        connect = address
        path = address.removeprefix("unix:path=")
        if path != address and len(path.encode()) > MAX_SUN_PATH:
            dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            connect = f"unix:path=/proc/self/fd/{dirfd}/{os.path.basename(path)}"
        try:
            client = BusClient(connect, timeout=self.call_timeout)
        finally:
            if dirfd is not None:
                os.close(dirfd)
        try:
            self._subscribe(client)
            self._lost = client.signals_lost
            self._read(client)
        except BaseException:
            client.close()
            raise
        return client

    def pump(self, client: BusClient) -> bool:
        """Handle what the bus sent; True when nothing is left, False when the turn's cap was reached.

        Called when the loop saw the connection readable, and after every call made on it (attach,
        liveness): a signal that arrives while a call waits for its reply is read off the socket into
        the client's queue by that call, so the socket is empty afterwards and poll would never report
        it. Without this pass such a VrrpStatusChange stayed unhandled until the bus sent something
        else, and the member went on exporting the old state as current."""
        for _ in range(1000):  # a flood is handled over several turns, never starving other members
            if client.signals_lost != self._lost:
                self._lost = client.signals_lost
                client.drop_signals()
                self._read(client)
            sig = client.next_signal(timeout=0.0)
            if sig is None:
                return True
            try:
                self._handle(client, sig)
            except UnattachableError as exc:
                self._refused(str(exc))
        return False

    def ping(self, client: BusClient) -> None:
        self._ping(client)

    def lost(self, exc: BaseException) -> None:
        """The connection is unusable (or there is none to make): health down, view withdrawn."""
        self.fail(str(exc) if isinstance(exc, UnattachableError) else self._bus_error(exc))
        self._owner = None
        self._withdraw()

    def forget(self) -> None:
        """A new keepalived process: what the old one's connection said is history."""
        self._owner = None
        self._withdraw()

    # -- overrides ----------------------------------------------------------------------------------

    def _read(self, client: BusClient) -> None:
        try:
            self._refresh_or_report(client)
        except UnattachableError as exc:
            self._refused(str(exc))

    def _refresh(self, client: BusClient) -> None:
        owner = client.name_owner(self.service)
        if owner is None:
            raise NotOnBusError
        call = Call(BUS_NAME, BUS_PATH, BUS_NAME, "GetConnectionUnixProcessID", "s", (owner,))
        owner_pid = int(client.call(call)[0])
        d = self.daemon()
        if not owned_by(d, owner_pid, _peer_pid(client)):
            raise UnattachableError(
                f"dbus: {self.service} on the bus at {self.address} belongs to pid {owner_pid} (as the bus"
                f" numbers it), not to this keepalived (pid {d.pid} or its VRRP child): not attached"
            )
        super()._refresh(client)

    def _refused(self, error: str) -> None:
        self.refusals += 1
        self._owner = None  # the owner's signals are not ours: dropped (signals_ignored)
        self.fail(error)
        self._withdraw()

    def _gone(self) -> None:
        if self._owner is None:  # never ours on this connection: D-Bus vouches for nothing of ours
            self.fail(self.not_on_bus_error)
            return
        super()._gone()


@dataclass(eq=False)
class _Member:
    key: DaemonKey
    source: SharedDbus
    client: BusClient | None = None
    busy: bool = False
    due: float = 0.0  # the next connection attempt (no client) or liveness call (connected)
    polled: int | None = None  # the fd registered in the poller
    again: bool = False  # restarted while busy: attach again when the work ends
    more: bool = False  # signals left in the client's queue: pumped again before polling
    failures: int = 0  # failed steps in a row (the retry backs off)
    removed: bool = False


class BusLoop(LoopThread):
    """Every member's bus connection on one thread and a pool of `workers` (see the module docstring)."""

    thread_name = "fleet-dbus-poll"
    what = "the D-Bus loop of --discover"

    def __init__(self, workers: int = 2) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-dbus")
        self._lock = threading.Lock()
        self._queue: list[tuple[str, DaemonKey, SharedDbus | None]] = []
        self._done: list[_Member] = []
        self._members: dict[DaemonKey, _Member] = {}
        self._by_fd: dict[int, _Member] = {}

    # -- from other threads -------------------------------------------------------------------------

    def add(self, key: DaemonKey, source: SharedDbus) -> None:
        self._post("add", key, source)

    def remove(self, key: DaemonKey) -> None:
        self._post("remove", key, None)

    def restarted(self, key: DaemonKey) -> None:
        """keepalived is a new process: drop the connection, forget its view, attach again now."""
        self._post("restart", key, None)

    def stop(self, timeout: float = 1.0) -> None:
        super().stop(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def watched(self) -> int:
        return len(self._members)

    def _died(self, error: str) -> None:
        for m in list(self._members.values()):  # one line said it, not one per member
            m.source.store.report(m.source.name, f"{m.source.name}: {error}")

    def _post(self, what: str, key: DaemonKey, source: SharedDbus | None) -> None:
        with self._lock:
            self._queue.append((what, key, source))
        self._wake()

    # -- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        try:
            while not self._stop.is_set():
                self._apply(poller)
                now = time.monotonic()
                nearest = now + 1.0
                for m in list(self._members.values()):
                    if m.busy:
                        continue
                    if m.due <= now:
                        self._submit(m, poller, self._connect if m.client is None else self._ping)
                    else:
                        nearest = min(nearest, m.due)
                for fd, _ev in poller.poll(max(0.0, nearest - time.monotonic()) * 1000.0):
                    if self._woken(fd):
                        continue
                    ready = self._by_fd.get(fd)
                    if ready is not None and not ready.busy:
                        self._submit(ready, poller, self._pump)
        finally:
            for m in self._members.values():
                if not m.busy:
                    self._close(m, poller)

    def _apply(self, poller: select.poll) -> None:
        with self._lock:
            queue, self._queue = self._queue, []
            done, self._done = self._done, []
        for m in done:
            m.busy = False
            if m.removed:
                self._close(m, poller)
                continue
            if m.again:
                self._restart(m, poller)
            elif m.client is not None:
                fd = m.client.fileno()
                if fd < 0:  # the client closed itself (a send that timed out half way): lost
                    m.client = None
                    m.source.lost(BusConnectionError("dbus: the connection to the bus was closed"))
                    m.due = time.monotonic() + self._retry(m)
                elif m.more:  # queued signals: the socket may never become readable for them
                    self._submit(m, poller, self._pump)
                else:
                    poller.register(fd, select.POLLIN)
                    m.polled = fd
                    self._by_fd[fd] = m
        for what, key, source in queue:
            if what == "add" and source is not None:
                old = self._members.pop(key, None)
                if old is not None:
                    self._drop(old, poller)
                self._members[key] = _Member(key, source)
                continue
            member = self._members.get(key)
            if member is None:
                continue
            if what == "remove":
                del self._members[key]
                self._drop(member, poller)
            elif member.busy:
                member.again = True
            else:
                self._restart(member, poller)

    def _drop(self, m: _Member, poller: select.poll) -> None:
        m.removed = True
        if not m.busy:
            self._close(m, poller)

    def _restart(self, m: _Member, poller: select.poll) -> None:
        m.again = False
        self._close(m, poller)
        m.source.forget()
        m.due = 0.0

    def _close(self, m: _Member, poller: select.poll) -> None:
        if m.polled is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                poller.unregister(m.polled)
            self._by_fd.pop(m.polled, None)
            m.polled = None
        if m.client is not None:
            m.client.close()
            m.client = None

    def _submit(self, m: _Member, poller: select.poll, step: Callable[[_Member], None]) -> None:
        if m.polled is not None:  # not polled while a worker uses the connection
            with contextlib.suppress(KeyError, ValueError, OSError):
                poller.unregister(m.polled)
            self._by_fd.pop(m.polled, None)
            m.polled = None
        m.busy = True
        try:
            self._pool.submit(self._work, m, step)
        except RuntimeError:  # shut down
            m.busy = False

    def _work(self, m: _Member, step: Callable[[_Member], None]) -> None:
        try:
            step(m)
        except (*_BUS_ERRORS, UnattachableError) as exc:
            if m.client is not None:
                m.client.close()
                m.client = None
            m.source.lost(exc)
            m.due = time.monotonic() + self._retry(m)
        except Exception as exc:  # a member's bus never stops the loop
            log.exception("dbus: %s", m.source.where)
            if m.client is not None:
                m.client.close()
                m.client = None
            m.source.fail(m.source.unexpected(exc))
            m.due = time.monotonic() + self._retry(m)
        finally:
            with self._lock:
                self._done.append(m)
            self._wake()

    @staticmethod
    def _retry(m: _Member) -> float:
        m.failures += 1
        return float(min(RETRY * 2 ** min(m.failures - 1, 16), RETRY_MAX))

    @staticmethod
    def _connect(m: _Member) -> None:
        m.client = m.source.attach()
        m.failures = 0
        m.due = time.monotonic() + LIVENESS
        m.more = not m.source.pump(m.client)  # signals that came while the tree was read

    @staticmethod
    def _ping(m: _Member) -> None:
        if m.client is not None:
            m.source.ping(m.client)
            m.more = not m.source.pump(m.client)  # signals that came while the call waited
        m.due = time.monotonic() + LIVENESS

    @staticmethod
    def _pump(m: _Member) -> None:
        m.more = False
        if m.client is not None:
            m.more = not m.source.pump(m.client)
