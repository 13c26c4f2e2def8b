"""The monitoring mixin (mixin/): it renders with Debian's jsonnet, the shipped alerts/*.rules.yml and
grafana/*.json are its current rendering, and promtool accepts what it renders with other settings too.

Runs the real `jsonnet` (package `jsonnet`, 0.18; scripts/bootstrap.sh --test installs it) and promtool.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ka_exporter.devtools.mixin import MIXIN, ROOT, jsonnet, render, run_jsonnet, stale_in
from tests.test_alerts import RULE_FILES, run_promtool


def custom(config: str, field: str) -> Any:
    """A field of the mixin rendered with `_config+:: {config}`."""
    code = f"((import 'mixin.libsonnet') + {{ _config+:: {{ {config} }} }}).{field}"
    return json.loads(run_jsonnet("-e", code))


def test_jsonnet_is_debians_0_18_or_later() -> None:
    out = subprocess.run([jsonnet(), "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"v(\d+)\.(\d+)", out)
    assert m and (int(m.group(1)), int(m.group(2))) >= (0, 18), out


def test_the_shipped_files_are_the_mixins_current_rendering() -> None:
    files = render()
    assert {n for n in files if n.startswith("alerts/")} == {str(p.relative_to(ROOT)) for p in RULE_FILES}
    assert "grafana/ka-exporter.json" in files
    assert stale_in(files) == [], "stale: run `python -m ka_exporter.devtools.mixin`"


def test_a_stale_file_is_noticed(tmp_path: Path) -> None:
    files = render()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert stale_in(files, tmp_path) == []
    rules = tmp_path / "alerts" / "keepalived.rules.yml"
    rules.write_text(rules.read_text().replace('for: "1m"', 'for: "2m"', 1))
    assert stale_in(files, tmp_path) == ["alerts/keepalived.rules.yml"]


def test_mixin_follows_the_convention() -> None:
    fields = json.loads(
        run_jsonnet("-e", "std.objectFieldsAll(import 'mixin.libsonnet')"),
    )
    assert {"_config", "prometheusAlerts", "prometheusRules", "grafanaDashboards"} <= set(fields)
    config = json.loads(run_jsonnet("-e", "(import 'mixin.libsonnet')._config"))
    assert config["kaSelector"] == ""
    assert config["clusterLabel"] == "cluster"
    assert config["sloObjectivePercent"] == 99.99
    assert config["sloErrorBudget"] == "0.0001"
    alerts = json.loads(run_jsonnet("-e", "(import 'mixin.libsonnet').prometheusAlerts"))
    records = json.loads(run_jsonnet("-e", "(import 'mixin.libsonnet').prometheusRules"))
    assert all("alert" in r for g in alerts["groups"] for r in g["rules"])
    assert all("record" in r for g in records["groups"] for r in g["rules"])
    assert (MIXIN / "mixin.libsonnet").is_file()


def _all_exprs(doc: dict[str, Any]) -> list[str]:
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


@pytest.mark.parametrize("field", ["prometheusAlerts", "prometheusRules"])
def test_custom_settings_reach_every_rule_and_promtool_accepts_them(tmp_path: Path, field: str) -> None:
    doc = custom("kaSelector: 'job=\"ka\"', clusterLabel: 'site', sloObjectivePercent: 99.9", field)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(doc))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    for expr in _all_exprs(doc):
        assert "{}" not in expr and ",}" not in expr, expr
        assert not re.search(r"\bcluster\b", expr), expr
        for name, matchers in re.findall(
            r"\b(keepalived_[a-z0-9_]+|ka_exporter_[a-z0-9_]+|up)\b(\{[^}]*\})?(?!\s*\()", expr
        ):
            assert 'job="ka"' in matchers, f"{name} without the selector in {expr}"
    text = json.dumps(doc)
    if field == "prometheusRules":
        assert "/ 0.001" in text and "0.0001" not in text
    else:
        assert "(14.4 * 0.001)" in text and "a 99.9% objective" in text
        assert "$labels.site" in text and "$labels.cluster" not in text


def test_default_rendering_has_no_empty_selector() -> None:
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        for expr in _all_exprs(doc):
            assert "{}" not in expr and ",}" not in expr and "%(" not in expr, expr


def test_promtool_checks_and_tests_the_rendering(tmp_path: Path) -> None:
    """The rendering itself (not the committed copy) passes `promtool check rules` and the unit tests."""
    (tmp_path / "alerts" / "tests").mkdir(parents=True)
    for name, text in render().items():
        if name.startswith("alerts/"):
            (tmp_path / name).write_text(text)
    for test in (ROOT / "alerts" / "tests").glob("*.yml"):
        (tmp_path / "alerts" / "tests" / test.name).write_text(test.read_text())
    rules = sorted((tmp_path / "alerts").glob("*.rules.yml"))
    result = run_promtool("check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_promtool("test", "rules", *sorted((tmp_path / "alerts" / "tests").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_custom_settings_reach_the_dashboard() -> None:
    """kaSelector is in every selector of every panel, annotation and variable query; the objective and
    the budget follow sloObjectivePercent."""
    from tests.test_dashboard import selectors

    d = custom("kaSelector: 'job=\"ka\"', sloObjectivePercent: 99.9", "grafanaDashboards['ka-exporter.json']")
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in d["annotations"]["list"] if "expr" in a]
    assert len(exprs) >= 20
    for expr in exprs:
        for s in selectors(expr):
            if s.name not in (None, "time"):
                assert ("job", "=", "ka") in s.matchers, f"{s.name} without the selector in {expr}"
    variables = {t["name"]: t["query"] for t in d["templating"]["list"] if t["type"] == "query"}
    assert variables["job"] == 'label_values(ka_exporter_build_info{job="ka"}, job)'
    assert all('job="ka"' in q for q in variables.values())
    text = json.dumps(d)
    assert "/ 0.001" in text and "the 99.9% objective" in text
    steps = [
        p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for p in d["panels"]
        if p["title"].startswith("Availability vs")
    ]
    assert steps == [[{"color": "red", "value": None}, {"color": "green", "value": 0.999}]]
