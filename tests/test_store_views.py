"""The store's view section: a republication of the same records moves nothing and wakes nobody,
unless it makes keepalived's state current again."""

from __future__ import annotations

from ka_exporter.model import InstanceView, LocalAddress, VrrpState
from ka_exporter.store import Store


def _store() -> tuple[Store, list[float]]:
    clock = [1000.0]
    return Store(hostname="n", clock=lambda: clock[0]), clock


VIEWS = (InstanceView("VI_1", "eth0", 51, state=VrrpState.MASTER, vips=("10.0.0.100",)),)


def test_the_same_views_again_move_no_version_and_wake_no_watcher() -> None:
    store, clock = _store()
    store.set_instances(VIEWS, "dumps")
    woken: list[int] = []
    store.add_listener(lambda: woken.append(store.generation))
    gen, (_snap, versions) = store.generation, store.snapshot_versions()
    clock[0] += 15.0
    store.set_instances(tuple(VIEWS), "dumps")  # the next dump refresh: equal records
    assert store.generation == gen and woken == []
    assert store.snapshot_versions()[1] == versions
    assert store.wait_for_change(gen, 0.0) == gen, "a watcher woke for nothing"
    changed = (InstanceView("VI_1", "eth0", 51, state=VrrpState.BACKUP, vips=("10.0.0.100",)),)
    store.set_instances(changed, "dumps")
    assert store.generation != gen and woken == [store.generation]
    assert store.snapshot_versions()[1]["views"] == versions["views"] + 1


def test_the_same_views_after_an_address_change_make_the_state_current_again() -> None:
    store, clock = _store()
    store.set_instances(VIEWS, "dumps")
    clock[0] += 1.0
    store.set_addresses((LocalAddress("10.0.0.100", 24, "eth0", "inet"),))
    snap = store.snapshot()
    assert snap.state_fresh_since() == 1000.0 < (snap.addresses_changed or 0.0)
    gen = store.generation
    clock[0] += 1.0
    store.set_instances(VIEWS, "dumps")  # the refresh the address change asked for: the same records
    assert store.generation != gen, "the state became current: the VIP verdict waits for that"
    snap = store.snapshot()
    assert snap.state_fresh_since() == 1002.0 >= (snap.addresses_changed or 0.0)
    gen = store.generation
    clock[0] += 1.0
    store.set_instances(VIEWS, "dumps")
    assert store.generation == gen
    assert store.snapshot().state_fresh_since() == 1002.0  # as fresh as the addresses: nothing to tell
