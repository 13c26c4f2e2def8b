"""BusLoop's scheduling contract (sources/fleetbus.py), with a stand-in member.

The race these cases are about cannot be timed on a real bus: a VrrpStatusChange that arrives while a
call (the liveness call, the tree read at attach) waits for its reply is read off the socket by that
call into the client's queue, so the socket is empty afterwards and poll never reports it. The real
bus paths (attach, refusal, signals, restarts) run against keepalived and dbus-daemon in
tests/test_multi_events_lab.py; here a member's source is a stand-in whose client is a socketpair, so
each case can put a signal exactly where the race puts it.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Iterator

import pytest

from ka_exporter.sources import fleetbus
from ka_exporter.testing import wait_until


class Client:
    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()
        self.queue: collections.deque[str] = collections.deque()

    def fileno(self) -> int:
        return self.a.fileno()

    def close(self) -> None:
        self.a.close()
        self.b.close()


class Member:
    """A member whose liveness calls leave a signal in the client's queue, as a real call can."""

    where = "netns t"
    name = "dbus"

    def __init__(self, signals_during_ping: int = 1, per_pump: int = 1000) -> None:
        self.client: Client | None = None
        self.pings = 0
        self.handled: list[str] = []
        self.lost_errors: list[str] = []
        self.signals_during_ping = signals_during_ping
        self.per_pump = per_pump

    def attach(self) -> Client:
        self.client = Client()
        return self.client

    def ping(self, client: Client) -> None:
        self.pings += 1
        if self.pings == 1:
            client.queue.extend(f"VrrpStatusChange {i}" for i in range(self.signals_during_ping))

    def pump(self, client: Client) -> bool:
        for _ in range(self.per_pump):
            if not client.queue:
                return True
            self.handled.append(client.queue.popleft())
        return not client.queue

    def lost(self, exc: BaseException) -> None:
        self.lost_errors.append(str(exc))

    def forget(self) -> None:
        pass


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[fleetbus.BusLoop]:
    monkeypatch.setattr(fleetbus, "LIVENESS", 0.05)
    monkeypatch.setattr(fleetbus, "RETRY", 0.05)
    loop = fleetbus.BusLoop()
    loop.start()
    yield loop
    loop.stop()


def test_a_signal_queued_by_a_liveness_call_is_handled(loop: fleetbus.BusLoop) -> None:
    member = Member()
    loop.add(("t", "k"), member)  # type: ignore[arg-type]
    assert wait_until(lambda: member.pings >= 3, 5.0)
    assert member.handled == ["VrrpStatusChange 0"]  # handled, though its socket never became readable


def test_a_flood_beyond_one_turn_is_handled_in_later_turns(loop: fleetbus.BusLoop) -> None:
    member = Member(signals_during_ping=25, per_pump=10)
    loop.add(("t", "k"), member)  # type: ignore[arg-type]
    assert wait_until(lambda: len(member.handled) == 25, 5.0), len(member.handled)
    assert member.handled == [f"VrrpStatusChange {i}" for i in range(25)]


def test_a_connection_that_closed_itself_is_lost_and_attached_again(loop: fleetbus.BusLoop) -> None:
    member = Member(signals_during_ping=0)
    loop.add(("t", "k"), member)  # type: ignore[arg-type]
    assert wait_until(lambda: member.client is not None and member.pings >= 1, 5.0)
    first = member.client
    assert first is not None
    first.a.close()  # as BusClient does when a send timed out half way: fileno() is -1 from now on
    assert wait_until(lambda: member.lost_errors and member.client is not first, 5.0), member.lost_errors
    assert "closed" in member.lost_errors[0]
    assert loop._thread is not None and loop._thread.is_alive()  # the loop itself goes on


def test_retries_back_off_to_a_minute_and_start_again_after_a_connection() -> None:
    m = fleetbus._Member(("t", "k"), Member())  # type: ignore[arg-type]
    waits = [fleetbus.BusLoop._retry(m) for _ in range(8)]
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    fleetbus.BusLoop._connect(m)
    assert fleetbus.BusLoop._retry(m) == 2.0
