"""The announce delay (verdicts/failover.py): from a new master's first advert to its first gratuitous
ARP / unsolicited NA per VIP, joined with plain records as the L2 witness publishes them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ka_exporter.model import VipAnswers
from ka_exporter.verdicts.failover import ANNOUNCE_BOUND, FailoverTracker
from tests.test_failover import Router

VIP = "10.0.0.100"
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
VMAC = "00:00:5e:00:01:33"  # use_vmac, VRID 51


@dataclass
class Witness:
    """What the L2 witness would publish at a time: the announcements heard so far and whose adverts
    came from which MAC."""

    frames: list[tuple[float, str]] = field(default_factory=list)  # (time, MAC) of each GARP
    macs: dict[str, str] = field(default_factory=lambda: {"10.0.0.1": MAC_A, "10.0.0.2": MAC_B})
    starts: dict[str, float] = field(default_factory=dict)  # the witness's stamp of a router's run start
    since: float | None = 0.0
    now: float = 0.0

    def burst(self, at: float, mac: str, n: int = 5, every: float = 0.001) -> Witness:
        """keepalived's garp_master_repeat frames, back to back."""
        self.frames += [(round(at + i * every, 6), mac) for i in range(n)]
        self.frames.sort()
        return self

    published: tuple[VipAnswers, ...] | None = None

    def records(self) -> tuple[VipAnswers, ...]:
        """As the witness publishes: the same tuple while nothing moved, a new one when anything did
        (the tracker's join skips an unchanged tuple unless changes are pending)."""
        now = self._build()
        if now != self.published:
            self.published = now
        return self.published

    def _build(self) -> tuple[VipAnswers, ...]:
        return (
            VipAnswers(
                vip=VIP,
                interface="eth0",
                family="inet",
                listening_since=self.since,
                vrids=(51,),
                announcements=tuple(f for f in self.frames if f[0] <= self.now),
                advert_macs=tuple(
                    (51, src, mac, self.starts.get(src, -1.0)) for src, mac in sorted(self.macs.items())
                ),
            ),
        )


def run(routers: list[Router], witness: Witness | None, until: float, step: float = 0.25):
    tracker = FailoverTracker()
    if witness is not None:
        tracker.announcements = witness.records
    t = 0.0
    while t <= until + 1e-9:
        if witness is not None:
            witness.now = t
        tracker.observe([r for r in (x.record(t) for x in routers) if r is not None], t, 0.0)
        t = round(t + step, 6)
    (timing,) = tracker.timings()
    return timing


def graceful(until: float = 40) -> list[Router]:
    """a stops (SIGTERM: a priority-0 advert at 10.3 s); b's first advert at 10.9 s."""
    return [Router("10.0.0.1").every(0, 10, 150).at(10.3, 0), Router("10.0.0.2").every(10.9, until, 100)]


def announced(timing, vip: str = VIP) -> tuple[int, float, int]:
    """(delays observed, their sum, changes not announced) of `vip`."""
    (row,) = [r for r in timing.announce if r[0] == vip]
    return row[1].count, row[1].total, row[2]


def test_only_the_first_frame_of_the_first_burst_counts() -> None:
    # a's own takeover at the start, then b's burst 4 ms after its first advert and again after
    # garp_master_delay (5 s)
    w = Witness().burst(0.01, MAC_A).burst(10.904, MAC_B).burst(15.904, MAC_B)
    t = run(graceful(), w, until=40)
    assert t.master_changes == 1
    assert announced(t)[0] == 1
    assert announced(t)[1] == pytest.approx(0.004)
    assert announced(t)[2] == 0


def test_an_old_master_s_re_announcement_does_not_count() -> None:
    # a, still alive, re-announces after b's first advert (it heard b's lower-priority advert and
    # forces a new election); b's own first gratuitous ARP comes later
    a = Router("10.0.0.1").every(0, 10, 150)
    b = Router("10.0.0.2").every(13.62, 40, 100)
    w = Witness().burst(13.7, MAC_A).burst(14.5, MAC_B)
    t = run([a, b], w, until=40)
    assert t.gaps.count == 1
    assert announced(t)[:2] == (1, pytest.approx(14.5 - 13.62))
    # the same without b's adverts heard by the witness: any MAC but the old master's
    w = Witness(macs={"10.0.0.1": MAC_A}).burst(13.7, MAC_A).burst(14.5, MAC_B)
    assert announced(run([a, b], w, until=40))[:2] == (1, pytest.approx(14.5 - 13.62))


def test_an_announcement_before_the_change_does_not_count() -> None:
    # b announced long before (an earlier takeover), then becomes master without announcing
    w = Witness().burst(2.0, MAC_B)
    t = run(graceful(), w, until=50)
    assert announced(t) == (0, 0.0, 1)


def test_no_announcement_within_the_bound_is_not_announced_not_a_delay() -> None:
    w = Witness()
    t = run(graceful(), w, until=10.9 + ANNOUNCE_BOUND - 1)
    assert t.master_changes == 1
    assert announced(t) == (0, 0.0, 0)  # still waiting
    t = run(graceful(until=50), w, until=50)
    assert announced(t) == (0, 0.0, 1)
    # a burst after the bound changes nothing
    w = Witness().burst(10.9 + ANNOUNCE_BOUND + 1, MAC_B)
    assert announced(run(graceful(until=50), w, until=50)) == (0, 0.0, 1)


def test_use_vmac_both_routers_announce_from_the_virtual_mac() -> None:
    w = Witness(macs={"10.0.0.1": VMAC, "10.0.0.2": VMAC}).burst(0.01, VMAC).burst(10.95, VMAC)
    t = run(graceful(), w, until=40)
    assert announced(t)[:2] == (1, pytest.approx(0.05))


def test_a_change_before_the_witness_listened_is_unknown() -> None:
    w = Witness(since=12.0).burst(10.95, MAC_B)
    t = run(graceful(), w, until=40)
    assert t.master_changes == 1
    assert announced(t) == (0, 0.0, 0)


def test_a_new_master_on_this_host_is_not_measured_and_no_witness_none() -> None:
    # the witness never hears this host's own frames: its own takeover cannot be timed here
    a = Router("10.0.0.1").every(0, 10, 150).at(10.3, 0)
    b = Router("10.0.0.2", local=True).every(10.9, 40, 100)
    t = run([a, b], Witness(), until=40)
    assert t.master_changes == 1
    assert announced(t) == (0, 0.0, 0)  # the series exists (0), but nothing is waited for
    assert run(graceful(), None, until=40).announce is None


def test_the_witness_s_own_stamp_of_the_first_advert_is_the_start() -> None:
    # the wire stamped b's first advert at 10.9 s (user space); the witness's kernel stamp is 10.8995 s
    w = Witness(starts={"10.0.0.2": 10.8995}).burst(10.9, MAC_B)
    assert announced(run(graceful(), w, until=40))[:2] == (1, pytest.approx(0.0005))


def test_decode_advert_reads_family_vrid_source_mac_priority_interval() -> None:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether
    from scapy.layers.vrrp import VRRP, VRRPv3

    from ka_exporter.sources.l2 import decode_advert

    v2 = Ether(src=MAC_A) / IP(src="10.0.0.1", dst="224.0.0.18", ttl=255) / VRRP(vrid=51, priority=150, adv=1)
    assert decode_advert(bytes(v2)) == ("inet", 51, "10.0.0.1", bytes.fromhex("02000000000a"), 150, 1.0)
    v3 = Ether(src=VMAC) / IP(src="10.0.0.2", dst="224.0.0.18") / VRRPv3(vrid=51, priority=0, adv=10)
    assert decode_advert(bytes(v3)) == ("inet", 51, "10.0.0.2", bytes.fromhex("00005e000133"), 0, 0.1)
    v6 = (
        Ether(src=MAC_B)
        / IPv6(src="fe80::b", dst="ff02::12", hlim=255)
        / VRRPv3(vrid=7, priority=100, adv=100)
    )
    assert decode_advert(bytes(v6)) == ("inet6", 7, "fe80::b", bytes.fromhex("02000000000b"), 100, 1.0)
    garp = Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_B, psrc=VIP, pdst=VIP)
    assert decode_advert(bytes(garp)) is None


def test_the_witness_keeps_the_first_frame_of_each_burst_per_mac() -> None:
    import socket

    from ka_exporter.model import ConfInstance, ConfVip, KeepalivedConfig
    from ka_exporter.sources.l2 import L2Source, _Watch
    from ka_exporter.store import Store

    store = Store()
    store.set_config(KeepalivedConfig(instances=(ConfInstance("VI_1", "eth0", 51, vips=(ConfVip(VIP),)),)))
    source = L2Source(store, probe=False)
    source._sync_watches()
    source._check_store(store.snapshot())  # the configured VRIDs: only theirs are learnt
    w = _Watch(VIP, "eth0", "inet", socket.inet_aton(VIP))
    a, b = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
    frames = [(0.0, a), (0.001, a), (0.002, b), (0.5, a), (5.0, b), (5.001, b), (9.0, a)]
    for at, mac in frames:
        source._announced(w, mac, at)
    assert list(w.bursts) == [(0.0, a), (0.002, b), (5.0, b), (9.0, a)]
    # the run start of a router's adverts: a new run after RUN_GAP intervals of silence or priority 0
    for at, prio in [(1.0, 100), (2.0, 100), (3.0, 100), (9.0, 100), (10.0, 0), (10.6, 100)]:
        source._advert("eth0", ("inet", 51, "10.0.0.2", b, prio, 1.0), at)
    assert source._routers[("eth0", "inet", 51)]["10.0.0.2"][3] == 10.6


def test_collector_series_and_promtool() -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from ka_exporter.collectors import SnapshotCollector
    from ka_exporter.collectors.failover import collect_failover
    from ka_exporter.model import Snapshot
    from tests.test_l2 import _promtool

    w = Witness().burst(10.904, MAC_B)
    with_l2 = run(graceful(), w, until=40)
    without = run(graceful(), None, until=40)

    def text(timing) -> str:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(
            SnapshotCollector(
                lambda: Snapshot(time=40.0, hostname="n", failover=(timing,)), [collect_failover]
            )
        )
        out = generate_latest(reg)
        _promtool(out)
        return out.decode()

    labels = f'family="inet",interface="eth0",vip="{VIP}",vrid="51"'
    shown = text(with_l2)
    assert f"keepalived_wire_failover_announce_delay_seconds_count{{{labels}}} 1.0" in shown
    bucket = f'family="inet",interface="eth0",le="0.01",vip="{VIP}",vrid="51"'
    assert f"keepalived_wire_failover_announce_delay_seconds_bucket{{{bucket}}} 1.0" in shown
    assert f"keepalived_wire_failover_not_announced_total{{{labels}}} 0.0" in shown
    # an exporter without the L2 witness exports neither family
    assert "announce" not in text(without)
