"""keepalived's .data/.stats/.json dumps, 1.3.5 through 2.4.3, parsed to what the fixtures README states.

The fixtures are real dumps (tests/fixtures, vendored; other projects' dumps from ../shared/fixtures/peers when present). Every expectation below is written from
the README's tables, not from the parser's output.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ka_exporter.model import InstanceView, VrrpState
from ka_exporter.parse.dumps import DumpError, combine, parse_data, parse_dumps, parse_json, parse_stats
from tests.conftest import FIXTURES, PEERS

PASSWORD = "kaT3st01"
VERSIONS = [
    "keepalived-1.3.5",
    "keepalived-2.0.20",
    "keepalived-2.1.5",
    "keepalived-2.2.7-debian",
    "keepalived-2.2.8",
    "keepalived-2.4.3",
]
M, B, F = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT

# README "Main scenario": iname -> (vrid, family, version, state, base prio, effective prio,
#                                   master router (BACKUP only), VIPs, sync group, auth)
NODE_A = {
    "VI_WEB": (51, "inet", 2, M, 150, 150, None, ("10.97.0.100", "10.97.0.101"), None, "PASS"),
    "VI_DB": (52, "inet", 2, B, 100, 80, "10.97.0.2", ("10.97.0.110",), None, "PASS"),
    "VI_APP": (53, "inet", 2, M, 120, 120, None, ("10.97.0.120",), "SG_APP", "NONE"),
    "VI_APP6": (54, "inet6", 3, M, 120, 120, None, ("fd97::120",), "SG_APP", "NONE"),
}
NODE_B = {
    "VI_WEB": (51, "inet", 2, B, 100, 100, "10.97.0.1", ("10.97.0.100", "10.97.0.101"), None, "PASS"),
    "VI_DB": (52, "inet", 2, M, 150, 130, None, ("10.97.0.110",), None, "PASS"),
    "VI_APP": (53, "inet", 2, B, 110, 110, "10.97.0.1", ("10.97.0.120",), "SG_APP", "NONE"),
    "VI_APP6": (54, "inet6", 3, B, 110, 110, "fe80::97:ff:fe00:1", ("fd97::120",), "SG_APP", "NONE"),
}
NODE_A_FAULT = {**NODE_A, "VI_DB": (52, "inet", 2, F, 100, 80, None, ("10.97.0.110",), None, "PASS")}
MAIN = {"node-a": NODE_A, "node-b": NODE_B, "node-a-fault": NODE_A_FAULT}
# what a BACKUP heard from its master (README: "master priority 130"; masters advertise 150 / 120)
MASTER_PRIO = {("node-a", "VI_DB"): 130, ("node-b", "VI_WEB"): 150, ("node-b", "VI_APP"): 120}
MASTER_PRIO[("node-b", "VI_APP6")] = 120


def read(path: Path) -> bytes:
    return path.read_bytes()


def load(d: Path, use_json: bool) -> tuple[InstanceView, ...]:
    data = read(d / "keepalived.data")
    if use_json:
        return parse_dumps(data, None, read(d / "keepalived.json"))
    stats = d / "keepalived.stats"  # some of the peers' bundles have no .stats
    return parse_dumps(data, read(stats) if stats.exists() else None)


def by_name(views: tuple[InstanceView, ...]) -> dict[str, InstanceView]:
    return {v.name: v for v in views}


MAIN_CASES = [
    pytest.param(v, n, j, id=f"{v}-{n}-{'json' if j else 'stats'}")
    for v in VERSIONS
    for n in MAIN
    for j in (False, True)
    if not (j and v == "keepalived-1.3.5")  # 1.3.5 has no JSON dump
]


@pytest.mark.parametrize(("version", "node", "use_json"), MAIN_CASES)
def test_main_scenario_as_the_readme_states(version: str, node: str, use_json: bool) -> None:
    views = by_name(load(FIXTURES / version / node, use_json))
    assert set(views) == set(MAIN[node])
    for iname, expected in MAIN[node].items():
        vrid, family, ver, state, prio, eff, mrouter, vips, group, auth = expected
        v = views[iname]
        got = (v.vrid, v.family, v.version, v.state, v.priority, v.effective_priority)
        assert got == (vrid, family, ver, state, prio, eff), iname
        assert (v.master_router, v.vips, v.sync_group, v.auth_type) == (mrouter, vips, group, auth), iname
        assert v.master_priority == MASTER_PRIO.get((node, iname)), iname
        assert v.interface == "eth0"
        assert v.advert_int == 1.0
        assert v.preempt is (iname != "VI_DB")  # VI_DB has nopreempt
        assert v.stats is not None
        assert v.last_transition is not None
        assert 1795_600_000 < v.last_transition < 1795_700_000  # the VM's November 2026 clock


@pytest.mark.parametrize(("version", "node", "use_json"), MAIN_CASES)
def test_track_scripts_and_interfaces(version: str, node: str, use_json: bool) -> None:
    db = by_name(load(FIXTURES / version / node, use_json))["VI_DB"]
    scripts = {s.name: (s.weight, s.status) for s in db.tracked_scripts}
    assert scripts == {"chk_ok": (0, "GOOD"), "chk_bad": (-20, "BAD")}
    assert [(i.name, i.up) for i in db.tracked_interfaces] == [("trk0", node != "node-a-fault")]
    web = by_name(load(FIXTURES / version / node, use_json))["VI_WEB"]
    assert web.tracked_scripts == ()
    assert web.tracked_interfaces == ()


@pytest.mark.parametrize("version", VERSIONS[1:])
def test_installed_vips_are_the_masters(version: str) -> None:
    """keepalived >= 2.0 marks installed VIPs with " set": exactly the MASTER instances' VIPs."""
    for node in MAIN:
        for v in load(FIXTURES / version / node, False):
            assert v.vips_set == (v.vips if v.state == M else ()), (node, v.name)


@pytest.mark.parametrize("version", VERSIONS[1:])
@pytest.mark.parametrize("node", list(MAIN))
def test_json_alone_gives_state_priorities_vips_and_counters(version: str, node: str) -> None:
    views = by_name(parse_json(read(FIXTURES / version / node / "keepalived.json")))
    for iname, (vrid, _fam, ver, state, prio, eff, _mr, vips, _g, auth) in MAIN[node].items():
        v = views[iname]
        assert (v.vrid, v.version, v.state, v.priority, v.effective_priority) == (vrid, ver, state, prio, eff)
        assert (v.vips, v.auth_type) == (vips, auth)
        assert v.master_priority == MASTER_PRIO.get((node, iname))
        assert v.stats is not None
    assert views["VI_APP6"].family == "inet6"


def test_stats_counters_are_read_by_name() -> None:
    stats = parse_stats(read(FIXTURES / "keepalived-1.3.5" / "node-a" / "keepalived.stats"))
    assert stats["VI_WEB"].advert_sent == 10
    assert stats["VI_WEB"].become_master == 1
    assert stats["VI_DB"].advert_rcvd == 9
    assert stats["VI_DB"].advert_sent == 0
    # 2.4.3 adds an "Authentication Extension Errors" block to every instance: skipped, not confused
    new = parse_stats(read(FIXTURES / "keepalived-2.4.3" / "node-a" / "keepalived.stats"))
    assert new["VI_WEB"].invalid_authtype == 0
    assert new["VI_WEB"].advert_rcvd == 2
    assert new["VI_WEB"].advert_sent == 8


# -- the pcap scenarios (all keepalived 2.2.7) ----------------------------------------------------

# name -> node -> (state, priority, master router, vrid, vips, auth, advert interval)
V2 = ("10.97.0.100", "10.97.0.101")
PCAP = {
    "v2-multicast-pass": {"node-a": (M, 150, None), "node-b": (B, 100, "10.97.0.1")},
    "v2-ah": {"node-a": (M, 150, None), "node-b": (B, 100, "10.97.0.1")},
    "v3-ipv4-fast": {"node-a": (M, 150, None), "node-b": (B, 100, "10.97.0.1")},
    "v3-ipv6": {"node-a": (M, 150, None), "node-b": (B, 100, "fe80::97:ff:fe00:1")},
    "v2-unicast": {"node-a": (M, 150, None), "node-b": (B, 100, "10.97.0.1")},
    "split-brain": {"node-a": (M, 150, None), "node-b": (M, 100, None)},
    "failover-prio0": {"node-b": (M, 100, None)},
    "vrid-conflict": {"node-a": (M, 150, None), "node-b": (B, 100, "10.97.0.1"), "node-c": (M, 120, None)},
}
PCAP_INSTANCE = {
    "v2-multicast-pass": (51, V2, "PASS", 1.0, "inet", 2),
    "v2-ah": (61, ("10.97.0.161",), "AH", 1.0, "inet", 2),
    "v3-ipv4-fast": (71, ("10.97.0.171",), "NONE", 0.1, "inet", 3),
    "v3-ipv6": (81, ("fe80::97:81", "fd97::181"), "NONE", 1.0, "inet6", 3),
    "v2-unicast": (51, V2, "PASS", 1.0, "inet", 2),
    "split-brain": (51, V2, "PASS", 1.0, "inet", 2),
    "failover-prio0": (51, V2, "PASS", 1.0, "inet", 2),
    "vrid-conflict": (51, V2, "PASS", 1.0, "inet", 2),
}
PCAP_CASES = [
    pytest.param(s, n, j, id=f"{s}-{n}-{'json' if j else 'stats'}")
    for s, nodes in PCAP.items()
    for n in nodes
    for j in (False, True)
]


@pytest.mark.parametrize(("scenario", "node", "use_json"), PCAP_CASES)
def test_pcap_scenario_dumps(scenario: str, node: str, use_json: bool) -> None:
    (view,) = load(FIXTURES / "pcap" / scenario / node, use_json)
    state, prio, mrouter = PCAP[scenario][node]
    vrid, vips, auth, advert, family, version = PCAP_INSTANCE[scenario]
    if scenario == "vrid-conflict" and node == "node-c":
        vips, advert = ("10.97.0.150",), 2.0  # the intruder: advert_int 2, its own VIP list
    assert view.name == "VI_1"
    assert (view.state, view.priority, view.master_router) == (state, prio, mrouter)
    assert (view.vrid, view.vips, view.auth_type, view.advert_int) == (vrid, vips, auth, advert)
    assert (view.family, view.version) == (family, version)


def test_pcap_counters_the_readme_mentions() -> None:
    (b,) = load(FIXTURES / "pcap" / "failover-prio0" / "node-b", False)
    assert b.stats is not None
    assert b.stats.pri_zero_rcvd == 1  # "stats show Priority Zero: Received: 1"
    (c,) = load(FIXTURES / "pcap" / "vrid-conflict" / "node-c", False)
    assert c.stats is not None
    assert c.stats.advert_sent == 1  # "c sends exactly ONE advertisement after becoming MASTER"


# -- the password never gets in -------------------------------------------------------------------


def all_fixture_dirs() -> list[Path]:
    """Our own recorded dumps, and the peers' real dumps when ../shared has them (never committed)."""
    dirs = {p.parent for p in FIXTURES.glob("**/keepalived.data")}
    dirs |= {p.parent for p in PEERS.glob("**/keepalived.data")}
    return sorted(dirs)


def fixture_id(d: Path) -> str:
    return f"peers/{d.relative_to(PEERS)}" if d.is_relative_to(PEERS) else str(d.relative_to(FIXTURES))


def test_fixtures_really_contain_the_password() -> None:
    """Guards the next test: it would prove nothing if the dumps held no password."""
    assert PASSWORD.encode() in read(FIXTURES / "keepalived-2.2.7-debian" / "node-a" / "keepalived.data")
    assert PASSWORD.encode() in read(FIXTURES / "keepalived-2.2.7-debian" / "node-a" / "keepalived.json")


@pytest.mark.parametrize("d", all_fixture_dirs(), ids=fixture_id)
def test_password_never_reaches_a_record(d: Path) -> None:
    text = repr(load(d, False))
    if (d / "keepalived.json").exists():
        text += repr(load(d, True)) + repr(parse_json(read(d / "keepalived.json")))
    assert PASSWORD not in text
    assert "auth_data" not in text


# -- parse by key: unknown lines, sections, kept-back formats --------------------------------------


def test_unknown_lines_lists_and_sections_change_nothing() -> None:
    original = (FIXTURES / "keepalived-2.2.8" / "node-a" / "keepalived.data").read_text()
    noisy = original.replace(
        "   Effective priority = ",
        "   Some future key = 42\n   Future list (2):\n     10.1.2.3/8 via 10.0.0.1\n     item\n"
        "   Effective priority = ",
    ).replace(
        "------< VRRP Scripts >------",
        "------< Future section >------\n State = FAULT\n Virtual Router ID = 9\n------< VRRP Scripts >------",
    )
    assert noisy != original
    assert parse_data(noisy) == parse_data(original)


def test_route_lines_after_a_vip_list_are_not_taken_for_vips() -> None:
    original = (FIXTURES / "keepalived-1.3.5" / "node-a" / "keepalived.data").read_text()
    # a 1.3-style counted list keepalived prints for virtual_routes, right after the VIP list
    routed = original.replace(
        "     10.97.0.120/24 dev eth0 scope global\n",
        "     10.97.0.120/24 dev eth0 scope global\n   Virtual Routes = 1\n     10.50.0.0/16 via 10.97.0.254\n",
    )
    assert routed != original
    assert by_name(parse_data(routed))["VI_APP"].vips == ("10.97.0.120",)


def test_a_1_4_style_dump_as_the_readme_describes_it() -> None:
    """1.4.5 is kept back: per the README it has "Effective priority", "trk0 weight 0" lists, a VRRP
    Scripts section and one NIC section per interface at the end with "is UP"/"is RUNNING" lines."""
    text = (
        "------< VRRP Topology >------\n"
        " VRRP Instance = VI_DB\n"
        "   VRRP Version = 2\n"
        "   State = BACKUP\n"
        "   Master router = 10.97.0.2\n"
        "   Master priority = 130\n"
        "   Listening device = eth0\n"
        "   Virtual Router ID = 52\n"
        "   Priority = 100\n"
        "   Effective priority = 80\n"
        "   Advert interval = 1 sec\n"
        "   Preempt = disabled\n"
        "   Authentication type = SIMPLE_PASSWORD\n"
        f"   Password = {PASSWORD}\n"
        "   Tracked interfaces = 1\n"
        "     trk0 weight 0\n"
        "   Tracked scripts = 2\n"
        "     chk_ok weight 0\n"
        "     chk_bad weight -20\n"
        "   Virtual IP = 1\n"
        "     10.97.0.110/24 dev eth0 scope global\n"
        "------< VRRP Scripts >------\n"
        " VRRP Script = chk_ok\n"
        "   Status = GOOD\n"
        " VRRP Script = chk_bad\n"
        "   Status = BAD\n"
        "------< NIC >------\n"
        " Name = eth0\n"
        " is UP\n"
        " is RUNNING\n"
        "------< NIC >------\n"
        " Name = trk0\n"
        " is DOWN\n"
    )
    (v,) = parse_data(text)
    assert (v.name, v.vrid, v.state, v.priority, v.effective_priority) == ("VI_DB", 52, B, 100, 80)
    assert (v.master_router, v.master_priority, v.preempt, v.auth_type) == ("10.97.0.2", 130, False, "PASS")
    assert [(s.name, s.weight, s.status) for s in v.tracked_scripts] == [
        ("chk_ok", 0, "GOOD"),
        ("chk_bad", -20, "BAD"),
    ]
    assert [(i.name, i.up) for i in v.tracked_interfaces] == [("trk0", False)]
    assert PASSWORD not in repr(v)


def test_json_in_the_1_4_style_and_the_json_version_2_object() -> None:
    raw = json.loads(read(FIXTURES / "keepalived-2.0.20" / "node-a" / "keepalived.json"))
    expected = parse_json(json.dumps(raw))
    # 1.4.5: pretty-printed, VIPs without prefix, track_ifp [""], script paths, empty evips/vroutes
    old = json.loads(json.dumps(raw))
    for entry in old:
        entry["data"]["vips"] = [v.split("/")[0] for v in entry["data"].get("vips", [])]
        entry["data"].setdefault("track_ifp", [""])
        entry["data"].update(evips=[], vroutes=[], vrules=[])
    old_views = parse_json(json.dumps(old, indent=2))
    for a, b in zip(old_views, expected, strict=True):
        assert (a.name, a.state, a.priority, a.vips) == (b.name, b.state, b.priority, b.vips)
    assert all(i.name for v in old_views for i in v.tracked_interfaces)  # the buggy [""] is dropped
    # json_version 2: {"vrrp": [...], "track_process": [...]}
    v2 = json.dumps({"vrrp": raw, "track_process": [{"process": "haproxy", "have_quorum": True}]})
    assert parse_json(v2) == expected


def test_mixed_versions_combine_by_instance_name() -> None:
    """data from 1.3.5 with stats from 2.4.3, and data from 2.0.20 with JSON from 2.4.3."""
    data = parse_data(read(FIXTURES / "keepalived-1.3.5" / "node-a" / "keepalived.data"))
    stats = parse_stats(read(FIXTURES / "keepalived-2.4.3" / "node-a" / "keepalived.stats"))
    views = by_name(combine(data, stats))
    assert views["VI_WEB"].stats == stats["VI_WEB"]
    assert views["VI_DB"].state == B
    # stats in another order than the data: matched by name, not position
    reordered = dict(reversed(list(stats.items())))
    assert combine(data, reordered) == combine(data, stats)
    old = parse_data(read(FIXTURES / "keepalived-2.0.20" / "node-b" / "keepalived.data"))
    new_json = parse_json(read(FIXTURES / "keepalived-2.4.3" / "node-b" / "keepalived.json"))
    mixed = by_name(combine(old, None, new_json))
    assert mixed["VI_DB"].state == M
    assert mixed["VI_APP"].sync_group == "SG_APP"  # from the data dump
    assert {s.name for s in mixed["VI_DB"].tracked_scripts} == {"chk_ok", "chk_bad"}


# -- what is rejected, and how ---------------------------------------------------------------------

DATA_243 = FIXTURES / "keepalived-2.4.3" / "node-a" / "keepalived.data"
DATA_135 = FIXTURES / "keepalived-1.3.5" / "node-a" / "keepalived.data"
STATS_243 = FIXTURES / "keepalived-2.4.3" / "node-a" / "keepalived.stats"
JSON_228 = FIXTURES / "keepalived-2.2.8" / "node-a" / "keepalived.json"


def error_of(fn: object, raw: str | bytes, name: str = "dump") -> str:
    with pytest.raises(DumpError) as info:
        fn(raw, name)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    assert PASSWORD not in message
    return message


@pytest.mark.parametrize("fn", [parse_data, parse_stats, parse_json])
def test_empty_and_binary_files(fn: object) -> None:
    assert "empty file" in error_of(fn, b"")
    assert "empty file" in error_of(fn, "  \n\n")
    assert "binary" in error_of(fn, b"\x7fELF\x02\x01\x01\x00\x00\x00garbage\n")
    assert "not UTF-8" in error_of(fn, b"\xff\xfe\xfa garbage without nul\n")


def test_truncated_mid_line_names_file_and_line() -> None:
    raw = read(DATA_243)
    cut = raw[: raw.index(b"Virtual Router ID = 52") + 10]
    assert error_of(parse_data, cut, "/tmp/keepalived.data").startswith("/tmp/keepalived.data:")
    assert "truncated" in error_of(parse_data, cut)


def test_truncated_at_a_line_end_before_the_vrid_rejects_the_whole_dump() -> None:
    raw = read(DATA_243)
    cut = raw[: raw.index(b"   Interface = eth0", raw.index(b"VI_DB"))]
    message = error_of(parse_data, cut, "k.data")
    assert "VI_DB" in message
    assert "Virtual Router ID" in message
    assert re.match(r"k\.data:\d+: ", message)


def test_garbage_instances_are_never_produced() -> None:
    text = read(DATA_135).decode()
    assert "without a name" in error_of(parse_data, text.replace("VRRP Instance = VI_DB", "VRRP Instance ="))
    assert "appears twice" in error_of(
        parse_data, text.replace("VRRP Instance = VI_DB", "VRRP Instance = VI_WEB")
    )
    assert "not in 1..255" in error_of(parse_data, text.replace("Router ID = 52", "Router ID = 300"))
    assert "not a number: 'x52'" in error_of(parse_data, text.replace("Router ID = 52", "Router ID = x52"))
    assert "not a keepalived data dump" in error_of(parse_data, "hello\nworld\n")
    password_line = text.replace(f"Password = {PASSWORD}\n", f"Password = {PASSWORD} = 7 (:\n")
    assert PASSWORD not in repr(parse_data(password_line))


def test_stats_problems() -> None:
    text = read(STATS_243).decode()
    block_end = text.index("VRRP Instance: VI_DB")
    without_last = text[: text.index("  Priority Zero:")] + text[block_end:]  # VI_WEB's last block cut
    assert "VI_WEB: counters incomplete" in error_of(parse_stats, without_last)
    assert "not a number" in error_of(parse_stats, text.replace("Received: 2", "Received: two", 1))
    assert "not a keepalived stats dump" in error_of(parse_stats, "Advertisements:\n  Received: 1\n")
    assert "appears twice" in error_of(parse_stats, text + text)


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        ("{", "not valid JSON"),
        ('{"foo": []}', "without a 'vrrp' array"),
        ("[1]", "not an object"),
        ('[{"stats": {}}]', "no 'data' object"),
        ('[{"data": {"vrid": 51}}]', "no instance name"),
        ('[{"data": {"iname": "VI_1"}}]', "'vrid' is missing"),
        ('[{"data": {"iname": "VI_1", "vrid": "51"}}]', "'vrid' is not a number"),
        ('[{"data": {"iname": "VI_1", "vrid": 0}}]', "not in 1..255"),
        ('[{"data": {"iname": "VI_1", "vrid": 5, "vips": "10.0.0.1"}}]', "not a list of strings"),
        ('[{"data": {"iname": "VI_1", "vrid": 5, "vips": ["bogus"]}}]', "not an address"),
        ('[{"data": {"iname": "VI_1", "vrid": 5}, "stats": {"advert_rcvd": -1}}]', "negative"),
        ("[" + "[" * 100000 + "]" * 100000 + "]", "JSON"),
    ],
)
def test_json_problems(doc: str, what: str) -> None:
    assert what in error_of(parse_json, doc)


def test_json_auth_data_is_never_read() -> None:
    doc = [{"data": {"iname": "VI_1", "vrid": 5, "auth_type": 1, "auth_data": PASSWORD}}]
    (v,) = parse_json(json.dumps(doc))
    assert v.auth_type == "PASS"
    assert PASSWORD not in repr(v)
    doc[0]["data"]["vrid"] = PASSWORD  # a value quoted nowhere: the error names the key only
    assert "'vrid' is not a number" in error_of(parse_json, json.dumps(doc))


def test_dumps_naming_different_instances_are_rejected() -> None:
    data = parse_data(read(DATA_243))
    stats = parse_stats(read(STATS_243))
    fewer = {k: v for k, v in stats.items() if k != "VI_APP6"}
    with pytest.raises(DumpError, match=r"name different instances \(VI_APP6\)"):
        combine(data, fewer)
    with pytest.raises(DumpError, match="alone does not identify"):
        combine(None, stats)
    json_views = parse_json(read(JSON_228))
    with pytest.raises(DumpError, match="name different instances"):
        combine(data[:2], None, json_views)
    renamed = tuple(replace(v, name=v.name + "_X") if v.name == "VI_DB" else v for v in data)
    with pytest.raises(DumpError, match="VI_DB"):
        combine(renamed, stats)


# -- nothing but DumpError, whatever the input -----------------------------------------------------

PARSERS = {".data": parse_data, ".stats": parse_stats, ".json": parse_json}
ALL_FILES = sorted(
    p for p in FIXTURES.glob("**/keepalived.*") if p.suffix in PARSERS and p.name.count(".") == 1
)


def check_result(result: object) -> None:
    """A valid parse never holds a garbage instance."""
    views = result.values() if isinstance(result, dict) else result
    for v in views:  # type: ignore[attr-defined]
        if isinstance(v, InstanceView):
            assert v.name.strip()
            assert 1 <= v.vrid <= 255
    assert PASSWORD not in repr(result)


def parse_or_error(path: Path, raw: bytes) -> bool:
    """True if it parsed (to sane records), False if rejected with a one-line DumpError."""
    message = ""
    try:
        check_result(PARSERS[path.suffix](raw, path.name))
    except DumpError as exc:
        message = str(exc)
    assert "\n" not in message
    assert PASSWORD not in message
    return not message


@pytest.mark.parametrize(
    "path",
    [DATA_135, FIXTURES / "keepalived-2.2.7-debian" / "node-b" / "keepalived.data", STATS_243, JSON_228],
    ids=lambda p: str(p.relative_to(FIXTURES)),
)
def test_truncated_at_every_byte_offset(path: Path) -> None:
    raw = read(path)
    parsed = [end for end in range(len(raw) + 1) if parse_or_error(path, raw[:end])]
    assert parsed[-1] == len(raw)
    if path.suffix == ".json":
        assert parsed == [len(raw) - 1, len(raw)]  # only the whole document (with or without its newline)
    else:
        # a cut that lands on a line end may look complete; every other cut is rejected
        assert all(raw[:end].endswith(b"\n") for end in parsed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(ALL_FILES), data=st.data())
def test_any_fixture_truncated_anywhere(path: Path, data: st.DataObject) -> None:
    raw = read(path)
    end = data.draw(st.integers(min_value=0, max_value=len(raw)))
    parse_or_error(path, raw[:end])


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(ALL_FILES), data=st.data())
def test_any_fixture_with_lines_dropped_duplicated_or_garbled(path: Path, data: st.DataObject) -> None:
    lines = read(path).split(b"\n")
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "garble", "indent"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "garble":
            lines[i] = data.draw(st.binary(max_size=40))
        else:
            lines[i] = b"      " + lines[i]
        if not lines:
            lines = [b""]
    parse_or_error(path, b"\n".join(lines))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=400), suffix=st.sampled_from(sorted(PARSERS)))
def test_random_bytes(raw: bytes, suffix: str) -> None:
    parse_or_error(Path("keepalived" + suffix), raw)
