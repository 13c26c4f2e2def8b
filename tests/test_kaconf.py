"""keepalived.conf reader (ka_exporter.parse.kaconf) and the config source (sources.config).

Expectations for the recorded configs are written out from tests/fixtures/README.txt, not
from the parser's own output. The oracle test runs the real keepalived's config check (-t) in a
fresh network namespace and demands that it and the reader complain about the same lines.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ka_exporter.model import ConfInstance, KeepalivedConfig
from ka_exporter.parse.kaconf import (
    MAX_INCLUDE_DEPTH,
    ConfigError,
    load_config,
    parse_text,
    read_config,
)
from ka_exporter.sources.config import ConfigSource
from ka_exporter.store import Store
from tests.conftest import FIXTURES, PEERS, PEERS_ABSENT

PASSWORD = "kaT3st01"
ALL_CONFS = sorted(FIXTURES.glob("**/keepalived.conf"))
# keepalived.conf files of the recorded VRRP scenarios (the LVS capture's config has no auth)
# (nor do the track_process / track_file captures under keepalived-2.2.7-debian/track/)
VRRP_CONFS = [
    p
    for p in ALL_CONFS
    if p.relative_to(FIXTURES).parts[0] != "lvs-2.2.7-uml" and p.relative_to(FIXTURES).parts[1] != "track"
]
# other projects' configs, read from ../shared only (never committed); their tests skip without them
PEER_CONFS = sorted(PEERS.glob("**/keepalived.conf"))


def by_name(cfg: KeepalivedConfig) -> dict[str, ConfInstance]:
    return {i.name: i for i in cfg.instances}


def vips(inst: ConfInstance) -> list[str]:
    return [f"{v.address}/{v.prefixlen}" for v in inst.vips]


def lines_of(cfg: KeepalivedConfig) -> list[int]:
    return [p.line for p in cfg.problems]


def assert_no_secret(cfg: KeepalivedConfig, secret: str = PASSWORD) -> None:
    assert secret not in repr(cfg)
    for p in cfg.problems:
        assert secret not in str(p)


def assert_one_line_problems(cfg: KeepalivedConfig) -> None:
    for p in cfg.problems:
        text = str(p)
        assert text.isprintable(), text
        assert text.startswith(f"{p.file}:{p.line}: ")


# --------------------------------------------------------------------------------------------------
# the recorded configs parse to what the fixtures README says
# --------------------------------------------------------------------------------------------------

# README "Main scenario": (state, priority) per node; everything else is the same on a and b.
MAIN_NODE = {
    "a": {
        "VI_WEB": ("MASTER", 150),
        "VI_DB": ("BACKUP", 100),
        "VI_APP": ("MASTER", 120),
        "VI_APP6": ("MASTER", 120),
    },
    "b": {
        "VI_WEB": ("BACKUP", 100),
        "VI_DB": ("BACKUP", 150),
        "VI_APP": ("BACKUP", 110),
        "VI_APP6": ("BACKUP", 110),
    },
}

# README "pcap/": scenario -> (vrid, VIPs, auth, advert_int, family, version, {node: (state, prio)})
PAIR = {"node-a": ("MASTER", 150), "node-b": ("BACKUP", 100)}
V2_PAIR = (51, ["10.97.0.100/24", "10.97.0.101/24"], "PASS", 1.0, "inet", None, PAIR)
PCAP = {
    "v2-multicast-pass": V2_PAIR,
    "split-brain": V2_PAIR,
    "failover-prio0": V2_PAIR,
    "v2-unicast": V2_PAIR,
    "v2-ah": (61, ["10.97.0.161/24"], "AH", 1.0, "inet", None, PAIR),
    "v3-ipv4-fast": (71, ["10.97.0.171/24"], None, 0.1, "inet", 3, PAIR),
    "v3-ipv6": (81, ["fe80::97:81/64", "fd97::181/64"], None, 1.0, "inet6", 3, PAIR),
    "vrid-conflict": (51, ["10.97.0.100/24", "10.97.0.101/24"], "PASS", 1.0, "inet", None, PAIR),
}


def check_main_scenario(cfg: KeepalivedConfig, node: str) -> None:
    assert cfg.router_id == f"fx-node-{node}"
    inst = by_name(cfg)
    assert list(inst) == ["VI_WEB", "VI_DB", "VI_APP", "VI_APP6"]
    assert {n: (i.state, i.priority) for n, i in inst.items()} == MAIN_NODE[node]
    assert {n: i.vrid for n, i in inst.items()} == {"VI_WEB": 51, "VI_DB": 52, "VI_APP": 53, "VI_APP6": 54}
    assert all(i.interface == "eth0" and i.advert_int == 1.0 for i in inst.values())
    web, db, app, app6 = inst["VI_WEB"], inst["VI_DB"], inst["VI_APP"], inst["VI_APP6"]
    assert vips(web) == ["10.97.0.100/24", "10.97.0.101/24"]
    assert vips(db) == ["10.97.0.110/24"]
    assert vips(app) == ["10.97.0.120/24"]
    assert vips(app6) == ["fd97::120/64"]
    assert [v.dev for i in inst.values() for v in i.vips] == ["eth0"] * 5
    assert (web.auth_type, db.auth_type, app.auth_type, app6.auth_type) == ("PASS", "PASS", None, None)
    assert db.nopreempt and not web.nopreempt and not app.nopreempt
    assert db.track_interfaces == ("trk0",)
    assert db.track_scripts == ("chk_ok", "chk_bad")
    assert web.track_scripts == () and web.track_interfaces == ()
    # VRRPv2 instances configure no version (keepalived's default applies): the record says None
    assert (web.version, db.version, app.version, app6.version) == (None, None, None, 3)
    assert [i.family for i in inst.values()] == ["inet", "inet", "inet", "inet6"]
    assert (app.sync_group, app6.sync_group, web.sync_group, db.sync_group) == (
        "SG_APP",
        "SG_APP",
        None,
        None,
    )
    assert cfg.sync_groups == (("SG_APP", ("VI_APP", "VI_APP6")),)
    assert [(s.name, s.script, s.interval, s.weight) for s in cfg.scripts] == [
        ("chk_ok", "/usr/bin/true", 1.0, 0),
        ("chk_bad", "/usr/bin/false", 1.0, -20),
    ]
    assert cfg.vrrp_version is None and not cfg.enable_dbus


def check_pcap_scenario(cfg: KeepalivedConfig, scenario: str, node: str) -> None:
    assert cfg.router_id == f"fx-{node}"
    (inst,) = cfg.instances
    if scenario == "vrid-conflict" and node == "node-c":
        # README: third router, vrid 51, prio 120, advert_int 2, VIP 10.97.0.150/24 only, same PASS
        assert (inst.vrid, inst.priority, inst.advert_int, vips(inst)) == (51, 120, 2.0, ["10.97.0.150/24"])
        assert inst.auth_type == "PASS"
        return
    vrid, want_vips, auth, advert, family, version, states = PCAP[scenario]
    assert inst.name == "VI_1" and inst.interface == "eth0"
    assert (inst.vrid, vips(inst), inst.auth_type, inst.advert_int) == (vrid, want_vips, auth, advert)
    assert (inst.family, inst.version) == (family, version)
    assert (inst.state, inst.priority) == states[node]
    if scenario == "v3-ipv4-fast":
        assert cfg.vrrp_version == 3  # global_defs vrrp_version 3, inherited by the instance
    if scenario == "v2-unicast":
        me, peer = ("10.97.0.1", "10.97.0.2") if node == "node-a" else ("10.97.0.2", "10.97.0.1")
        assert (inst.unicast_src_ip, inst.unicast_peers) == (me, (peer,))
    else:
        assert (inst.unicast_src_ip, inst.unicast_peers) == (None, ())


def test_fixture_corpus_is_there() -> None:
    # 6 versions x 3 nodes + 8 pcap scenarios x 2 nodes + node-c: a vanished corpus must not pass
    assert len(ALL_CONFS) >= 35


@pytest.mark.parametrize("path", ALL_CONFS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_config_parses_as_readme_says(path: Path) -> None:
    cfg = read_config(path)
    assert cfg.problems == ()
    assert cfg.files == (str(path),)
    rel = path.relative_to(FIXTURES).parts
    if rel[0] == "pcap":
        check_pcap_scenario(cfg, rel[1], rel[2])
    elif rel[0] == "lvs-2.2.7-uml":
        # README there: vrrp_instance VI_LVS holds the VIP 10.140.0.100 on cl0
        (inst,) = cfg.instances
        assert (inst.name, inst.interface, inst.vrid) == ("VI_LVS", "cl0", 140)
        assert [v.address for v in inst.vips] == ["10.140.0.100"]
    elif rel[1] == "track":
        check_track_scenario(cfg, rel[2])
    else:
        assert rel[0].startswith("keepalived-")
        check_main_scenario(cfg, "b" if rel[1] == "node-b" else "a")
    assert_no_secret(cfg)


def check_track_scenario(cfg: KeepalivedConfig, scenario: str) -> None:
    """README "track/": the excluded VIPs are listed after the VIPs, marked excluded."""
    first = cfg.instances[0]
    marked = [(v.address, v.excluded) for v in first.vips]
    if scenario == "given":
        assert marked == [("10.250.0.100", False), ("10.250.0.200", True)]
    elif scenario.startswith("bfd-"):
        assert marked == [("10.252.0.100", False)]
    elif scenario.startswith("netns-"):
        assert marked == [("10.251.0.100", False), ("10.251.0.200", True), ("fd51::200", True)]
        assert [(v.address, v.excluded) for v in cfg.instances[1].vips] == [("10.251.0.101", False)]
    else:
        assert marked == [("10.251.0.100", False), ("10.251.0.200", True)]


# --------------------------------------------------------------------------------------------------
# syntax
# --------------------------------------------------------------------------------------------------


def test_brace_placement_comments_and_quotes() -> None:
    cfg = parse_text(
        """
        global_defs { router_id "edge 1" # a comment
          enable_dbus }
        vrrp_script chk   ! comment
        {
            script "/usr/local/bin/check --host 'db # 1' {json}"   # quoted '#', '{' are text
            interval 2.5 ; weight 10
        }
        vrrp_instance VI_X
        {
            interface eth1   ! trailing bang comment
            virtual_router_id 7#comment right after the value
            priority 200
            virtual_ipaddress { 192.0.2.1/24 dev eth1 label eth1:vip }
            track_script { chk }
            unicast_peer { 192.0.2.2
              192.0.2.3 }
        }
        """,
        "inline.conf",
    )
    assert cfg.router_id == "edge 1"
    assert cfg.enable_dbus
    (script,) = cfg.scripts
    assert script.script == "/usr/local/bin/check --host 'db # 1' {json}"
    assert script.interval == 2.5
    (inst,) = cfg.instances
    assert (inst.name, inst.interface, inst.vrid, inst.priority) == ("VI_X", "eth1", 7, 200)
    assert [(v.address, v.prefixlen, v.dev, v.label) for v in inst.vips] == [
        ("192.0.2.1", 24, "eth1", "eth1:vip")
    ]
    assert inst.track_scripts == ("chk",)
    assert inst.unicast_peers == ("192.0.2.2", "192.0.2.3")
    # "interval 2.5 ; weight 10" is one line: weight is not read (keepalived has no ';' separator)
    assert script.weight == 0
    assert cfg.problems == ()


def test_vip_forms_family_and_version_fallback() -> None:
    cfg = parse_text(
        """
        global_defs { vrrp_version 3 }
        vrrp_instance V6_BY_VIP {
            interface eth0
            virtual_router_id 10
            advert_int 0.1
            virtual_ipaddress {
                2001:db8::10/64 dev eth0
                2001:db8::11
            }
        }
        vrrp_instance V4 {
            interface eth0
            virtual_router_id 11
            version 2
            virtual_ipaddress {
                10.1.0.1 brd 10.1.0.255 dev eth0 scope global label eth0:1 no_track
            }
            virtual_ipaddress_excluded {
                10.2.0.1/16
                2001:db8::99/64
            }
        }
        vrrp_instance NATIVE {
            interface eth0
            virtual_router_id 12
            native_ipv6
        }
        """
    )
    v6, v4, native = cfg.instances
    assert (v6.family, v6.version, v6.advert_int) == ("inet6", 3, 0.1)
    assert [(v.address, v.prefixlen) for v in v6.vips] == [("2001:db8::10", 64), ("2001:db8::11", None)]
    assert (v4.family, v4.version) == ("inet", 2)
    assert [(v.address, v.dev, v.label) for v in v4.vips] == [
        ("10.1.0.1", "eth0", "eth0:1"),
        ("10.2.0.1", None, None),  # excluded VIPs are listed too, of either family
        ("2001:db8::99", None, None),
    ]
    assert (native.family, native.vips) == ("inet6", ())
    assert cfg.problems == ()


def test_unknown_keywords_and_blocks_are_ignored_silently() -> None:
    cfg = parse_text(
        """
        global_defs {
            notification_email { a@example.org b@example.org }
            smtp_server 127.0.0.1
            vrrp_garp_master_delay 5
        }
        virtual_server 10.0.0.1 80 { real_server 10.0.0.2 80 { TCP_CHECK { connect_timeout 3 } } }
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 1
            use_vmac vrrp.1
            notify_master "/bin/echo master"
            garp_master_refresh 60
            virtual_routes { 10.9.0.0/16 via 10.0.0.254 }
        }
        """
    )
    assert cfg.problems == ()
    assert [i.name for i in cfg.instances] == ["VI_1"]


def test_instance_checks_keepalived_also_makes() -> None:
    cfg = parse_text(
        """
        vrrp_instance NO_VRID {
            interface eth0
        }
        vrrp_instance NO_IF {
            virtual_router_id 2
        }
        vrrp_instance UNICAST_NO_IF {
            virtual_router_id 3
            unicast_peer { 10.0.0.2 }
        }
        vrrp_instance DUP {
            interface eth0
            virtual_router_id 3
        }
        vrrp_instance DUP2 {
            interface eth0
            virtual_router_id 3
        }
        vrrp_sync_group G { group { DUP GHOST } }
        """,
        "checks.conf",
    )
    msgs = [str(p) for p in cfg.problems]
    assert msgs == [
        "checks.conf:2: vrrp_instance 'NO_VRID' has no virtual_router_id",
        "checks.conf:5: vrrp_instance 'NO_IF' has no interface",
        "checks.conf:16: 'DUP' and 'DUP2' both use VRID 3 (inet) on 'eth0'",
        "checks.conf:20: vrrp_sync_group 'G' lists 'GHOST', not a vrrp_instance",
    ]
    inst = by_name(cfg)
    assert inst["NO_VRID"].vrid is None  # still listed: the exporter can say it is broken
    assert inst["UNICAST_NO_IF"].interface is None
    assert cfg.sync_groups == (("G", ("DUP",)),)


# --------------------------------------------------------------------------------------------------
# includes
# --------------------------------------------------------------------------------------------------

INSTANCE = "vrrp_instance {name} {{\n    interface eth0\n    virtual_router_id {vrid}\n}}\n"


def test_include_glob_is_relative_to_including_file_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "etc" / "conf.d" / "sub").mkdir(parents=True)
    main = tmp_path / "etc" / "keepalived.conf"
    main.write_text("global_defs {\n  router_id r1\n}\ninclude conf.d/*.conf\n")
    d = tmp_path / "etc" / "conf.d"
    (d / "20-b.conf").write_text(INSTANCE.format(name="B", vrid=2))
    # a relative include inside an included file resolves next to *that* file
    (d / "10-a.conf").write_text(INSTANCE.format(name="A", vrid=1) + "include sub/x.conf\n")
    (d / "sub" / "x.conf").write_text(INSTANCE.format(name="X", vrid=9))
    (d / "notes.txt").write_text("vrrp_instance NOT_INCLUDED {\n}\n")
    (d / "dir.conf").mkdir()  # a directory matching the glob is skipped, as keepalived does

    cfg = read_config(main)
    assert [i.name for i in cfg.instances] == ["A", "X", "B"]
    assert cfg.files == (str(main), str(d / "10-a.conf"), str(d / "sub" / "x.conf"), str(d / "20-b.conf"))
    assert cfg.problems == ()


def test_include_inside_a_block_and_brace_patterns(tmp_path: Path) -> None:
    (tmp_path / "vips-a.conf").write_text("192.0.2.1/24\n")
    (tmp_path / "vips-b.conf").write_text("192.0.2.2/24\n")
    main = tmp_path / "k.conf"
    main.write_text(
        "vrrp_instance V {\n  interface eth0\n  virtual_router_id 5\n"
        "  virtual_ipaddress {\n    include vips-{a,b}.conf\n  }\n}\n"
    )
    cfg = read_config(main)
    assert vips(cfg.instances[0]) == ["192.0.2.1/24", "192.0.2.2/24"]
    assert cfg.problems == ()


def test_include_missing_plain_file_is_a_problem_empty_glob_is_not(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    main = tmp_path / "k.conf"
    main.write_text("include conf.d/*.conf\n\ninclude missing.conf\n")
    cfg = read_config(main)
    assert [str(p) for p in cfg.problems] == [f"{main}:3: include 'missing.conf': no such file"]


def test_include_of_executable_file_is_skipped_like_keepalived(tmp_path: Path) -> None:
    inc = tmp_path / "x.conf"
    inc.write_text(INSTANCE.format(name="EXEC", vrid=4))
    inc.chmod(0o755)
    main = tmp_path / "k.conf"
    main.write_text(f"include {inc}\n")
    cfg = read_config(main)
    assert cfg.instances == ()
    assert lines_of(cfg) == [1]
    assert "executable" in cfg.problems[0].message


def test_include_loop_is_reported_and_cut(tmp_path: Path) -> None:
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text(INSTANCE.format(name="A", vrid=1) + "include b.conf\n")
    b.write_text(INSTANCE.format(name="B", vrid=2) + "include a.conf\ninclude b.conf\n")
    cfg = read_config(a)
    assert [i.name for i in cfg.instances] == ["A", "B"]
    assert [(p.file, p.line) for p in cfg.problems] == [(str(b), 5), (str(b), 6)]
    assert all("include loop" in p.message for p in cfg.problems)


def test_include_depth_is_bounded(tmp_path: Path) -> None:
    for i in range(MAX_INCLUDE_DEPTH + 5):
        (tmp_path / f"{i}.conf").write_text(
            INSTANCE.format(name=f"I{i}", vrid=i + 1) + f"include {i + 1}.conf\n"
        )
    cfg = read_config(tmp_path / "0.conf")
    assert len(cfg.instances) == MAX_INCLUDE_DEPTH + 1
    (problem,) = cfg.problems
    assert "nested deeper" in problem.message
    assert problem.file == str(tmp_path / f"{MAX_INCLUDE_DEPTH}.conf")


# --------------------------------------------------------------------------------------------------
# garbled input: one clear line naming file and line, never an exception
# --------------------------------------------------------------------------------------------------


def test_binary_file_is_one_problem_at_the_first_nul(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_bytes(b"global_defs {\n router_id x\n}\n\x7fELF\x02\x01\x01\x00\x00\xff\xfe\n\x00\x00")
    cfg = read_config(path)
    assert [str(p) for p in cfg.problems] == [f"{path}:4: binary data (NUL byte): not a config file, ignored"]
    assert cfg.instances == () and cfg.router_id is None


def test_extra_closing_brace(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(INSTANCE.format(name="A", vrid=1) + "}\n" + INSTANCE.format(name="B", vrid=2))
    cfg = read_config(path)
    assert [str(p) for p in cfg.problems] == [f"{path}:5: unexpected '}}' (no block is open)"]
    assert [i.name for i in cfg.instances] == ["A", "B"]


def test_unclosed_block_names_where_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        "vrrp_instance A {\n  interface eth0\n  virtual_router_id 1\n"
        "  virtual_ipaddress {\n    10.0.0.1/24\n}\n"  # the instance's '}' closes the VIP block
        "vrrp_instance B {\n  interface eth0\n  virtual_router_id 2\n}\n"
    )
    cfg = read_config(path)
    assert [str(p) for p in cfg.problems] == [
        f"{path}:1: 'vrrp_instance A' opened here is not closed at end of file (1 '}}' missing)",
        f"{path}:7: vrrp_instance inside 'vrrp_instance A': is a '}}' missing above?",
    ]


def test_stray_open_brace_and_unterminated_quote() -> None:
    cfg = parse_text('{\n  foo\n}\nglobal_defs {\n  router_id "abc\n}\n', "s.conf")
    assert [str(p) for p in cfg.problems] == [
        "s.conf:1: unexpected '{' (no keyword before it): block ignored",
        "s.conf:5: unterminated quote",
    ]
    assert cfg.router_id == "abc"


def test_missing_or_unreadable_main_file_raises_one_line_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as exc:
        read_config(missing)
    assert str(exc.value) == f"keepalived config {missing} not found"
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_config(tmp_path)


# --------------------------------------------------------------------------------------------------
# keepalived 2.x macros
# --------------------------------------------------------------------------------------------------


def test_conditional_lines_follow_config_id() -> None:
    text = """
    global_defs {
        @main router_id main_router
        @backup router_id backup_router
    }
    vrrp_instance V {
        interface eth0
        virtual_router_id 9
        @main priority 200
        @^main priority 100
        unicast_peer {
            @^main 10.0.0.1
            @^backup 10.0.0.2
        }
    }
    """
    main = parse_text(text, config_id="main")
    backup = parse_text(text, config_id="backup")
    other = parse_text(text, config_id="other")
    assert (main.router_id, main.instances[0].priority, main.instances[0].unicast_peers) == (
        "main_router",
        200,
        ("10.0.0.2",),
    )
    assert (backup.router_id, backup.instances[0].priority, backup.instances[0].unicast_peers) == (
        "backup_router",
        100,
        ("10.0.0.1",),
    )
    assert (other.router_id, other.instances[0].priority) == (None, 100)
    assert main.problems == backup.problems == other.problems == ()


def test_definitions_multiline_and_sequences() -> None:
    cfg = parse_text(
        """
        $IF=eth3
        $BASE=10.${NET}
        $NET=20
        $INSTANCE= \\
        vrrp_instance VI_${NUM} { \\
            interface $IF \\
            virtual_router_id ${NUM} \\
            virtual_ipaddress { \\
                ${BASE}.0.${NUM}/24 \\
            } \\
        }
        $NUM=1
        $INSTANCE
        $NUM=2
        $INSTANCE
        ~SEQ(N, 3, 5) vrrp_instance SEQ_${N} { interface eth0 ; virtual_router_id ${N} }
        ~LST(N, 7, 9) vrrp_instance LST_${N} { interface eth0 ; virtual_router_id ${N} }
        vrrp_instance HASH${_HASH}1 {
            interface eth0
            virtual_router_id 20
        }
        """
    )
    inst = by_name(cfg)
    assert list(inst) == ["VI_1", "VI_2", "SEQ_3", "SEQ_4", "SEQ_5", "LST_7", "LST_9", "HASH#1"]
    assert (inst["VI_2"].interface, inst["VI_2"].vrid, vips(inst["VI_2"])) == ("eth3", 2, ["10.20.0.2/24"])
    # "interface eth0 ; virtual_router_id N" is one keepalived line: the vrid is not set
    assert inst["SEQ_4"].vrid is None
    assert [p.message for p in cfg.problems] == [
        f"vrrp_instance {n!r} has no virtual_router_id" for n in ("SEQ_3", "SEQ_4", "SEQ_5", "LST_7", "LST_9")
    ]


def test_runaway_substitution_is_bounded() -> None:
    cfg = parse_text("$A=x $A\nglobal_defs {\n router_id $A\n}\n", "r.conf")
    assert [str(p) for p in cfg.problems] == [
        "r.conf:3: parameter substitution does not terminate: line ignored"
    ]
    assert cfg.router_id is None


# --------------------------------------------------------------------------------------------------
# the password never survives
# --------------------------------------------------------------------------------------------------


def test_password_is_dropped_wherever_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        f"""
        $PW={PASSWORD}
        auth_pass {PASSWORD}
        vrrp_sync_group G {{
            group {{
                V
                auth_pass {PASSWORD}
            }}
        }}
        vrrp_instance V {{
            interface eth0
            virtual_router_id 1
            auth_pass {PASSWORD}
            authentication {{
                auth_type PASS
                auth_pass ${{PW}}
            }}
            virtual_ipaddress {{
                auth_pass {PASSWORD}
            }}
            track_script {{
                auth_pass {PASSWORD}
            }}
            unicast_peer {{
                auth_pass {PASSWORD}
            }}
        }}
        vrrp_instance W {{
            interface eth0
            virtual_router_id 2
            authentication {{
                auth_type PASS
                auth_pass "{PASSWORD}-and-more {{"
                auth_pass "{PASSWORD}
            }}
        }}
        include {PASSWORD}/*.conf
        include /{PASSWORD}.conf
        """
    )
    cfg = read_config(path)
    assert cfg.problems  # plenty to complain about ...
    assert_no_secret(cfg)  # ... without ever quoting the password
    assert by_name(cfg)["V"].auth_type == "PASS"
    assert by_name(cfg)["V"].sync_group == "G"
    assert cfg.sync_groups == (("G", ("V",)),)


def test_fixture_corpus_does_carry_the_password() -> None:
    # guard for the secret assertions: they would prove nothing if the corpus had been scrubbed
    assert sum(PASSWORD in p.read_text() for p in VRRP_CONFS) == len(VRRP_CONFS)
    assert sum("auth_pass" in p.read_text() for p in VRRP_CONFS) >= 25


@pytest.mark.skipif(not PEER_CONFS, reason=PEERS_ABSENT)
@pytest.mark.parametrize("path", PEER_CONFS, ids=lambda p: str(p.relative_to(PEERS)))
def test_peer_configs_parse_without_a_secret(path: Path) -> None:
    """Other projects' real keepalived.conf files: read without a problem, and no password kept."""
    cfg = read_config(path)
    assert cfg.problems == ()
    assert cfg.instances
    assert_no_secret(cfg)


# --------------------------------------------------------------------------------------------------
# property tests: no exception, one-line problems, no password
# --------------------------------------------------------------------------------------------------

FIXTURE_TEXTS = [p.read_text() for p in ALL_CONFS]
ALPHABET = st.sampled_from([*"{}\"'!#$@~\\ \t\n", "\x00", "é", "\r"]) | st.characters()
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(st.text(alphabet=ALPHABET, max_size=400))
def test_random_text_never_raises(text: str) -> None:
    cfg = parse_text(text, "rand.conf")
    assert isinstance(cfg, KeepalivedConfig)
    assert_one_line_problems(cfg)


def mutate_lines(text: str, rnd: random.Random, n: int) -> str:
    lines = text.split("\n")
    for _ in range(n):
        op = rnd.randrange(6)
        i = rnd.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(rnd.randrange(len(lines) + 1), lines[i])
        elif op == 2:
            j = rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = lines[i][: rnd.randrange(len(lines[i]) + 1)]
        elif op == 4:
            lines.insert(i, rnd.choice(["{", "}", "}}", "{ {", '"', "@x", "$V=1", "~SEQ(", "include *"]))
        else:
            lines[i] = lines[i] + rnd.choice([" {", " }", " #", ' "', "\\"])
    return "\n".join(lines)


@PROPS
@given(st.integers(0, len(FIXTURE_TEXTS) - 1), st.integers(1, 12), st.randoms(use_true_random=False))
def test_mutated_fixture_configs_never_raise_nor_leak(which: int, n: int, rnd: random.Random) -> None:
    text = mutate_lines(FIXTURE_TEXTS[which], rnd, n)
    cfg = parse_text(text, "/nonexistent-dir/mutated.conf")
    assert_one_line_problems(cfg)
    assert_no_secret(cfg)


@PROPS
@given(st.integers(0, len(FIXTURE_TEXTS) - 1), st.randoms(use_true_random=False))
def test_token_shuffled_fixture_configs_never_raise(which: int, rnd: random.Random) -> None:
    words = re.split(r"(\s+)", FIXTURE_TEXTS[which])
    for _ in range(rnd.randrange(1, 8)):
        i, j = rnd.randrange(len(words)), rnd.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    cfg = parse_text("".join(words), "/nonexistent-dir/shuffled.conf")
    assert_one_line_problems(cfg)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_file_never_raises(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bytes.conf"
    path.write_bytes(data)
    cfg = read_config(path)
    assert_one_line_problems(cfg)


# --------------------------------------------------------------------------------------------------
# oracle: the real keepalived's config check complains about the same lines
# --------------------------------------------------------------------------------------------------

ORACLE_CONF = """vrrp_script chk_ok {
    script "/usr/bin/true"
}
vrrp_instance VI_1 {
    state SIDEWAYS
    interface eth0
    virtual_router_id 300
    priority 0
    advert_int abc
    authentication {
        auth_type XYZ
    }
    virtual_ipaddress {
        10.0.0.300/24
        10.0.0.1/40
        fd00::1/64
    }
    unicast_peer {
        1.2.3.x
    }
    track_script {
        chk_ok
        chk_nope
    }
}
vrrp_instance VI_2 {
    interface eth0
    virtual_router_id 52
    virtual_ipaddress { 10.0.0.2/24 }
}
vrrp_instance VI_2
{
    interface eth0
    virtual_router_id 53
}
}
include MISSING
"""


def keepalived_check(netns: str, conf: Path) -> set[int]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "keepalived", "-t", "-l", "-f", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    text = out.stdout + out.stderr
    return {int(n) for n in re.findall(r"\((?:[^():]*: )?Line (\d+)\)", text)}


@pytest.mark.lab
def test_real_keepalived_flags_the_same_lines(netns: str, tmp_path: Path) -> None:
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived not installed")
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "trk0", "type", "veth", "peer", "name", "trk0p"],
        check=True,
        timeout=10,
    )
    conf = tmp_path / "oracle.conf"
    conf.write_text(ORACLE_CONF.replace("MISSING", str(tmp_path / "missing.conf")))
    ours = set(lines_of(read_config(conf)))
    assert ours == {5, 7, 8, 9, 11, 14, 15, 16, 19, 23, 31, 36, 37}
    assert keepalived_check(netns, conf) == ours
    # and the recorded configs are clean for both
    for rel in ("keepalived-2.4.3/node-a", "pcap/v2-unicast/node-b", "pcap/v3-ipv6/node-a"):
        fixture = FIXTURES / rel / "keepalived.conf"
        assert read_config(fixture).problems == ()
        assert keepalived_check(netns, fixture) == set()


# --------------------------------------------------------------------------------------------------
# the config source, on real files
# --------------------------------------------------------------------------------------------------


def bump(path: Path, text: str) -> None:
    """Rewrite a file so that its stamp surely changes (size and mtime)."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(old + 10**9, old + 10**9))


def test_source_publishes_config_and_reads_again_only_on_change(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(INSTANCE.format(name="A", vrid=1) + "include conf.d/*.conf\n")
    (tmp_path / "conf.d").mkdir()
    store = Store(hostname="h")
    src = ConfigSource(store, conf, interval=0.1)

    src.run_once()
    first = store.snapshot().config
    assert first is not None and [i.name for i in first.instances] == ["A"]
    health = store.health("config")
    assert health is not None and health.up and health.error is None

    src.run_once()  # nothing changed: the same record, not read again, still up
    assert store.snapshot().config is first
    assert src.reads == 1
    health = store.health("config")
    assert health is not None and health.up

    bump(conf, INSTANCE.format(name="A2", vrid=1) + "include conf.d/*.conf\n")
    src.run_once()
    cfg = store.snapshot().config
    assert cfg is not None and [i.name for i in cfg.instances] == ["A2"]

    # a new file in an included directory is picked up
    (tmp_path / "conf.d" / "b.conf").write_text(INSTANCE.format(name="B", vrid=2))
    os.utime(tmp_path / "conf.d", ns=(1, 1))
    src.run_once()
    cfg = store.snapshot().config
    assert cfg is not None and [i.name for i in cfg.instances] == ["A2", "B"]

    # and so is a change inside an included file
    bump(tmp_path / "conf.d" / "b.conf", INSTANCE.format(name="B", vrid=22))
    src.run_once()
    cfg = store.snapshot().config
    assert cfg is not None and by_name(cfg)["B"].vrid == 22
    assert src.reads == 4


def test_source_reports_first_problem_and_count_but_publishes(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "vrrp_instance A {\n  interface eth0\n  virtual_router_id 999\n  priority 0\n"
        f"  authentication {{\n    auth_type PASS\n    auth_pass {PASSWORD}-too-long\n  }}\n}}\n}}\n"
    )
    store = Store(hostname="h")
    src = ConfigSource(store, conf)
    src.run_once()
    health = store.health("config")
    assert health is not None and not health.up
    assert (
        health.error
        == f"config {conf}:3: virtual_router_id '999' is not a whole number in 1..255 (+3 more problems)"
    )
    cfg = store.snapshot().config
    assert cfg is not None and [i.name for i in cfg.instances] == ["A"]
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(health)


def test_source_keeps_last_good_config_when_file_goes_missing(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(INSTANCE.format(name="A", vrid=1))
    store = Store(hostname="h")
    src = ConfigSource(store, conf)
    src.run_once()
    good = store.snapshot().config

    conf.unlink()
    src.run_once()
    health = store.health("config")
    assert health is not None and not health.up
    assert health.error == f"keepalived config {conf} not found"
    assert store.snapshot().config is good

    conf.write_text(INSTANCE.format(name="BACK", vrid=1))
    src.run_once()
    health = store.health("config")
    assert health is not None and health.up
    cfg = store.snapshot().config
    assert cfg is not None and [i.name for i in cfg.instances] == ["BACK"]


def test_load_config_watches_read_files_and_searched_directories(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    conf = tmp_path / "k.conf"
    conf.write_text("include d/*.conf\ninclude later.conf\n")
    result = load_config(conf)
    watched = dict(result.watched)
    assert watched[str(conf)] is not None
    assert str(tmp_path / "d") in watched
    assert watched[str(tmp_path / "later.conf")] is None  # created later -> stamp changes
