"""Failover timing on a real keepalived pair (VRRPv2, advert_int 1), measured by an observer's exporter
and checked against a packet capture (tcpdump) of the same run, read with scapy: the masterless gaps,
the preemption's overlap, and (the observer's L2 witness runs) each new master's delay to its first
gratuitous ARP for the VIP."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP
from scapy.utils import rdpcap

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import base_args
from ka_exporter.lab.system import find_tool
from tests.conftest import free_port, parse_metrics, sample, scrape, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def adverts(pcap: Path) -> list[tuple[float, str, int]]:
    """(time, source, priority) of every VRRP advert in the capture."""
    out = []
    for pkt in rdpcap(str(pcap)):
        if pkt.haslayer(VRRP):
            out.append((float(pkt.time), pkt[IP].src, int(pkt[VRRP].priority)))
    return out


def advert_macs(pcap: Path) -> dict[str, str]:
    """Router address -> the source MAC of its adverts."""
    return {pkt[IP].src: pkt[Ether].src for pkt in rdpcap(str(pcap)) if pkt.haslayer(VRRP)}


def garps(pcap: Path, vip: str) -> list[tuple[float, str]]:
    """(time, sender MAC) of every gratuitous ARP for `vip` (sender IP == target IP == VIP)."""
    return [
        (float(pkt.time), pkt[ARP].hwsrc)
        for pkt in rdpcap(str(pcap))
        if pkt.haslayer(ARP) and pkt[ARP].psrc == vip and pkt[ARP].pdst == vip
    ]


def test_gaps_and_handovers_match_a_capture(tmp_path: Path) -> None:
    with Lab(profile="basic", nodes=2, dbus=False) as lab:
        obs = lab.observer
        vrid = str(lab.instances[0].vrid)
        a_ip, b_ip = lab.nodes["a"].address, lab.nodes["b"].address
        pcap = tmp_path / "observer.pcap"
        dump = subprocess.Popen(
            ["ip", "netns", "exec", obs.netns, find_tool("tcpdump", "tcpdump"), "-i", obs.interface, "-U", "-n",
             "-w", str(pcap), "ip proto 112 or arp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port = free_port()
        log = tmp_path / "observer.log"
        args = [
            *base_args(obs.netns, port, "observer"),
            "--keepalived.config", str(lab.nodes["a"].config_path), "--wire.interface", obs.interface,
            "--no-collector.process", "--no-collector.vips", "--no-collector.dumps", "--no-collector.dbus",
        ]  # fmt: skip
        with open(log, "wb") as out:
            exporter = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        labels = {"interface": obs.interface, "family": "inet", "vrid": vrid}
        vip = lab.instances[0].vips[0]
        at_vip = {**labels, "vip": vip}

        def m() -> dict:
            try:
                return parse_metrics(scrape(url, timeout=2))
            except OSError:
                return {}

        def value(name: str, metrics: dict | None = None) -> float | None:
            return sample(m() if metrics is None else metrics, name, **labels)

        announced: list[float] = []  # the announce delay of each change, as the exporter measured

        def announce_delay(n: int) -> None:
            """Wait for the n-th change's announce delay (the witness publishes a burst at once, the
            wire's next tick joins it) and note it."""
            count = "keepalived_wire_failover_announce_delay_seconds_count"
            assert wait_until(lambda: sample(m(), count, **at_vip) == float(n), 10, 0.05), log.read_text()
            now = m()
            assert sample(now, "keepalived_wire_failover_not_announced_total", **at_vip) == 0.0
            total = sample(now, "keepalived_wire_failover_announce_delay_seconds_sum", **at_vip)
            assert total is not None
            announced.append(total - sum(announced))

        try:
            assert lab.master() == "a"
            assert wait_until(
                lambda: value("keepalived_wire_observed_seconds_total") not in (None, 0.0), 20, 0.1
            )
            # 1. SIGTERM: a priority-0 advert, then b takes over after its skew time
            lab.failover()
            assert wait_until(lambda: value("keepalived_wire_master_changes_total") == 1.0, 15, 0.05), (
                log.read_text()
            )
            first = m()
            gap = sample(first, "keepalived_wire_failover_gap_seconds_sum", **labels)
            assert sample(first, "keepalived_wire_failover_gap_seconds_count", **labels) == 1.0
            assert gap is not None
            announce_delay(1)
            # 2. a comes back with the higher priority and preempts b: a handover, never a split brain
            lab.start_master()
            split_seen = False
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = m()
                split_seen |= value("keepalived_wire_split_brain", now) == 1.0
                if value("keepalived_wire_master_changes_total", now) == 2.0:
                    break
                time.sleep(0.05)
            second = m()
            assert value("keepalived_wire_master_changes_total", second) == 2.0, log.read_text()
            assert sample(second, "keepalived_wire_failover_overlap_seconds_count", **labels) == 1.0
            overlap = sample(second, "keepalived_wire_failover_overlap_seconds_sum", **labels)
            assert overlap is not None and overlap < 0.05
            assert not split_seen
            announce_delay(2)
            # 3. SIGKILL of a: no priority 0; b takes over after the master down interval
            lab.stop_master(kill=True)
            assert wait_until(lambda: value("keepalived_wire_master_changes_total") == 3.0, 15, 0.05)
            third = m()
            gaps_total = sample(third, "keepalived_wire_failover_gap_seconds_sum", **labels)
            assert sample(third, "keepalived_wire_failover_gap_seconds_count", **labels) == 2.0
            assert gaps_total is not None
            kill_gap = gaps_total - gap
            masterless = sample(third, "keepalived_wire_masterless_seconds_total", **labels)
            assert masterless == pytest.approx(gaps_total, abs=0.001)  # the gaps are the masterless time
            announce_delay(3)
            time.sleep(0.2)
        finally:
            exporter.terminate()
            exporter.wait(10)
            dump.terminate()
            dump.wait(10)

        # The same three changes, from the capture.
        changes = check_gaps(pcap, a_ip, b_ip, gap=gap, overlap=overlap, kill_gap=kill_gap)
        check_announcements(pcap, vip, changes, announced)


def check_announcements(
    pcap: Path, vip: str, changes: list[tuple[str, float]], announced: list[float]
) -> None:
    """The announce delays, from the capture: each new master's first advert to the first gratuitous
    ARP for the VIP from the MAC its adverts come from (keepalived sends a burst, and another after
    garp_master_delay: only the first counts). `changes`: (new master, its first advert)."""
    macs = advert_macs(pcap)
    heard = garps(pcap, vip)

    def announce(router: str, first: float) -> float:
        return next(t for t, mac in heard if mac == macs[router] and t >= first - 0.05) - first

    from_capture = [announce(router, first) for router, first in changes]
    for what, mine, theirs in zip(("SIGTERM", "preemption", "SIGKILL"), announced, from_capture, strict=True):
        print(f"{what} announce delay: exporter {mine * 1000:.1f} ms, capture {theirs * 1000:.1f} ms")
    for mine, theirs in zip(announced, from_capture, strict=True):
        # both are kernel receive stamps of the same two frames (the witness's socket, tcpdump's): they
        # agree to tens of microseconds; a delay clamped at 0 (a user-space stamp of the advert, later
        # than the kernel's of the ARP) would fail here
        assert mine > 0
        assert abs(mine - theirs) < 0.001


def check_gaps(
    pcap: Path, a_ip: str, b_ip: str, *, gap: float, overlap: float, kill_gap: float
) -> list[tuple[str, float]]:
    """The three changes' gaps and overlap from the capture; returns (new master, its first advert)."""
    cap = adverts(pcap)
    resign = next(t for t, src, prio in cap if src == a_ip and prio == 0)
    b_first = next(t for t, src, prio in cap if src == b_ip and t > resign)
    print(f"SIGTERM gap: exporter {gap * 1000:.1f} ms, capture {(b_first - resign) * 1000:.1f} ms")
    assert abs(gap - (b_first - resign)) < 0.02
    a_back = next(t for t, src, prio in cap if src == a_ip and prio > 0 and t > b_first)
    b_last = max(t for t, src, _ in cap if src == b_ip and t < a_back + 0.5)
    print(f"preemption: b's last advert {(b_last - a_back) * 1000:.1f} ms after a's first; overlap {overlap}")
    a_last = max(t for t, src, _ in cap if src == a_ip)
    b_again = next(t for t, src, _ in cap if src == b_ip and t > a_last)
    print(f"SIGKILL gap: exporter {kill_gap * 1000:.1f} ms, capture {(b_again - a_last) * 1000:.1f} ms")
    assert abs(kill_gap - (b_again - a_last)) < 0.02
    assert 3.0 < kill_gap < 4.5  # 3 x advert_int + skew (0.61 s at priority 100)

    return [(b_ip, b_first), (a_ip, a_back), (b_ip, b_again)]
