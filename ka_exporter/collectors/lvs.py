"""LVS metrics: keepalived's health-checker view, the kernel's IPVS counters, and their cross-checks.

Example output (rs2 failed its HTTP_GET on the inhibit_on_failure virtual server)::

    keepalived_lvs_virtual_server_up{protocol="TCP",virtual_server="10.140.0.100:8080"} 1.0
    keepalived_lvs_virtual_server_real_servers_alive{protocol="TCP",virtual_server="10.140.0.100:8080"} 1.0
    keepalived_lvs_real_server_up{protocol="TCP",real_server="10.141.0.12:8080",virtual_server="..."} 0.0
    keepalived_lvs_real_server_inhibited{protocol="TCP",real_server="10.141.0.12:8080",...} 1.0
    keepalived_ipvs_real_server_weight{protocol="TCP",real_server="10.141.0.12:8080",virtual_server="..."} 0.0
    keepalived_ipvs_virtual_server_connections_total{protocol="TCP",virtual_server="10.140.0.100:8080"} 84.0
    keepalived_lvs_real_server_problem{kind="weight_while_down",protocol="TCP",real_server="...",...} 0.0

node_exporter's ipvs collector already exports the host-wide totals (`node_ipvs_connections_total`,
...) and per backend `node_ipvs_backend_weight` / `_connections_active` / `_connections_inactive`
from /proc; those are not repeated here. What /proc lacks, per virtual and per real server counters
(netlink only), is exported under node_exporter's counter names with a `keepalived_ipvs_` prefix.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.model import IpvsCounters, Snapshot
from ka_exporter.verdicts.lvs import RS_KINDS, VS_KINDS, lvs_problems

VS = ["virtual_server", "protocol"]
RS = ["virtual_server", "protocol", "real_server"]

_COUNTERS = (
    ("connections", "connections", "Connections IPVS scheduled"),
    ("incoming_packets", "in_packets", "Packets IPVS received"),
    ("outgoing_packets", "out_packets", "Packets IPVS sent"),
    ("incoming_bytes", "in_bytes", "Bytes IPVS received"),
    ("outgoing_bytes", "out_bytes", "Bytes IPVS sent"),
)


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def collect_lvs(snap: Snapshot) -> Iterator[Metric]:
    view = snap.lvs
    config = snap.config.virtual_servers if snap.config is not None else ()
    checker = view.checker if view is not None else None
    if checker is None and not config and (view is None or view.ipvs is None):
        return
    vs_up = _g("keepalived_lvs_virtual_server_up", "1 if keepalived calls the virtual server alive.", VS)
    quorum_up = _g(
        "keepalived_lvs_virtual_server_quorum_up",
        "1 while the alive real servers' weights reach the quorum (else the sorry server serves).",
        VS,
    )
    quorum = _g("keepalived_lvs_virtual_server_quorum", "The virtual server's configured quorum.", VS)
    alive = _g(
        "keepalived_lvs_virtual_server_real_servers_alive",
        "Real servers keepalived's checkers call alive.",
        VS,
    )
    sorry = _g(
        "keepalived_lvs_virtual_server_sorry_server_active",
        "1 while the quorum is lost and a sorry server is configured (it takes the traffic).",
        VS,
    )
    rs_up = _g("keepalived_lvs_real_server_up", "1 if keepalived's checkers call the real server alive.", RS)
    weight = _g("keepalived_lvs_real_server_weight", "The real server's configured weight.", RS)
    eff = _g(
        "keepalived_lvs_real_server_effective_weight",
        "keepalived's effective weight (an inhibited server still shows its weight here; IPVS has 0).",
        RS,
    )
    inhibited = _g(
        "keepalived_lvs_real_server_inhibited",
        "1 if the real server is down and kept in IPVS with weight 0 (inhibit_on_failure).",
        RS,
    )
    failed = _g(
        "keepalived_lvs_real_server_failed_checkers", "Health checkers of the real server that fail.", RS
    )
    checker_up = _g(
        "keepalived_lvs_real_server_checker_up",
        "1 if the checker's last result was success.",
        [*RS, "checker"],
    )
    if checker is not None:
        for vs in checker:
            v = [vs.key, vs.protocol]
            vs_up.add_metric(v, float(vs.alive))
            quorum_up.add_metric(v, float(vs.quorum_up))
            quorum.add_metric(v, float(vs.quorum))
            alive.add_metric(v, float(sum(rs.alive for rs in vs.real_servers)))
            sorry.add_metric(v, float(vs.sorry_server is not None and not vs.quorum_up))
            for rs in vs.real_servers:
                r = [*v, rs.key]
                rs_up.add_metric(r, float(rs.alive))
                weight.add_metric(r, float(rs.weight))
                eff.add_metric(r, float(rs.effective_weight))
                inhibited.add_metric(r, float(rs.inhibit_on_failure and not rs.alive))
                failed.add_metric(r, float(rs.failed_checkers))
                seen: dict[str, int] = {}
                for c in rs.checkers:
                    seen[c.method] = seen.get(c.method, 0) + 1
                    label = c.method if seen[c.method] == 1 else f"{c.method}#{seen[c.method]}"
                    checker_up.add_metric([*r, label], float(c.up))
    else:
        # keepalived (or its checker) is not running: what keepalived.conf configures is down.
        for cvs in config:
            v = [cvs.key, cvs.protocol]
            vs_up.add_metric(v, 0.0)
            quorum_up.add_metric(v, 0.0)
            quorum.add_metric(v, float(cvs.quorum))
            alive.add_metric(v, 0.0)
            sorry.add_metric(v, 0.0)
            for crs in cvs.real_servers:
                r = [*v, crs.key]
                rs_up.add_metric(r, 0.0)
                weight.add_metric(r, float(crs.weight))
    yield from (vs_up, quorum_up, quorum, alive, sorry, rs_up, weight, eff, inhibited, failed, checker_up)

    yield from _ipvs(snap)

    problems = {(p.kind, p.virtual_server, p.protocol, p.real_server) for p in lvs_problems(view)}
    vs_problem = _g(
        "keepalived_lvs_virtual_server_problem",
        "1 while the virtual server is below quorum or has no alive real server (kind).",
        [*VS, "kind"],
    )
    rs_problem = _g(
        "keepalived_lvs_real_server_problem",
        "1 while keepalived and IPVS disagree on a real server (kind: missing_from_ipvs, weight_while_down).",
        [*RS, "kind"],
    )
    if checker is not None:
        for vs in checker:
            for kind in VS_KINDS:
                vs_problem.add_metric(
                    [vs.key, vs.protocol, kind], float((kind, vs.key, vs.protocol, None) in problems)
                )
            if view is not None and view.ipvs is not None:
                for rs in vs.real_servers:
                    for kind in RS_KINDS:
                        hit = (kind, vs.key, vs.protocol, rs.key) in problems
                        rs_problem.add_metric([vs.key, vs.protocol, rs.key, kind], float(hit))
    yield vs_problem
    yield rs_problem


def _add(families: dict[str, CounterMetricFamily], labels: list[str], c: IpvsCounters) -> None:
    for name, attr, _doc in _COUNTERS:
        families[name].add_metric(labels, float(getattr(c, attr)))


def _ipvs(snap: Snapshot) -> Iterator[Metric]:
    view = snap.lvs
    up = GaugeMetricFamily(
        "keepalived_ipvs_up",
        "1 if the kernel's IPVS table was read (0: no IPVS in this kernel, or no access).",
    )
    up.add_metric([], float(view is not None and view.ipvs is not None))
    yield up
    if view is None or view.ipvs is None:
        return
    vs_c = {
        n: CounterMetricFamily(
            f"keepalived_ipvs_virtual_server_{n}", f"{d} for the virtual server.", labels=VS
        )
        for n, _a, d in _COUNTERS
    }
    rs_c = {
        n: CounterMetricFamily(
            f"keepalived_ipvs_real_server_{n}",
            f"{d} for the real server (reset when keepalived removes it from IPVS).",
            labels=RS,
        )
        for n, _a, d in _COUNTERS
    }
    rs_w = _g("keepalived_ipvs_real_server_weight", "The real server's weight in IPVS (0: inhibited).", RS)
    for s in view.ipvs:
        v = [s.key, s.protocol]
        if s.counters is not None:
            _add(vs_c, v, s.counters)
        for d in s.dests:
            r = [*v, d.key]
            rs_w.add_metric(r, float(d.weight))
            if d.counters is not None:
                _add(rs_c, r, d.counters)
    yield from vs_c.values()
    yield from rs_c.values()
    yield rs_w
