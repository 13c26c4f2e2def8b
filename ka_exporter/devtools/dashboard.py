"""The Grafana dashboard's queries, read from the shipped `grafana/ka-exporter.json`.

The dashboard itself is the monitoring mixin's (mixin/dashboards/ka-exporter.libsonnet), rendered with
`python -m ka_exporter.devtools.mixin`. This module gives tests the queries in it:

`dashboard_queries()` lists every panel query (with Grafana variables), `annotation_queries()` the
annotations' queries, and `expand_query()` turns one into plain PromQL ("All" selected, a fixed rate
interval) for checks against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

COMMITTED = Path(__file__).resolve().parents[2] / "grafana" / "ka-exporter.json"
UID = "ka-exporter"


def dashboard() -> dict[str, Any]:
    """The shipped dashboard (Grafana's JSON model)."""
    doc = json.loads(COMMITTED.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{COMMITTED}: not a dashboard")
    return doc


def dashboard_queries() -> list[str]:
    """Every panel query (PromQL with Grafana variables), in panel order."""
    return [str(t["expr"]) for panel in dashboard()["panels"] for t in panel.get("targets", [])]


def annotation_queries() -> list[str]:
    """The queries of the dashboard's Prometheus annotations (the built-in Grafana one has none)."""
    return [str(a["expr"]) for a in dashboard()["annotations"]["list"] if "expr" in a]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand_query(expr: str, rate_interval: str = "1m", values: dict[str, str] | None = None) -> str:
    """Plain PromQL from a dashboard query: `$__rate_interval` (and `$__interval`, `$__range`) become
    `rate_interval`, every other variable its value in `values`, else `.+` (Grafana's "All")."""
    chosen = values or {}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in ("__rate_interval", "__interval", "__range"):
            return rate_interval
        return chosen.get(name, ".+")

    return _VARIABLE.sub(sub, expr)
