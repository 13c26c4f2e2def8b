"""D-Bus source latency and enumeration cost against real keepalived 2.2.7 in the lab (needs root).

Figures, all measured in this run:
- kernel -> store: `ip link set eth0 down` on the master's node; from the RTM_NEWLINK event (seen by a
  netlink socket inside that namespace) to FAULT in the store of a DbusSource on that node's bus;
- keepalived -> store: SIGTERM to the master; from the RTM_NEWADDR of the VIP on the backup (keepalived
  installs its VIPs as it enters MASTER, before it emits VrrpStatusChange) to MASTER in the backup's store;
  and back (the old master returns and preempts: RTM_DELADDR -> BACKUP);
- enumeration: run_once() (connect, walk the object tree, GetAll per instance, publish) with 255 instances.

Run: /tmp/kavenv/bin/python bench/bench_dbus.py [cycles]
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ka_exporter.lab import Lab
from ka_exporter.linux import netns
from ka_exporter.model import VrrpState
from ka_exporter.sources.dbus import DbusSource
from ka_exporter.store import Store
from ka_exporter.testing import wait_until

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWLINK, RTM_NEWADDR, RTM_DELADDR = 16, 20, 21
TARGET_MS = 100.0


class NetlinkWatch:
    """Timestamps (monotonic) of link and IPv4 address events inside one network namespace."""

    def __init__(self, ns: str) -> None:
        self.events: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self._sock: socket.socket | None = None

        def run() -> None:
            netns.enter(ns)  # this thread only; the socket keeps the namespace
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
            self._sock = sock
            ready.set()
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                now = time.monotonic()
                off = 0
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    with self._lock:
                        self.events.append((now, kind))
                    off += max((length + 3) & ~3, 16)

        threading.Thread(target=run, daemon=True).start()
        ready.wait(5)

    def first(self, kind: int, after: float) -> float | None:
        with self._lock:
            return next((t for t, k in self.events if k == kind and t >= after), None)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


class StateLog:
    """When each state of `instance` reached the store (listener timestamps)."""

    def __init__(self, store: Store, instance: str) -> None:
        self.entries: list[tuple[float, VrrpState | None]] = []
        self.store = store

        def listener() -> None:
            snap = store.snapshot()
            state = next((v.state for v in snap.instances or () if v.name == instance), None)
            self.entries.append((time.monotonic(), state))

        store.add_listener(listener)

    def first(self, state: VrrpState, after: float) -> float | None:
        return next((t for t, s in list(self.entries) if s == state and t >= after), None)


def wait(pred: Callable[[], object], timeout: float = 10.0) -> bool:
    return wait_until(pred, timeout, 0.005)


def need(pred: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """A wait whose failure would make the figures meaningless: stop the bench, saying what."""
    if not wait(pred, timeout):
        raise RuntimeError(f"{what} (after {timeout:g} s)")


def ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "median_ms": round(1000 * statistics.median(v), 2),
        "p90_ms": round(1000 * v[int(0.9 * (len(v) - 1))], 2),
        "max_ms": round(1000 * v[-1], 2),
    }


def many_instances(count: int, subnet_octets: tuple[int, int]) -> str:
    x, y = subnet_octets
    lines = ["global_defs {", "    router_id bench", "    enable_dbus", "}"]
    for i in range(1, count + 1):
        lines += [
            f"vrrp_instance VI_{i:03d} {{",
            "    state BACKUP",
            "    interface eth0",
            f"    virtual_router_id {i}",
            "    priority 100",
            "    advert_int 1",
            f"    virtual_ipaddress {{\n        10.{x}.{y}.{i}/32\n    }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    if os.geteuid() != 0:
        print("bench_dbus needs root (network namespaces, keepalived)")
        return 1
    results: dict[str, object] = {}
    with Lab(profile="fast", dbus=True) as lab:
        name = lab.instances[0].name
        stores = {n: Store(hostname=n) for n in lab.nodes}
        sources = {n: DbusSource(stores[n], address=lab.nodes[n].dbus_address) for n in lab.nodes}
        logs = {n: StateLog(stores[n], name) for n in lab.nodes}
        watches = {n: NetlinkWatch(lab.nodes[n].netns) for n in lab.nodes}
        for src in sources.values():
            src.start()
        try:
            to_master, to_backup, trigger, to_fault = [], [], [], []
            assert wait(lambda: logs["b"].first(VrrpState.BACKUP, 0) is not None)
            for _ in range(cycles):
                mark = time.monotonic()
                lab.failover()  # SIGTERM a: b takes over
                if not wait(lambda m=mark: logs["b"].first(VrrpState.MASTER, m) is not None):
                    raise RuntimeError("backup did not become MASTER")
                stored = logs["b"].first(VrrpState.MASTER, mark)
                vip = watches["b"].first(RTM_NEWADDR, mark)
                if stored is not None and vip is not None:
                    to_master.append(stored - vip)
                    trigger.append(stored - mark)
                mark = time.monotonic()
                lab.start("a")  # a preempts: b goes back to BACKUP and drops the VIP
                if not wait(lambda m=mark: logs["b"].first(VrrpState.BACKUP, m) is not None):
                    raise RuntimeError("b did not go back to BACKUP")
                stored = logs["b"].first(VrrpState.BACKUP, mark)
                gone = watches["b"].first(RTM_DELADDR, mark)
                if stored is not None and gone is not None:
                    to_backup.append(stored - gone)
                need(lambda: lab.master() == "a", "a did not become master again", 5.0)
            node = lab.nodes["a"]
            for _ in range(cycles):
                need(
                    lambda: logs["a"].first(VrrpState.MASTER, 0) is not None and lab.master() == "a",
                    "a is not master",
                )
                mark = time.monotonic()
                subprocess.run(["ip", "-n", node.netns, "link", "set", "eth0", "down"], check=True)
                if not wait(lambda m=mark: logs["a"].first(VrrpState.FAULT, m) is not None):
                    raise RuntimeError("no FAULT")
                stored = logs["a"].first(VrrpState.FAULT, mark)
                event = watches["a"].first(RTM_NEWLINK, mark)
                if stored is not None and event is not None:
                    to_fault.append(stored - event)
                mark = time.monotonic()
                subprocess.run(["ip", "-n", node.netns, "link", "set", "eth0", "up"], check=True)
                need(lambda m=mark: logs["a"].first(VrrpState.MASTER, m) is not None, "a did not recover")
            enumerations = {n: s.enumerations for n, s in sources.items()}
        finally:
            for src in sources.values():
                src.stop()
            for w in watches.values():
                w.close()

        # 255 instances on node a (b stopped so that nobody answers them)
        lab.stop("b")
        lab.stop("a")
        node = lab.nodes["a"]
        node.config_path.write_text(many_instances(255, (lab.addressing.x, lab.addressing.y)))
        lab.start("a")
        store = Store(hostname="a")
        src = DbusSource(store, address=node.dbus_address)
        src.run_once()
        need(lambda: len(store.snapshot().instances or ()) == 255, "D-Bus did not list 255 instances", 10)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            src.run_once()
            times.append(time.perf_counter() - t0)
        count = len(store.snapshot().instances or ())

    results["keepalived_to_store_master"] = ms(to_master)
    results["keepalived_to_store_backup"] = ms(to_backup)
    results["kernel_link_down_to_store_fault"] = ms(to_fault)
    results["sigterm_to_store_master"] = ms(trigger)
    results["enumeration_255"] = {"instances": count, **ms(times)}
    results["re_enumerations_during_failovers"] = enumerations

    print(f"{'figure':48} {'n':>3} {'median':>9} {'p90':>9} {'max':>9}   target")
    for key, label in (
        ("kernel_link_down_to_store_fault", "link down (RTM_NEWLINK) -> FAULT in store"),
        ("keepalived_to_store_master", "VIP added (RTM_NEWADDR) -> MASTER in store"),
        ("keepalived_to_store_backup", "VIP removed (RTM_DELADDR) -> BACKUP in store"),
        ("sigterm_to_store_master", "SIGTERM master -> backup MASTER in store"),
        ("enumeration_255", "run_once(): enumerate 255 instances"),
    ):
        r = results[key]
        assert isinstance(r, dict)
        target = f"< {TARGET_MS:g} ms" if "store" in label and "SIGTERM" not in label else ""
        print(
            f"{label:48} {r.get('n', 0):>3} {r.get('median_ms', '-'):>9} {r.get('p90_ms', '-'):>9} "
            f"{r.get('max_ms', '-'):>9}   {target}"
        )
    print(f"(instances enumerated: {count}; full re-reads during the failovers: {enumerations})")
    from common import Target, result

    targets = [
        Target(f"{key}: p90 ms", results[key].get("p90_ms"), "<", TARGET_MS)  # type: ignore[union-attr]
        for key in (
            "kernel_link_down_to_store_fault",
            "keepalived_to_store_master",
            "keepalived_to_store_backup",
        )
    ]
    result("dbus", results, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
