"""The Grafana dashboard, as code: `grafana/ka-exporter.json` is this module's output, committed.

Pure: builds plain dicts, no I/O. Regenerate the committed file after a change with::

    python -m ka_exporter.devtools.dashboard > grafana/ka-exporter.json

(tests/test_dashboard.py fails while the committed JSON and the generator disagree.)

The dashboard follows the Grafana dashboard-linter rules: one templated Prometheus data source named
`datasource`; `job` and `instance` (and `vrid`) query variables, multi-select with `.+` as their "All"
value, refreshed on time range change; every panel on `${datasource}`, with a title, a description and a
unit; every selector filtered by `job=~"$job"` and `instance=~"$instance"`; counters only through
rate/irate/increase over `$__rate_interval`.

`dashboard_queries()` lists every panel query (with Grafana variables); `expand_query()` turns one into
plain PromQL ("All" selected, a fixed rate interval) for checks against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

UID = "ka-exporter"
TITLE = "keepalived / VRRP (ka-exporter)"
SCHEMA_VERSION = 39
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}

# Filters every selector carries; VRID-keyed series also carry VRID.
SEL = 'job=~"$job",instance=~"$instance"'
SEL_VRID = SEL + ',vrid=~"$vrid"'

VRRP_STATES: tuple[tuple[int, str, str], ...] = (
    (0, "INIT", "blue"),
    (1, "BACKUP", "yellow"),
    (2, "MASTER", "green"),
    (3, "FAULT", "red"),
    (4, "STOP", "purple"),
)


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    kind: str  # Grafana panel type: stat, timeseries, state-timeline
    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    width: int
    height: int
    mappings: tuple[tuple[int, str, str], ...] = ()  # value -> (text, color)
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    min: float | None = None
    max: float | None = None


def _mappings(values: tuple[tuple[int, str, str], ...]) -> list[dict[str, Any]]:
    if not values:
        return []
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(values)
            },
        }
    ]


def _ok_bad(ok: str, bad: str) -> tuple[tuple[int, str, str], ...]:
    return ((0, ok, "green"), (1, bad, "red"))


def _rows() -> list[tuple[str, list[Panel]]]:
    status = [
        Panel(
            "stat",
            "Split brain",
            "Per VRID: 1 when any exporter's fused verdict sees two holders (keepalived_split_brain): "
            "wire adverts, a node holding the VIPs while another router is master, a silent local "
            "master, or two ARP/ND answerers. Failover and preemption overlaps do not count.",
            "none",
            (Target(f"max by (vrid) (keepalived_split_brain{{{SEL_VRID}}})", "VRID {{vrid}}"),),
            6,
            4,
            mappings=_ok_bad("OK", "SPLIT BRAIN"),
            thresholds=((None, "green"), (1, "red")),
        ),
        Panel(
            "stat",
            "No master (wire)",
            "Per VRID: 1 when a VRID that is configured (or was seen) has no router advertising it "
            "(keepalived_wire_no_master).",
            "none",
            (Target(f"max by (vrid) (keepalived_wire_no_master{{{SEL_VRID}}})", "VRID {{vrid}}"),),
            6,
            4,
            mappings=_ok_bad("OK", "NO MASTER"),
            thresholds=((None, "green"), (1, "red")),
        ),
        Panel(
            "stat",
            "Nodes holding each VIP",
            "How many nodes hold each configured VIP right now (sum of keepalived_vip_status): 1 is right, "
            "0 means nobody serves it, 2 or more is a split brain or a VIP left behind.",
            "none",
            (Target(f"sum by (vip) (keepalived_vip_status{{{SEL}}})", "{{vip}}"),),
            6,
            4,
            thresholds=((None, "red"), (1, "green"), (2, "red")),
        ),
        Panel(
            "stat",
            "keepalived running",
            "Per node: is keepalived's parent process running (keepalived_up)?",
            "none",
            (Target(f"keepalived_up{{{SEL}}}", "{{instance}}"),),
            6,
            4,
            mappings=((0, "DOWN", "red"), (1, "UP", "green")),
            thresholds=((None, "red"), (1, "green")),
        ),
    ]
    state = [
        Panel(
            "state-timeline",
            "Who is master, per VRID",
            "keepalived's state of every VRRP instance on every node over time (keepalived_vrrp_state): "
            "exactly one MASTER per VRID is healthy; two at once is a split brain.",
            "none",
            (
                Target(
                    f"keepalived_vrrp_state{{{SEL_VRID}}}",
                    "VRID {{vrid}} {{iname}} on {{instance}}",
                ),
            ),
            24,
            8,
            mappings=VRRP_STATES,
            options={"mergeValues": True, "showValue": "auto", "rowHeight": 0.9},
        ),
        Panel(
            "state-timeline",
            "VIP ownership per node",
            "Which node holds each configured VIP over time (keepalived_vip_status): a VIP held on two "
            "rows at once is a duplicate address.",
            "none",
            (Target(f"keepalived_vip_status{{{SEL}}}", "{{vip}} on {{hostname}} ({{instance}})"),),
            24,
            8,
            mappings=((0, "not held", "transparent"), (1, "held", "green")),
            options={"mergeValues": True, "showValue": "never", "rowHeight": 0.9},
        ),
        Panel(
            "timeseries",
            "Priority: base vs effective",
            "Configured (base) priority and the effective priority after tracked scripts and interfaces "
            "(keepalived_vrrp_priority, keepalived_vrrp_effective_priority). Effective below base: a "
            "check is failing.",
            "none",
            (
                Target(f"keepalived_vrrp_priority{{{SEL_VRID}}}", "base {{iname}} on {{instance}}"),
                Target(
                    f"keepalived_vrrp_effective_priority{{{SEL_VRID}}}",
                    "effective {{iname}} on {{instance}}",
                ),
            ),
            12,
            8,
            min=0,
            max=255,
        ),
        Panel(
            "timeseries",
            "State transitions",
            "VRRP state changes and times an instance became MASTER, per interval "
            "(keepalived_vrrp_transitions_total, keepalived_become_master_total).",
            "short",
            (
                Target(
                    "sum by (instance, iname, vrid) (increase("
                    f"keepalived_vrrp_transitions_total{{{SEL_VRID}}}[$__rate_interval]))",
                    "transitions {{iname}} on {{instance}}",
                ),
                Target(
                    "sum by (instance, iname, vrid) (increase("
                    f"keepalived_become_master_total{{{SEL_VRID}}}[$__rate_interval]))",
                    "became master {{iname}} on {{instance}}",
                ),
            ),
            12,
            8,
            custom={"drawStyle": "bars", "fillOpacity": 80},
            min=0,
        ),
    ]
    wire = [
        Panel(
            "timeseries",
            "Advert rate per router (wire)",
            "VRRP adverts per second from each router, as sniffed by each exporter "
            "(keepalived_wire_adverts_total). A master sends one per advert_int; two routers sending "
            "on one VRID is a split brain.",
            "pps",
            (
                Target(
                    f"rate(keepalived_wire_adverts_total{{{SEL_VRID}}}[$__rate_interval])",
                    "{{source}} VRID {{vrid}} seen by {{instance}}",
                ),
            ),
            12,
            8,
            min=0,
        ),
        Panel(
            "timeseries",
            "Advertised priority per router (wire)",
            "The priority each router puts in its adverts (keepalived_wire_advert_priority); 0 is a "
            "master resigning (graceful stop).",
            "none",
            (
                Target(
                    f"keepalived_wire_advert_priority{{{SEL_VRID}}}",
                    "{{source}} VRID {{vrid}} seen by {{instance}}",
                ),
            ),
            12,
            8,
            min=0,
            max=255,
        ),
        Panel(
            "timeseries",
            "Masters per VRID (wire)",
            "How many routers advertise each VRID now (keepalived_wire_masters): 1 is healthy.",
            "none",
            (
                Target(
                    f"keepalived_wire_masters{{{SEL_VRID}}}",
                    "VRID {{vrid}} {{family}} on {{interface}} ({{instance}})",
                ),
            ),
            8,
            8,
            min=0,
            custom={"lineInterpolation": "stepAfter"},
        ),
        Panel(
            "state-timeline",
            "Conflicts and VIP mismatches",
            "Wire conflicts between routers of one VRID, by kind: vips, interval, version, auth, source "
            "(keepalived_wire_conflict); and instances whose VIPs disagree with their state "
            "(keepalived_vrrp_vip_mismatch).",
            "none",
            (
                Target(
                    f"keepalived_wire_conflict{{{SEL_VRID}}}",
                    "{{kind}} VRID {{vrid}} ({{instance}})",
                ),
                Target(
                    f"keepalived_vrrp_vip_mismatch{{{SEL_VRID}}}",
                    "VIP mismatch {{iname}} on {{instance}}",
                ),
            ),
            8,
            8,
            mappings=_ok_bad("ok", "conflict"),
            options={"mergeValues": True, "showValue": "never", "rowHeight": 0.9},
        ),
        Panel(
            "timeseries",
            "Invalid and dropped packets (wire)",
            "VRRP packets the exporter rejected, by reason (keepalived_wire_invalid_packets_total), and "
            "packets the kernel dropped before the exporter read them (keepalived_wire_kernel_drops_total).",
            "pps",
            (
                Target(
                    "sum by (instance, reason) (rate("
                    f"keepalived_wire_invalid_packets_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}} ({{instance}})",
                ),
                Target(
                    f"rate(keepalived_wire_kernel_drops_total{{{SEL}}}[$__rate_interval])",
                    "kernel drops ({{instance}})",
                ),
            ),
            8,
            8,
            min=0,
        ),
        Panel(
            "state-timeline",
            "Split-brain witnesses",
            "Why each exporter calls a VRID split brain (keepalived_split_brain_witness): wire (adverts), "
            "address (it holds the VIPs while another router is master), liveness (its keepalived claims "
            "MASTER but is silent), l2 (two ARP/ND answerers); and local masters not heard advertising "
            "(keepalived_master_silent).",
            "none",
            (
                Target(
                    f"keepalived_split_brain_witness{{{SEL_VRID}}}",
                    "{{witness}} VRID {{vrid}} ({{instance}})",
                ),
                Target(
                    f"keepalived_master_silent{{{SEL_VRID}}}",
                    "silent master VRID {{vrid}} ({{instance}})",
                ),
            ),
            16,
            8,
            mappings=_ok_bad("no", "yes"),
            options={"mergeValues": True, "showValue": "never", "rowHeight": 0.9},
        ),
        Panel(
            "stat",
            "Foreign masters / unanswered VIPs",
            "Per VRID: routers advertising it that are none of ours (keepalived_foreign_masters, known "
            "with unicast peers), and VIPs nobody answers ARP/ND for while a master advertises "
            "(keepalived_vips_unanswered, L2 witness). 0 is healthy.",
            "none",
            (
                Target(f"max by (vrid) (keepalived_foreign_masters{{{SEL_VRID}}})", "foreign VRID {{vrid}}"),
                Target(
                    f"max by (vrid) (keepalived_vips_unanswered{{{SEL_VRID}}})", "unanswered VRID {{vrid}}"
                ),
            ),
            8,
            8,
            thresholds=((None, "green"), (1, "red")),
        ),
    ]
    exporter = [
        Panel(
            "state-timeline",
            "Exporter source health",
            "Each ka-exporter source (wire, dbus, dumps, vips, process, config) per node: up, or failing "
            "with its last data kept (ka_exporter_source_up).",
            "none",
            (Target(f"ka_exporter_source_up{{{SEL}}}", "{{source}} on {{instance}}"),),
            12,
            8,
            mappings=((0, "failing", "red"), (1, "up", "green")),
            options={"mergeValues": True, "showValue": "never", "rowHeight": 0.9},
        ),
        Panel(
            "timeseries",
            "Scrape duration",
            "Time ka-exporter took to render a scrape (ka_exporter_scrape_duration_seconds).",
            "s",
            (Target(f"ka_exporter_scrape_duration_seconds{{{SEL}}}", "{{instance}}"),),
            6,
            8,
            min=0,
        ),
        Panel(
            "stat",
            "keepalived uptime",
            "Time since keepalived's parent process started on each node "
            "(keepalived_process_start_time_seconds).",
            "s",
            (Target(f"time() - keepalived_process_start_time_seconds{{{SEL}}}", "{{instance}}"),),
            6,
            8,
        ),
    ]
    return [
        ("Status", status),
        ("VRRP state", state),
        ("Wire (sniffed VRRP)", wire),
        ("Exporter", exporter),
        _lvs_row(),
    ]


def _lvs_row() -> tuple[str, list[Panel]]:
    """LVS: keepalived's health checkers and the kernel's IPVS (the lvs source; empty without LVS)."""
    return (
        "LVS (virtual and real servers)",
        [
            Panel(
                "state-timeline",
                "Real servers (keepalived's health checkers)",
                "Per real server of each virtual server: alive or down as keepalived's checkers call it "
                "(keepalived_lvs_real_server_up).",
                "none",
                (
                    Target(
                        f"keepalived_lvs_real_server_up{{{SEL}}}",
                        "{{real_server}} of {{virtual_server}} on {{instance}}",
                    ),
                ),
                12,
                8,
                mappings=((0, "down", "red"), (1, "alive", "green")),
                options={"mergeValues": True, "showValue": "never", "rowHeight": 0.9},
            ),
            Panel(
                "stat",
                "Alive real servers per virtual server",
                "Real servers keepalived calls alive, per virtual server "
                "(keepalived_lvs_virtual_server_real_servers_alive); red at 0.",
                "none",
                (
                    Target(
                        f"keepalived_lvs_virtual_server_real_servers_alive{{{SEL}}}",
                        "{{virtual_server}} on {{instance}}",
                    ),
                ),
                6,
                8,
                thresholds=((None, "red"), (1, "green")),
            ),
            Panel(
                "timeseries",
                "New connections per virtual server (IPVS)",
                "Connections per second IPVS scheduled to each virtual server "
                "(rate of keepalived_ipvs_virtual_server_connections_total).",
                "cps",
                (
                    Target(
                        "sum by (instance, virtual_server) (rate("
                        f"keepalived_ipvs_virtual_server_connections_total{{{SEL}}}[$__rate_interval]))",
                        "{{virtual_server}} on {{instance}}",
                    ),
                ),
                6,
                8,
                min=0,
            ),
        ],
    )


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "mappings": _mappings(panel.mappings),
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        },
        "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
    }
    if panel.mappings and panel.kind == "state-timeline":
        defaults["color"] = {"mode": "fixed", "fixedColor": "transparent"}
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            **panel.custom,
        }
    options: dict[str, Any] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    }
    if panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        }
    options.update(panel.options)
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": dict(DATASOURCE),
                "refId": chr(ord("A") + i),
                "expr": t.expr,
                "legendFormat": t.legend,
                "range": not t.instant,
                "instant": t.instant,
                "editorMode": "code",
            }
            for i, t in enumerate(panel.targets)
        ],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 3 if name == "vrid" else 1,
        "hide": 0,
    }


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a fresh dict on every call)."""
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row_title, row in _rows():
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row:
            if x + panel.width > 24:
                x = 0
                y += line_height
                line_height = 0
            panels.append(_panel_json(panel, pid, x, y))
            pid += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "id": None,
        "uid": UID,
        "title": TITLE,
        "description": "keepalived (VRRP) seen by ka-exporter: who is master, split brain, VIP ownership, "
        "priorities, adverts on the wire, and the exporter's own health.",
        "tags": ["keepalived", "vrrp", "ka-exporter"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                _variable("job", "Job", "label_values(ka_exporter_build_info, job)"),
                _variable(
                    "instance", "Instance", 'label_values(ka_exporter_build_info{job=~"$job"}, instance)'
                ),
                _variable(
                    "vrid",
                    "VRID",
                    'label_values({__name__=~"keepalived_vrrp_state|keepalived_wire_masters",'
                    'job=~"$job",instance=~"$instance"}, vrid)',
                ),
            ]
        },
        "panels": panels,
    }


def dashboard_json() -> str:
    """The text committed as grafana/ka-exporter.json."""
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def dashboard_queries() -> list[str]:
    """Every panel query (PromQL with Grafana variables), in panel order."""
    return [target["expr"] for panel in build_dashboard()["panels"] for target in panel.get("targets", [])]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand_query(expr: str, rate_interval: str = "1m", values: dict[str, str] | None = None) -> str:
    """Plain PromQL from a dashboard query: `$__rate_interval` (and `$__interval`) become `rate_interval`,
    every other variable its value in `values`, else `.+` (Grafana's "All" for these variables)."""
    chosen = values or {}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in ("__rate_interval", "__interval", "__range"):
            return rate_interval
        return chosen.get(name, ".+")

    return _VARIABLE.sub(sub, expr)


if __name__ == "__main__":
    import sys

    sys.stdout.write(dashboard_json())
