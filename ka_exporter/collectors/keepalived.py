"""keepalived's own view of its VRRP instances (from the dumps and/or D-Bus), one series per instance.

Example output (node a of the fixtures, instance VI_DB: BACKUP, effective priority 80, a failing script)::

    keepalived_vrrp_state{iname="VI_DB",intf="eth0",vrid="52"} 1.0
    keepalived_vrrp_wanted_state{iname="VI_DB",intf="eth0",vrid="52"} 1.0
    keepalived_vrrp_priority{iname="VI_DB",intf="eth0",vrid="52"} 100.0
    keepalived_vrrp_effective_priority{iname="VI_DB",intf="eth0",vrid="52"} 80.0
    keepalived_vrrp_master_priority{iname="VI_DB",intf="eth0",vrid="52"} 130.0
    keepalived_vrrp_advert_interval_seconds{iname="VI_DB",intf="eth0",vrid="52"} 1.0
    keepalived_vrrp_preempt{iname="VI_DB",intf="eth0",vrid="52"} 0.0
    keepalived_vrrp_last_transition_timestamp_seconds{iname="VI_DB",intf="eth0",vrid="52"} 1.79562e+09
    keepalived_vrrp_vip_mismatch{iname="VI_DB",intf="eth0",vrid="52"} 0.0
    keepalived_vrrp_transitions_total{iname="VI_DB",intf="eth0",vrid="52"} 0.0
    keepalived_vrrp_instance_info{auth_type="PASS",family="inet",iname="VI_DB",intf="eth0",sync_group="",
                                  version="2",vrid="52"} 1.0
    keepalived_advertisements_received_total{iname="VI_DB",intf="eth0",vrid="52"} 9.0
    ... (the other keepalived.stats counters, same labels)
    keepalived_script_status{name="chk_bad"} 0.0
    keepalived_tracked_interface_up{iname="VI_DB",interface="trk0"} 1.0

and, for an instance with a ``track_process`` and a ``track_file`` (``.data`` dump only: the JSON dump has
no track data)::

    keepalived_tracked_process_up{iname="VI_1",name="chk_proc"} 0.0
    keepalived_tracked_process_running{iname="VI_1",name="chk_proc"} 0.0
    keepalived_tracked_process_weight{iname="VI_1",name="chk_proc"} -30.0
    keepalived_tracked_file_status{iname="VI_1",name="chk_flag"} 3.0
    keepalived_tracked_file_weight{iname="VI_1",name="chk_flag"} -10.0
    keepalived_tracked_bfd_up{iname="VI_1",name="bfd_peer"} 1.0
    keepalived_tracked_bfd_weight{iname="VI_1",name="bfd_peer"} -20.0

The tracker series are per instance (like ``keepalived_tracked_interface_up``): a tracker's effect is the
instance's (its weight there; weight 0 means FAULT without quorum / with a non-zero file).

States: 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT (4 STOP, keepalived 2.x, exported as-is). A value keepalived
did not report (say, the effective priority of a 1.3 dump whose scripts are not known) has no sample.

Names of the counters and of ``keepalived_script_status`` (GOOD 1, BAD 0) follow the most used existing
exporter (mehdy/keepalived-exporter) so that its dashboards keep working; unlike it, ``keepalived_vrrp_state``
is one series per instance (not one per VIP) and no label carries the state.

``keepalived_vrrp_vip_mismatch`` appears only when the VIP source knows the local addresses (see
:mod:`ka_exporter.verdicts.vips`). When the process source says keepalived is not running, its instances
are judged as stopped (their last dump is stale): a VIP left behind by a SIGKILLed keepalived is a
mismatch until something removes it (a restarted keepalived 2.2 removes it while starting up).
``keepalived_vrrp_transitions_total`` counts the transitions this exporter
saw as D-Bus events; it is exported (0 for quiet instances) only when the D-Bus source runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import InstanceStats, Snapshot, VrrpState
from ka_exporter.verdicts.vips import held_addresses, vip_mismatch_held

__all__ = ["STATS_COUNTERS", "collect_keepalived"]

LABELS = ("iname", "intf", "vrid")
INFO_LABELS = ("iname", "intf", "vrid", "family", "version", "sync_group", "auth_type")

# (metric name without _total, InstanceStats field, help)
STATS_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("keepalived_advertisements_received", "advert_rcvd", "Advertisements received."),
    ("keepalived_advertisements_sent", "advert_sent", "Advertisements sent."),
    ("keepalived_become_master", "become_master", "Times the instance became MASTER."),
    ("keepalived_release_master", "release_master", "Times the instance released MASTER."),
    ("keepalived_packet_length_errors", "packet_len_err", "Adverts received with a bad packet length."),
    (
        "keepalived_advertisements_interval_errors",
        "advert_interval_err",
        "Adverts received with an advert interval different from ours.",
    ),
    ("keepalived_ip_ttl_errors", "ip_ttl_err", "Adverts received with an IP TTL other than 255."),
    ("keepalived_invalid_type_received", "invalid_type_rcvd", "Packets received with an invalid VRRP type."),
    ("keepalived_address_list_errors", "addr_list_err", "Adverts received whose VIP list differs from ours."),
    ("keepalived_authentication_invalid", "invalid_authtype", "Adverts received with an unknown auth type."),
    ("keepalived_authentication_mismatch", "authtype_mismatch", "Adverts received with another auth type."),
    ("keepalived_authentication_failure", "auth_failure", "Adverts received that failed authentication."),
    ("keepalived_priority_zero_received", "pri_zero_rcvd", "Priority 0 adverts received (a master leaving)."),
    ("keepalived_priority_zero_sent", "pri_zero_sent", "Priority 0 adverts sent (this node leaving MASTER)."),
)

_GAUGES: tuple[tuple[str, str], ...] = (
    (
        "keepalived_vrrp_state",
        "VRRP state as keepalived reports it: 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT, 4 STOP.",
    ),
    ("keepalived_vrrp_wanted_state", "The state keepalived is moving to (Wantstate), same numbering."),
    ("keepalived_vrrp_priority", "Configured (base) priority of the instance."),
    ("keepalived_vrrp_effective_priority", "Priority after track script and interface weights."),
    ("keepalived_vrrp_master_priority", "Priority of the master, as a BACKUP last heard it."),
    ("keepalived_vrrp_advert_interval_seconds", "Advertisement interval of the instance."),
    ("keepalived_vrrp_preempt", "1 if the instance preempts a lower-priority master, 0 with nopreempt."),
    ("keepalived_vrrp_last_transition_timestamp_seconds", "Time of the last state transition (unix time)."),
)


_TRACKERS: tuple[tuple[str, str], ...] = (
    (
        "keepalived_tracked_process_up",
        "1 if keepalived counts enough processes of a track_process the instance tracks (quorum), 0 if not.",
    ),
    (
        "keepalived_tracked_process_running",
        "Processes keepalived counts for a track_process (Current processes).",
    ),
    (
        "keepalived_tracked_process_weight",
        "The instance's weight for a track_process (0: FAULT without quorum).",
    ),
    (
        "keepalived_tracked_file_status",
        "The number keepalived last read from a track_file the instance tracks.",
    ),
    (
        "keepalived_tracked_file_weight",
        "The instance's weight for a track_file (0: FAULT on a non-zero status, else status * weight).",
    ),
    ("keepalived_tracked_bfd_up", "1 if a BFD session the instance tracks (track_bfd) is up, 0 if down."),
    ("keepalived_tracked_bfd_weight", "The instance's weight for a track_bfd (0: FAULT while it is down)."),
)


def _num(value: float | int | bool | None) -> float | None:
    return None if value is None else float(value)


def collect_keepalived(snapshot: Snapshot) -> Iterator[Metric]:  # noqa: C901, PLR0912 - one pass over the instances fills every family; a split walks them once per family
    """Render keepalived's instances of one snapshot into fresh metric families (no I/O)."""
    instances = snapshot.instances
    if not instances:
        return
    gauges = [GaugeMetricFamily(name, doc, labels=LABELS) for name, doc in _GAUGES]
    g_names = [name for name, _ in _GAUGES]
    counters = [CounterMetricFamily(name, doc, labels=LABELS) for name, _, doc in STATS_COUNTERS]
    c_names = [name + "_total" for name, _, _ in STATS_COUNTERS]
    c_fields = [f for _, f, _ in STATS_COUNTERS]
    info = GaugeMetricFamily(
        "keepalived_vrrp_instance_info",
        "1 per instance, with its VRRP version, address family, sync group and authentication type.",
        labels=INFO_LABELS,
    )
    mismatch: GaugeMetricFamily | None = None
    held: frozenset[str] = frozenset()
    stopped = snapshot.process is not None and not snapshot.process.running
    # Judge a mismatch only with a state at least as fresh as the addresses (dumps only: the state
    # can lag a failover by one refresh; the address change triggers that refresh). Until then: 0.
    fresh = snapshot.state_fresh_since()
    current = fresh is not None and (
        snapshot.addresses_changed is None or fresh >= snapshot.addresses_changed
    )
    if snapshot.addresses is not None:
        held = held_addresses(snapshot.addresses)
        mismatch = GaugeMetricFamily(
            "keepalived_vrrp_vip_mismatch",
            "1 if a MASTER lacks one of its VIPs on this host, or a non-MASTER holds one (stale VIP).",
            labels=LABELS,
        )
    transitions: CounterMetricFamily | None = None
    counted = dict(snapshot.transitions)
    if counted or snapshot.source("dbus") is not None:
        transitions = CounterMetricFamily(
            "keepalived_vrrp_transitions",
            "State transitions of the instance seen as D-Bus events since this exporter started.",
            labels=LABELS,
        )
    scripts: dict[str, float] = {}
    tracked_ifaces = GaugeMetricFamily(
        "keepalived_tracked_interface_up",
        "1 if an interface tracked by the instance is up and running, 0 if not.",
        labels=("iname", "interface"),
    )
    trackers = [GaugeMetricFamily(name, doc, labels=("iname", "name")) for name, doc in _TRACKERS]
    proc_up, proc_running, proc_weight, file_status, file_weight, bfd_up, bfd_weight = trackers

    for view in instances:
        labels = {"iname": view.name, "intf": view.interface, "vrid": str(view.vrid)}
        values = (
            _num(view.state),
            _num(view.wanted_state),
            _num(view.priority),
            _num(view.effective_priority),
            _num(view.master_priority),
            view.advert_int,
            _num(view.preempt),
            view.last_transition,
        )
        for family, name, value in zip(gauges, g_names, values, strict=True):
            if value is not None:
                family.add_sample(name, labels, value)
        info.add_metric(
            [
                view.name,
                view.interface,
                str(view.vrid),
                view.family,
                "" if view.version is None else str(view.version),
                view.sync_group or "",
                view.auth_type or "",
            ],
            1.0,
        )
        if mismatch is not None:
            judged = replace(view, state=VrrpState.STOP) if stopped else view
            bad = (stopped or current) and vip_mismatch_held(judged, held)
            mismatch.add_sample(mismatch.name, labels, 1.0 if bad else 0.0)
        if transitions is not None:
            transitions.add_sample(transitions.name + "_total", labels, float(counted.get(view.name, 0)))
        stats: InstanceStats | None = view.stats
        if stats is not None:
            for counter, name, fname in zip(counters, c_names, c_fields, strict=True):
                counter.add_sample(name, labels, float(getattr(stats, fname)))
        for script in view.tracked_scripts:
            if script.status == "GOOD":
                scripts[script.name] = 1.0
            elif script.status == "BAD":
                scripts[script.name] = 0.0
        for iface in view.tracked_interfaces:
            if iface.up is not None:
                tracked_ifaces.add_metric([view.name, iface.name], 1.0 if iface.up else 0.0)
        for proc in view.tracked_processes:
            key = [view.name, proc.name]
            if proc.up is not None:
                proc_up.add_metric(key, 1.0 if proc.up else 0.0)
            if proc.running is not None:
                proc_running.add_metric(key, float(proc.running))
            proc_weight.add_metric(key, float(proc.weight))
        for tfile in view.tracked_files:
            key = [view.name, tfile.name]
            if tfile.status is not None:
                file_status.add_metric(key, float(tfile.status))
            file_weight.add_metric(key, float(tfile.weight))
        for bfd in view.tracked_bfds:
            key = [view.name, bfd.name]
            if bfd.up is not None:
                bfd_up.add_metric(key, 1.0 if bfd.up else 0.0)
            bfd_weight.add_metric(key, float(bfd.weight))

    script_status = GaugeMetricFamily(
        "keepalived_script_status", "Track script status: 1 GOOD, 0 BAD.", labels=("name",)
    )
    for name in sorted(scripts):
        script_status.add_metric([name], scripts[name])

    families: list[Metric] = [*gauges, info]
    if mismatch is not None:
        families.append(mismatch)
    if transitions is not None:
        families.append(transitions)
    families.extend(counters)
    families.extend((script_status, tracked_ifaces, *trackers))
    for metric in families:
        if metric.samples:
            yield metric
