"""What the L2 witness shows: who answers ARP / neighbour discovery for each configured VIP.

Renders `snapshot.l2` (see `sources/l2.py`) with the verdicts of `ka_exporter.verdicts.l2`. No I/O.
Series are bounded by the witness's caps: VIPs watched (`--l2.max-vips`) and MACs per VIP (8).

Example (a host-firewall split seen from node a, which holds 10.97.0.100 itself)::

    keepalived_l2_vip_answerers{family="inet",interface="eth0",vip="10.97.0.100"} 2.0
    keepalived_l2_vip_two_answerers{family="inet",interface="eth0",vip="10.97.0.100"} 1.0
    keepalived_l2_vip_silent{family="inet",interface="eth0",vip="10.97.0.100"} 0.0
    keepalived_l2_probe_answers{family="inet",interface="eth0",vip="10.97.0.100"} 1.0
    keepalived_l2_vip_answerer_info{...,mac="02:97:00:00:00:02",vip="10.97.0.100"} 1.0
    keepalived_l2_probes_total{family="inet",interface="eth0",vip="10.97.0.100"} 42.0
    keepalived_l2_answers_total{family="inet",interface="eth0",vip="10.97.0.100"} 57.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import Snapshot
from ka_exporter.verdicts.l2 import judge_snapshot

VIP_LABELS = ["interface", "family", "vip"]


def collect_l2(snap: Snapshot) -> Iterator[Metric]:
    """Metric families for the L2 witness; nothing when it is not running."""
    if snap.l2 is None:
        return
    answerers = GaugeMetricFamily(
        "keepalived_l2_vip_answerers",
        "Hosts answering ARP/ND for this VIP now: other hosts that answered the latest probe, plus this "
        "node if it holds the VIP.",
        labels=VIP_LABELS,
    )
    two = GaugeMetricFamily(
        "keepalived_l2_vip_two_answerers",
        "1 while two or more hosts answer for this VIP, or one probe got two or more answers "
        "(use_vmac): split brain from any vantage point that hears both.",
        labels=VIP_LABELS,
    )
    silent = GaugeMetricFamily(
        "keepalived_l2_vip_silent",
        "1 if this VIP was probed and nobody (this node included) answers for it.",
        labels=VIP_LABELS,
    )
    probe_answers = GaugeMetricFamily(
        "keepalived_l2_probe_answers",
        "Answers to the latest completed probe of this VIP (IPv4: each answer; IPv6: distinct MACs).",
        labels=VIP_LABELS,
    )
    info = GaugeMetricFamily(
        "keepalived_l2_vip_answerer_info",
        "1 for each other host's MAC that answers for this VIP now (bounded per VIP).",
        labels=[*VIP_LABELS, "mac"],
    )
    probes = CounterMetricFamily(
        "keepalived_l2_probes",
        "ARP probes / DAD neighbour solicitations sent for this VIP.",
        labels=VIP_LABELS,
    )
    answers = CounterMetricFamily(
        "keepalived_l2_answers",
        "ARP replies, gratuitous ARPs and neighbour advertisements naming this VIP heard from other hosts.",
        labels=VIP_LABELS,
    )
    verdicts = {(v.interface, v.vip): v for v in judge_snapshot(snap)}
    for rec in snap.l2:
        labels = [rec.interface, rec.family, rec.vip]
        v = verdicts[(rec.interface, rec.vip)]
        answerers.add_metric(labels, v.answerers)
        two.add_metric(labels, 1.0 if v.two_answerers else 0.0)
        silent.add_metric(labels, 1.0 if v.silent else 0.0)
        if rec.last_probe_answers is not None:
            probe_answers.add_metric(labels, rec.last_probe_answers)
        for mac in rec.answerers:
            info.add_metric([*labels, mac], 1.0)
        probes.add_metric(labels, rec.probes_sent)
        answers.add_metric(labels, rec.answers_seen)
    yield from (answerers, two, silent, probe_answers, info, probes, answers)
