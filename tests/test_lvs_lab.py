"""LVS on a real IPVS kernel: one User-Mode Linux guest boot (ka_exporter/lab/uml.py) shared by these tests.

Inside the guest: keepalived with two virtual servers and a VRRP instance, busybox httpd real servers and a
client in namespaces, and ka-exporter, whose /metrics every scenario waits on. The guest records what it
saw; these tests assert on it. Also here: the lvs source on this machine's own kernel, which has no IPVS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ka_exporter.devtools.dashboard import dashboard_queries, expand_query
from ka_exporter.lab import uml
from ka_exporter.lab.uml import REQUESTS, LvsLabResult, detection_bounds, parse_scrape, rs_labels
from tests.test_dashboard import empty_queries

ROOT = Path(__file__).resolve().parents[1]
LVS_RULES = ROOT / "alerts" / "lvs.rules.yml"
VS80, VS8080 = f"{uml.VIP}:80", f"{uml.VIP}:8080"
RS1, RS2, RS3 = (uml.RS[n] for n in ("rs1", "rs2", "rs3"))


def _host_state() -> dict[str, Any]:
    """What the lab must not leave behind on the host. Other labs (other test runs on this shared machine)
    come and go meanwhile: their namespaces are left out; the guest's own names (its /run/lab, its
    namespaces cl and rs) must never appear on the host."""
    uml_pids = sorted(
        p for p in os.listdir("/proc") if p.isdigit() and _exe(p) == os.path.realpath("/usr/bin/linux.uml")
    )
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    return {
        "uml": uml_pids,
        "mounts": [m for m in Path("/proc/mounts").read_text().splitlines() if " /run/netns/" not in m],
        "run_lab": os.path.exists("/run/lab"),
        "guest_netns": [n for n in netns if n in ("cl", "rs")],
        "tmp": sorted(p for p in os.listdir("/tmp") if p.startswith("ka-uml-")),
        "lib_modules": sorted(os.listdir("/lib/modules")) if os.path.isdir("/lib/modules") else [],
        "proc_ip_vs": os.path.exists("/proc/net/ip_vs"),
    }


def _exe(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


@pytest.fixture(scope="module")
def lab() -> tuple[LvsLabResult, dict[str, Any], dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("the LVS lab needs root")
    before = _host_state()
    result = uml.run_lvs_lab(timeout=400)
    after = _host_state()
    return result, before, after


def steps(lab: tuple[LvsLabResult, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    result = lab[0].result
    assert result.get("ok"), f"the guest failed: {result.get('error')} (guest log: {lab[0].guest_log[-500:]})"
    return dict(result["steps"])


# serial: the UML guest uses a core while it boots, and the lab compares UML processes host-wide.
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.serial]


def test_each_real_server_state_and_ipvs_read_over_netlink(lab: Any) -> None:
    ready = steps(lab)["ready"]
    assert ready["real_servers"] == {
        "rs1:80": 1.0,
        "rs2:80": 1.0,
        "rs3:80": 0.0,  # never listens
        "rs1:8080": 1.0,
        "rs2:8080": 1.0,
    }
    assert ready["ipvs_up"] == 1.0


def test_virtual_server_counters_grow_with_client_traffic(lab: Any) -> None:
    traffic = steps(lab)["traffic"]
    assert traffic["answered"] == {"80": REQUESTS, "8080": REQUESTS}
    assert traffic["answers_80"] == ["rs1", "rs2"]  # rr over the two alive real servers, never rs3
    for port in ("80", "8080"):
        assert traffic["connections_after"][port] >= traffic["connections_before"][port] + REQUESTS
    assert traffic["incoming_bytes_80"] > 0


def test_a_killed_real_server_is_down_within_one_delay_loop_and_the_retries(lab: Any) -> None:
    fail = steps(lab)["fail"]
    print(f"rs2 seen down after {fail['down_after_seconds']} s (bound {fail['bound_seconds']} s)")
    # keepalived's own bound (delay loop + timeout + retries, as its checker dump reports them) plus one
    # lvs interval; plus one scrape of slack
    for port, seconds in fail["down_after_seconds"].items():
        assert seconds <= fail["bound_seconds"][port] + 1.0, port
    assert fail["rs2_80_in_ipvs"] is False  # removed from IPVS
    # inhibit_on_failure: kept in IPVS with weight 0 while keepalived still reports effective weight 1
    assert (fail["rs2_8080_ipvs_weight"], fail["rs2_8080_inhibited"], fail["rs2_8080_effective_weight"]) == (
        0,
        1,
        1,
    )
    assert (fail["vs_8080_quorum_up"], fail["vs_8080_below_quorum"]) == (0, 1)  # quorum 4, weights 3 + 1
    # the sorry server (rs3:8080) serves; keepalived took the alive rs1:8080 out of IPVS itself
    assert fail["vs_8080_sorry_active"] == 1
    assert fail["ipvs_8080"] == [f"{RS2}:8080", f"{RS3}:8080"]
    assert fail["mismatches"] == 0  # an inhibited server is not a keepalived/IPVS mismatch


def test_detection_bounds_come_from_keepalived_s_own_checker_timings() -> None:
    text = (ROOT / "tests" / "fixtures" / "lvs-2.2.7-uml" / "after" / "keepalived_check.data").read_text()
    bounds = detection_bounds(text)
    # TCP_CHECK: 2 s delay loop, 1 s timeout, 1 retry after 1 s; HTTP_GET: the same with 3 s before the retry
    assert bounds[f"{RS1}:80"] == 2 + 1 + 1 * (1 + 1) + uml.LVS_INTERVAL
    assert bounds[f"{RS2}:8080"] == 2 + 1 + 1 * (3 + 1) + uml.LVS_INTERVAL
    assert len(bounds) == 5


def test_a_down_real_server_put_back_in_ipvs_by_hand_is_weight_while_down(lab: Any) -> None:
    """The guest added the failed rs2:80 back with ipvsadm and waited until /metrics said
    weight_while_down 1, then removed it and waited for 0 (a step is recorded only when both happened)."""
    assert steps(lab)["weight_while_down"]["seconds"] >= 0


def test_the_real_server_returns(lab: Any) -> None:
    back = steps(lab)["return"]
    assert back["vs_8080_quorum_up"] == 1.0


def test_a_real_server_removed_from_ipvs_by_hand_is_missing_from_ipvs(lab: Any) -> None:
    by_hand = steps(lab)["by_hand"]
    assert by_hand["other_problems"] == 0
    assert by_hand["exported"] == by_hand["ipvsadm"]  # the netlink reader agrees with ipvsadm
    # ... on the counters too (ipvsadm -Ln --stats --exact), read while no client traffic flows
    assert by_hand["exported_counters"] == by_hand["ipvsadm_counters"]
    assert by_hand["ipvsadm_counters"][VS80][0] >= REQUESTS
    assert len(by_hand["exported"]) == 4


def test_netlink_ipvs_needs_cap_net_admin_and_proc_does_not(lab: Any) -> None:
    privileges = steps(lab)["privileges"]
    assert privileges["nobody"] == "ERR 1"  # EPERM
    assert privileges["nobody_with_cap_net_admin"] == "2"  # both virtual servers
    assert privileges["nobody_reads_proc"] is True


def test_ipvs_read_costs_are_measured(lab: Any) -> None:
    """Figures for the README's choice of reader (UML inflates every syscall; compare the ratios)."""
    costs = steps(lab)["costs"]
    print(f"IPVS read costs in the UML guest: {costs}")
    assert costs["netlink_read_ms"] > 0 and costs["proc_read_ms"] > 0


def test_keepalived_stopped_flushes_ipvs_and_zeros_stay_for_the_configured_servers(lab: Any) -> None:
    stopped = steps(lab)["stopped"]
    assert stopped["ipvs_destinations_left"] == 0
    # one checker dump per lvs interval, asked of the checker child alone (the VRRP child's dumps are the
    # dumps source's, every 15 s)
    assert stopped["checker_dumps"] > 3 * stopped["vrrp_dumps"], stopped
    assert stopped["configured_real_servers_zero"] == sorted(
        [f"{RS1}:80", f"{RS2}:80", f"{RS3}:80", f"{RS1}:8080", f"{RS2}:8080"]
    )


def test_the_lab_leaves_nothing_behind(lab: Any) -> None:
    _result, before, after = lab
    assert after == before


def _series(scrapes: list[dict[str, Any]], name: str, labels: tuple[tuple[str, str], ...]) -> list[float]:
    values = []
    for scrape in scrapes:
        value = parse_scrape(scrape["text"]).get((name, labels))
        if value is not None:
            values.append(value)
    return values


def test_the_real_server_down_alert_fires_from_the_scraped_series(lab: Any, tmp_path: Path) -> None:
    """A promtool test whose input is what ka-exporter served in the guest, one scrape per 15 s step, from
    the first scrape until the last one before rs2 came back; the last sample is held for two minutes (the
    lab brings rs2 back after seconds, a real outage lasts)."""
    result: LvsLabResult = lab[0]
    steps(lab)
    scrapes = [s for s in result.scrapes if s["phase"] in ("ready", "traffic", "fail")]
    hold = 8
    series = []
    wanted = {
        (RS2, 80): True,
        (RS2, 8080): True,
        (RS1, 80): False,
        (RS1, 8080): False,
    }
    for (rs, port), _fires in wanted.items():
        name = "rs1" if rs == RS1 else "rs2"
        values = _series(scrapes, "keepalived_lvs_real_server_up", rs_labels(port, name))
        assert values, f"no scraped samples for {rs}:{port}"
        values += [values[-1]] * hold
        series.append(
            {
                "series": (
                    f'keepalived_lvs_real_server_up{{job="lvs",instance="uml:9774",protocol="TCP",'
                    f'real_server="{rs}:{port}",virtual_server="{uml.VIP}:{port}"}}'
                ),
                "values": " ".join(str(int(v)) for v in values),
            }
        )
        length = len(values)
    ups = _series(scrapes, "keepalived_up", ())
    series.append(
        {"series": 'keepalived_up{job="lvs",instance="uml:9774"}', "values": " ".join(["1"] * length)}
    )
    assert ups and set(ups) == {1.0}
    # the shipped rules, annotations left out (promtool would compare their text; the firing is the point)
    rules = yaml.safe_load(LVS_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "lvs.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    test = {
        "rule_files": ["lvs.rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": f"{(length - 1) * 15}s",
                        "alertname": "KeepalivedLVSRealServerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": "lvs",
                                    "instance": "uml:9774",
                                    "protocol": "TCP",
                                    "real_server": f"{rs}:{port}",
                                    "virtual_server": f"{uml.VIP}:{port}",
                                }
                            }
                            for (rs, port), fires in wanted.items()
                            if fires
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "scraped.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    out = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_lvs_row_returns_series_over_the_scraped_data(lab: Any, tmp_path: Path) -> None:
    """Every LVS query of the dashboard, evaluated by promtool over the guest's scrapes (one per 15 s)."""
    result: LvsLabResult = lab[0]
    steps(lab)
    scrapes = [s for s in result.scrapes if s["phase"] in ("ready", "traffic")]
    assert len(scrapes) >= 2
    by_series: dict[str, list[str]] = {}
    for i, scrape in enumerate(scrapes):
        for (name, labels), value in parse_scrape(scrape["text"]).items():
            text = ",".join(f'{k}="{v}"' for k, v in (("job", "lvs"), ("instance", "uml:9774"), *labels))
            by_series.setdefault(f"{name}{{{text}}}", ["_"] * len(scrapes))[i] = str(value)
    queries = [q for q in dashboard_queries() if "keepalived_lvs_" in q or "keepalived_ipvs_" in q]
    assert len(queries) >= 3
    series = [{"series": k, "values": " ".join(v)} for k, v in by_series.items()]
    exprs = [expand_query(q, "1m") for q in queries]
    assert empty_queries(tmp_path, exprs, series, f"{(len(scrapes) - 1) * 15}s") == []


def test_without_ipvs_the_lvs_source_says_so_in_one_line_and_the_rest_goes_on(tmp_path: Path) -> None:
    """This machine's kernel has no IPVS: the lvs source is down with one reason, the others work."""
    if os.path.exists("/proc/net/ip_vs"):
        pytest.skip("this kernel has IPVS")
    conf = ROOT / "tests" / "fixtures" / "lvs-2.2.7-uml" / "keepalived.conf"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ka_exporter",
            "--once",
            "--keepalived.config",
            str(conf),
            "--keepalived.pid-file",
            str(tmp_path / "none.pid"),
            "--keepalived.dumps-dir",
            str(tmp_path),
            "--no-collector.wire",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1  # a source failed
    lvs_lines = [line for line in out.stderr.splitlines() if "source lvs" in line]
    assert len(lvs_lines) == 1, out.stderr
    assert "this kernel has no IPVS (no /proc/net/ip_vs)" in lvs_lines[0]
    samples = parse_scrape(out.stdout)
    assert samples[("ka_exporter_source_up", (("source", "lvs"),))] == 0
    assert samples[("ka_exporter_source_up", (("source", "config"),))] == 1
    assert samples[("ka_exporter_source_up", (("source", "vips"),))] == 1
    assert samples[("keepalived_ipvs_up", ())] == 0
    assert samples[("keepalived_up", ())] == 0
    # what keepalived.conf configures is exported as 0
    assert samples[("keepalived_lvs_real_server_up", rs_labels(8080, "rs2"))] == 0
