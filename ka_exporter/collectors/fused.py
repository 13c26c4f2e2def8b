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
from functools import partial

from prometheus_client.metrics_core import Metric

from ka_exporter.collectors import Family, Rows, Series, keyed_families
from ka_exporter.model import Snapshot
from ka_exporter.verdicts.fused import WITNESSES, FusedVerdict, Memo, judge
from ka_exporter.verdicts.wire import VridVerdict

LABELS = ["interface", "family", "vrid"]
_VRID = tuple(LABELS)

#: The part's families, in exposition order.
FAMILIES: tuple[Family, ...] = (
    (
        "keepalived_split_brain",
        "gauge",
        "1 while any witness shows two holders of this VRID (see keepalived_split_brain_witness): "
        "the verdict the SplitBrain alert, the watchdog, check and the status page use.",
        _VRID,
    ),
    (
        "keepalived_split_brain_witness",
        "gauge",
        "1 while this witness shows split brain: wire (adverts), address (this node holds the VIPs "
        "while another router is master on the wire), liveness (local keepalived claims MASTER but "
        "is not heard advertising while another router is), l2 (two ARP/ND answerers for a VIP).",
        (*_VRID, "witness"),
    ),
    (
        "keepalived_master_silent",
        "gauge",
        "1 while the local keepalived claims MASTER but the wire has not heard this host advertise "
        "the VRID for its hold time (hung, or its adverts are silenced or blocked).",
        _VRID,
    ),
    (
        "keepalived_foreign_masters",
        "gauge",
        "Routers advertising this VRID that are neither this host nor a configured unicast_peer "
        "(0 when the instance has no unicast peers: see the KeepalivedForeignMaster rule).",
        _VRID,
    ),
    (
        "keepalived_vips_unanswered",
        "gauge",
        "VIPs of this VRID nobody answered an ARP/ND probe for while a master advertises it.",
        _VRID,
    ),
)
_NAMES = tuple(name for name, _t, _d, _l in FAMILIES)


def _verdict_series(v: FusedVerdict) -> list[Series]:
    labels = {"interface": v.interface, "family": v.family, "vrid": str(v.vrid)}
    n = _NAMES
    out: list[Series] = [(0, n[0], labels, 1.0 if v.split_brain else 0.0)]
    out.extend((1, n[1], {**labels, "witness": w}, 1.0 if w in v.witnesses else 0.0) for w in WITNESSES)
    out.append((2, n[2], labels, 1.0 if v.silent_master else 0.0))
    out.append((3, n[3], labels, float(len(v.foreign))))
    out.append((4, n[4], labels, float(len(v.dead_vips))))
    return out


def fused_rows(snap: Snapshot, memo: Memo | None = None) -> Rows | None:
    """The part as keyed rows (see `collectors.Row`): one per VRID, keyed on its verdict; None when
    there is no VRID to judge. `memo`: judge with it (`verdicts.fused.Memo`)."""
    return _rows(judge(snap, memo=memo))


def _rows(verdicts: tuple[FusedVerdict, ...]) -> Rows | None:
    if not verdicts:
        return None
    return frozenset(), [(v.key, v, partial(_verdict_series, v)) for v in verdicts]


def collect_fused(snap: Snapshot) -> Iterator[Metric]:
    """Metric families of the fused verdict; nothing when there is no VRID to judge."""
    return keyed_families(FAMILIES, fused_rows(snap))


class RowMemo:
    """The part over a renderer's successive snapshots: one `Memo`, so a render judges again only the
    VRIDs whose verdict can have moved, and the rows of the others are the same objects as before
    (a row whose basis is the same object is not compared field by field, nor written again).

    `key(snap, versions)` is the part's cache key (its verdicts: equal keys, equal text), `rows(snap)`
    and `collect(snap)` its rows and families, `next_edge` the first snapshot time at which time alone
    can change a verdict judged last (until then the same records give the same text)."""

    def __init__(self) -> None:
        self.memo = Memo()
        self._snap: Snapshot | None = None
        self._verdicts: tuple[FusedVerdict, ...] = ()

    def verdicts(self, snap: Snapshot) -> tuple[FusedVerdict, ...]:
        if snap is not self._snap:
            self._verdicts = self.memo.judge(snap)
            self._snap = snap
        return self._verdicts

    def key(self, snap: Snapshot, _versions: object = None) -> object:
        return self.verdicts(snap)

    def rows(self, snap: Snapshot) -> Rows | None:
        return _rows(self.verdicts(snap))

    def wire(self, snap: Snapshot, _versions: object = None) -> tuple[VridVerdict, ...] | None:
        """The wire verdicts of the same VRIDs (`judge_snapshot(snap)`), judged with them; None while
        the wire source is not running (the wire part's verdicts key)."""
        if snap.wire_peers is None or snap.wire_stats is None:
            return None
        self.verdicts(snap)
        return self.memo.wire

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        return keyed_families(FAMILIES, self.rows(snap))

    @property
    def next_edge(self) -> float:
        return self.memo.next_edge
