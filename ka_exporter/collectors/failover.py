"""Failover timing from the wire: master changes, their gaps and overlaps, and the time accounts
from which availability follows (`snapshot.failover`, kept by verdicts/failover.py). No I/O.

Availability of a VRID over any window, as the adverts show it::

    1 - (rate(keepalived_wire_masterless_seconds_total[w])
         + rate(keepalived_wire_multi_master_seconds_total[w]))
        / rate(keepalived_wire_observed_seconds_total[w])

Time the sniffer was not listening is never in the denominator (`..._unobserved_seconds_total`), so
an exporter restart or a capture failure is unknown time, not downtime. Example (one SIGKILL failover
at advert_int 1)::

    keepalived_wire_master_changes_total{family="inet",interface="eth0",vrid="51"} 1.0
    keepalived_wire_masterless_seconds_total{family="inet",interface="eth0",vrid="51"} 3.62
    keepalived_wire_failover_gap_seconds_bucket{family="inet",interface="eth0",le="4.0",vrid="51"} 1.0

Where the L2 witness runs (it feeds the tracker), each master change also gives, per VIP of the VRID,
the delay to the new master's first gratuitous ARP / unsolicited NA
(`keepalived_wire_failover_announce_delay_seconds`), or one `..._not_announced_total` if it sent none
within 30 s. An exporter without the L2 witness exports neither.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import BUCKETS, Histogram, Snapshot

LABELS = ["interface", "family", "vrid"]


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [
        *((f"{le}", float(n)) for le, n in zip(BUCKETS, h.buckets, strict=True)),
        ("+Inf", float(h.count)),
    ]


def collect_failover(snap: Snapshot) -> Iterator[Metric]:
    """Nothing while the wire source is not running; per VRID heard on the wire otherwise."""
    if snap.failover is None:
        return
    changes = CounterMetricFamily(
        "keepalived_wire_master_changes",
        "Changes of master seen on the wire (a router other than the last master became the only one).",
        labels=LABELS,
    )
    masterless = CounterMetricFamily(
        "keepalived_wire_masterless_seconds",
        "Time no router was master: a master's last (or priority-0) advert to the next master's first.",
        labels=LABELS,
    )
    multi = CounterMetricFamily(
        "keepalived_wire_multi_master_seconds",
        "Time two or more routers advertised as master at once (a preemption race, or a split brain).",
        labels=LABELS,
    )
    observed = CounterMetricFamily(
        "keepalived_wire_observed_seconds",
        "Time accounted while the sniffer listened, since the VRID was first heard (the availability base).",
        labels=LABELS,
    )
    unobserved = CounterMetricFamily(
        "keepalived_wire_unobserved_seconds",
        "Time the sniffer did not listen after the VRID was first heard: unknown, never counted as downtime.",
        labels=LABELS,
    )
    gaps = HistogramMetricFamily(
        "keepalived_wire_failover_gap_seconds",
        "Masterless time of each master change: the old master's last advert to the new master's first.",
        labels=LABELS,
    )
    overlaps = HistogramMetricFamily(
        "keepalived_wire_failover_overlap_seconds",
        "Handovers (preemptions): how long the old master still advertised after the new one's first advert.",
        labels=LABELS,
    )
    announce = HistogramMetricFamily(
        "keepalived_wire_failover_announce_delay_seconds",
        "Per master change: the new master's first advert to its first gratuitous ARP / unsolicited NA.",
        labels=[*LABELS, "vip"],
    )
    unannounced = CounterMetricFamily(
        "keepalived_wire_failover_not_announced",
        "Master changes whose new master sent no gratuitous ARP / unsolicited NA for the VIP within 30 s.",
        labels=[*LABELS, "vip"],
    )
    # Histograms (18 series each) for the VRIDs keepalived.conf configures, and for any VRID that has
    # had a master change; a VRID only ever heard once (a spoofed advert) gets the five counters only.
    configured = {(i.family, i.vrid) for i in (snap.config.instances if snap.config else ())}
    for t in snap.failover:
        labels = [t.key[0], t.key[1], str(t.key[2])]
        changes.add_metric(labels, t.master_changes)
        masterless.add_metric(labels, t.masterless_seconds)
        multi.add_metric(labels, t.multi_master_seconds)
        observed.add_metric(labels, t.observed_seconds)
        unobserved.add_metric(labels, t.unobserved_seconds)
        if (t.key[1], t.key[2]) in configured or t.gaps.count or t.overlaps.count:
            gaps.add_metric(labels, _buckets(t.gaps), t.gaps.total)
            overlaps.add_metric(labels, _buckets(t.overlaps), t.overlaps.total)
        for vip, delays, missed in t.announce or ():
            announce.add_metric([*labels, vip], _buckets(delays), delays.total)
            unannounced.add_metric([*labels, vip], missed)
    yield from (changes, masterless, multi, observed, unobserved, gaps, overlaps)
    if any(t.announce is not None for t in snap.failover):
        yield from (announce, unannounced)
