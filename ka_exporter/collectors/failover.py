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
from functools import partial

from prometheus_client.metrics_core import Metric

from ka_exporter.collectors import Family, Row, Rows, Series, keyed_families
from ka_exporter.model import BUCKETS, Histogram, Snapshot

LABELS = ["interface", "family", "vrid"]
_VRID = tuple(LABELS)

#: The part's families, in exposition order: the first seven always shown, the announce delays and
#: misses where the L2 witness feeds the tracker.
FAMILIES: tuple[Family, ...] = (
    (
        "keepalived_wire_master_changes",
        "counter",
        "Changes of master seen on the wire (a router other than the last master became the only one).",
        _VRID,
    ),
    (
        "keepalived_wire_masterless_seconds",
        "counter",
        "Time no router was master: a master's last (or priority-0) advert to the next master's first.",
        _VRID,
    ),
    (
        "keepalived_wire_multi_master_seconds",
        "counter",
        "Time two or more routers advertised as master at once (a preemption race, or a split brain).",
        _VRID,
    ),
    (
        "keepalived_wire_observed_seconds",
        "counter",
        "Time accounted while the sniffer listened, since the VRID was first heard (the availability base).",
        _VRID,
    ),
    (
        "keepalived_wire_unobserved_seconds",
        "counter",
        "Time the sniffer did not listen after the VRID was first heard: unknown, never counted as downtime.",
        _VRID,
    ),
    (
        "keepalived_wire_failover_gap_seconds",
        "histogram",
        "Masterless time of each master change: the old master's last advert to the new master's first.",
        _VRID,
    ),
    (
        "keepalived_wire_failover_overlap_seconds",
        "histogram",
        "Handovers (preemptions): how long the old master still advertised after the new one's first advert.",
        _VRID,
    ),
    (
        "keepalived_wire_failover_announce_delay_seconds",
        "histogram",
        "Per master change: the new master's first advert to its first gratuitous ARP / unsolicited NA.",
        (*_VRID, "vip"),
    ),
    (
        "keepalived_wire_failover_not_announced",
        "counter",
        "Master changes whose new master sent no gratuitous ARP / unsolicited NA for the VIP within 30 s.",
        (*_VRID, "vip"),
    ),
)
_SHOWN = frozenset(range(7))
_ANNOUNCED = frozenset(range(9))
_LE = (*(f"{le}" for le in BUCKETS), "+Inf")


def _histogram(k: int, h: Histogram, labels: dict[str, str]) -> list[Series]:
    """A histogram's series as prometheus_client's HistogramMetricFamily.add_metric writes them."""
    name = FAMILIES[k][0]
    counts = (*h.buckets, h.count)
    out: list[Series] = [
        (k, name + "_bucket", {**labels, "le": le}, float(n)) for le, n in zip(_LE, counts, strict=True)
    ]
    out.append((k, name + "_count", labels, float(h.count)))
    out.append((k, name + "_sum", labels, h.total))
    return out


def _counters(labels: dict[str, str], values: tuple[float, ...]) -> list[Series]:
    return [(k, FAMILIES[k][0] + "_total", labels, float(v)) for k, v in enumerate(values)]


def _histograms(labels: dict[str, str], gaps: Histogram, overlaps: Histogram) -> list[Series]:
    return [*_histogram(5, gaps, labels), *_histogram(6, overlaps, labels)]


def _announced(labels: dict[str, str], announce: tuple[tuple[str, Histogram, int], ...]) -> list[Series]:
    out: list[Series] = []
    for vip, delays, missed in announce:
        mine = {**labels, "vip": vip}
        out.extend(_histogram(7, delays, mine))
        out.append((8, FAMILIES[8][0] + "_total", mine, float(missed)))
    return out


def failover_rows(snap: Snapshot) -> Rows | None:
    """The part as keyed rows (see `collectors.Row`), three per VRID: its five time counters (which
    move with every wire tick), its gap and overlap histograms (which move with a master change),
    and its announce delays; None while the wire source is not running."""
    if snap.failover is None:
        return None
    # Histograms (18 series each) for the VRIDs keepalived.conf configures, and for any VRID that has
    # had a master change; a VRID only ever heard once (a spoofed advert) gets the five counters only.
    configured = {(i.family, i.vrid) for i in (snap.config.instances if snap.config else ())}
    rows: list[Row] = []
    for t in snap.failover:
        labels = {"interface": t.key[0], "family": t.key[1], "vrid": str(t.key[2])}
        values = (
            t.master_changes,
            t.masterless_seconds,
            t.multi_master_seconds,
            t.observed_seconds,
            t.unobserved_seconds,
        )
        rows.append(((t.key, 0), values, partial(_counters, labels, values)))
        if (t.key[1], t.key[2]) in configured or t.gaps.count or t.overlaps.count:
            rows.append(((t.key, 1), (t.gaps, t.overlaps), partial(_histograms, labels, t.gaps, t.overlaps)))
        if t.announce:
            rows.append(((t.key, 2), t.announce, partial(_announced, labels, t.announce)))
    announced = any(t.announce is not None for t in snap.failover)
    return (_ANNOUNCED if announced else _SHOWN), rows


def collect_failover(snap: Snapshot) -> Iterator[Metric]:
    """Nothing while the wire source is not running; per VRID heard on the wire otherwise."""
    return keyed_families(FAMILIES, failover_rows(snap))
