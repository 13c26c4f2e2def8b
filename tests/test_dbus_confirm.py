"""VrrpStatusChange confirmed by the State property, against real keepalived 2.2.7 on the lab's private buses.

keepalived 1.3.9 sent the OLD state in VrrpStatusChange on BACKUP->FAULT, and any local process may send
a unicast signal to the exporter's connection (the system bus policy allows signals): the source reads
the instance's State and publishes that. A real transition must still arrive at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from jeepney import DBusAddress, HeaderFields, new_signal
from jeepney.io.blocking import open_dbus_connection

from ka_exporter.lab import Lab
from ka_exporter.linux.dbusclient import BusClient, Signal
from ka_exporter.model import VrrpState
from ka_exporter.sources.dbus import IFACE_INSTANCE, IFACE_VRRP, ROOT, SERVICE, DbusSource
from ka_exporter.store import Store
from tests.conftest import wait_until as conftest_wait_until

KEEPALIVED = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/local/sbin")


def wait_until(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    return conftest_wait_until(pred, timeout, 0.005)


def dbus_lab(profile: str) -> Iterator[Lab]:
    if os.geteuid() != 0 or KEEPALIVED is None or shutil.which("dbus-daemon") is None:
        pytest.skip("needs root, keepalived and dbus-daemon")
    with Lab(profile=profile, dbus=True) as running:
        yield running


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from dbus_lab("fast")


def state_of(store: Store, name: str) -> VrrpState | None:
    return {v.name: v.state for v in store.snapshot().instances or ()}.get(name)


def instance_path(lab: Lab) -> str:
    inst = lab.instances[0]
    return f"{ROOT}/Instance/{inst.interface}/{inst.vrid}/IPv4"


@pytest.mark.lab
def test_transitions_are_read_from_state_and_still_arrive_at_once(lab: Lab) -> None:
    name = lab.instances[0].name
    stores = {n: Store(hostname=n) for n in ("a", "b")}
    sources = {n: DbusSource(stores[n], address=lab.nodes[n].dbus_address) for n in stores}
    arrivals: list[tuple[float, VrrpState | None]] = []
    stores["b"].add_listener(lambda: arrivals.append((time.monotonic(), state_of(stores["b"], name))))
    for src in sources.values():
        src.start()
    try:
        assert wait_until(lambda: state_of(stores["a"], name) == VrrpState.MASTER)
        assert wait_until(lambda: state_of(stores["b"], name) == VrrpState.BACKUP)
        b = sources["b"]
        reads, enumerations = b.state_reads, b.enumerations
        sent = time.monotonic()
        assert lab.failover() == "a"
        assert wait_until(lambda: state_of(stores["b"], name) == VrrpState.MASTER)
        arrived = next(t for t, s in arrivals if s == VrrpState.MASTER)
        # shown from the signal, then confirmed: the State read and the count follow it
        assert wait_until(lambda: dict(stores["b"].snapshot().transitions).get(name) == 1)
        assert b.state_reads > reads  # the State property was read for the signal ...
        assert b.enumerations == enumerations  # ... and nothing was enumerated again
        assert b.state_corrections == 0  # 2.2.7 signals the new state: the read agrees
        print(
            f"\nSIGTERM to the master -> MASTER (State read) in the backup's store: {1000 * (arrived - sent):.1f} ms"
        )
        # the new master's interface goes down: MASTER -> FAULT, read from State as well
        node = lab.nodes["b"]
        reads = b.state_reads
        sent = time.monotonic()
        subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "down"], check=True)
        assert wait_until(lambda: state_of(stores["b"], name) == VrrpState.FAULT)
        print(f"interface down -> FAULT in the store: {1000 * (time.monotonic() - sent):.1f} ms (polled)")
        assert wait_until(lambda: dict(stores["b"].snapshot().transitions).get(name) == 2)
        assert b.state_reads > reads and b.state_corrections == 0
    finally:
        for src in sources.values():
            src.stop()


@pytest.mark.lab
def test_keepalived_signals_sent_by_another_process_change_nothing(lab: Lab) -> None:
    """The bus policy lets any process send a unicast signal to the exporter's connection: a forged
    VrrpStatusChange ("FAULT") or VrrpStopped from it must not move the state or empty the instances."""
    name = lab.instances[0].name
    address = lab.nodes["a"].dbus_address
    store = Store(hostname="a")
    src = DbusSource(store, address=address)
    src.start()
    try:
        assert wait_until(lambda: state_of(store, name) == VrrpState.MASTER)
        assert wait_until(lambda: src._client is not None)
        client = src._client
        assert client is not None
        handled, ignored = src.signals_handled, src.signals_ignored
        status = new_signal(
            DBusAddress(instance_path(lab), interface=IFACE_INSTANCE), "VrrpStatusChange", "u", (3,)
        )
        stopped = new_signal(DBusAddress(f"{ROOT}/Vrrp", interface=IFACE_VRRP), "VrrpStopped")
        with open_dbus_connection(bus=address) as conn:
            for forged in (status, stopped):
                forged.header.fields[HeaderFields.destination] = client.unique_name
                conn.send(forged)
            assert wait_until(lambda: src.signals_handled >= handled + 2)
        assert src.signals_ignored == ignored + 2
        assert state_of(store, name) == VrrpState.MASTER
        health = store.health("dbus")
        assert health is not None and health.up
        assert dict(store.snapshot().transitions) == {}
        assert lab.master() == "a"
    finally:
        src.stop()


@pytest.mark.lab
def test_the_old_state_in_the_signal_does_not_hide_a_fault(lab: Lab) -> None:
    """keepalived 1.3.9's bug, replayed: the source knows BACKUP, keepalived is in FAULT, the signal says
    BACKUP (the old state). Without the State read the signal looked like no change at all."""
    name = lab.instances[0].name
    node = lab.nodes["b"]
    store = Store(hostname="b")
    src = DbusSource(store, address=node.dbus_address)
    src.run_once()  # enumerated while BACKUP
    assert state_of(store, name) == VrrpState.BACKUP
    subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "down"], check=True)
    with BusClient(node.dbus_address) as client:
        # keepalived is in FAULT once its State property says so (it signals that too, to nobody here)
        assert wait_until(lambda: src._confirmed_state(client, instance_path(lab), None) == VrrpState.FAULT)
        reads, corrections = src.state_reads, src.state_corrections
        owner = client.name_owner(SERVICE)  # the sender of keepalived's own signals
        assert owner is not None
        old = Signal(owner, instance_path(lab), IFACE_INSTANCE, "VrrpStatusChange", (1,))
        src._handle(client, old)
        costs = []
        for _ in range(50):
            started = time.perf_counter()
            src._confirmed_state(client, instance_path(lab), VrrpState.FAULT)
            costs.append(time.perf_counter() - started)
        median, worst = 1000 * sorted(costs)[25], 1000 * max(costs)
        print(f"\nState read per VrrpStatusChange: median {median:.2f} ms, max {worst:.2f} ms")
    assert src.state_reads == reads + 51 and src.state_corrections == corrections + 1
    assert state_of(store, name) == VrrpState.FAULT
    assert dict(store.snapshot().transitions) == {name: 1}


@pytest.fixture
def many() -> Iterator[Lab]:
    yield from dbus_lab("many")


@pytest.mark.lab
@pytest.mark.slow
def test_a_burst_of_signals_is_confirmed_as_one_batch(many: Lab) -> None:
    """100 instances going FAULT at once send 100 VrrpStatusChange within milliseconds: their State
    reads go out pipelined and the store gets one publication, yet each instance is confirmed (and
    corrected: the signals below carry 1.3.9's old state) and counted on its own."""
    node = many.nodes["b"]
    names = {inst.name for inst in many.instances}
    store = Store(hostname="b")
    src = DbusSource(store, address=node.dbus_address)
    assert wait_until(
        lambda: src.run_once() or all(state_of(store, n) == VrrpState.BACKUP for n in names), 30.0
    )
    paths = [f"{ROOT}/Instance/{i.interface}/{i.vrid}/IPv4" for i in many.instances]
    subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "down"], check=True)
    with BusClient(node.dbus_address) as client:
        assert wait_until(
            lambda: (
                src._confirmed_states(client, paths, [None] * len(paths)) == [VrrpState.FAULT] * len(paths)
            ),
            10.0,
        )
        owner = client.name_owner(SERVICE)
        assert owner is not None
        burst = [Signal(owner, p, IFACE_INSTANCE, "VrrpStatusChange", (1,)) for p in paths]
        reads, corrections = src.state_reads, src.state_corrections
        views = store.snapshot_versions()[1]["views"]
        src._status_changes(client, burst)
    assert src.state_reads == reads + len(paths)
    assert src.state_corrections == corrections + len(paths)
    # one publication for the burst: the old states signalled showed nothing new, the reads did
    assert store.snapshot_versions()[1]["views"] == views + 1
    assert all(state_of(store, n) == VrrpState.FAULT for n in names)
    assert dict(store.snapshot().transitions) == dict.fromkeys(names, 1)
    # The live loop: node a, master of all, loses its link; keepalived signals 100 FAULTs at once.
    node = many.nodes["a"]
    store = Store(hostname="a")
    src = DbusSource(store, address=node.dbus_address)
    src.start()
    try:
        assert wait_until(lambda: all(state_of(store, n) == VrrpState.MASTER for n in names), 30.0)
        handled, batches, reads = src.signals_handled, src.status_batches, src.state_reads
        early, corrections = src.early_publications, src.state_corrections
        subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "down"], check=True)
        assert wait_until(lambda: all(state_of(store, n) == VrrpState.FAULT for n in names), 10.0)
        # every signal confirmed by its State (after its state was shown: the reads may still be out)
        assert wait_until(lambda: src.state_reads - reads >= len(names), 10.0), src.state_reads - reads
        # 2.2.7 signals the new state: shown before its State read returned, and the reads agreed
        assert src.early_publications > early and src.state_corrections == corrections
        assert src.status_batches - batches < src.signals_handled - handled  # and some read together
        # counted once each, when confirmed (the count follows the reads)
        assert wait_until(lambda: dict(store.snapshot().transitions) == dict.fromkeys(names, 1), 5.0)
        print(
            f"\n{src.signals_handled - handled} signals in {src.status_batches - batches} batches,"
            f" {src.state_reads - reads} State reads"
        )
    finally:
        src.stop()
