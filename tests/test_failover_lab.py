"""Failover timing on a real keepalived pair (VRRPv2, advert_int 1), measured by an observer's exporter
and checked against a packet capture (tcpdump) of the same run, read with scapy."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP
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


def test_gaps_and_handovers_match_a_capture(tmp_path: Path) -> None:
    with Lab(profile="basic", nodes=2, dbus=False) as lab:
        obs = lab.observer
        vrid = str(lab.instances[0].vrid)
        a_ip, b_ip = lab.nodes["a"].address, lab.nodes["b"].address
        pcap = tmp_path / "observer.pcap"
        dump = subprocess.Popen(
            ["ip", "netns", "exec", obs.netns, find_tool("tcpdump", "tcpdump"), "-i", obs.interface, "-U", "-n",
             "-w", str(pcap), "ip proto 112"],
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

        def m() -> dict:
            try:
                return parse_metrics(scrape(url, timeout=2))
            except OSError:
                return {}

        def value(name: str, metrics: dict | None = None) -> float | None:
            return sample(m() if metrics is None else metrics, name, **labels)

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
            time.sleep(0.2)
        finally:
            exporter.terminate()
            exporter.wait(10)
            dump.terminate()
            dump.wait(10)

        # The same three changes, from the capture.
        cap = adverts(pcap)
        resign = next(t for t, src, prio in cap if src == a_ip and prio == 0)
        b_first = next(t for t, src, prio in cap if src == b_ip and t > resign)
        print(f"SIGTERM gap: exporter {gap * 1000:.1f} ms, capture {(b_first - resign) * 1000:.1f} ms")
        assert abs(gap - (b_first - resign)) < 0.02
        a_back = next(t for t, src, prio in cap if src == a_ip and prio > 0 and t > b_first)
        b_last = max(t for t, src, _ in cap if src == b_ip and t < a_back + 0.5)
        print(
            f"preemption: b's last advert {(b_last - a_back) * 1000:.1f} ms after a's first; overlap {overlap}"
        )
        a_last = max(t for t, src, _ in cap if src == a_ip)
        b_again = next(t for t, src, _ in cap if src == b_ip and t > a_last)
        print(f"SIGKILL gap: exporter {kill_gap * 1000:.1f} ms, capture {(b_again - a_last) * 1000:.1f} ms")
        assert abs(kill_gap - (b_again - a_last)) < 0.02
        assert 3.0 < kill_gap < 4.5  # 3 x advert_int + skew (0.61 s at priority 100)
