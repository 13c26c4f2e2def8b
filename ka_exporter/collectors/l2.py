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
    keepalived_l2_vip_one_answerer_seconds_total{family="inet",interface="eth0",vip="10.97.0.100"} 3580.2

The time accounts (`keepalived_l2_vip_{no,one,multi}_answerer_seconds_total`, their sum
`..._observed_seconds_total`, and `..._unobserved_seconds_total`) are the L2 SLI as counters
(verdicts.l2.L2Accounts): `rate()` over any window gives the share of time with exactly one answerer,
which a gauge sampled every scrape cannot (a 3.6 s gap under a 15 s scrape is 1 sample in 240).
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
        "Answers to the latest published probe result of this VIP: two probes in a row that agreed "
        "(IPv4: each answer; IPv6: distinct MACs).",
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
    accounts = [
        CounterMetricFamily(
            f"keepalived_l2_vip_{name}_seconds",
            text,
            labels=VIP_LABELS,
        )
        for name, text in (
            (
                "no_answerer",
                "Seconds in which nobody answered for this VIP (probes completed, none answered).",
            ),
            ("one_answerer", "Seconds in which exactly one host answered for this VIP (this node included)."),
            ("multi_answerer", "Seconds in which two or more hosts answered for this VIP (split brain)."),
            ("observed", "Seconds the L2 witness accounted for this VIP (no + one + multi answerer)."),
            (
                "unobserved",
                "Seconds the L2 witness could not tell who answered for this VIP (its start, probes not "
                "completing, capture gaps): unknown, never counted as no answerer.",
            ),
        )
    ]
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
        values = (
            rec.no_answerer_seconds,
            rec.one_answerer_seconds,
            rec.multi_answerer_seconds,
            rec.observed_seconds,
            rec.unobserved_seconds,
        )
        for family, value in zip(accounts, values, strict=True):
            family.add_metric(labels, value)
    yield from (answerers, two, silent, probe_answers, info, probes, answers, *accounts)
