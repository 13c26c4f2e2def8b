"""The wire source: sniff VRRP adverts on keepalived's interfaces into the peer table.

One capture thread polls one AF_PACKET socket per interface (kernel-filtered to VRRP, see
`capture.py`), decodes each packet (`parse.vrrp.decode`) and updates the bounded `PeerTable`. Each
advert is timed by the kernel (when it reached the socket), so while packets are flowing (closer
than BATCH_WINDOW, 10 ms: 100 instances advertising in one burst) the thread reads them at most
once per window, a burst in one wakeup instead of one per packet; a verdict an advert decides
reaches the store at most BATCH_WINDOW later than it would read at once. It
calls `store.wire_changed()` only when a VRID's verdict changed (a new router, masters, split brain,
no master, conflicts), at most once per batch of packets, so a watcher sees a split brain as soon as
the decisive advert is read; time-driven changes (expiry) are found by a tick when the table says one
can happen (`PeerTable.due`: a hold time or linger running out), every `tick_interval` while a VRID is
not steady; the thread also wakes at least once a second (the failover accounts, kernel drop
counters), on a wakeup for packets when they flow.
The store reads the table through `set_wire_provider(table.snapshot)`.

Failures are one line each and never stop the other sources: no CAP_NET_RAW, an interface that does
not exist. The source keeps retrying every `retry_interval` seconds (1 s: a failed open costs
microseconds, and an interface deleted and re-created is sniffed again within a second of its return);
an interface that disappears and comes back (new ifindex) is re-opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from ka_exporter.model import Advert, FailoverEvent, KeepalivedConfig, VridTiming
from ka_exporter.parse.vrrp import PROCESS_KEY, decode
from ka_exporter.settings import default
from ka_exporter.sources.base import Registration, Source, Wiring
from ka_exporter.sources.capture import CaptureError, PacketSocket
from ka_exporter.store import Store
from ka_exporter.store.peers import DEFAULT_LINGER, PeerTable
from ka_exporter.verdicts.failover import FailoverTracker
from ka_exporter.verdicts.wire import (
    DEFAULT_HOLD,
    VridKey,
    VridVerdict,
    config_vrids,
    configured_vrids,
    judge_snapshot,
    vrid_holds,
)

Configured = Callable[[], Iterable[VridKey]] | Iterable[VridKey] | None

_POLLIN = select.POLLIN
_CACHE_MAX = 1024  # remembered packet shapes per interface
_POLLBAD = select.POLLERR | select.POLLHUP | select.POLLNVAL
FAILOVER_FRESH = 1.0  # seconds: the failover accounts a reader sees are at most this old
FAILOVER_IDLE = 5.0  # seconds between two observations of a table that only repeated itself
TICK_EARLY = 0.25  # seconds: a tick due within this of a wakeup for packets runs in that wakeup
CHECK_EARLY = 1.0  # seconds: the same for the socket check (every check_interval, 5 s, while healthy)
# seconds: while packets come closer than this (a burst: 100 instances advertising at once; taken
# as three reads within two windows), the sockets are read at most once per BATCH_WINDOW, so a burst
# is a few wakeups and passes of the table, not one per packet. Adverts keep their kernel receive
# times (capture.py), so what is late is only when the store hears of them: an advert is read at
# most BATCH_WINDOW after it arrived, so a verdict it decides (split brain, a new master) reaches the
# store at most that much later. Kept at a fifth of the 50 ms freshness target (issue #12): the rest
# is for the store, watchdog and scrape. An advert after a quiet spell (1 instance: one a second) is
# read at once.
BATCH_WINDOW = 0.010


class WireSource(Source):
    """Sniffs VRRP on `interfaces` (default: the interfaces of the configured VRRP instances)."""

    name = "wire"
    first_pass = False  # serving: it listens continuously from its start

    def __init__(
        self,
        store: Store,
        interfaces: Sequence[str] = (),
        cap: int = default("wire_max_peers"),
        configured: Configured = None,
        listen_seconds: float = default("wire_listen_seconds"),
        *,
        linger: float = DEFAULT_LINGER,
        key: bytes = PROCESS_KEY,
        retry_interval: float = 1.0,
        check_interval: float = 5.0,
        tick_interval: float = 0.25,
        batch: int = 256,
        batch_window: float = BATCH_WINDOW,
    ) -> None:
        super().__init__(store)
        self.interfaces = tuple(interfaces)
        self.configured = configured
        self.listen_seconds = listen_seconds
        self.key = key
        self.retry_interval = retry_interval
        self.check_interval = check_interval
        self.tick_interval = tick_interval
        self.batch = batch
        self.batch_window = batch_window
        self.table = PeerTable(cap=cap, linger=linger)
        self.received = 0  # packets that got past the kernel filter into Python
        self.wakeups = 0  # poll rounds that read packets (run(): a burst in a batch window is one)
        self.attempts = 0  # socket (re)open rounds, for tests and status
        self._sockets: dict[tuple[str, bool], PacketSocket] = {}  # by (interface, outgoing)
        self._by_fd: dict[int, PacketSocket] = {}
        self._closed_stats = (0, 0)  # PACKET_STATISTICS of sockets already closed
        self._since: dict[str, float] = {}  # interface -> both its sockets open since
        self._gates: list[float] = []  # times a configured VRID's "listened for its hold time" comes
        self._wake: tuple[int, int] | None = None
        self._cache: dict[str, dict[int, Advert]] = {}
        self._config_seen: tuple[KeepalivedConfig | None, tuple[VridKey, ...]] = (None, ())
        self.failover = FailoverTracker()
        self._failover_lock = threading.Lock()
        self._failover_version = 0  # moves with each observe_failover
        self._observed_at = float("-inf")  # time.time() of the last observe_failover
        self._observed_moved = -1  # the table's moved() then
        self._lazy = False  # while run() serves: a reader brings stale accounts up to date itself
        self._accounts: tuple[int, tuple[tuple[VridTiming, ...], tuple[FailoverEvent, ...]]] | None = None
        store.set_wire_provider(self.table.snapshot, self.table.version)
        store.set_failover_provider(self.failover_accounts, self.failover_version)

    # -- failover accounts ----------------------------------------------------------------------------

    def observe_failover(self, now: float) -> None:
        """Bring the failover accounts up to date from the table (on every tick: packet timestamps
        make them exact whatever the moment; see verdicts/failover.py)."""
        with self._failover_lock:
            self._observe_locked(now)

    def _observe_locked(self, now: float) -> None:
        self._observed_moved = self.table.moved()
        peers, stats = self.table.snapshot()
        self.failover.observe(peers, now, stats.listening_since)
        self._failover_version += 1
        self._observed_at = now

    def _fresh_locked(self) -> None:
        """While serving: accounts more than FAILOVER_FRESH old are brought up to date by the reader
        (a scrape, the watchdog), so the capture thread observes a steady table only every
        FAILOVER_IDLE seconds and readers still see them at most a second old."""
        if self._lazy:
            now = time.time()
            if now - self._observed_at >= FAILOVER_FRESH:
                self._observe_locked(now)

    def failover_accounts(self) -> tuple[tuple[VridTiming, ...], tuple[FailoverEvent, ...]]:
        """The accounts as of the last observe_failover, as records (made once per observe: every
        snapshot reads them)."""
        with self._failover_lock:
            self._fresh_locked()
            kept = self._accounts
            if kept is None or kept[0] != self._failover_version:
                kept = self._accounts = (
                    self._failover_version,
                    (self.failover.timings(), self.failover.recent()),
                )
            return kept[1]

    def failover_version(self) -> int:
        with self._failover_lock:
            self._fresh_locked()
            return self._failover_version

    # -- what to watch --------------------------------------------------------------------------------

    def configured_keys(self) -> tuple[VridKey, ...]:
        """(interface, family, vrid) that should have a master (for no_master)."""
        conf = self.configured
        if conf is None:
            # keepalived.conf's, from the store's config alone (a snapshot every check_interval was
            # most of a check at 100 instances); keepalived's view only when the config has none.
            config = self.store.config()
            if config is not self._config_seen[0]:
                self._config_seen = (config, config_vrids(config))
            return self._config_seen[1] or configured_vrids(self.store.snapshot())
        if callable(conf):
            return tuple(conf())
        return tuple(conf)

    def wanted_interfaces(self) -> tuple[str, ...]:
        if self.interfaces:
            return self.interfaces
        return tuple(sorted({k[0] for k in self.configured_keys()}))

    def verdicts(self, now: float | None = None) -> tuple[VridVerdict, ...]:
        """The wire verdicts now (seen and configured VRIDs), as the collector judges them."""
        snap = self.store.snapshot()
        conf = configured_vrids(snap) if self.configured is None else self.configured_keys()
        return judge_snapshot(snap, conf, snap.time if now is None else now)

    # -- sockets --------------------------------------------------------------------------------------

    def _open(self, poller: select.poll | None) -> list[CaptureError]:
        """Open what is missing, drop what vanished; return the errors (empty: all open)."""
        self.attempts += 1
        wanted = self.wanted_interfaces()
        for (name, _out), sock in list(self._sockets.items()):
            try:
                gone = name not in wanted or socket.if_nametoindex(name) != sock.ifindex
            except OSError:
                gone = True
            if gone:
                self._close(sock, poller)
        errors: list[CaptureError] = []
        for name in wanted:
            for outgoing in (False, True):  # received adverts, and this host's own
                if (name, outgoing) in self._sockets:
                    continue
                try:
                    sock = PacketSocket(name, outgoing=outgoing)
                except CaptureError as exc:
                    errors.append(exc)
                    break
                self._sockets[(name, outgoing)] = sock
                self._by_fd[sock.fileno()] = sock
                if poller is not None:
                    poller.register(sock.fileno(), _POLLIN)
        opened = False
        for name in wanted:
            if name not in self._since and (name, False) in self._sockets and (name, True) in self._sockets:
                self._since[name] = time.time()  # both sockets bound: captured from now on
                opened = True
        if opened:
            self.table.set_listening(self._since)
            self._plan_gates()
        self._update_kernel_stats()
        return errors

    def _plan_gates(self) -> None:
        """When each configured VRID's hold time of listening will have passed (to notify then)."""
        listening = self.table.listening()
        if listening is None:
            self._gates = []
            return
        holds = vrid_holds(self.store.snapshot())
        keys = [k for k in self.configured_keys() if listening.covers(k[0])]
        self._gates = sorted({listening.since + holds.get(k, DEFAULT_HOLD) for k in keys})

    def _close(self, sock: PacketSocket, poller: select.poll | None, *, tell: bool = True) -> None:
        packets, drops = sock.read_stats()
        self._closed_stats = (self._closed_stats[0] + packets, self._closed_stats[1] + drops)
        fd = sock.fileno()
        if poller is not None:
            with contextlib.suppress(KeyError, ValueError):
                poller.unregister(fd)
        self._by_fd.pop(fd, None)
        self._sockets.pop((sock.interface, sock.outgoing), None)
        sock.close()
        if self._since.pop(sock.interface, None) is not None and tell:
            self.table.set_listening(self._since)  # no longer captured there

    def _close_all(self, poller: select.poll | None) -> None:
        """Close every socket; the table keeps what was listened (where, how long) for the verdicts."""
        self.table.stop_listening(time.time())
        for sock in list(self._sockets.values()):
            self._close(sock, poller, tell=False)
        self._gates = []

    def _update_kernel_stats(self) -> None:
        packets, drops = self._closed_stats
        for sock in self._sockets.values():
            p, d = sock.read_stats()
            packets += p
            drops += d
        self.table.set_kernel_stats(packets, drops)

    def _report(self, errors: list[CaptureError]) -> bool:
        if not self.wanted_interfaces():
            self.fail("wire: no interface to sniff (none found in keepalived.conf; use --wire.interface)")
            return False
        if errors:
            self.fail(summarize(errors))
            return False
        self.ok()
        return True

    # -- packets --------------------------------------------------------------------------------------

    def _drain(self, sock: PacketSocket) -> bool:
        """Read what is queued on `sock` into the table; True if a verdict changed."""
        batch = sock.recv_batch(self.batch)
        self.received += len(batch)
        return self.ingest(sock.interface, batch)

    def ingest(self, iface: str, batch: Iterable[tuple[bytes, float, bool]]) -> bool:
        """Decode (IP packet, timestamp, outgoing) tuples seen on `iface` into the table.

        True if a verdict changed. A router repeats the same bytes every interval (only the IPv4
        ID and header checksum change), so the last decode of each packet shape is remembered by a
        keyed hash of those bytes (Python's SipHash, randomly keyed per process: never the bytes,
        which hold a PASS password) and a repeat skips the decoder via `PeerTable.repeat`. Also
        used to replay a capture (`read_pcap`) through exactly the live path.
        """
        changed = False
        table = self.table
        key = self.key
        cache = self._cache.get(iface)
        if cache is None:
            cache = self._cache[iface] = {}
        for data, ts, outgoing in batch:
            if len(data) >= 20 and data[0] == 0x45:
                shape = hash((data[:4], data[6:10], data[12:]))  # not the IPv4 ID and checksum
            else:
                shape = hash(data)
            known = cache.get(shape)
            if known is not None:
                fast = table.repeat(known, ts, outgoing)
                if fast is not None:
                    changed = changed or fast
                    continue
            got = decode(data, interface=iface, timestamp=ts or time.time(), key=key, outgoing=outgoing)
            if isinstance(got, Advert):
                if len(cache) >= _CACHE_MAX:
                    cache.clear()  # a flood of distinct packets: start over, bounded
                cache[shape] = got
                if table.update(got):
                    changed = True
            else:
                table.count_invalid(got.reason)
        return changed

    def _poll_once(self, poller: select.poll, timeout: float) -> tuple[bool, bool]:
        """One poll round: (a verdict changed, a socket broke)."""
        changed = broken = False
        for fd, ev in poller.poll(max(0.0, timeout) * 1000.0):
            if self._wake is not None and fd == self._wake[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 64)
                continue
            sock = self._by_fd.get(fd)
            if sock is None:
                continue
            try:
                if ev & _POLLIN or ev & select.POLLERR:
                    changed |= self._drain(sock)
                elif ev & _POLLBAD:
                    broken = True
            except CaptureError as exc:
                # ENETDOWN: the interface went down or away. Keep the socket (the kernel re-hooks
                # it when the same interface comes back up) and let the next check decide.
                broken = True
                if exc.code != errno.ENETDOWN:
                    self._close(sock, poller)
        return changed, broken

    # -- lifecycle ------------------------------------------------------------------------------------

    def run(self) -> None:
        poller = select.poll()
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self._wake = (rfd, wfd)
        poller.register(rfd, _POLLIN)
        waker = select.poll()  # the batch window: only close() ends it early
        waker.register(rfd, _POLLIN)
        next_check = 0.0
        next_tick = time.monotonic() + self.tick_interval
        next_failover = last_failover = 0.0
        next_stats = 0.0
        last_read = (float("-inf"),) * 2  # monotonic times of the last two wakeups that read packets
        window_end = 0.0  # the sockets are not polled before then (a batch window)
        healthy = False
        self._lazy = True
        try:
            while not self.stopping:
                mono = time.monotonic()
                if mono < window_end:
                    # The rest of a burst queues meanwhile, timed by the kernel; ticks wait too
                    # (at most the window: they follow a read, so they see every advert queued).
                    self._wait_wake(waker, window_end - mono)
                    continue
                if mono >= next_check:
                    healthy = self._report(self._open(poller))
                    next_check = mono + (self.check_interval if healthy else self.retry_interval)
                received = self.received
                changed, broken = self._poll_once(poller, min(next_check, next_tick) - time.monotonic())
                if broken:
                    next_check = min(next_check, time.monotonic() + 0.2)
                if changed:
                    self.store.wire_changed()
                mono = time.monotonic()
                read = self.received != received
                if read:
                    self.wakeups += 1
                    # The third read within two windows: packets are flowing, batch them. Not the
                    # second: a lone advert can come as two reads (own and received socket, or two
                    # routers a moment apart), and a window then would be a wakeup of its own for none.
                    if mono - last_read[0] < 2.0 * self.batch_window:
                        window_end = mono + self.batch_window
                    last_read = (last_read[1], mono)
                    if healthy and next_check - mono < CHECK_EARLY:
                        next_check = mono  # the socket check rides on this wakeup, not one of its own
                # A tick due soon rides on a wakeup for packets (ticking early changes nothing: the
                # next is planned from the table again): with 1 instance, one wakeup a second, not two.
                early = read and mono >= next_tick - TICK_EARLY
                if mono >= next_tick or early:
                    now = time.time()
                    gate = bool(self._gates) and now >= self._gates[0]
                    while self._gates and now >= self._gates[0]:
                        del self._gates[0]  # listened for a configured VRID's hold time: re-judge
                    # The table only when it can change (PeerTable.due): its tick walks every router.
                    if (now >= self.table.due() and self.table.tick(now)) or gate:
                        self.store.wire_changed()
                    # The accounts are exact from packet timestamps whenever they are brought up to
                    # date: within a second when the table moved (a new router, run, priority,
                    # expiry), else every FAILOVER_IDLE seconds (readers refresh them themselves).
                    moved = self.table.moved() != self._observed_moved
                    if mono >= next_failover or (moved and mono >= last_failover + FAILOVER_FRESH):
                        self.observe_failover(now)
                        last_failover, next_failover = mono, mono + FAILOVER_IDLE
                    # Until the table can change (a hold time or linger running out; the next
                    # tick while a VRID is not steady) or a gate falls due, at most a second (the
                    # accounts and kernel stats): steady VRIDs do not wake the thread 4 times a second.
                    due = min(self.table.due(), self._gates[0] if self._gates else float("inf")) - now
                    next_tick = mono + min(max(due, self.tick_interval), 1.0)
                    if mono >= next_stats - TICK_EARLY:  # kernel drops within a second, not a check interval
                        self._update_kernel_stats()
                        next_stats = mono + 1.0
        finally:
            self._lazy = False
            self._close_all(poller)
            self._wake = None
            os.close(rfd)
            os.close(wfd)

    def _wait_wake(self, waker: select.poll, timeout: float) -> None:
        """Sleep `timeout` seconds, or until close() writes to the wake pipe."""
        if waker.poll(max(0.0, timeout) * 1000.0) and self._wake is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake[0], 64)

    def poll(self) -> None:
        """--once: listen `listen_seconds`, then close."""
        seconds = self.listen_seconds
        poller = select.poll()
        try:
            errors = self._open(poller)
            if self._sockets:
                deadline = time.monotonic() + seconds
                while True:
                    left = deadline - time.monotonic()
                    changed, _broken = self._poll_once(poller, min(left, self.tick_interval))
                    if changed:
                        self.store.wire_changed()
                    if left <= 0:
                        break
                self.table.tick(time.time())
                self._update_kernel_stats()
            self._report(errors)
        finally:
            self._close_all(None)

    def close(self) -> None:
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")


def summarize(errors: list[CaptureError]) -> str:
    """One line for several interfaces: "wire: cannot open ... on eth0, eth1: <reason>"."""
    prefix = "wire: cannot open AF_PACKET socket on "
    by_reason: dict[str, list[str]] = {}
    other: list[str] = []
    for exc in errors:
        text = str(exc)
        if text.startswith(prefix) and ": " in text[len(prefix) :]:
            iface, reason = text[len(prefix) :].split(": ", 1)
            by_reason.setdefault(reason, []).append(iface)
        else:
            other.append(text)
    parts = [f"{prefix}{', '.join(ifaces)}: {reason}" for reason, ifaces in by_reason.items()]
    return "; ".join(parts + other)


def build(w: Wiring) -> WireSource:
    s = w.settings
    return WireSource(w.store, s.wire_interfaces, cap=s.wire_max_peers, listen_seconds=s.wire_listen_seconds)


REGISTRATION = Registration(
    "wire", "the VRRP sniffer", 70, build, parts=("wire:collect_wire", "failover:collect_failover")
)
