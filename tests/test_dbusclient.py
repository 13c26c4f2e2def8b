"""linux/dbusclient.py against a real private dbus-daemon (the lab's bus configuration): calls, errors,
pipelining, signals and their bound, interrupt, and the deadlines of reads, writes and authentication."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from jeepney import MatchRule

from ka_exporter.lab.dbus import bus_config
from ka_exporter.linux.dbusclient import (
    BUS_NAME,
    BUS_PATH,
    BusClient,
    BusConnectionError,
    Call,
    DBusError,
)
from ka_exporter.testing import unix_accepts
from tests.conftest import wait_until

DBUS_DAEMON = shutil.which("dbus-daemon")

pytestmark = pytest.mark.skipif(DBUS_DAEMON is None, reason="needs dbus-daemon")


class Bus:
    def __init__(self, proc: subprocess.Popen[bytes], sock: Path) -> None:
        self.proc = proc
        self.sock = sock
        self.address = f"unix:path={sock}"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    assert DBUS_DAEMON is not None
    sock = tmp_path / "bus"
    conf = tmp_path / "bus.conf"
    conf.write_text(bus_config(sock))
    proc = subprocess.Popen(
        [DBUS_DAEMON, f"--config-file={conf}", "--nofork", "--nopidfile"], stderr=subprocess.DEVNULL
    )
    try:
        # The socket file exists from bind(); connections are refused until listen(): wait for one.
        assert wait_until(lambda: unix_accepts(sock), 10)
        yield Bus(proc, sock)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a test may have frozen it
            proc.terminate()
        proc.wait(10)


def list_names() -> Call:
    return Call(BUS_NAME, BUS_PATH, BUS_NAME, "ListNames")


def test_hello_names_us_and_a_call_returns_its_body(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as client:
        assert client.unique_name.startswith(":")
        names = client.call(list_names())[0]
        assert client.unique_name in names
        assert BUS_NAME in names
        assert client.name_owner(BUS_NAME) == BUS_NAME
        assert client.name_owner("org.example.Nobody") is None  # NameHasNoOwner, not an exception


def test_an_error_reply_is_a_dbus_error(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as client:
        with pytest.raises(DBusError) as info:
            client.call(Call(BUS_NAME, BUS_PATH, BUS_NAME, "NoSuchMethod"))
        assert info.value.name == "org.freedesktop.DBus.Error.UnknownMethod"


def test_pipelined_calls_come_back_in_order(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as client:
        asked = [BUS_NAME if i % 3 else client.unique_name for i in range(100)]
        calls = [Call(BUS_NAME, BUS_PATH, BUS_NAME, "GetNameOwner", "s", (n,)) for n in asked]
        calls.insert(50, Call(BUS_NAME, BUS_PATH, BUS_NAME, "GetNameOwner", "s", ("org.example.Nobody",)))
        results = client.call_many(calls, window=8)
        assert len(results) == 101
        errors = [r for r in results if isinstance(r, DBusError)]
        assert [e.name for e in errors] == ["org.freedesktop.DBus.Error.NameHasNoOwner"]
        answers = [r[0] for r in results if not isinstance(r, DBusError)]
        assert answers == [BUS_NAME if n == BUS_NAME else client.unique_name for n in asked]


def owner_changes() -> MatchRule:
    return MatchRule(type="signal", interface=BUS_NAME, member="NameOwnerChanged")


def test_signals_are_queued_while_a_call_waits_and_bounded(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0, max_queued_signals=3) as watcher:
        watcher.add_match(owner_changes())
        others = []
        for _ in range(4):  # each connection is a NameOwnerChanged for its unique name
            other = BusClient(bus.address, timeout=5.0)
            others.append(other.unique_name)
            other.close()
        # the call's reply comes after the signals: they are read, and queued, on the way to it
        watcher.call(list_names())
        assert watcher.pending_signals() == 3
        assert watcher.signals_lost >= 5  # 4 connects + 4 disconnects into a queue of 3
        sig = watcher.next_signal(5.0)
        assert sig is not None
        assert sig.member == "NameOwnerChanged"
        assert sig.sender == BUS_NAME
        assert watcher.drop_signals() == 2
        assert watcher.next_signal(0.05) is None  # nothing else came


def test_next_signal_returns_what_arrives(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as watcher:
        watcher.add_match(owner_changes())
        other = BusClient(bus.address, timeout=5.0)
        name = other.unique_name
        other.close()
        seen = []
        while len(seen) < 2:
            sig = watcher.next_signal(5.0)
            assert sig is not None, seen
            if sig.body[0] == name:
                seen.append(sig.body)
        assert seen == [(name, "", name), (name, name, "")]  # it came, it went


def test_interrupt_wakes_a_reader_blocked_without_deadline(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as client:
        client.call(list_names())  # past NameAcquired, the signal the bus sends after Hello
        client.drop_signals()
        raised: list[BaseException] = []

        def block() -> None:
            try:
                client.next_signal(None)
            except BaseException as exc:
                raised.append(exc)

        reader = threading.Thread(target=block)
        reader.start()
        client.interrupt()
        reader.join(10)
        assert not reader.is_alive()
        assert len(raised) == 1
        assert isinstance(raised[0], BusConnectionError)
        assert "interrupted" in str(raised[0])


def test_a_frozen_bus_fails_the_call_with_a_timeout(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as client:
        os.kill(bus.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                client.call(list_names(), timeout=0.3)
        finally:
            os.kill(bus.proc.pid, signal.SIGCONT)
        # the connection is still good: the reply that came late is dropped, a new call works
        assert client.unique_name in client.call(list_names())[0]


def test_a_bus_that_stops_reading_fails_the_send_with_a_timeout(bus: Bus) -> None:
    """The send loop has a deadline: a frozen dbus-daemon never drains the socket, and a call larger
    than the socket buffers used to wait for it forever."""
    client = BusClient(bus.address, timeout=5.0)
    os.kill(bus.proc.pid, signal.SIGSTOP)
    outcome: list[BaseException | None] = []

    def send() -> None:
        big = Call(BUS_NAME, BUS_PATH, BUS_NAME, "GetNameOwner", "s", ("x" * (8 << 20),))
        try:
            client.call(big, timeout=0.5)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        sender.join(30)
        assert not sender.is_alive(), "the send is still blocked on a bus that does not read"
    finally:
        os.kill(bus.proc.pid, signal.SIGCONT)
    assert len(outcome) == 1
    assert isinstance(outcome[0], TimeoutError)
    # half a message went out: the connection is closed rather than garbled
    with pytest.raises(BusConnectionError):
        client.call(list_names())
    client.close()


def test_the_bus_going_away_is_a_connection_error(bus: Bus) -> None:
    with BusClient(bus.address, timeout=5.0) as client:
        bus.proc.terminate()
        bus.proc.wait(10)
        with pytest.raises(BusConnectionError):
            client.call(list_names())


def test_no_socket_and_bad_addresses_are_connection_errors(tmp_path: Path) -> None:
    with pytest.raises(BusConnectionError, match="no bus socket"):
        BusClient(f"unix:path={tmp_path / 'none'}", timeout=1.0)
    with pytest.raises(BusConnectionError, match="unusable D-Bus address"):
        BusClient("tcp:host=example.invalid", timeout=1.0)


def test_a_server_that_never_authenticates_us_times_out(tmp_path: Path) -> None:
    path = tmp_path / "mute"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        with pytest.raises(BusConnectionError, match="did not authenticate us within"):
            BusClient(f"unix:path={path}", timeout=0.3)
    finally:
        server.close()
