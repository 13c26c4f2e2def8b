"""What the wire shows: every router advertising on the segment, and the verdicts over them.

Renders `snapshot.wire_peers` / `snapshot.wire_stats` (the wire source's peer table) with the
verdicts of `ka_exporter.verdicts.wire` judged at `snapshot.time`. No I/O; fresh families per call.
VRIDs configured locally (keepalived.conf, else keepalived's own instance list) are exported even
when nothing was heard on them (that is the "no master" case). Series are bounded by the peer
table's cap (per router) and by 255 VRIDs per interface and family (per VRID).

`keepalived_wire_no_master` is a verdict of absence, so it needs listening: it stays 0 for a VRID
nobody was heard on until the sniffer has captured for that VRID's hold time (3 x advert_int from
keepalived.conf + skew, ~4.15 s at the default advert_int 1), and on interfaces it does not capture
on (or while it cannot capture at all: see `ka_exporter_source_up{source="wire"}`). In `--once`
mode only the listening window counts: with `--wire.listen-seconds` shorter than a VRID's hold time
(the default 5 s covers 4.15 s, the hold time at advert_int 1, but not that of a longer advert_int), a
VRID not heard in the window reads no_master 0 ("not known"), never 1; use a window of at least the
hold time for --once to judge absence.

`keepalived_wire_conflict{kind="source"}` is 1 while one router row is contested: adverts with the
same source address disagree with each other (VIPs/auth/interval/version going back and forth, or
the priority flipping between two values), i.e. a second sender uses that address, e.g. a spoofer
impersonating the master. It keeps the alert rule on `keepalived_wire_conflict` working for it.

Example output (split-brain.pcap, both routers advertising VRID 51)::

    keepalived_wire_masters{family="inet",interface="eth0",vrid="51"} 2.0
    keepalived_wire_split_brain{family="inet",interface="eth0",vrid="51"} 1.0
    keepalived_wire_no_master{family="inet",interface="eth0",vrid="51"} 0.0
    keepalived_wire_conflict{family="inet",interface="eth0",kind="auth",vrid="51"} 0.0
    keepalived_wire_conflict{family="inet",interface="eth0",kind="interval",vrid="51"} 0.0
    keepalived_wire_conflict{family="inet",interface="eth0",kind="version",vrid="51"} 0.0
    keepalived_wire_conflict{family="inet",interface="eth0",kind="vips",vrid="51"} 0.0
    keepalived_wire_conflict{family="inet",interface="eth0",kind="source",vrid="51"} 0.0
    keepalived_wire_routers{family="inet",interface="eth0",vrid="51"} 2.0
    keepalived_wire_advert_priority{family="inet",interface="eth0",source="10.97.0.1",vrid="51"} 150.0
    keepalived_wire_adverts_total{family="inet",interface="eth0",source="10.97.0.1",vrid="51"} 17.0
    keepalived_wire_last_advert_timestamp_seconds{...,source="10.97.0.1",vrid="51"} 1.7956232570e+09
    keepalived_wire_advert_interval_seconds{...,source="10.97.0.1",vrid="51"} 1.0
    keepalived_wire_router_local{...,source="10.97.0.1",vrid="51"} 0.0
    keepalived_wire_invalid_packets_total{reason="bad_checksum"} 0.0
    keepalived_wire_packets_total 31.0
    keepalived_wire_kernel_drops_total 0.0
    keepalived_wire_peer_evictions_total 0.0
    keepalived_wire_peers 2.0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import Snapshot, WirePeer, WireStats
from ka_exporter.verdicts.wire import CONFLICT_KINDS, VridKey, VridVerdict, judge_snapshot

VRID_LABELS = ["interface", "family", "vrid"]
ROUTER_LABELS = ["interface", "family", "vrid", "source"]


def collect_wire(snap: Snapshot, configured: Iterable[VridKey] | None = None) -> Iterator[Metric]:
    """Metric families for the wire view; nothing when the wire source is not running."""
    if snap.wire_peers is None or snap.wire_stats is None:
        return
    yield from verdict_families(judge_snapshot(snap, configured))
    yield from router_families(snap.wire_peers, snap.wire_stats)


def verdict_families(verdicts: Iterable[VridVerdict]) -> Iterator[Metric]:
    """The per-VRID families of `collect_wire` (they move only when a verdict does)."""
    masters = GaugeMetricFamily(
        "keepalived_wire_masters",
        "Routers advertising this VRID as master now (non-zero priority, heard within the hold time).",
        labels=VRID_LABELS,
    )
    split = GaugeMetricFamily(
        "keepalived_wire_split_brain",
        "1 while two or more routers advertise this VRID concurrently, or one of two routers that drop "
        "each other's adverts fell silent without resigning while the other advertises (presumed "
        "master, at most 5 minutes); never during a failover, graceful stop or preemption.",
        labels=VRID_LABELS,
    )
    nomaster = GaugeMetricFamily(
        "keepalived_wire_no_master",
        "1 if this VRID was seen or is configured locally and nobody advertised it within the hold time; "
        "0 (not known) until the sniffer has listened for the VRID's hold time, so always 0 for an "
        "unheard VRID in --once with --wire.listen-seconds shorter than that.",
        labels=VRID_LABELS,
    )
    conflict = GaugeMetricFamily(
        "keepalived_wire_conflict",
        "1 if routers on this VRID disagree on kind (vips, interval, version, auth; keepalived drops "
        "such adverts silently, a classic cause of dual master), or, kind source, if adverts from one "
        "source address disagree with each other (a second sender using it, e.g. a spoofer).",
        labels=[*VRID_LABELS, "kind"],
    )
    routers = GaugeMetricFamily(
        "keepalived_wire_routers",
        "Routers heard on this VRID within their hold time, whatever their priority.",
        labels=VRID_LABELS,
    )
    for v in verdicts:
        labels = [v.interface, v.family, str(v.vrid)]
        masters.add_metric(labels, v.masters)
        split.add_metric(labels, 1.0 if v.split_brain else 0.0)
        nomaster.add_metric(labels, 1.0 if v.no_master else 0.0)
        routers.add_metric(labels, v.routers)
        for kind in CONFLICT_KINDS:
            conflict.add_metric([*labels, kind], 1.0 if kind in v.conflicts else 0.0)
    yield from (masters, split, nomaster, conflict, routers)


def router_families(peers: tuple[WirePeer, ...], stats: WireStats) -> Iterator[Metric]:
    """The per-router and counter families of `collect_wire` (they move with every advert)."""
    priority = GaugeMetricFamily(
        "keepalived_wire_advert_priority",
        "Priority in this router's last advert (0: it resigned, e.g. keepalived stopped).",
        labels=ROUTER_LABELS,
    )
    adverts = CounterMetricFamily(
        "keepalived_wire_adverts",
        "Adverts received from this router since it entered the peer table.",
        labels=ROUTER_LABELS,
    )
    last = GaugeMetricFamily(
        "keepalived_wire_last_advert_timestamp_seconds",
        "Time this router's last advert was received.",
        labels=ROUTER_LABELS,
    )
    interval = GaugeMetricFamily(
        "keepalived_wire_advert_interval_seconds",
        "Advert interval this router announces.",
        labels=ROUTER_LABELS,
    )
    local = GaugeMetricFamily(
        "keepalived_wire_router_local",
        "1 if the adverts come from this host (seen outgoing).",
        labels=ROUTER_LABELS,
    )
    for p in peers:
        labels = [p.interface, p.family, str(p.vrid), p.source]
        priority.add_metric(labels, p.priority)
        adverts.add_metric(labels, p.adverts)
        last.add_metric(labels, p.last_seen)
        interval.add_metric(labels, p.interval)
        local.add_metric(labels, 1.0 if p.local else 0.0)
    yield from (priority, adverts, last, interval, local)

    invalid = CounterMetricFamily(
        "keepalived_wire_invalid_packets",
        "Packets that passed the kernel VRRP filter but are not valid adverts, by reason.",
        labels=["reason"],
    )
    for reason, count in stats.invalid:
        invalid.add_metric([reason], count)
    yield invalid
    yield CounterMetricFamily(
        "keepalived_wire_packets",
        "VRRP packets the sniffer read (past the kernel filter).",
        value=stats.packets,
    )
    yield CounterMetricFamily(
        "keepalived_wire_kernel_drops",
        "VRRP packets the kernel dropped before the sniffer read them (PACKET_STATISTICS).",
        value=stats.kernel_drops,
    )
    yield CounterMetricFamily(
        "keepalived_wire_peer_evictions",
        "Routers evicted from the full peer table (a flood of spoofed adverts shows here).",
        value=stats.evictions,
    )
    yield GaugeMetricFamily(
        "keepalived_wire_peers", "Routers in the peer table (bounded by --wire.max-peers).", value=len(peers)
    )
