"""A small blocking D-Bus client: jeepney's sans-I/O core (auth, marshalling) over a socket we own.

Why not `jeepney.io.blocking`: its connection says Hello with no time limit, and its only way to wake a
reader blocked in another thread is to close the socket under it. Here every read and every write has a
deadline (a bus that stops reading, e.g. a frozen dbus-daemon, fails the call with TimeoutError rather
than block the sender forever), `interrupt()` wakes a blocked reader or writer from any thread, replies
are matched by serial so many calls can be in flight at once (`call_many`), and signals that arrive
while a call waits are queued, bounded, for `next_signal()`.

One `BusClient` is meant for one thread. Nothing here logs message bodies.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, MatchRule, Message, MessageType, Parser, new_method_call
from jeepney.auth import BEGIN, AuthenticationError, Authenticator
from jeepney.bus import get_connectable_addresses

from ka_exporter.linux import fdwait

SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"
BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
_READ_SIZE = 65536


def resolve_address(address: str | None) -> str:
    """The address to use: the one given, else $DBUS_SYSTEM_BUS_ADDRESS, else the system bus."""
    return address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT


class BusConnectionError(ConnectionError):
    """The bus cannot be reached, refused us, or went away."""


class DBusError(Exception):
    """The peer answered a method call with an error."""

    def __init__(self, name: str, message: str = "") -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class Call:
    destination: str
    path: str
    interface: str
    member: str
    signature: str = ""
    body: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Signal:
    sender: str
    path: str
    interface: str
    member: str
    body: tuple[Any, ...]


def _short(text: object, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _socket_path(address: str) -> str:
    try:
        return str(next(iter(get_connectable_addresses(address))))
    except (RuntimeError, ValueError, StopIteration) as exc:
        raise BusConnectionError(f"unusable D-Bus address {address!r}: {_short(exc)}") from None


class BusClient:
    """One authenticated connection to a message bus."""

    def __init__(self, address: str, *, timeout: float = 2.0, max_queued_signals: int = 10000) -> None:
        self.address = address
        self.timeout = timeout
        self._parser = Parser()
        self._serial = 0
        self._replies: dict[int, Message] = {}
        self._waiting: set[int] = set()
        self._signals: deque[Signal] = deque()
        self._max_signals = max_queued_signals
        self.signals_lost = 0
        self._closed = False
        self._close_lock = threading.Lock()  # close() vs interrupt() from another thread
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._authenticate(_socket_path(address), timeout)
            reply = self.call(Call(BUS_NAME, BUS_PATH, BUS_NAME, "Hello"), timeout=timeout)
            self.unique_name = str(reply[0])
        except BaseException:
            self.close()
            raise

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            for close in (self._sock.close, lambda: os.close(self._wake_r), lambda: os.close(self._wake_w)):
                with contextlib.suppress(OSError):
                    close()

    def interrupt(self) -> None:
        """Wake a thread blocked in this client (safe from any thread); it raises BusConnectionError."""
        with self._close_lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def fileno(self) -> int:
        """The connection's socket, for a caller that polls many connections (it must not read it)."""
        return self._sock.fileno()

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------------

    def call(self, call: Call, timeout: float | None = None) -> tuple[Any, ...]:
        """Call a method and return the reply's body; DBusError if the peer answers with an error."""
        result = self.call_many([call], timeout=timeout)[0]
        if isinstance(result, DBusError):
            raise result
        return result

    def call_many(
        self, calls: Sequence[Call], timeout: float | None = None, window: int = 32
    ) -> list[tuple[Any, ...] | DBusError]:
        """Send the calls pipelined (at most `window` in flight) and return the replies in order.

        The bus limits the replies pending per connection (128 on a stock system bus), hence the window.
        Raises TimeoutError if the replies do not all arrive within `timeout` seconds in total.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        results: list[tuple[Any, ...] | DBusError] = []
        serials: list[int] = []
        sent = 0
        try:
            while len(results) < len(calls):
                while sent < len(calls) and sent - len(results) < window:
                    serials.append(self._send(calls[sent], deadline))
                    sent += 1
                serial = serials[len(results)]
                while serial not in self._replies:
                    self._read(deadline)
                results.append(self._unwrap(self._replies.pop(serial)))
        finally:
            for serial in serials:
                self._waiting.discard(serial)
                self._replies.pop(serial, None)
        return results

    def add_match(self, rule: MatchRule) -> None:
        self.call(Call(BUS_NAME, BUS_PATH, BUS_NAME, "AddMatch", "s", (rule.serialise(),)))

    def name_owner(self, name: str) -> str | None:
        """The unique name owning `name`, or None when nobody owns it."""
        try:
            return str(self.call(Call(BUS_NAME, BUS_PATH, BUS_NAME, "GetNameOwner", "s", (name,)))[0])
        except DBusError as exc:
            if exc.name == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return None
            raise

    # -- signals ----------------------------------------------------------------------------------

    def next_signal(self, timeout: float | None) -> Signal | None:
        """The next queued or incoming signal, or None if none arrives within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._signals:
            try:
                self._read(deadline)
            except TimeoutError:
                return None
        return self._signals.popleft()

    def pending_signals(self) -> int:
        return len(self._signals)

    def drop_signals(self) -> int:
        """Forget every queued signal; return how many there were."""
        count = len(self._signals)
        self._signals.clear()
        return count

    # -- internals --------------------------------------------------------------------------------

    def _authenticate(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            self._sock.settimeout(left())
            self._sock.connect(path)
            self._sock.sendall(b"\0")
            auth = Authenticator(enable_fds=False, inc_null_byte=False)
            for line in auth:
                self._sock.settimeout(left())
                self._sock.sendall(line)
                data = self._sock.recv(1024)
                if not data:
                    raise BusConnectionError("the bus closed the connection during authentication")
                auth.feed(data)
            self._sock.sendall(BEGIN)
        except TimeoutError:
            raise BusConnectionError(f"the bus did not authenticate us within {timeout:g} s") from None
        except AuthenticationError:
            raise BusConnectionError("the bus rejected EXTERNAL authentication") from None
        except FileNotFoundError:
            raise BusConnectionError("no bus socket") from None
        except ConnectionRefusedError:
            raise BusConnectionError("connection refused (no dbus-daemon listening)") from None
        except PermissionError:
            raise BusConnectionError("permission denied on the bus socket") from None
        except OSError as exc:
            raise BusConnectionError(_short(exc.strerror or exc)) from None
        self._sock.settimeout(None)
        self._sock.setblocking(False)

    def _send(self, call: Call, deadline: float) -> int:
        """Write one method call; TimeoutError if the bus has not taken all of it by `deadline` (the
        connection is closed then: half a message on the stream would garble every later one)."""
        if self._closed:
            raise BusConnectionError("connection closed")
        self._serial += 1
        serial = self._serial
        msg = new_method_call(
            DBusAddress(call.path, bus_name=call.destination, interface=call.interface),
            call.member,
            call.signature or None,
            call.body,
        )
        data = msg.serialise(serial=serial)
        self._waiting.add(serial)
        view = memoryview(data)
        while view:
            try:
                n = self._sock.send(view)
            except BlockingIOError:
                if not self._wait_writable(deadline):
                    if len(view) < len(data):
                        self.close()
                    raise TimeoutError from None
                continue
            except OSError:
                raise BusConnectionError("the bus closed the connection") from None
            view = view[n:]
        return serial

    def _wait_writable(self, deadline: float) -> bool:
        """Wait until the socket takes more data (True) or `deadline` passes (False);
        BusConnectionError when interrupted or closed."""
        poller = select.poll()
        try:
            poller.register(self._sock.fileno(), select.POLLOUT)
            poller.register(self._wake_r, select.POLLIN)
        except (OSError, ValueError) as exc:
            raise BusConnectionError("connection closed") from exc
        events = poller.poll(math.ceil(max(0.0, deadline - time.monotonic()) * 1000))
        for fd, _mask in events:
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                raise BusConnectionError("interrupted")
        return bool(events)

    def _read(self, deadline: float | None) -> None:
        """Read and dispatch at least one message (or raise TimeoutError / BusConnectionError)."""
        if self._closed:
            raise BusConnectionError("connection closed")
        while True:
            try:
                msg = self._parser.get_next_message()
            except Exception as exc:  # jeepney raises assorted errors on malformed wire data
                raise BusConnectionError(f"malformed message from the bus ({type(exc).__name__})") from None
            if msg is not None:
                self._dispatch(msg)
                return
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready = fdwait.readable([self._sock.fileno(), self._wake_r], wait)
            except (OSError, ValueError) as exc:
                raise BusConnectionError("connection closed") from exc
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                raise BusConnectionError("interrupted")
            if not ready:
                raise TimeoutError
            try:
                data = self._sock.recv(_READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                raise BusConnectionError("the bus closed the connection") from None
            if not data:
                raise BusConnectionError("the bus closed the connection")
            self._parser.add_data(data)

    def _dispatch(self, msg: Message) -> None:
        fields = msg.header.fields
        kind = msg.header.message_type
        if kind in (MessageType.method_return, MessageType.error):
            serial = fields.get(HeaderFields.reply_serial, -1)
            if serial in self._waiting:
                self._replies[serial] = msg
            return
        if kind is MessageType.signal:
            if len(self._signals) >= self._max_signals:
                self._signals.popleft()
                self.signals_lost += 1
            self._signals.append(
                Signal(
                    sender=str(fields.get(HeaderFields.sender, "")),
                    path=str(fields.get(HeaderFields.path, "")),
                    interface=str(fields.get(HeaderFields.interface, "")),
                    member=str(fields.get(HeaderFields.member, "")),
                    body=tuple(msg.body),
                )
            )
        # method calls addressed to us are ignored: we export nothing

    @staticmethod
    def _unwrap(msg: Message) -> tuple[Any, ...] | DBusError:
        if msg.header.message_type is MessageType.error:
            name = str(msg.header.fields.get(HeaderFields.error_name, "unknown error"))
            text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
            return DBusError(name, _short(text))
        return tuple(msg.body)
