"""The pure functions behind the watchdog, `status`, `check` and the page, on plain data (no lab).

conditions.evaluate (snapshot -> conditions), the views (rows, status table, check line, landing
page) and store.merge_views (which source's word wins on an instance's state). The lab tests show
the same on real keepalived; these say exactly what each function answers for each case.
"""

from __future__ import annotations

from dataclasses import replace

from ka_exporter.model import (
    ConfInstance,
    ConfVip,
    InstanceView,
    KeepalivedConfig,
    LocalAddress,
    ProcessInfo,
    Snapshot,
    SourceHealth,
    VrrpState,
    WirePeer,
    WireStats,
)
from ka_exporter.outputs.views import check_result, landing_page, rows, status_table, wire_routers
from ka_exporter.store import merge_views
from ka_exporter.verdicts.conditions import VIP_MISMATCH_HOLD, Condition, evaluate

NOW = 1000.0
VIP = "10.0.0.100"
ME, PEER = "10.0.0.1", "10.0.0.2"
WIRE_LABELS = (("family", "inet"), ("interface", "eth0"), ("vrid", "51"))


def conf(*names: str) -> KeepalivedConfig:
    return KeepalivedConfig(
        instances=tuple(
            ConfInstance(n, "eth0", 51 + i, priority=100 + i, vips=(ConfVip(f"10.0.0.{100 + i}", 24),))
            for i, n in enumerate(names)
        )
    )


def view(state: VrrpState | None = VrrpState.MASTER, **kw: object) -> InstanceView:
    base = InstanceView("VI_1", "eth0", 51, state=state, priority=100, effective_priority=100, vips=(VIP,))
    return replace(base, **kw)  # type: ignore[arg-type]


def peer(source: str, *, local: bool = False, **kw: object) -> WirePeer:
    base = WirePeer(
        "eth0", "inet", 51, source, NOW - 20, NOW - 0.2, 100, 1.0, 2, (VIP,), 0, None, 20, local=local
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def snap(
    *,
    state: VrrpState | None = VrrpState.MASTER,
    held: bool = True,
    running: bool = True,
    peers: tuple[WirePeer, ...] | None = None,
    **kw: object,
) -> Snapshot:
    """node-a with VI_1 (VRID 51, VIP 10.0.0.100) in `state` per D-Bus (up), holding the VIP or not."""
    addrs = (LocalAddress(ME, 24, "eth0", "inet"),) + (
        (LocalAddress(VIP, 24, "eth0", "inet"),) if held else ()
    )
    base = Snapshot(
        time=NOW,
        hostname="node-a",
        config=conf("VI_1"),
        process=ProcessInfo(running=running, pid=42 if running else None),
        addresses=addrs,
        instances=(view(state),) if state is not None else (),
        wire_peers=peers,
        wire_stats=WireStats(interfaces=("eth0",), listening_since=NOW - 600) if peers is not None else None,
        sources=(SourceHealth("dbus", True),),
        views_time=(("dbus", NOW - 1),),
        addresses_changed=NOW - 100,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def kinds(s: Snapshot) -> list[str]:
    return [c.kind for c in evaluate(s)]


# -- conditions.evaluate ---------------------------------------------------------------------------------


def test_a_healthy_master_and_a_healthy_backup_have_no_condition() -> None:
    assert evaluate(snap(peers=(peer(ME, local=True),))) == []
    assert evaluate(snap(state=VrrpState.BACKUP, held=False, peers=(peer(PEER),))) == []


def test_keepalived_down_with_a_configured_instance_and_its_vip_left_behind() -> None:
    conds = evaluate(snap(running=False, state=None))
    assert [c.kind for c in conds] == ["keepalived_down", "vip_mismatch"]
    down, stale = conds
    assert down == Condition(
        "keepalived_down",
        (("hostname", "node-a"),),
        "keepalived is not running on node-a but keepalived.conf configures 1 instance(s)",
    )
    assert down.severity == 2
    assert stale.labels == (("iname", "VI_1"), ("vrid", "51"))
    assert stale.summary == "VI_1 (VRID 51): keepalived is not running but 10.0.0.100 is still on this host"
    assert stale.details == (("stale", VIP),)
    assert (stale.hold, stale.severity) == (VIP_MISMATCH_HOLD, 1)
    # Without the VIP there is nothing stale; without a configured instance nobody expects keepalived.
    assert kinds(snap(running=False, state=None, held=False)) == ["keepalived_down"]
    assert kinds(snap(running=False, state=None, held=False, config=KeepalivedConfig())) == []
    assert kinds(snap(running=False, state=None, held=False, config=None)) == []


def test_keepalived_frozen_names_the_stopped_pids() -> None:
    frozen = snap(process=ProcessInfo(running=True, pid=42, stopped_pids=(42, 43)))
    (c,) = evaluate(frozen)
    assert c.kind == "keepalived_frozen"
    assert c.details == (("pids", "42, 43"),)
    assert c.summary == "keepalived on node-a is stopped (pid 42, 43 in state T): it runs but does nothing"


def test_vip_mismatch_a_master_without_its_vip_and_a_backup_holding_it() -> None:
    (missing,) = evaluate(snap(held=False))
    assert missing.kind == "vip_mismatch"
    assert missing.summary == "VI_1 (VRID 51) is MASTER without 10.0.0.100"
    assert missing.details == (("missing", VIP), ("stale", ""), ("state", "MASTER"))
    assert missing.hold == VIP_MISMATCH_HOLD
    (stale,) = evaluate(snap(state=VrrpState.BACKUP, held=True))
    assert stale.summary == "VI_1 (VRID 51) is BACKUP but holds 10.0.0.100"
    assert stale.details == (("missing", ""), ("stale", VIP), ("state", "BACKUP"))


def test_vip_mismatch_waits_while_the_state_is_older_than_the_address_change() -> None:
    """Dumps only (no event stream up): the addresses changed after the last dump, so no verdict yet."""
    dumps_only = {"sources": (SourceHealth("dumps", True),), "views_time": (("dumps", NOW - 5),)}
    assert kinds(snap(held=False, addresses_changed=NOW - 1, **dumps_only)) == []
    assert kinds(snap(held=False, addresses_changed=NOW - 10, **dumps_only)) == ["vip_mismatch"]
    # No state at all yet (no source has published): no verdict either.
    assert kinds(snap(held=False, views_time=())) == []
    # D-Bus up makes the state current now, whatever the address change.
    assert kinds(snap(held=False, addresses_changed=NOW - 0.1)) == ["vip_mismatch"]
    # The addresses collector off: nothing to compare.
    assert kinds(snap(held=False, addresses=None)) == []


def test_wire_no_master_and_a_conflict_on_the_interval() -> None:
    # The wire has listened for ten minutes and heard nobody on a configured VRID.
    (nobody,) = evaluate(snap(state=VrrpState.BACKUP, held=False, peers=()))
    assert nobody == Condition("no_master", WIRE_LABELS, "no router advertises VRID 51 (inet) on eth0")
    assert nobody.severity == 2
    two = (peer(ME, local=True), peer(PEER, interval=2.0, last_seen=NOW - 0.1))
    conds = [c for c in evaluate(snap(peers=two)) if c.kind == "wire_conflict"]
    assert [c.labels for c in conds] == [(*WIRE_LABELS, ("conflict", "interval"))]
    routers = "10.0.0.1 (this host) priority 100; 10.0.0.2 priority 100"
    assert conds[0].summary == f"routers on VRID 51 (inet) on eth0 disagree on interval: {routers}"
    assert conds[0].details == (("routers", routers),)
    assert conds[0].severity == 1
    # The wire source off (no routers table): no wire verdict at all.
    assert kinds(snap(state=VrrpState.BACKUP, held=False, peers=None)) == []


def test_conditions_come_sorted_by_kind_then_labels() -> None:
    many = evaluate(snap(held=False, running=False, state=None, peers=()))
    assert [c.key for c in many] == sorted(c.key for c in many)
    assert {c.kind for c in many} == {"keepalived_down", "no_master"}


# -- views ---------------------------------------------------------------------------------------------


def test_wire_routers_filters_by_vrid_and_family_sorted_by_address() -> None:
    peers = (peer(PEER), peer(ME, local=True), peer("10.0.0.9", vrid=52), peer("fe80::1", family="inet6"))
    s = snap(peers=peers)
    assert [p.source for p in wire_routers(s, 51, "inet")] == [ME, PEER]
    assert [p.source for p in wire_routers(s, 51, "inet6")] == ["fe80::1"]
    assert wire_routers(s, None, "inet") == []


def test_rows_merge_the_config_keepalived_the_addresses_and_the_wire() -> None:
    s = snap(peers=(peer(ME, local=True), peer(PEER, priority=90)), config=conf("VI_1", "VI_2"))
    s = replace(s, instances=(view(VrrpState.MASTER, master_priority=0),))
    cond = Condition("wire_conflict", (*WIRE_LABELS, ("conflict", "priority")), "x")
    r1, r2 = rows(s, [cond])
    assert (r1.instance, r1.vrid, r1.interface, r1.family, r1.state) == (
        "VI_1",
        "51",
        "eth0",
        "inet",
        "MASTER",
    )
    assert (r1.priority, r1.master_priority, r1.vips_held) == ("100/100", "-", VIP)
    assert r1.routers == "10.0.0.1*(100) 10.0.0.2(90)"
    assert r1.verdicts == "wire_conflict"
    # Known from keepalived.conf only: its configured priority and VIPs, no state.
    assert (r2.instance, r2.vrid, r2.state, r2.priority, r2.vips_held) == ("VI_2", "52", "-", "101/-", "none")
    assert (r2.routers, r2.verdicts) == ("-", "ok")
    # keepalived not running: every row reads DOWN.
    assert {r.state for r in rows(replace(s, process=ProcessInfo(running=False)), [])} == {"DOWN"}


def test_status_table_heads_with_the_process_then_rows_conditions_and_failing_sources() -> None:
    s = snap(held=False, sources=(SourceHealth("dbus", True), SourceHealth("dumps", False, "no dump")))
    conds = evaluate(s)
    lines = status_table(s, conds).splitlines()
    assert lines[0] == "node-a: keepalived running (pid 42)"
    assert lines[1].split() == ["INSTANCE", "VRID", "INTERFACE", "STATE", "PRIO", "base/eff", "MASTER", "PRIO",
                                "VIPS", "HELD", "ROUTERS", "ON", "WIRE", "VERDICTS"]  # fmt: skip
    assert lines[2].split() == ["VI_1", "51", "eth0", "MASTER", "100/100", "-", "none", "-", "vip_mismatch"]
    assert lines[3:] == [
        "WARNING: VI_1 (VRID 51) is MASTER without 10.0.0.100",
        "source dumps failing: no dump",
    ]
    empty = Snapshot(NOW, "node-b")
    assert status_table(empty, []).splitlines()[1] == (
        "(no VRRP instance known: no keepalived.conf, keepalived not answering)"
    )


def test_check_result_ok_warning_critical_and_the_perfdata() -> None:
    ok = snap()
    assert check_result(ok, evaluate(ok)) == (
        0,
        "KEEPALIVED OK - 1 instance(s), 1 MASTER here | instances=1 master=1 vips_held=1 "
        "critical=0;;1 warning=0;1 sources_failed=0;1",
    )
    failing = snap(sources=(SourceHealth("dbus", False, "bus gone"),))
    code, line = check_result(failing, evaluate(failing))
    assert code == 1 and line.startswith("KEEPALIVED WARNING - source dbus failing: bus gone | ")
    warn = snap(held=False)
    code, line = check_result(warn, evaluate(warn))
    assert code == 1 and line.startswith("KEEPALIVED WARNING - VI_1 (VRID 51) is MASTER without 10.0.0.100 |")
    assert "vips_held=0 critical=0;;1 warning=1;1" in line
    down = snap(running=False, state=None, held=False)
    code, line = check_result(down, evaluate(down))
    assert code == 2 and line.startswith("KEEPALIVED CRITICAL - keepalived is not running on node-a")
    assert "critical=1;;1" in line


def test_landing_page_says_the_overall_state_and_escapes_what_it_shows() -> None:
    ok = snap()
    page = landing_page(ok, evaluate(ok))
    assert "<title>OK - ka-exporter on node-a</title>" in page
    assert '<div id="overall" class="ok">OK' in page
    assert "1 instance, 1 MASTER here" in page
    assert '<td class="state master">MASTER</td>' in page
    assert '<a href="/metrics">Metrics</a>' in page
    evil = snap(held=False, hostname="<script>x</script>")
    page = landing_page(evil, evaluate(evil), telemetry_path="/m?a=1&b=2")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert '<div id="overall" class="warning">WARNING' in page
    assert '<li class="warning">VI_1 (VRID 51) is MASTER without 10.0.0.100</li>' in page
    assert '<a href="/m?a=1&amp;b=2">Metrics</a>' in page
    assert "no VRRP instance known" in landing_page(Snapshot(NOW, "node-b"), [])


# -- store.merge_views -----------------------------------------------------------------------------------


DUMP = view(VrrpState.BACKUP, master_router=PEER, effective_priority=90)  # the detail only dumps carry


def test_merge_views_nothing_known_is_none() -> None:
    assert merge_views({}) is None


def test_merge_views_dbus_state_wins_while_dbus_is_current_the_dumps_keep_their_detail() -> None:
    (m,) = merge_views({"dumps": (DUMP,), "dbus": (view(VrrpState.MASTER),)}) or ()
    assert m == replace(DUMP, state=VrrpState.MASTER)
    (m,) = merge_views({"dumps": (DUMP,), "dbus": (view(VrrpState.MASTER),)}, dbus_current=False) or ()
    assert m == DUMP
    (m,) = merge_views({"dumps": (DUMP,), "dbus": (view(None),)}) or ()
    assert m == DUMP  # D-Bus knows the instance but not its state
    (m,) = merge_views({"dbus": (view(VrrpState.MASTER),)}) or ()
    assert m == view(VrrpState.MASTER)


def test_merge_views_an_instance_dbus_does_not_know_has_no_state() -> None:
    other = view(VrrpState.MASTER, name="VI_2")
    got = merge_views({"dumps": (DUMP, other), "dbus": (view(VrrpState.MASTER),)}) or ()
    assert [(v.name, v.state) for v in got] == [("VI_1", VrrpState.MASTER), ("VI_2", None)]


def test_merge_views_the_fifo_beats_the_dumps_but_not_a_current_dbus() -> None:
    fifo = view(VrrpState.FAULT, effective_priority=50)
    (m,) = merge_views({"dumps": (DUMP,), "fifo": (fifo,)}) or ()
    assert m == replace(DUMP, state=VrrpState.FAULT, effective_priority=50)
    (m,) = merge_views({"dumps": (DUMP,), "fifo": (fifo,)}, fifo_current=False) or ()
    assert m == DUMP
    (m,) = merge_views({"dumps": (DUMP,), "dbus": (view(VrrpState.MASTER),), "fifo": (fifo,)}) or ()
    assert m.state == VrrpState.MASTER
    (m,) = merge_views({"fifo": (fifo,)}) or ()
    assert m == fifo


def test_merge_views_stopped_reads_stop_for_every_known_and_configured_instance() -> None:
    config = conf("VI_1", "VI_2")
    got = merge_views({"dumps": (view(VrrpState.MASTER),)}, stopped=True, config=config) or ()
    assert [(v.name, v.state, v.wanted_state) for v in got] == [
        ("VI_1", VrrpState.STOP, VrrpState.STOP),
        ("VI_2", VrrpState.STOP, VrrpState.STOP),
    ]
    assert got[1] == InstanceView(
        "VI_2",
        "eth0",
        52,
        state=VrrpState.STOP,
        wanted_state=VrrpState.STOP,
        vips=("10.0.0.101",),
    )
    assert merge_views({}, stopped=True, config=None) is None
