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
from functools import partial

from prometheus_client.metrics_core import Metric

from ka_exporter.collectors import Family, Row, Rows, Series, keyed_families
from ka_exporter.model import Snapshot, VipAnswers
from ka_exporter.verdicts.l2 import L2Verdict, judge_snapshot

VIP_LABELS = ["interface", "family", "vip"]


_ACCOUNTS = (
    ("no_answerer", "Seconds in which nobody answered for this VIP (probes completed, none answered)."),
    ("one_answerer", "Seconds in which exactly one host answered for this VIP (this node included)."),
    ("multi_answerer", "Seconds in which two or more hosts answered for this VIP (split brain)."),
    ("observed", "Seconds the L2 witness accounted for this VIP (no + one + multi answerer)."),
    (
        "unobserved",
        "Seconds the L2 witness could not tell who answered for this VIP (its start, probes not "
        "completing, capture gaps): unknown, never counted as no answerer.",
    ),
)
_VIP = tuple(VIP_LABELS)

#: The part's families, in exposition order (every one shown, with or without samples).
FAMILIES: tuple[Family, ...] = (
    (
        "keepalived_l2_vip_answerers",
        "gauge",
        "Hosts answering ARP/ND for this VIP now: other hosts that answered the latest probe, plus this "
        "node if it holds the VIP.",
        _VIP,
    ),
    (
        "keepalived_l2_vip_two_answerers",
        "gauge",
        "1 while two or more hosts answer for this VIP, or one probe got two or more answers "
        "(use_vmac): split brain from any vantage point that hears both.",
        _VIP,
    ),
    (
        "keepalived_l2_vip_silent",
        "gauge",
        "1 if this VIP was probed and nobody (this node included) answers for it.",
        _VIP,
    ),
    (
        "keepalived_l2_probe_answers",
        "gauge",
        "Answers to the latest published probe result of this VIP: two probes in a row that agreed "
        "(IPv4: each answer; IPv6: distinct MACs).",
        _VIP,
    ),
    (
        "keepalived_l2_vip_answerer_info",
        "gauge",
        "1 for each other host's MAC that answers for this VIP now (bounded per VIP).",
        (*_VIP, "mac"),
    ),
    ("keepalived_l2_probes", "counter", "ARP probes / DAD neighbour solicitations sent for this VIP.", _VIP),
    (
        "keepalived_l2_answers",
        "counter",
        "ARP replies, gratuitous ARPs and neighbour advertisements naming this VIP heard from other hosts.",
        _VIP,
    ),
    *((f"keepalived_l2_vip_{name}_seconds", "counter", text, _VIP) for name, text in _ACCOUNTS),
)
_ALL = frozenset(range(len(FAMILIES)))
_NAMES = tuple(name + ("_total" if mtype == "counter" else "") for name, mtype, _d, _l in FAMILIES)


def _vip_series(rec: VipAnswers, v: L2Verdict) -> list[Series]:
    labels = {"interface": rec.interface, "family": rec.family, "vip": rec.vip}
    n = _NAMES
    out: list[Series] = [
        (0, n[0], labels, float(v.answerers)),
        (1, n[1], labels, 1.0 if v.two_answerers else 0.0),
        (2, n[2], labels, 1.0 if v.silent else 0.0),
    ]
    if rec.last_probe_answers is not None:
        out.append((3, n[3], labels, float(rec.last_probe_answers)))
    out.extend((4, n[4], {**labels, "mac": mac}, 1.0) for mac in rec.answerers)
    values = (
        rec.probes_sent,
        rec.answers_seen,
        rec.no_answerer_seconds,
        rec.one_answerer_seconds,
        rec.multi_answerer_seconds,
        rec.observed_seconds,
        rec.unobserved_seconds,
    )
    out.extend((5 + k, n[5 + k], labels, float(value)) for k, value in enumerate(values))
    return out


def l2_rows(snap: Snapshot) -> Rows | None:
    """The part as keyed rows (see `collectors.Row`): one per watched VIP, keyed on its record and
    its verdict; None when the L2 witness is not running."""
    if snap.l2 is None:
        return None
    verdicts = {(v.interface, v.vip): v for v in judge_snapshot(snap)}
    rows: list[Row] = []
    for rec in snap.l2:
        v = verdicts[(rec.interface, rec.vip)]
        rows.append(((rec.interface, rec.family, rec.vip), (rec, v), partial(_vip_series, rec, v)))
    return _ALL, rows


def collect_l2(snap: Snapshot) -> Iterator[Metric]:
    """Metric families for the L2 witness; nothing when it is not running."""
    return keyed_families(FAMILIES, l2_rows(snap))
