"""LVS verdicts (pure, plain data) and the lvs collector's rendering (promtool-clean), on the fixtures."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.lvs import collect_lvs
from ka_exporter.model import IpvsCounters, IpvsDest, IpvsService, LvsView, Snapshot
from ka_exporter.parse.checker import parse_check_data
from ka_exporter.parse.ipvs import parse_proc_ip_vs
from ka_exporter.parse.kaconf import parse_text
from ka_exporter.verdicts.lvs import LvsProblem, lvs_problems

LVS = Path(__file__).parent / "fixtures" / "lvs-2.2.7-uml"
VS80, VS8080 = "10.140.0.100:80", "10.140.0.100:8080"


def view(phase: str, ipvs_phase: str | None = None) -> LvsView:
    return LvsView(
        checker=parse_check_data((LVS / phase / "keepalived_check.data").read_bytes()),
        checker_time=1.0,
        ipvs=parse_proc_ip_vs((LVS / (ipvs_phase or phase) / "proc-net-ip_vs.txt").read_bytes()),
        ipvs_time=1.0,
        ipvs_via="proc",
    )


def test_consistent_views_have_no_mismatch_even_with_an_inhibited_server() -> None:
    assert lvs_problems(view("before")) == []
    # after: rs2:80 removed, rs2:8080 inhibited (IPVS weight 0, keepalived effective weight 1): both fine
    assert lvs_problems(view("after")) == []
    assert lvs_problems(None) == [] and lvs_problems(LvsView()) == []


def test_keepalived_down_but_ipvs_still_sends_traffic() -> None:
    # keepalived's "after" against IPVS's "before": rs2 is down but IPVS still has it with weight 1
    assert lvs_problems(view("after", ipvs_phase="before")) == [
        LvsProblem("weight_while_down", VS80, "TCP", "10.141.0.12:80"),
        LvsProblem("weight_while_down", VS8080, "TCP", "10.141.0.12:8080"),
    ]


def test_no_cross_check_against_a_stale_view() -> None:
    stale = replace(view("after", ipvs_phase="before"), checker_error="keepalived_check.data: truncated")
    assert lvs_problems(stale) == []
    assert lvs_problems(replace(stale, checker_error=None, ipvs_error="IPVS: netlink error")) == []


def test_alive_but_missing_from_ipvs() -> None:
    v = view("before")
    assert v.ipvs is not None
    flushed = replace(v, ipvs=tuple(replace(s, dests=s.dests[1:]) for s in v.ipvs))  # ipvsadm -d by hand
    problems = lvs_problems(flushed)
    assert [(p.kind, p.real_server) for p in problems] == [
        ("missing_from_ipvs", "10.141.0.12:80"),
        ("missing_from_ipvs", "10.141.0.12:8080"),
    ]
    assert {p.kind for p in lvs_problems(replace(v, ipvs=()))} == {"missing_from_ipvs"}  # ipvsadm -C


def test_below_quorum_with_a_sorry_server_the_alive_ones_are_out_of_ipvs_by_design() -> None:
    """keepalived 2.2.7 (UML lab): quorum lost with a sorry server, it removes the alive rs1:8080 from IPVS
    and adds the sorry server; that is not missing_from_ipvs."""
    v = view("after")
    assert v.checker is not None and v.ipvs is not None
    checker = tuple(
        replace(vs, quorum_up=False, sorry_server="10.141.0.13:8080") if vs.key == VS8080 else vs
        for vs in v.checker
    )
    ipvs = tuple(
        replace(
            s,
            dests=(
                *(d for d in s.dests if d.key != "10.141.0.11:8080"),
                IpvsDest("10.141.0.13:8080", "Masq", 1, 0, 0),
            ),
        )
        if s.key == VS8080
        else s
        for s in v.ipvs
    )
    assert lvs_problems(replace(v, checker=checker, ipvs=ipvs)) == [LvsProblem("below_quorum", VS8080, "TCP")]
    # without a sorry server keepalived leaves them in IPVS: their absence is a mismatch again
    no_sorry = tuple(replace(vs, sorry_server=None) for vs in checker)
    assert LvsProblem("missing_from_ipvs", VS8080, "TCP", "10.141.0.11:8080") in lvs_problems(
        replace(v, checker=no_sorry, ipvs=ipvs)
    )


def test_quorum_lost_and_no_alive_real_server() -> None:
    v = view("after")
    assert v.checker is not None
    dead = tuple(
        replace(vs, quorum_up=False, real_servers=tuple(replace(r, alive=False) for r in vs.real_servers))
        if vs.key == VS8080
        else vs
        for vs in v.checker
    )
    assert lvs_problems(replace(v, checker=dead, ipvs=None)) == [
        LvsProblem("below_quorum", VS8080, "TCP"),
        LvsProblem("no_alive_real_server", VS8080, "TCP"),
    ]


def render(snap: Snapshot) -> tuple[CollectorRegistry, bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, [collect_lvs]))
    return registry, generate_latest(registry)


def test_render_after_failure_with_netlink_counters() -> None:
    v = view("after")
    assert v.ipvs is not None
    counters = IpvsCounters(connections=84, in_packets=562, out_packets=446, in_bytes=36940, out_bytes=41164)
    ipvs = tuple(
        replace(
            s,
            counters=counters,
            dests=tuple(replace(d, counters=IpvsCounters(connections=40)) for d in s.dests),
        )
        for s in v.ipvs
    )
    registry, body = render(Snapshot(time=1.0, hostname="lb1", lvs=replace(v, ipvs=ipvs, ipvs_via="netlink")))
    get = registry.get_sample_value
    rs2 = {"virtual_server": VS8080, "protocol": "TCP", "real_server": "10.141.0.12:8080"}
    assert get("keepalived_lvs_real_server_up", rs2) == 0.0
    assert get("keepalived_lvs_real_server_inhibited", rs2) == 1.0
    assert get("keepalived_lvs_real_server_effective_weight", rs2) == 1.0
    assert get("keepalived_ipvs_real_server_weight", rs2) == 0.0
    assert get("keepalived_lvs_real_server_checker_up", {**rs2, "checker": "HTTP_GET"}) == 0.0
    assert get("keepalived_lvs_real_server_problem", {**rs2, "kind": "weight_while_down"}) == 0.0
    assert (
        get("keepalived_lvs_virtual_server_real_servers_alive", {"virtual_server": VS80, "protocol": "TCP"})
        == 1.0
    )
    assert (
        get("keepalived_ipvs_virtual_server_connections_total", {"virtual_server": VS8080, "protocol": "TCP"})
        == 84
    )
    assert get("keepalived_ipvs_real_server_connections_total", rs2) == 40
    assert (
        get(
            "keepalived_lvs_virtual_server_problem",
            {"virtual_server": VS80, "protocol": "TCP", "kind": "below_quorum"},
        )
        == 0
    )
    assert get("keepalived_ipvs_up") == 1.0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (scripts/bootstrap.sh installs prometheus)")
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_keepalived_down_exports_zeros_for_what_keepalived_conf_configures() -> None:
    cfg = parse_text((LVS / "keepalived.conf").read_text())
    registry, _ = render(
        Snapshot(time=1.0, hostname="lb1", config=cfg, lvs=LvsView(ipvs=(), ipvs_via="netlink"))
    )
    get = registry.get_sample_value
    for vs in (VS80, VS8080):
        assert get("keepalived_lvs_virtual_server_up", {"virtual_server": vs, "protocol": "TCP"}) == 0.0
    assert (
        get(
            "keepalived_lvs_real_server_up",
            {"virtual_server": VS80, "protocol": "TCP", "real_server": "10.141.0.13:80"},
        )
        == 0.0
    )
    assert (
        get(
            "keepalived_lvs_real_server_weight",
            {"virtual_server": VS8080, "protocol": "TCP", "real_server": "10.141.0.11:8080"},
        )
        == 3.0
    )


def test_nothing_without_lvs() -> None:
    _, body = render(Snapshot(time=1.0, hostname="lb1"))
    assert b"keepalived_lvs" not in body and b"keepalived_ipvs" not in body


def test_proc_fallback_has_weights_but_no_counters() -> None:
    _, body = render(Snapshot(time=1.0, hostname="lb1", lvs=view("before")))
    assert b"keepalived_ipvs_real_server_weight" in body
    assert b"_connections_total{" not in body
    ipvs = IpvsService(key=VS80, protocol="TCP", scheduler="rr", dests=(IpvsDest(VS80, "Masq", 1, 0, 0),))
    assert ipvs.counters is None
