"""The fused split-brain verdict per VRID, with the witnesses behind it (`verdicts.fused`).

No I/O; fresh families per call. One series set per VRID seen on the wire or configured locally:

    keepalived_split_brain{family="inet",interface="eth0",vrid="51"} 1.0
    keepalived_split_brain_witness{family="inet",interface="eth0",vrid="51",witness="wire"} 1.0
    keepalived_split_brain_witness{family="inet",interface="eth0",vrid="51",witness="address"} 1.0
    keepalived_split_brain_witness{family="inet",interface="eth0",vrid="51",witness="liveness"} 0.0
    keepalived_split_brain_witness{family="inet",interface="eth0",vrid="51",witness="l2"} 0.0
    keepalived_master_silent{family="inet",interface="eth0",vrid="51"} 0.0
    keepalived_foreign_masters{family="inet",interface="eth0",vrid="51"} 0.0
    keepalived_vips_unanswered{family="inet",interface="eth0",vrid="51"} 0.0

`keepalived_split_brain` is what the KeepalivedSplitBrain alert, the watchdog, `check` and the
status page use; `keepalived_wire_split_brain` stays the wire's own verdict (one of the witnesses).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import Snapshot
from ka_exporter.verdicts.fused import WITNESSES, judge

LABELS = ["interface", "family", "vrid"]


def collect_fused(snap: Snapshot) -> Iterator[Metric]:
    """Metric families of the fused verdict; nothing when there is no VRID to judge."""
    verdicts = judge(snap)
    if not verdicts:
        return
    split = GaugeMetricFamily(
        "keepalived_split_brain",
        "1 while any witness shows two holders of this VRID (see keepalived_split_brain_witness): "
        "the verdict the SplitBrain alert, the watchdog, check and the status page use.",
        labels=LABELS,
    )
    witness = GaugeMetricFamily(
        "keepalived_split_brain_witness",
        "1 while this witness shows split brain: wire (adverts), address (this node holds the VIPs "
        "while another router is master on the wire), liveness (local keepalived claims MASTER but "
        "is not heard advertising while another router is), l2 (two ARP/ND answerers for a VIP).",
        labels=[*LABELS, "witness"],
    )
    silent = GaugeMetricFamily(
        "keepalived_master_silent",
        "1 while the local keepalived claims MASTER but the wire has not heard this host advertise "
        "the VRID for its hold time (hung, or its adverts are silenced or blocked).",
        labels=LABELS,
    )
    foreign = GaugeMetricFamily(
        "keepalived_foreign_masters",
        "Routers advertising this VRID that are neither this host nor a configured unicast_peer "
        "(0 when the instance has no unicast peers: see the KeepalivedForeignMaster rule).",
        labels=LABELS,
    )
    dead = GaugeMetricFamily(
        "keepalived_vips_unanswered",
        "VIPs of this VRID nobody answered an ARP/ND probe for while a master advertises it.",
        labels=LABELS,
    )
    for v in verdicts:
        labels = [v.interface, v.family, str(v.vrid)]
        split.add_metric(labels, 1.0 if v.split_brain else 0.0)
        for w in WITNESSES:
            witness.add_metric([*labels, w], 1.0 if w in v.witnesses else 0.0)
        silent.add_metric(labels, 1.0 if v.silent_master else 0.0)
        foreign.add_metric(labels, len(v.foreign))
        dead.add_metric(labels, len(v.dead_vips))
    yield from (split, witness, silent, foreign, dead)
