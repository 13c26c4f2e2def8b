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

from collections.abc import Iterable, Iterator
from dataclasses import replace
from functools import cached_property, partial

from prometheus_client.metrics_core import Metric

from ka_exporter.collectors import Family, Row, Rows, Series, keyed_families
from ka_exporter.model import InstanceStats, InstanceView, Snapshot, VrrpState
from ka_exporter.verdicts.vips import held_addresses, vip_mismatch_held

__all__ = [
    "FAMILIES",
    "SCRIPTS",
    "STATS_COUNTERS",
    "Context",
    "collect_keepalived",
    "instance_series",
    "script_status",
]

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


_MISMATCH = (
    "keepalived_vrrp_vip_mismatch",
    "1 if a MASTER lacks one of its VIPs on this host, or a non-MASTER holds one (stale VIP).",
)
_TRANSITIONS = (
    "keepalived_vrrp_transitions",
    "State transitions of the instance seen as D-Bus events since this exporter started.",
)
SCRIPTS = "keepalived_script_status"  # the one family not per instance (one series per script name)

#: Every family of this part, in exposition order: (name, type, help, label names). A family with no
#: sample is left out of the scrape.
FAMILIES: tuple[Family, ...] = (
    *((name, "gauge", doc, LABELS) for name, doc in _GAUGES),
    (
        "keepalived_vrrp_instance_info",
        "gauge",
        "1 per instance, with its VRRP version, address family, sync group and authentication type.",
        INFO_LABELS,
    ),
    (_MISMATCH[0], "gauge", _MISMATCH[1], LABELS),
    (_TRANSITIONS[0], "counter", _TRANSITIONS[1], LABELS),
    *((name, "counter", doc, LABELS) for name, _, doc in STATS_COUNTERS),
    (SCRIPTS, "gauge", "Track script status: 1 GOOD, 0 BAD.", ("name",)),
    (
        "keepalived_tracked_interface_up",
        "gauge",
        "1 if an interface tracked by the instance is up and running, 0 if not.",
        ("iname", "interface"),
    ),
    *((name, "gauge", doc, ("iname", "name")) for name, doc in _TRACKERS),
)
_INDEX = {name: k for k, (name, _t, _d, _l) in enumerate(FAMILIES)}
_SCRIPT_INDEX = _INDEX[SCRIPTS]
_G0, _INFO, _MIS, _TRANS = (
    0,
    _INDEX["keepalived_vrrp_instance_info"],
    _INDEX[_MISMATCH[0]],
    _INDEX[_TRANSITIONS[0]],
)
_C0, _IFACE, _T0 = (
    _INDEX[STATS_COUNTERS[0][0]],
    _INDEX["keepalived_tracked_interface_up"],
    _INDEX[_TRACKERS[0][0]],
)
_COUNTER_FIELDS = tuple((_C0 + k, name + "_total", f) for k, (name, f, _doc) in enumerate(STATS_COUNTERS))
_GAUGE_NAMES = tuple(enumerate(name for name, _doc in _GAUGES))
PROC_UP, PROC_RUNNING, PROC_WEIGHT, FILE_STATUS, FILE_WEIGHT, BFD_UP, BFD_WEIGHT = (
    (_T0 + k, name) for k, (name, _doc) in enumerate(_TRACKERS)
)


class Context:
    """What every instance's series read of the snapshot besides the instance itself.

    `held`: the addresses on this host (None while the VIP source does not know them: no mismatch
    family); `stopped`: the process source says keepalived is not running (its instances are judged
    as stopped: their last dump is stale); `current`: the state is at least as fresh as the
    addresses (dumps only: the state can lag a failover by one refresh; the address change triggers
    that refresh), the mismatch is judged only then; `transitions`: the D-Bus transitions family is
    exported (D-Bus runs, or transitions were counted).
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.stopped = snapshot.process is not None and not snapshot.process.running
        fresh = snapshot.state_fresh_since()
        self.current = fresh is not None and (
            snapshot.addresses_changed is None or fresh >= snapshot.addresses_changed
        )
        self.addresses = snapshot.addresses
        self.counted = dict(snapshot.transitions)
        self.transitions = bool(self.counted) or snapshot.source("dbus") is not None

    @cached_property
    def held(self) -> frozenset[str] | None:
        return None if self.addresses is None else held_addresses(self.addresses)

    def mismatch(self, view: InstanceView) -> float | None:
        """The instance's keepalived_vrrp_vip_mismatch (None: no such family in this snapshot)."""
        held = self.held
        if held is None:
            return None
        judged = replace(view, state=VrrpState.STOP) if self.stopped else view
        return 1.0 if (self.stopped or self.current) and vip_mismatch_held(judged, held) else 0.0

    def count(self, view: InstanceView) -> float | None:
        """The instance's keepalived_vrrp_transitions_total (None: no such family)."""
        return float(self.counted.get(view.name, 0)) if self.transitions else None


def instance_series(view: InstanceView, mismatch: float | None, count: float | None) -> list[Series]:
    """Every series of one instance but the scripts' (see `script_status`), in family order; the
    labels dict of its (iname, intf, vrid) series is one object. `mismatch` and `count` are the
    instance's `Context.mismatch` and `Context.count`."""
    labels = {"iname": view.name, "intf": view.interface, "vrid": str(view.vrid)}
    out: list[Series] = []
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
    for (k, name), value in zip(_GAUGE_NAMES, values, strict=True):
        if value is not None:
            out.append((_G0 + k, name, labels, float(value)))
    info = {
        "iname": view.name,
        "intf": view.interface,
        "vrid": str(view.vrid),
        "family": view.family,
        "version": "" if view.version is None else str(view.version),
        "sync_group": view.sync_group or "",
        "auth_type": view.auth_type or "",
    }
    out.append((_INFO, FAMILIES[_INFO][0], info, 1.0))
    if mismatch is not None:
        out.append((_MIS, _MISMATCH[0], labels, mismatch))
    if count is not None:
        out.append((_TRANS, _TRANSITIONS[0] + "_total", labels, count))
    stats: InstanceStats | None = view.stats
    if stats is not None:
        out.extend((k, name, labels, float(getattr(stats, f))) for k, name, f in _COUNTER_FIELDS)
    for iface in view.tracked_interfaces:
        if iface.up is not None:
            out.append(
                (_IFACE, FAMILIES[_IFACE][0], {"iname": view.name, "interface": iface.name}, float(iface.up))
            )
    for proc in view.tracked_processes:
        key = {"iname": view.name, "name": proc.name}
        if proc.up is not None:
            out.append((*PROC_UP, key, 1.0 if proc.up else 0.0))
        if proc.running is not None:
            out.append((*PROC_RUNNING, key, float(proc.running)))
        out.append((*PROC_WEIGHT, key, float(proc.weight)))
    for tfile in view.tracked_files:
        key = {"iname": view.name, "name": tfile.name}
        if tfile.status is not None:
            out.append((*FILE_STATUS, key, float(tfile.status)))
        out.append((*FILE_WEIGHT, key, float(tfile.weight)))
    for bfd in view.tracked_bfds:
        key = {"iname": view.name, "name": bfd.name}
        if bfd.up is not None:
            out.append((*BFD_UP, key, 1.0 if bfd.up else 0.0))
        out.append((*BFD_WEIGHT, key, float(bfd.weight)))
    return out


def script_status(instances: Iterable[InstanceView]) -> list[tuple[str, float]]:
    """keepalived_script_status by script name, sorted: GOOD 1, BAD 0, as the last instance tracking
    the script (in the snapshot's order) reports it."""
    scripts: dict[str, float] = {}
    for view in instances:
        for script in view.tracked_scripts:
            if script.status == "GOOD":
                scripts[script.name] = 1.0
            elif script.status == "BAD":
                scripts[script.name] = 0.0
    return sorted(scripts.items())


def keepalived_rows(snapshot: Snapshot) -> Rows | None:
    """The part as keyed rows (see `collectors.Row`): one per instance (by its iname), keyed on its
    record, its mismatch and its transitions count, then the scripts' family."""
    instances = snapshot.instances
    if not instances:
        return None
    ctx = Context(snapshot)
    rows: list[Row] = []
    for view in instances:
        mismatch, count = ctx.mismatch(view), ctx.count(view)
        rows.append((view.name, (view, mismatch, count), partial(instance_series, view, mismatch, count)))
    scripts = script_status(instances)
    rows.append(((SCRIPTS,), scripts, partial(_script_series, scripts)))
    return frozenset(), rows


def _script_series(scripts: list[tuple[str, float]]) -> list[Series]:
    return [(_SCRIPT_INDEX, SCRIPTS, {"name": name}, value) for name, value in scripts]


def collect_keepalived(snapshot: Snapshot) -> Iterator[Metric]:
    """Render keepalived's instances of one snapshot into fresh metric families (no I/O)."""
    return keyed_families(FAMILIES, keepalived_rows(snapshot))
