"""The shipped alert rules: promtool accepts them, their unit tests pass, and every alert is documented.

Runs Debian's promtool (package `prometheus`) on alerts/keepalived.rules.yml and alerts/tests/*.yml. Besides
promtool's own checks, these tests hold the rule file to what operators rely on: every alert carries a
severity, a summary, a description and a runbook link whose section exists; every alert has a promtool case
where it fires and one where it must stay quiet; and each `for:` is needed by some quiet case (a normal
failover, a preemption, a restart or a scrape gap would fire the alert without it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "keepalived.rules.yml"
RULE_FILES = sorted((ROOT / "alerts").glob("*.rules.yml"))  # keepalived.rules.yml, slo.rules.yml, ...
TESTS_DIR = ROOT / "alerts" / "tests"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's `prometheus` package (scripts/bootstrap.sh does)"
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    """The alerts of every shipped rule file."""
    return [r for path in RULE_FILES for r in load_rules(path) if "alert" in r]


def unit_test_files() -> list[Path]:
    files = sorted(TESTS_DIR.glob("*.yml"))
    assert files, f"no promtool unit tests in {TESTS_DIR}"
    return files


def github_anchor(heading: str) -> str:
    """The fragment GitHub (and most Markdown renderers) give a heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", RUNBOOK.read_text(), re.MULTILINE)
    }


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|[smhdwy])", text):
        total += int(number) * units[unit]
    return total


# ------------------------------------------------------------------------------------------------------
# promtool
# ------------------------------------------------------------------------------------------------------


def test_promtool_check_rules_is_clean() -> None:
    result = run_promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", *unit_test_files())
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The harness notices a broken rule: a rule file with KeepalivedDown's condition inverted fails."""
    text = RULES.read_text()
    broken = text.replace("keepalived_up == 0", "keepalived_up == 1", 1)
    assert broken != text
    _write_copy(tmp_path, broken)
    result = run_promtool("test", "rules", tmp_path / "tests" / "process.test.yml")
    assert result.returncode != 0
    assert "KeepalivedDown" in result.stdout + result.stderr


def _write_copy(tmp_path: Path, rules_text: str, rules: Path = RULES) -> None:
    for shipped in RULE_FILES:
        (tmp_path / shipped.name).write_text(shipped.read_text())
    (tmp_path / rules.name).write_text(rules_text)
    (tmp_path / "tests").mkdir()
    for f in unit_test_files():
        (tmp_path / "tests" / f.name).write_text(f.read_text())


def test_unit_tests_load_the_shipped_rule_files() -> None:
    """Each promtool test file loads one shipped rule file, and every shipped rule file is tested."""
    loaded = set()
    for f in unit_test_files():
        doc = yaml.safe_load(f.read_text())
        files = [(f.parent / p).resolve() for p in doc["rule_files"]]
        assert len(files) == 1 and files[0] in RULE_FILES, f.name
        loaded.add(files[0])
    assert loaded == set(RULE_FILES)


# ------------------------------------------------------------------------------------------------------
# what every alert carries
# ------------------------------------------------------------------------------------------------------


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    anchors = runbook_anchors()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Keepalived[A-Z][A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(ann.get(key, "")).strip(), f"{name}: no {key}"
        url = ann["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", f"{name}: runbook_url {url}"
        assert anchor == github_anchor(name), f"{name}: anchor {anchor!r} is not the alert's section"
        assert anchor in anchors, f"{name}: docs/runbook.md has no section #{anchor}"


def test_every_alert_names_where_it_happens() -> None:
    """Descriptions name the node, or the VIP/VRID of a cross-node alert (by its labels)."""
    for rule in alert_rules():
        desc = rule["annotations"]["description"]
        assert re.search(r"\$labels\.(instance|vip|vrid)", desc), rule["alert"]


def test_runbook_has_no_section_for_an_alert_that_does_not_exist() -> None:
    names = {github_anchor(r["alert"]) for r in alert_rules()}
    sections = {a for a in runbook_anchors() if a.startswith("keepalived")}
    assert sections == names


def test_required_alerts_exist() -> None:
    names = {r["alert"] for r in alert_rules()}
    required = {
        "KeepalivedDown",
        "KeepalivedSplitBrain",
        "KeepalivedSplitBrainVIP",
        "KeepalivedNoMaster",
        "KeepalivedStateFlapping",
        "KeepalivedVIPMismatch",
        "KeepalivedWireConflict",
        "KeepalivedPriorityDegraded",
        "KeepalivedExporterSourceDown",
        "KeepalivedRestarted",
    }
    assert required <= names, required - names


def test_cross_node_aggregations_keep_the_cluster_apart() -> None:
    """Any count/sum/max/min/avg across nodes groups by cluster, so two clusters never add up."""
    for rule in alert_rules():
        for op, by in re.findall(r"\b(count|sum|max|min|avg)\s+by\s*\(([^)]*)\)", rule["expr"]):
            labels = {x.strip() for x in by.split(",")}
            assert "cluster" in labels, f"{rule['alert']}: {op} by ({by}) mixes clusters"


def test_for_durations_fit_vrrp_timing() -> None:
    """A cross-node or transition-prone alert waits longer than a failover stays visible (one scrape of at
    most 30 s plus the 4 s master-down interval); the wire split-brain verdict is already filtered and
    only needs a second evaluation."""
    by_name: dict[str, list[float]] = {}
    for rule in alert_rules():
        by_name.setdefault(rule["alert"], []).append(duration_seconds(str(rule.get("for", "0s"))))
    for name in ("KeepalivedSplitBrainVIP", "KeepalivedNoMaster", "KeepalivedDown"):
        assert min(by_name[name]) >= 34, name
    assert 0 < by_name["KeepalivedSplitBrain"][0] <= 30


# ------------------------------------------------------------------------------------------------------
# coverage of the promtool unit tests
# ------------------------------------------------------------------------------------------------------


def _rule_cases() -> list[tuple[str, list[dict[str, Any]]]]:
    """(alertname, exp_alerts) of every alert_rule_test case in alerts/tests."""
    cases: list[tuple[str, list[dict[str, Any]]]] = []
    for f in unit_test_files():
        doc = yaml.safe_load(f.read_text())
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.append((case["alertname"], case.get("exp_alerts") or []))
    return cases


def test_every_alert_fires_in_a_case_and_stays_quiet_in_another() -> None:
    cases = _rule_cases()
    for rule in alert_rules():
        name = rule["alert"]
        static = {k: str(v) for k, v in rule.get("labels", {}).items()}
        fired = [
            a
            for n, exp in cases
            if n == name
            for a in exp
            if static.items() <= {k: str(v) for k, v in a.get("exp_labels", {}).items()}.items()
        ]
        quiet = [exp for n, exp in cases if n == name and not exp]
        assert fired, f"{name} {static}: no promtool case where it fires"
        assert quiet, f"{name}: no promtool case where it must not fire"


def _for_rules() -> list[tuple[Path, int, str]]:
    return [
        (path, i, f"{r['alert']} {r.get('labels', {}).get('signal', '')}".strip())
        for path in RULE_FILES
        for i, r in enumerate(load_rules(path))
        if duration_seconds(str(r.get("for", "0s"))) > 0
    ]


@pytest.mark.parametrize(
    ("path", "index", "label"), _for_rules(), ids=[label for _, _, label in _for_rules()]
)
def test_each_for_duration_is_load_bearing(tmp_path: Path, path: Path, index: int, label: str) -> None:
    """Drop one rule's `for:` and some quiet case (failover, preemption, restart, scrape gap) must fail.
    Every shipped rule file's rules, each dropped in its own file's copy."""
    doc = yaml.safe_load(path.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    del rules[index]["for"]
    _write_copy(tmp_path, yaml.safe_dump(doc, sort_keys=False), path)
    name = rules[index]["alert"]
    files = [f for f in sorted((tmp_path / "tests").glob("*.yml")) if f"alertname: {name}\n" in f.read_text()]
    result = run_promtool("test", "rules", *files)
    assert result.returncode != 0, f"{label}: the unit tests pass without its for:, so no case needs it"
    assert rules[index]["alert"] in result.stdout + result.stderr


def test_unit_tests_fix_the_group_order_where_groups_depend_on_each_other() -> None:
    """promtool evaluates rule groups in random order unless told: a file loading several groups names them.

    Without it the SLO alerts read the recording rules of the previous step in about one run in five.
    """
    for test_file in unit_test_files():
        doc = yaml.safe_load(test_file.read_text())
        groups = [
            group["name"]
            for rule_file in doc["rule_files"]
            for group in yaml.safe_load((test_file.parent / rule_file).read_text())["groups"]
        ]
        if len(groups) > 1:
            assert sorted(doc.get("group_eval_order", [])) == sorted(groups), test_file.name
