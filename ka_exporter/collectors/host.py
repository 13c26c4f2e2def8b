"""Process, VIP ownership and keepalived.conf metrics (the seed guide's series among them).

Example output (node holding 10.97.0.100, keepalived running)::

    keepalived_up 1.0
    keepalived_process_status{hostname="node-a"} 1.0
    keepalived_vip_status{hostname="node-a",vip="10.97.0.100"} 1.0
    keepalived_vip_on_interface{iname="VI_WEB",interface="eth0",vip="10.97.0.100",vrid="51"} 1.0
    keepalived_vip_status{excluded="true",hostname="node-a",vip="10.97.0.200"} 1.0

A `virtual_ipaddress_excluded` address (keepalived installs it with the VIPs but leaves it out of its
adverts) has the extra label excluded="true" in both VIP series; every other VIP's series keeps exactly
the labels it had (the seed guide's `keepalived_vip_status{hostname,vip}`).
    keepalived_config_instance_info{family="inet",iname="VI_WEB",intf="eth0",version="2",vrid="51"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.collectors import Family, Row, Rows, Series, keyed_families
from ka_exporter.model import InstanceView, Snapshot, canonical_ip

VipEntry = tuple[str, str, str, str | None, bool]  # (vip, iname, vrid, dev, excluded)


def configured_vips(snap: Snapshot) -> list[VipEntry]:
    """(vip, iname, vrid, configured dev, excluded) for every VIP keepalived.conf (or keepalived) names,
    `virtual_ipaddress_excluded` ones included (excluded True)."""
    out: list[VipEntry] = []
    if snap.config is not None and snap.config.instances:
        for inst in snap.config.instances:
            for vip in inst.vips:
                out.append(
                    (
                        canonical_ip(vip.address),
                        inst.name,
                        str(inst.vrid) if inst.vrid is not None else "",
                        vip.dev or inst.interface,
                        vip.excluded,
                    )
                )
    elif snap.instances:
        for view in snap.instances:
            for addr in view.vips:
                out.append((canonical_ip(addr), view.name, str(view.vrid), view.interface, False))
            for addr in view.vips_excluded:
                out.append((canonical_ip(addr), view.name, str(view.vrid), view.interface, True))
    return out


def collect_process(snap: Snapshot) -> Iterator[Metric]:
    proc = snap.process
    if proc is None:
        return
    up = GaugeMetricFamily("keepalived_up", "1 if keepalived's parent process is running on this node.")
    up.add_metric([], 1.0 if proc.running else 0.0)
    yield up
    status = GaugeMetricFamily(
        "keepalived_process_status",
        "1 if keepalived is running on this node (seed guide series).",
        labels=["hostname"],
    )
    status.add_metric([snap.hostname], 1.0 if proc.running else 0.0)
    yield status
    start = GaugeMetricFamily(
        "keepalived_process_start_time_seconds", "Start time of keepalived's parent process (unix time)."
    )
    if proc.start_time is not None:
        start.add_metric([], proc.start_time)
    yield start
    children = GaugeMetricFamily(
        "keepalived_process_children", "Number of keepalived child processes (VRRP, checker, BFD)."
    )
    children.add_metric([], float(len(proc.vrrp_pids)) if proc.running else 0.0)
    yield children
    restarts = CounterMetricFamily(
        "keepalived_process_restarts",
        "Times this exporter saw keepalived's parent process start again with a new pid.",
    )
    restarts.add_metric([], float(proc.restarts))
    yield restarts
    yield _single(
        "keepalived_process_stopped",
        "1 if keepalived's parent or a child is stopped (SIGSTOP, State T): it runs but answers nothing.",
        1.0 if proc.running and proc.stopped_pids else 0.0,
    )
    yield _single(
        "keepalived_process_unverified",
        "Processes named keepalived this exporter could not verify (owner, namespace) and did not adopt.",
        float(proc.rejected),
    )


def _single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    """A gauge with one unlabelled sample."""
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


#: The VIP part's families, in exposition order (its rows: `vips_rows`).
VIP_FAMILIES: tuple[Family, ...] = (
    (
        "keepalived_vip_status",
        "gauge",
        "1 if this node holds the virtual IP on any interface (seed guide series).",
        ("hostname", "vip"),
    ),
    (
        "keepalived_vip_on_interface",
        "gauge",
        "1 for each interface that holds a configured virtual IP; 0 on its configured interface if absent.",
        ("iname", "vrid", "vip", "interface"),
    ),
)
_VIP_SHOWN = frozenset({0, 1})  # both families, even without a sample (this node's addresses unknown)


def vips_rows(snap: Snapshot) -> Rows | None:
    """The VIP part as keyed rows (see `collectors.Row`): one per VIP of an instance, keyed on it, its
    basis what its series read (the interfaces holding it); None when no VIP is known."""
    vips = configured_vips(snap)
    if not vips:
        return None
    held = _held(snap)
    known = snap.addresses is not None
    hostname = snap.hostname
    seen: set[str] = set()
    rows: list[Row] = []
    for entry in vips:
        vip = entry[0]
        first = vip not in seen
        seen.add(vip)
        where = tuple(sorted(held.get(vip, ()))) if known else None
        basis = (first, where, hostname)
        rows.append((entry, basis, partial(_vip_series, entry, first, where, hostname)))
    return _VIP_SHOWN, rows


def _held(snap: Snapshot) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {}
    for addr in snap.addresses or ():
        held.setdefault(canonical_ip(addr.address), set()).add(addr.interface)
    return held


def _same_vips(old: object, new: object) -> bool:
    """Do two instance lists give the same `configured_vips`? (by position, as the store hands them
    out: only the new objects are compared)"""
    if not isinstance(old, tuple) or not isinstance(new, tuple) or len(old) != len(new):
        return False
    return all(
        a is b
        or (
            isinstance(a, InstanceView)
            and isinstance(b, InstanceView)
            and (a.name, a.vrid, a.interface, a.vips, a.vips_excluded)
            == (b.name, b.vrid, b.interface, b.vips, b.vips_excluded)
        )
        for a, b in zip(old, new, strict=True)
    )


class VipRows:
    """`vips_rows` over a renderer's successive snapshots: when only this node's addresses moved (a
    failover of one instance of 1,000), only the rows of the VIPs whose holding moved are made again,
    and the others are the same objects as before (not compared field by field, nor written)."""

    def __init__(self) -> None:
        self._source: object = None  # what the entries came from: keepalived.conf, else the instances
        self._addresses: object = None
        self._hostname = ""
        self._held: dict[str, set[str]] = {}
        self._rows: list[Row] = []
        self._at: dict[str, list[int]] = {}  # a VIP's rows
        self._got: Rows | None = None

    def __call__(self, snap: Snapshot) -> Rows | None:
        config = snap.config
        source = config if config is not None and config.instances else snap.instances
        if source is not self._source and _same_vips(self._source, source):
            self._source = source  # new view objects, but none moved in what the entries read
        if source is not self._source or snap.hostname != self._hostname or self._addresses is None:
            self._rebuild(snap, source)
        elif snap.addresses is not self._addresses:
            if snap.addresses is None:
                self._rebuild(snap, source)
            else:
                held = _held(snap)
                moved = {vip for vip in {*held, *self._held} if held.get(vip) != self._held.get(vip)}
                self._held, self._addresses = held, snap.addresses
                if moved:
                    rows = list(self._rows)
                    for vip in moved:
                        for r in self._at.get(vip, ()):
                            entry, basis, _series = rows[r]
                            first = cast("tuple[bool, object, str]", basis)[0]
                            rows[r] = self._row(cast("VipEntry", entry), first, held)
                    self._rows = rows
                    self._got = (_VIP_SHOWN, rows)
        return self._got

    def _rebuild(self, snap: Snapshot, source: object) -> None:
        self._source, self._hostname, self._addresses = source, snap.hostname, snap.addresses
        self._got = vips_rows(snap)
        self._rows = [] if self._got is None else self._got[1]
        self._held = _held(snap)
        self._at = {}
        for r, (entry, _basis, _series) in enumerate(self._rows):
            self._at.setdefault(cast("VipEntry", entry)[0], []).append(r)

    def _row(self, entry: VipEntry, first: bool, held: dict[str, set[str]]) -> Row:
        where = tuple(sorted(held.get(entry[0], ())))
        hostname = self._hostname
        return (entry, (first, where, hostname), partial(_vip_series, entry, first, where, hostname))


def _vip_series(entry: VipEntry, first: bool, where: tuple[str, ...] | None, hostname: str) -> list[Series]:
    vip, iname, vrid, dev, excluded = entry
    if where is None:  # this node's addresses not known: the families alone
        return []
    out: list[Series] = []
    if first:
        out.append(_vip_sample(0, {"hostname": hostname, "vip": vip}, excluded, 1.0 if where else 0.0))
    for intf in where:
        out.append(
            _vip_sample(1, {"iname": iname, "vrid": vrid, "vip": vip, "interface": intf}, excluded, 1.0)
        )
    if dev and dev not in where:
        out.append(
            _vip_sample(1, {"iname": iname, "vrid": vrid, "vip": vip, "interface": dev}, excluded, 0.0)
        )
    return out


def _vip_sample(k: int, labels: dict[str, str], excluded: bool, value: float) -> Series:
    """A sample with the family's labels, plus excluded="true" for a `virtual_ipaddress_excluded` VIP."""
    return (k, VIP_FAMILIES[k][0], {**labels, "excluded": "true"} if excluded else labels, value)


def collect_vips(snap: Snapshot) -> Iterator[Metric]:
    return keyed_families(VIP_FAMILIES, vips_rows(snap))


def collect_config(snap: Snapshot) -> Iterator[Metric]:
    cfg = snap.config
    if cfg is None:
        return
    info = GaugeMetricFamily(
        "keepalived_config_instance_info",
        "A VRRP instance configured in keepalived.conf (always 1).",
        labels=["iname", "intf", "vrid", "family", "version"],
    )
    for inst in cfg.instances:
        version = inst.version or cfg.vrrp_version or (3 if inst.family == "inet6" else 2)
        info.add_metric(
            [
                inst.name,
                inst.interface or "",
                str(inst.vrid) if inst.vrid is not None else "",
                inst.family,
                str(version),
            ],
            1.0,
        )
    yield info
    count = GaugeMetricFamily("keepalived_config_instances", "Number of VRRP instances in keepalived.conf.")
    count.add_metric([], float(len(cfg.instances)))
    yield count
    problems = GaugeMetricFamily(
        "keepalived_config_problems", "Lines of keepalived.conf this exporter could not understand."
    )
    problems.add_metric([], float(len(cfg.problems)))
    yield problems
