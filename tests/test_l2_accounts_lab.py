"""The L2 witness's time accounts on a real keepalived pair (VRRPv2, advert_int 1), checked against a
packet capture of the same run.

An observer's ka-exporter (wire + L2 witness, probing every 0.2 s) and a tcpdump in the observer's
namespace watch one run: (a) a SIGTERM failover a -> b and a's return; (b) a bare SIGKILL of a, whose
keepalived leaves the VIP behind, so after b takes over two hosts answer for it until the stale address
is deleted; then a's return. From the capture: (a) the gap with nobody answering is a's priority-0
advert (keepalived sends it, then deletes the VIP) to b's first gratuitous ARP for the VIP; (b) the
stretch with two answerers is b's first gratuitous ARP after the kill to the moment the test deleted
a's stale address (bracketed by the `ip` command). Figures are printed; the bounds are the accounting's
own: the change to a new answerer is placed at its announcement (exact), a change nothing marks at the
midpoint of the probes around it (off by at most half the 0.2 s spacing).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP
from scapy.layers.vrrp import VRRP
from scapy.utils import rdpcap

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import base_args
from ka_exporter.lab.system import find_tool
from tests.conftest import free_port, parse_metrics, sample, scrape, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROBE = 0.2
ACCOUNTS = ("no_answerer", "one_answerer", "multi_answerer", "observed", "unobserved")


def delete_address(netns: str, vip: str) -> float:
    """Delete `vip` from eth0 in `netns` (keepalived SIGKILLed left it); the time it was gone by."""
    out = subprocess.run(
        ["ip", "-n", netns, "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True, check=True
    ).stdout
    cidr = next(w for line in out.splitlines() for w in line.split() if w.startswith(vip + "/"))
    subprocess.run(["ip", "-n", netns, "addr", "del", cidr, "dev", "eth0"], check=True)
    return time.time()


def test_no_and_multi_answerer_seconds_and_availability_match_a_capture(tmp_path: Path) -> None:
    with Lab(profile="basic", nodes=2, dbus=False) as lab:
        obs = lab.observer
        vip = str(lab.vips[0])
        a = lab.nodes["a"]
        pcap = tmp_path / "observer.pcap"
        dump = subprocess.Popen(
            ["ip", "netns", "exec", obs.netns, find_tool("tcpdump", "tcpdump"), "-i", obs.interface, "-U", "-n",
             "-w", str(pcap), "arp or ip proto 112"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port = free_port()
        log = tmp_path / "observer.log"
        args = [
            *base_args(obs.netns, port, "observer"),
            "--keepalived.config", str(a.config_path), "--wire.interface", obs.interface,
            "--l2.probe-interval", str(PROBE),
            "--no-collector.process", "--no-collector.vips", "--no-collector.dumps", "--no-collector.dbus",
        ]  # fmt: skip
        with open(log, "wb") as out:
            exporter = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        labels = {"interface": obs.interface, "family": "inet", "vip": vip}

        def accounts() -> dict[str, float]:
            try:
                m = parse_metrics(scrape(url, timeout=2))
            except OSError:
                return {}
            got = {k: sample(m, f"keepalived_l2_vip_{k}_seconds_total", **labels) for k in ACCOUNTS}
            return {k: v for k, v in got.items() if v is not None}

        def settled(after: float) -> bool:
            """The accounts reach `after` (they trail the present by up to a probe pair)."""
            now = accounts()
            return bool(now) and now["observed"] + now["unobserved"] >= after

        try:
            assert lab.master() == "a"
            assert wait_until(lambda: accounts().get("observed", 0.0) > 2.0, 20, 0.1), log.read_text()
            start, t_start = accounts(), time.time()
            total0 = start["observed"] + start["unobserved"]

            # (a) SIGTERM: priority 0, the VIP deleted, b takes over after its skew time and announces
            lab.failover()
            assert lab.wait_for(lambda: lab.vip_holders(vip) == ["b"], 10)
            assert wait_until(lambda: accounts().get("no_answerer", 0.0) > start["no_answerer"], 10, 0.1)
            lab.start_master()  # a preempts b again
            assert lab.wait_for(lambda: lab.vip_holders(vip) == ["a"], 15)
            t_mark = time.time()
            assert wait_until(lambda: settled(total0 + (t_mark - t_start) + 1.0), 10, 0.1)
            after_a = accounts()

            # (b) SIGKILL: no priority 0, the VIP stays on a; b takes over after the master-down interval
            t_kill = time.time()
            lab.stop_master(kill=True)
            assert lab.wait_for(lambda: lab.vip_holders(vip) == ["a", "b"], 10)
            assert wait_until(
                lambda: accounts().get("multi_answerer", 0.0) > after_a["multi_answerer"], 10, 0.1
            )
            time.sleep(1.5)  # two answerers for a while
            before_del = time.time()
            deleted = delete_address(a.netns, vip)
            assert lab.wait_for(lambda: lab.vip_holders(vip) == ["b"], 5)
            lab.start_master()
            assert lab.wait_for(lambda: lab.vip_holders(vip) == ["a"], 15)
            time.sleep(2.0)  # steady again
            t_end = time.time()
            assert wait_until(lambda: settled(total0 + (t_end - t_start)), 10, 0.1)
            end = accounts()
        finally:
            exporter.terminate()
            exporter.wait(10)
            dump.terminate()
            dump.wait(10)

    frames = rdpcap(str(pcap))
    a_ip = a.address
    resign = next(
        float(p.time) for p in frames if p.haslayer(VRRP) and p[IP].src == a_ip and p[VRRP].priority == 0
    )
    # gratuitous ARPs for the VIP (sender IP == target IP), with the announcing MAC
    garps = [
        (float(p.time), str(p[ARP].hwsrc))
        for p in frames
        if p.haslayer(ARP) and p[ARP].psrc == p[ARP].pdst == vip
    ]
    b_first, b_mac = next((t, mac) for t, mac in garps if t > resign)
    gap = b_first - resign
    no_a = after_a["no_answerer"] - start["no_answerer"]
    print(f"(a) SIGTERM: no answerer {no_a:.3f} s by the accounts, capture {gap:.3f} s")
    assert abs(no_a - gap) < 0.1

    b_again = next(t for t, mac in garps if mac == b_mac and t > t_kill)
    multi = end["multi_answerer"] - after_a["multi_answerer"]
    overlap = deleted - b_again
    print(
        f"(b) SIGKILL: two answerers {multi:.3f} s by the accounts, capture {overlap:.3f} s "
        f"(deleted within {deleted - before_del:.3f} s)"
    )
    assert multi > 0.5 * overlap
    assert abs(multi - overlap) < 0.15
    # a kept answering until b took over: no time without an answerer in (b)
    assert end["no_answerer"] - after_a["no_answerer"] < 0.05

    # Both over the accounts' own window (from `start` to `end`: they trail the present by up to a
    # probe pair, so the wall clock between the two reads is not their window): the exporter's share
    # of observed time with one answerer, against 1 - the capture's bad seconds over the same length.
    run = end["observed"] - start["observed"]
    length = (end["observed"] + end["unobserved"]) - total0
    mine = (end["one_answerer"] - start["one_answerer"]) / run
    theirs = 1 - (gap + overlap) / length
    print(f"(c) availability over {length:.2f} s: accounts {mine:.5f}, capture {theirs:.5f}")
    assert abs(mine - theirs) / theirs < 0.01
    assert end["unobserved"] - start["unobserved"] < 0.5
