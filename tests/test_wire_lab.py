"""The wire view against real keepalived (ka_exporter.lab): split brain, failovers, conflicts, spoofing.

Each WireSource runs in a lab namespace (node a, node b, the observer) and is polled every 20 ms.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRP

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.wire import collect_wire
from ka_exporter.sources.wire import WireSource
from ka_exporter.store import Store
from ka_exporter.verdicts.wire import VridKey, VridVerdict
from tests.conftest import in_netns, need_lab, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

lab_mod = pytest.importorskip("ka_exporter.lab")
Lab = lab_mod.Lab
LAB_PASSWORD: str = lab_mod.LAB_PASSWORD

T = TypeVar("T")
POLL = 0.02


@dataclass
class Watch:
    """A WireSource in one lab namespace, its verdict for the lab's VRID sampled every 20 ms."""

    name: str
    src: WireSource
    store: Store
    key: VridKey
    samples: list[tuple[float, VridVerdict | None]] = field(default_factory=list)

    def sample(self) -> None:
        now = time.time()
        found = [v for v in self.src.verdicts(now) if v.key == self.key]
        self.samples.append((now, found[0] if found else None))

    def split_times(self, since: float, until: float = float("inf")) -> list[float]:
        return [t for t, v in self.samples if since <= t <= until and v is not None and v.split_brain]

    def up(self) -> bool:
        h = self.store.health("wire")
        return h is not None and h.up

    def split(self) -> bool:
        v = self.now()
        return v is not None and v.split_brain

    def conflicts(self) -> frozenset[str]:
        v = self.now()
        return v.conflicts if v is not None else frozenset()

    def now(self) -> VridVerdict | None:
        return self.samples[-1][1] if self.samples else None

    def peers(self) -> dict[str, Any]:
        return {p.source: p for p in self.store.snapshot().wire_peers or ()}


class Watcher:
    def __init__(self, lab: Any, hosts: dict[str, Any]) -> None:
        inst = lab.instances[0]
        family = "inet6" if lab.ipv6 else "inet"
        self.key: VridKey = (inst.interface, family, inst.vrid)
        self.watches: dict[str, Watch] = {}
        for name, host in hosts.items():
            store = Store(hostname=name)
            src = WireSource(store, [host.interface], configured=[self.key])
            in_netns(host.netns, src.start)
            self.watches[name] = Watch(name, src, store, self.key)
        for w in self.watches.values():
            assert wait(w.up, 5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            for w in self.watches.values():
                w.sample()

    def __getitem__(self, name: str) -> Watch:
        return self.watches[name]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for w in self.watches.values():
            w.src.stop()


def wait(pred: Callable[[], bool], timeout: float) -> bool:
    return wait_until(pred, timeout, POLL)


def test_split_brain_firewall_and_bridge_cases_and_failovers_never_raise_it(fast_lab: Any) -> None:
    lab = fast_lab
    interval = lab.profile.advert_int
    watcher = Watcher(lab, {"a": lab.nodes["a"], "b": lab.nodes["b"], "obs": lab.observer})
    try:
        time.sleep(1.0)
        t0 = time.time()
        for w in watcher.watches.values():
            assert w.split_times(0) == [], w.name
            assert w.now() is not None
            assert w.now().masters == 1, w.name  # type: ignore[union-attr]

        # 1. Host firewall on b drops VRRP: b never hears a and becomes master as well. AF_PACKET
        #    sees a's adverts before netfilter, so both nodes (and the observer) see two masters.
        lab.split(mode="firewall", node="b")
        assert wait(lambda: all(w.split_times(t0) for w in watcher.watches.values()), 5)
        for w in watcher.watches.values():
            b = w.peers()[lab.nodes["b"].address]
            flagged = w.split_times(t0)[0]
            # within two intervals of b's first advert as a master (+ one 20 ms poll, + jitter)
            assert flagged - b.first_seen <= 2 * interval + POLL + 0.03, (w.name, flagged - b.first_seen)
        lab.heal()
        t_heal = time.time()
        assert wait(lambda: all(w.now() and not w.split() for w in watcher.watches.values()), 5)

        # 2. Partition at the bridge: the nodes cannot hear each other; only the observer sees both.
        time.sleep(0.5)
        t1 = time.time()
        lab.split(mode="bridge")
        assert wait(lambda: bool(watcher["obs"].split_times(t1)), 5)
        time.sleep(1.0)
        assert watcher["a"].split_times(t1) == []
        assert watcher["b"].split_times(t1) == []
        lab.heal()
        assert wait(lambda: not watcher["obs"].split(), 5)
        assert t_heal < t1

        # 3. Failover (SIGTERM: priority-0 advert), restart with preemption, SIGKILL, restart:
        #    polled every 20 ms throughout, split brain must never be raised.
        time.sleep(1.0)
        calm = time.time()
        assert lab.master() == "a"
        lab.failover()
        assert lab.wait_for(lambda: lab.master() == "b", 5)
        time.sleep(1.0)
        lab.start_master()  # a comes back with priority 150 and preempts b
        assert lab.wait_for(lambda: lab.master() == "a", 5)
        time.sleep(1.0)
        lab.stop_master(kill=True)  # SIGKILL a: its VIP stays behind, b takes over after 3*I+skew
        assert lab.wait_for(lambda: "b" in lab.vip_holders(), 5)
        time.sleep(1.0)
        lab.start_master()
        assert lab.wait_for(lambda: lab.master() == "a", 5)
        time.sleep(1.0)
        for w in watcher.watches.values():
            assert w.split_times(calm) == [], (w.name, w.split_times(calm))
            assert any(v is not None and v.masters == 1 for t, v in w.samples if t > calm)
        resigned = watcher["obs"].peers()[lab.nodes["a"].address]
        assert resigned.last_priority_zero is not None  # the SIGTERM's priority-0 advert was seen
    finally:
        watcher.close()


THIRD = """global_defs {{
  router_id ka-wire-third
  vrrp_version 3
}}
vrrp_instance VI_X {{
  state BACKUP
  interface {iface}
  virtual_router_id {vrid}
  priority 50
  advert_int 0.2
  virtual_ipaddress {{
    {vip}/24
  }}
}}
"""


def test_a_third_router_with_other_vips_and_interval_is_a_conflict_and_a_split(
    fast_lab: Any, tmp_path: Path
) -> None:
    lab = fast_lab
    obs = lab.observer
    inst = lab.instances[0]
    vip = ".".join([*obs.address.split(".")[:3], "177"])
    conf = tmp_path / "third.conf"
    conf.write_text(THIRD.format(iface=obs.interface, vrid=inst.vrid, vip=vip))
    watcher = Watcher(lab, {"a": lab.nodes["a"]})
    pids = [tmp_path / f"{n}.pid" for n in ("main", "vrrp", "chk", "bfd")]
    third = subprocess.Popen(
        ["ip", "netns", "exec", obs.netns, "keepalived", "--dont-fork", "--log-console", "--no-syslog",
         f"--use-file={conf}", f"--pid={pids[0]}", f"--vrrp_pid={pids[1]}", f"--checkers_pid={pids[2]}",
         f"--bfd_pid={pids[3]}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        a = watcher["a"]
        assert wait(lambda: a.conflicts() == {"vips", "interval"}, 10)
        # keepalived drops adverts with a foreign VIP list: both stay MASTER, and the wire says so
        assert wait(a.split, 5)
        assert lab.master() == "a"
        rows = a.peers()
        assert rows[obs.address].interval == pytest.approx(0.2)
        assert rows[obs.address].addresses == (vip,)
    finally:
        third.send_signal(signal.SIGTERM)
        third.wait(10)
        watcher.close()


def _render(store: Store) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(store.snapshot, [collect_wire]))
    return generate_latest(reg)


def test_spoofed_priority_255_on_a_configured_vrid_is_a_conflict_not_a_replacement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    need_lab()
    with Lab(profile="basic") as lab:
        watcher = Watcher(lab, {"a": lab.nodes["a"], "b": lab.nodes["b"]})
        try:
            inst = lab.instances[0]
            spoof = bytes(
                IP(src=lab.observer.address, dst="224.0.0.18", ttl=255, proto=112)
                / VRRP(vrid=inst.vrid, priority=255, addrlist=list(inst.vips), authtype=1, auth1=1, auth2=2)
            )
            sock = in_netns(lab.observer.netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
            t0 = time.time()
            for _ in range(4):
                sock.sendto(spoof, (lab.observer.interface, 0x0800, 0, 0, b"\x01\x00\x5e\x00\x00\x12"))
                time.sleep(1.0)
            sock.close()
            for name in ("a", "b"):
                w = watcher[name]
                rows = w.peers()
                assert rows[lab.nodes["a"].address].priority == 150  # the real master's row is intact
                assert rows[lab.observer.address].priority == 255  # the spoof has its own row
                assert any(v and "auth" in v.conflicts for t, v in w.samples if t > t0), name
                assert w.split_times(t0), name  # keepalived ignored it (bad password): two "masters"
            assert lab.master() == "a"  # keepalived itself was not fooled
            for name in ("a", "b"):
                text = _render(watcher[name].store)
                assert LAB_PASSWORD.encode() not in text
                assert b'keepalived_wire_conflict{family="inet",interface="eth0",kind="auth"' in text
            assert LAB_PASSWORD not in caplog.text
        finally:
            watcher.close()


@pytest.mark.parametrize("profile", ["unicast", "fast-ipv6", "ah"])
def test_unicast_ipv6_and_ah_adverts_are_decoded_in_the_lab(profile: str) -> None:
    need_lab()
    with Lab(profile=profile) as lab:
        watcher = Watcher(lab, {"a": lab.nodes["a"], "b": lab.nodes["b"]})
        try:
            assert wait(lambda: bool(watcher["b"].peers()), 6)
            time.sleep(0.5)
            own = [p for p in watcher["a"].peers().values() if p.local]
            heard = list(watcher["b"].peers().values())
            assert len(own) == 1
            assert len(heard) == 1
            assert own[0].source == heard[0].source
            assert not heard[0].local
            inst = lab.instances[0]
            assert own[0].vrid == inst.vrid
            assert set(own[0].addresses) == set(inst.vips)
            if profile == "unicast":
                assert own[0].auth_type == 1
                assert own[0].family == "inet"
                for name in ("a", "b"):
                    assert LAB_PASSWORD.encode() not in _render(watcher[name].store)
            elif profile == "ah":
                # keepalived wraps each VRRPv2 advert in IPsec AH (IP protocol 51): the kernel filter
                # lets it through and the decoder unwraps it.
                assert own[0].auth_type == 2
                assert heard[0].auth_type == 2
                assert own[0].version == 2
                for name in ("a", "b"):
                    assert LAB_PASSWORD.encode() not in _render(watcher[name].store)
            else:
                assert own[0].family == "inet6"
                assert own[0].version == 3
            assert watcher["b"].now() is not None
            assert watcher["b"].now().masters == 1  # type: ignore[union-attr]
        finally:
            watcher.close()
