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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import Snapshot, canonical_ip


def configured_vips(snap: Snapshot) -> list[tuple[str, str, str, str | None, bool]]:
    """(vip, iname, vrid, configured dev, excluded) for every VIP keepalived.conf (or keepalived) names,
    `virtual_ipaddress_excluded` ones included (excluded True)."""
    out: list[tuple[str, str, str, str | None, bool]] = []
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


def collect_vips(snap: Snapshot) -> Iterator[Metric]:
    vips = configured_vips(snap)
    if not vips:
        return
    held: dict[str, set[str]] = {}
    known = snap.addresses is not None
    for addr in snap.addresses or ():
        held.setdefault(canonical_ip(addr.address), set()).add(addr.interface)
    status = GaugeMetricFamily(
        "keepalived_vip_status",
        "1 if this node holds the virtual IP on any interface (seed guide series).",
        labels=["hostname", "vip"],
    )
    detail = GaugeMetricFamily(
        "keepalived_vip_on_interface",
        "1 for each interface that holds a configured virtual IP; 0 on its configured interface if absent.",
        labels=["iname", "vrid", "vip", "interface"],
    )
    seen: set[str] = set()
    for vip, iname, vrid, dev, excluded in vips:
        where = held.get(vip, set())
        if vip not in seen and known:
            _add(status, {"hostname": snap.hostname, "vip": vip}, excluded, 1.0 if where else 0.0)
            seen.add(vip)
        if not known:
            continue
        for intf in sorted(where):
            _add(detail, {"iname": iname, "vrid": vrid, "vip": vip, "interface": intf}, excluded, 1.0)
        if dev and dev not in where:
            _add(detail, {"iname": iname, "vrid": vrid, "vip": vip, "interface": dev}, excluded, 0.0)
    yield status
    yield detail


def _add(family: GaugeMetricFamily, labels: dict[str, str], excluded: bool, value: float) -> None:
    """A sample with the family's labels, plus excluded="true" for a `virtual_ipaddress_excluded` VIP."""
    family.add_sample(family.name, {**labels, "excluded": "true"} if excluded else labels, value)


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
