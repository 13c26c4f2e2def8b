"""The Grafana dashboard: committed JSON = the mixin's rendering, and Grafana's dashboard-linter rules hold.

dashboard-linter's binary is not installable here, so its rules are enforced by these tests (named after
them): template-datasource-rule, template-job-rule, template-instance-rule, template-label-promql-rule,
template-on-time-change-reload-rule, panel-datasource-rule, panel-title-description-rule,
panel-units-rule, panel-no-targets-rule, target-promql-rule, target-rate-interval-rule, target-job-rule,
target-instance-rule, target-counter-agg-rule. PromQL is parsed by promtool (`promtool check rules` on a
rule file holding every query with its variables expanded), and every query is evaluated by promtool over
synthetic series shaped like the exporter's metrics: each must return at least one series.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ka_exporter.devtools.dashboard import (
    UID,
    annotation_queries,
    dashboard_queries,
    expand_query,
)
from ka_exporter.devtools.mixin import render

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "grafana" / "ka-exporter.json"

# The exporter's metric names (the contract the dashboard and the alert rules are written against).
CONTRACT = {
    "keepalived_up",
    "keepalived_process_status",
    "keepalived_vip_status",
    "keepalived_process_start_time_seconds",
    "keepalived_process_restarts_total",
    "keepalived_config_instance_info",
    "keepalived_vrrp_state",
    "keepalived_vrrp_wanted_state",
    "keepalived_vrrp_priority",
    "keepalived_vrrp_effective_priority",
    "keepalived_vrrp_master_priority",
    "keepalived_vrrp_advert_interval_seconds",
    "keepalived_vrrp_preempt",
    "keepalived_vrrp_last_transition_timestamp_seconds",
    "keepalived_vrrp_transitions_total",
    "keepalived_vrrp_vip_mismatch",
    "keepalived_advertisements_received_total",
    "keepalived_advertisements_sent_total",
    "keepalived_become_master_total",
    "keepalived_wire_masters",
    "keepalived_wire_split_brain",
    "keepalived_split_brain",
    "keepalived_split_brain_witness",
    "keepalived_master_silent",
    "keepalived_foreign_masters",
    "keepalived_vips_unanswered",
    "keepalived_wire_no_master",
    "keepalived_wire_conflict",
    "keepalived_wire_routers",
    "keepalived_wire_advert_priority",
    "keepalived_wire_adverts_total",
    "keepalived_wire_last_advert_timestamp_seconds",
    "keepalived_wire_advert_interval_seconds",
    "keepalived_wire_router_local",
    "keepalived_wire_invalid_packets_total",
    "keepalived_wire_kernel_drops_total",
    "keepalived_wire_master_changes_total",
    "keepalived_wire_masterless_seconds_total",
    "keepalived_wire_multi_master_seconds_total",
    "keepalived_wire_observed_seconds_total",
    "keepalived_wire_failover_gap_seconds_bucket",
    "keepalived_l2_vip_no_answerer_seconds_total",
    "keepalived_l2_vip_multi_answerer_seconds_total",
    "keepalived_l2_vip_observed_seconds_total",
    "keepalived_l2_vip_unobserved_seconds_total",
    "keepalived_lvs_real_server_up",
    "keepalived_lvs_virtual_server_real_servers_alive",
    "keepalived_ipvs_virtual_server_connections_total",
    "ka_exporter_build_info",
    "ka_exporter_source_up",
    "ka_exporter_scrape_duration_seconds",
}

# Grafana unit ids (Grafana's valueFormats categories) that a dashboard about VRRP can sensibly use.
GRAFANA_UNITS = {
    "none", "short", "string", "percent", "percentunit", "bool", "bool_yes_no", "bool_on_off",
    "s", "ms", "µs", "ns", "m", "h", "d", "dtdurations", "dtdurationms", "dthms", "dtdhms",
    "dateTimeAsIso", "dateTimeAsSystem", "dateTimeFromNow",
    "pps", "ops", "reqps", "rps", "cps", "cpm", "opm", "hertz", "bytes", "decbytes", "bits", "Bps", "bps",
}  # fmt: skip
PANELS_WITH_UNITS = {
    "stat",
    "singlestat",
    "graph",
    "table",
    "timeseries",
    "gauge",
    "state-timeline",
    "bargauge",
    "heatmap",
}
PANELS_WITH_QUERIES = PANELS_WITH_UNITS | {"status-history", "piechart", "heatmap"}


# ------------------------------------------------------------------------------------------------------
# a small PromQL lexer: enough to find every selector, its matchers, its range and its enclosing function
# ------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
   |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
   |(?P<matchers>\{(?:[^{}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})
   |(?P<range>\[[^\]]*\])
   |(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
   |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
   |(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>(),=])
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*(?:,|$)')
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_OTHER_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value without quotes)
    range: str | None  # "[...]" or None
    function: str | None  # the function or aggregation whose argument list directly holds it


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot lex {expr[pos:]!r} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append((kind, m.group()))
    return tokens


def parse_matchers(text: str) -> tuple[tuple[str, str, str], ...]:
    inner = text[1:-1].strip()
    out: list[tuple[str, str, str]] = []
    pos = 0
    while pos < len(inner):
        m = _MATCHER.match(inner, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad matchers {text!r}")
        out.append((m.group(1), m.group(2), json.loads(m.group(3))))
        pos = m.end()
    return tuple(out)


def selectors(expr: str) -> list[Selector]:
    toks = tokenize(expr)
    found: list[Selector] = []
    stack: list[str | None] = []
    pending: str | None = None
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "ident" and text in _LABEL_LIST_KEYWORDS:
            i += 1
            if i < len(toks) and toks[i] == ("op", "("):  # skip the label list
                while toks[i] != ("op", ")"):
                    i += 1
                i += 1
            continue
        if kind == "ident" and text in _OTHER_KEYWORDS:
            i += 1
            continue
        if kind == "ident" and (nxt == ("op", "(") or nxt[1] in ("by", "without")):
            pending = text
            i += 1
            continue
        if kind == "op" and text == "(":
            stack.append(pending)
            pending = None
            i += 1
            continue
        if kind == "op" and text == ")":
            stack.pop()
            i += 1
            continue
        if kind in ("ident", "matchers"):
            name = text if kind == "ident" else None
            matchers: tuple[tuple[str, str, str], ...] = ()
            if kind == "matchers":
                matchers = parse_matchers(text)
            elif nxt[0] == "matchers":
                matchers = parse_matchers(nxt[1])
                i += 1
            rng = None
            if i + 1 < len(toks) and toks[i + 1][0] == "range":
                rng = toks[i + 1][1]
                i += 1
            found.append(Selector(name, matchers, rng, stack[-1] if stack else None))
        i += 1
    return found


def test_lexer_finds_selectors_matchers_ranges_and_functions() -> None:
    got = selectors(
        'sum by (instance, vrid) (rate(a_total{job=~"$job",x="}"}[$__rate_interval])) '
        '/ on (job) group_left (v) b{instance=~"$instance"} + time() - c'
    )
    assert got == [
        Selector("a_total", (("job", "=~", "$job"), ("x", "=", "}")), "[$__rate_interval]", "rate"),
        Selector("b", (("instance", "=~", "$instance"),), None, None),
        Selector("c", (), None, None),
    ]


# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text())


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def all_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in query_panels() for t in p.get("targets", [])]


def templates() -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in dashboard()["templating"]["list"]}


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's `prometheus` package (scripts/bootstrap.sh does)"
    return subprocess.run([path, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


# ------------------------------------------------------------------------------------------------------
# the committed file
# ------------------------------------------------------------------------------------------------------


def test_committed_json_is_the_mixins_rendering() -> None:
    assert COMMITTED.read_text() == render()["grafana/ka-exporter.json"], (
        "grafana/ka-exporter.json is stale: run `python -m ka_exporter.devtools.mixin`"
    )


def test_dashboard_is_importable_as_is() -> None:
    d = dashboard()
    assert "__inputs" not in d and "__requires" not in d
    assert d["uid"] == UID and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"])
    assert d["id"] is None
    assert d["schemaVersion"] >= 36
    assert d["title"] and d["time"] and d["refresh"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert "${" not in json.dumps(d).replace("${datasource}", "")


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_queries_lists_every_target_in_panel_order() -> None:
    assert dashboard_queries() == [t["expr"] for _, t in all_targets()]
    assert len(dashboard_queries()) >= 10


def test_expand_query_gives_plain_promql() -> None:
    q = 'rate(x{job=~"$job",instance=~"${instance}"}[$__rate_interval])'
    assert expand_query(q) == 'rate(x{job=~".+",instance=~".+"}[1m])'
    assert expand_query(q, "30s", {"job": "keepalived"}) == 'rate(x{job=~"keepalived",instance=~".+"}[30s])'
    for q in dashboard_queries():
        assert "$" not in expand_query(q)


# ------------------------------------------------------------------------------------------------------
# dashboard-linter rules
# ------------------------------------------------------------------------------------------------------


def test_template_datasource_rule() -> None:
    ds = [t for t in dashboard()["templating"]["list"] if t["type"] == "datasource"]
    assert len(ds) == 1
    assert ds[0]["name"] == "datasource"
    assert ds[0]["label"] == "Data source"
    assert ds[0]["query"] == "prometheus"


@pytest.mark.parametrize(("name", "label"), [("job", "Job"), ("instance", "Instance"), ("vrid", "VRID")])
def test_template_job_instance_vrid_rules(name: str, label: str) -> None:
    t = templates()[name]
    assert t["datasource"]["uid"] in ("$datasource", "${datasource}")
    assert t["type"] == "query"
    assert t["label"] == label
    assert t["multi"] is True
    assert t["includeAll"] is True
    assert t["allValue"] == ".+"


def test_template_on_time_change_reload_rule() -> None:
    for t in dashboard()["templating"]["list"]:
        if t["type"] == "query":
            assert t["refresh"] == 2, t["name"]


def _template_selectors() -> list[tuple[str, str]]:
    out = []
    for t in dashboard()["templating"]["list"]:
        if t["type"] != "query":
            continue
        m = re.fullmatch(r"(label_values|label_names|metrics|query_result)\((.*)\)", t["query"].strip())
        assert m, f"template {t['name']}: invalid query {t['query']!r}"
        arg = m.group(2)
        if m.group(1) == "label_values":
            arg, _, label = arg.rpartition(",")
            assert re.fullmatch(r"\s*[A-Za-z_]\w*\s*", label), t["query"]
        out.append((t["name"], arg))
    return out


def test_panel_datasource_rule() -> None:
    for p in query_panels():
        assert p["datasource"]["uid"] in ("$datasource", "${datasource}"), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]


def test_panel_title_description_rule() -> None:
    for p in dashboard()["panels"]:
        assert p["title"].strip(), p["id"]
        if p["type"] != "row":
            assert len(p["description"].strip()) >= 20, p["title"]


def test_panel_units_rule() -> None:
    for p in query_panels():
        assert p["type"] in PANELS_WITH_UNITS, p["type"]
        assert p["fieldConfig"]["defaults"].get("unit") in GRAFANA_UNITS, p["title"]
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in GRAFANA_UNITS, p["title"]


def test_panel_no_targets_rule() -> None:
    for p in query_panels():
        assert p["type"] in PANELS_WITH_QUERIES, p["type"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def annotation_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The Prometheus annotations, shaped like (panel, target) for the target rules."""
    return [({"title": a["name"]}, a) for a in dashboard()["annotations"]["list"] if "expr" in a]


def test_target_job_and_instance_rules() -> None:
    for p, t in all_targets() + annotation_targets():
        sels = selectors(t["expr"])
        assert sels, t["expr"]
        for s in sels:
            assert ("job", "=~", "$job") in s.matchers, f'{p["title"]}: {s.name} lacks job=~"$job"'
            assert ("instance", "=~", "$instance") in s.matchers, f"{p['title']}: {s.name} lacks instance"


# increase() over the dashboard's time range (a stat "over the time range") or over the SLO's window (the
# error budget left) is what those panels mean; rate() always takes $__rate_interval.
INCREASE_RANGES = {"[$__rate_interval]", "[$__range]", "[30d]"}


def test_target_rate_interval_rule() -> None:
    for p, t in all_targets() + annotation_targets():
        for s in selectors(t["expr"]):
            if s.function in ("rate", "irate"):
                assert s.range == "[$__rate_interval]", f"{p['title']}: {t['expr']}"
            elif s.function == "increase":
                assert s.range in INCREASE_RANGES, f"{p['title']}: {t['expr']}"
            elif s.range is not None:
                assert s.range == "[$__rate_interval]", f"{p['title']}: fixed range in {t['expr']}"


def test_target_counter_agg_rule() -> None:
    for p, t in all_targets() + annotation_targets():
        for s in selectors(t["expr"]):
            if s.name and s.name.endswith("_total"):
                assert s.function in ("rate", "irate", "increase") and s.range, f"{p['title']}: {t['expr']}"


def test_vrid_variable_filters_every_vrid_keyed_series() -> None:
    vrid_keyed = {n for n in CONTRACT if n.startswith(("keepalived_vrrp_", "keepalived_wire_"))} - {
        "keepalived_wire_invalid_packets_total",
        "keepalived_wire_kernel_drops_total",
    }
    for _, t in all_targets():
        for s in selectors(t["expr"]):
            if s.name in vrid_keyed or s.name == "keepalived_become_master_total":
                assert ("vrid", "=~", "$vrid") in s.matchers, t["expr"]


def test_every_metric_is_one_the_exporter_exposes() -> None:
    names = {s.name for _, t in all_targets() for s in selectors(t["expr"])}
    names |= {s.name for _, q in _template_selectors() for s in selectors(q)}
    assert names - {None, "time"} <= CONTRACT, (names - {None}) - CONTRACT
    rules = yaml.safe_load((ROOT / "alerts" / "keepalived.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            used = {s.name for s in selectors(rule["expr"])} - {None}
            assert used <= CONTRACT | {"up"}, (rule["alert"], used - CONTRACT)


def test_required_panels_are_there() -> None:
    panels = query_panels()

    def exprs(p: dict[str, Any]) -> str:
        return " ".join(t["expr"] for t in p["targets"])

    def has(pred: Any, what: str) -> None:
        assert any(pred(p) for p in panels), f"no panel for {what}"

    has(lambda p: p["type"] == "state-timeline" and "keepalived_vrrp_state" in exprs(p), "who-is-master")
    has(lambda p: "keepalived_split_brain{" in exprs(p), "split brain status")
    has(lambda p: "keepalived_split_brain_witness" in exprs(p), "split-brain witnesses")
    has(lambda p: "keepalived_wire_no_master" in exprs(p), "no-master status")
    has(lambda p: "keepalived_vip_status" in exprs(p) and p["type"] == "state-timeline", "VIP ownership")
    has(
        lambda p: (
            "keepalived_vrrp_priority{" in exprs(p) and "keepalived_vrrp_effective_priority" in exprs(p)
        ),
        "base vs effective priority",
    )
    has(
        lambda p: (
            "rate(keepalived_wire_adverts_total" in exprs(p)
            and any("{{source}}" in t["legendFormat"] for t in p["targets"])
        ),
        "advert rate per router",
    )
    has(lambda p: "keepalived_vrrp_transitions_total" in exprs(p), "transitions")
    has(lambda p: "keepalived_wire_conflict" in exprs(p), "conflicts")
    has(lambda p: "ka_exporter_source_up" in exprs(p), "exporter source health")
    has(
        lambda p: (
            p["type"] == "stat"
            and "keepalived_wire_observed_seconds_total" in exprs(p)
            and p["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.9999
        ),
        "availability against the objective",
    )
    has(lambda p: "Error budget left" in p["title"] and "/ 0.0001" in exprs(p), "error budget left")
    has(
        lambda p: (
            p["type"] == "stat"
            and "keepalived_l2_vip_observed_seconds_total" in exprs(p)
            and p["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.9999
        ),
        "L2 availability against the objective",
    )
    has(
        lambda p: "L2 error budget left" in p["title"] and "/ 0.0001" in exprs(p),
        "L2 error budget left",
    )
    has(
        lambda p: (
            "keepalived_l2_vip_no_answerer_seconds_total" in exprs(p)
            and "keepalived_l2_vip_multi_answerer_seconds_total" in exprs(p)
            and "[$__range]" in exprs(p)
            and "observed" not in exprs(p)
        ),
        "seconds with no / several answerers",
    )
    has(
        lambda p: p["type"] == "heatmap" and "keepalived_wire_failover_gap_seconds_bucket" in exprs(p),
        "failover-duration heatmap",
    )
    has(
        lambda p: (
            p["type"] == "state-timeline" and "keepalived_wire_last_advert_timestamp_seconds" in exprs(p)
        ),
        "who was master when on the wire, per VRID",
    )
    assert any("keepalived_wire_master_changes_total" in q for q in annotation_queries()), "transitions"


def test_heatmap_reads_the_buckets_as_they_are() -> None:
    p = next(p for p in query_panels() if p["type"] == "heatmap")
    assert p["options"]["calculate"] is False
    assert p["options"]["yAxis"]["unit"] == "s"
    assert [t["format"] for t in p["targets"]] == ["heatmap"]
    assert "sum by (le)" in p["targets"][0]["expr"]


def test_state_panels_name_the_vrrp_states() -> None:
    p = next(p for p in query_panels() if "keepalived_vrrp_state" in p["targets"][0]["expr"])
    options = p["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: v["text"] for k, v in options.items()} == {
        "0": "INIT",
        "1": "BACKUP",
        "2": "MASTER",
        "3": "FAULT",
        "4": "STOP",
    }


# ------------------------------------------------------------------------------------------------------
# target-promql-rule and template-label-promql-rule, by promtool; and every query returns a series
# ------------------------------------------------------------------------------------------------------


def test_every_query_parses(tmp_path: Path) -> None:
    exprs = [expand_query(q) for q in dashboard_queries()] + [
        expand_query(q) for _, q in _template_selectors()
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "queries.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "q", "expr": "rate(x)"}]}]})
    )
    assert run_promtool("check", "rules", path).returncode != 0


def _synthetic_series() -> list[dict[str, str]]:
    """Two nodes and an observer, shaped like ka-exporter's output, over ten minutes at 15 s."""
    series: list[dict[str, str]] = []

    def add(name: str, labels: dict[str, str], values: str) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series.append({"series": f"{name}{{{text}}}", "values": values})

    for node, state in (("a", 2), ("b", 1)):
        base = {"job": "keepalived", "instance": f"{node}:9774"}
        inst = {**base, "iname": "VI_1", "intf": "eth0", "vrid": "51"}
        add("ka_exporter_build_info", {**base, "version": "0.1.0"}, "1x40")
        add("ka_exporter_scrape_duration_seconds", base, "0.002x40")
        add("ka_exporter_source_up", {**base, "source": "wire"}, "1x40")
        add("keepalived_up", base, "1x40")
        add("keepalived_process_start_time_seconds", base, "1700000000x40")
        add("keepalived_vip_status", {**base, "hostname": node, "vip": "10.0.0.100"}, f"{state - 1}x40")
        add("keepalived_vrrp_state", inst, f"{state}x40")
        add("keepalived_vrrp_priority", inst, "100x40")
        add("keepalived_vrrp_effective_priority", inst, "100x40")
        add("keepalived_vrrp_vip_mismatch", inst, "0x40")
        add("keepalived_vrrp_transitions_total", inst, "1+0x20 2+0x19")
        add("keepalived_become_master_total", inst, "1x40")
        vs = {**base, "virtual_server": "10.0.0.100:80", "protocol": "TCP"}
        add("keepalived_lvs_real_server_up", {**vs, "real_server": "10.0.1.11:80"}, "1x40")
        add("keepalived_lvs_virtual_server_real_servers_alive", vs, "1x40")
        add("keepalived_ipvs_virtual_server_connections_total", vs, "0+30x40")
    for node in ("a", "b", "o"):
        base = {"job": "keepalived", "instance": f"{node}:9774"}
        seg = {**base, "interface": "eth0", "family": "inet", "vrid": "51"}
        add("keepalived_wire_split_brain", seg, "0x40")
        add("keepalived_split_brain", seg, "0x40")
        add("keepalived_master_silent", seg, "0x40")
        add("keepalived_foreign_masters", seg, "0x40")
        add("keepalived_vips_unanswered", seg, "0x40")
        for witness in ("wire", "address", "liveness", "l2"):
            add("keepalived_split_brain_witness", {**seg, "witness": witness}, "0x40")
        add("keepalived_wire_no_master", seg, "0x40")
        add("keepalived_wire_masters", seg, "1x40")
        add("keepalived_wire_conflict", {**seg, "kind": "vips"}, "0x40")
        add("keepalived_wire_advert_priority", {**seg, "source": "10.0.0.1"}, "150x40")
        add("keepalived_wire_adverts_total", {**seg, "source": "10.0.0.1"}, "0+15x40")
        add("keepalived_wire_invalid_packets_total", {**base, "reason": "ttl"}, "0x40")
        add("keepalived_wire_kernel_drops_total", base, "0x40")
        router = {**seg, "source": "10.0.0.1"}
        add("keepalived_wire_last_advert_timestamp_seconds", router, "1700000000+15x40")
        add("keepalived_wire_advert_interval_seconds", router, "1x40")
        # one SIGKILL failover at 5m: 3.6 s without a master, one master change, one gap observation
        add("keepalived_wire_observed_seconds_total", seg, "0+15x40")
        add("keepalived_wire_masterless_seconds_total", seg, "0x20 3.6x20")
        add("keepalived_wire_multi_master_seconds_total", seg, "0x40")
        add("keepalived_wire_master_changes_total", seg, "0x20 1x20")
        # the L2 witness: the same failover, 3.6 s with nobody answering ARP for the VIP
        vip = {**base, "interface": "eth0", "family": "inet", "vip": "10.0.0.100"}
        add("keepalived_l2_vip_observed_seconds_total", vip, "0+15x40")
        add("keepalived_l2_vip_no_answerer_seconds_total", vip, "0x20 3.6x20")
        add("keepalived_l2_vip_multi_answerer_seconds_total", vip, "0x40")
        add("keepalived_l2_vip_unobserved_seconds_total", vip, "2x40")
        for le in ("0.01", "1.0", "4.0", "30.0", "+Inf"):
            add(
                "keepalived_wire_failover_gap_seconds_bucket",
                {**seg, "le": le},
                "0x20 1x20" if le not in {"0.01", "1.0"} else "0x40",
            )
    return series


def empty_queries(
    tmp_path: Path, exprs: list[str], series: list[dict[str, str]] | None = None, eval_time: str = "9m"
) -> list[str]:
    """The queries that return no series over the synthetic data (or `series`), evaluated by promtool."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"alert": f"Query{i}", "expr": f"absent({e})"} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": _synthetic_series() if series is None else series,
                "alert_rule_test": [
                    {"eval_time": eval_time, "alertname": f"Query{i}", "exp_alerts": []}
                    for i in range(len(exprs))
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    result = run_promtool("test", "rules", tmp_path / "test.yml")
    failing = sorted({int(n) for n in re.findall(r"alertname: Query(\d+),", result.stdout + result.stderr)})
    if result.returncode != 0:
        assert failing, result.stdout + result.stderr
    return [exprs[i] for i in failing]


def test_every_query_returns_a_series_over_exporter_shaped_data(tmp_path: Path) -> None:
    exprs = [expand_query(q) for q in dashboard_queries()]
    assert empty_queries(tmp_path, exprs) == []


def test_the_annotation_marks_the_failover_and_nothing_else(tmp_path: Path) -> None:
    """Over the synthetic run (one master change at 5m) the annotation query has a series right after the
    change, and none long after it: Grafana draws one marker, not a band."""
    (query,) = annotation_queries()
    expr = expand_query(query, "1m")
    assert empty_queries(tmp_path, [expr], eval_time="5m30s") == []
    assert empty_queries(tmp_path, [expr], eval_time="9m") == [expr]


def test_availability_and_budget_read_the_failover(tmp_path: Path) -> None:
    """3.6 s without a master in the 585 s observed (the samples in the window): availability 1 - 3.6/585 =
    0.99385; a 30-day budget of 0.0001 is overspent."""
    avail = next(q for q in dashboard_queries() if q.startswith("1 - ") and "[$__range]" in q)
    budget = next(q for q in dashboard_queries() if "/ 0.0001" in q)
    within = [
        f"({expand_query(avail, '10m')}) > 0.9935 < 0.9942",
        f"({expand_query(budget, '10m')}) < -50",
    ]
    assert empty_queries(tmp_path, within, eval_time="9m59s") == []


def test_l2_availability_budget_and_seconds_read_the_failover(tmp_path: Path) -> None:
    """The L2 row over the same failover: 3.6 s with no answerer in 585 s observed."""
    queries = [q for q in dashboard_queries() if "keepalived_l2_vip_" in q]
    avail = next(q for q in queries if q.startswith("1 - ") and "[$__range]" in q)
    budget = next(q for q in queries if "/ 0.0001" in q)
    none = next(q for q in queries if "no_answerer" in q and "observed" not in q and "[$__range]" in q)
    within = [
        f"({expand_query(avail, '10m')}) > 0.9935 < 0.9942",
        f"({expand_query(budget, '10m')}) < -50",
        f"({expand_query(none, '10m')}) > 3.5 < 3.7",
    ]
    assert empty_queries(tmp_path, within, eval_time="9m59s") == []


def test_an_empty_query_is_reported(tmp_path: Path) -> None:
    bogus = 'keepalived_vrrp_state{job=~".+",vrid="52"}'
    assert empty_queries(tmp_path, [expand_query(dashboard_queries()[0]), bogus]) == [bogus]


def test_template_label_promql_rule() -> None:
    found = _template_selectors()
    assert {name for name, _ in found} == {"job", "instance", "vrid"}
    for name, arg in found:
        assert selectors(arg), f"template {name}: no selector in {arg!r}"
