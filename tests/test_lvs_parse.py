"""The LVS parsers on real keepalived 2.2.7 / IPVS output (tests/fixtures/lvs-2.2.7-uml, see its README)."""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import pytest

from ka_exporter.model import lvs_key
from ka_exporter.parse import ipvs as nl
from ka_exporter.parse.checker import parse_check_data
from ka_exporter.parse.dumps import DumpError
from ka_exporter.parse.ipvs import IpvsError, parse_proc_ip_vs
from ka_exporter.parse.kaconf import parse_text

LVS = Path(__file__).parent / "fixtures" / "lvs-2.2.7-uml"
VS80, VS8080 = "10.140.0.100:80", "10.140.0.100:8080"
RS1, RS2, RS3 = "10.141.0.11", "10.141.0.12", "10.141.0.13"


def check(phase: str) -> bytes:
    return (LVS / phase / "keepalived_check.data").read_bytes()


def proc(phase: str) -> bytes:
    return (LVS / phase / "proc-net-ip_vs.txt").read_bytes()


def servers(phase: str) -> dict[str, dict[str, tuple[bool, int, int, bool, bool]]]:
    """vs -> rs -> (alive, weight, effective weight, inhibit, in IPVS per keepalived)"""
    return {
        vs.key: {
            rs.key: (rs.alive, rs.weight, rs.effective_weight, rs.inhibit_on_failure, rs.in_ipvs)
            for rs in vs.real_servers
        }
        for vs in parse_check_data(check(phase))
    }


def test_checker_dump_before_and_after_a_real_server_fails() -> None:
    assert servers("before") == {
        VS80: {
            f"{RS1}:80": (True, 1, 1, False, True),
            f"{RS2}:80": (True, 1, 1, False, True),
            f"{RS3}:80": (False, 1, 1, False, False),  # never listened
        },
        VS8080: {f"{RS1}:8080": (True, 3, 3, False, True), f"{RS2}:8080": (True, 1, 1, True, True)},
    }
    after = servers("after")
    assert after[VS80][f"{RS2}:80"] == (False, 1, 1, False, False)  # removed from IPVS
    # inhibited: keepalived keeps it "set" in IPVS and still reports effective weight 1 (IPVS has 0)
    assert after[VS8080][f"{RS2}:8080"] == (False, 1, 1, True, True)


def test_checker_dump_virtual_server_and_checker_fields() -> None:
    vs80, vs8080 = parse_check_data(check("after"))
    assert (vs80.protocol, vs80.scheduler, vs80.quorum, vs80.hysteresis, vs80.delay_loop) == (
        "TCP",
        "rr",
        1,
        0,
        2.0,
    )
    assert (vs8080.scheduler, vs8080.alive, vs8080.quorum_up, vs8080.sorry_server) == (
        "wrr",
        True,
        True,
        None,
    )
    rs2 = {r.key: r for r in vs8080.real_servers}[f"{RS2}:8080"]
    assert [(c.method, c.up, c.failed_url) for c in rs2.checkers] == [("HTTP_GET", False, "/health")]
    assert rs2.failed_checkers == 1
    rs1 = {r.key: r for r in vs80.real_servers}[f"{RS1}:80"]
    assert [(c.method, c.up) for c in rs1.checkers] == [("TCP_CHECK", True)]


def test_checker_dump_ipv6_fwmark_and_group_virtual_servers() -> None:
    text = check("before").decode()
    head = text[: text.index(" ------< Virtual server >------")]
    one_vs = text[
        text.index(" ------< Virtual server >------") : text.index(
            " ------< Virtual server >------", len(head) + 10
        )
    ]
    rs = one_vs[one_vs.index("   ------< Real server >------") :].split("   ------< Real server >------")[1]
    vs_body = one_vs[: one_vs.index("   ------< Real server >------")]
    dumps = {
        "VS VIP = 2001:db8::1, VPORT = 80": (
            "[2001:db8::1]:80",
            "RIP = 2001:db8::11, RPORT = 80, WEIGHT = 1 EFF WEIGHT = 1",
        ),
        "VS FWMARK = 7": ("fwmark:7", "RIP = 10.141.0.11, RPORT = 80, WEIGHT = 1 EFF WEIGHT = 1"),
        "VS GROUP = [web]:80": ("group:web", "RIP = 10.141.0.11, RPORT = 80, WEIGHT = 1 EFF WEIGHT = 1"),
    }
    for header, (key, rip) in dumps.items():
        body = vs_body.replace(" VS VIP = 10.140.0.100, VPORT = 80", f" {header}")
        real = "   ------< Real server >------" + rs.replace(
            "RIP = 10.141.0.11, RPORT = 80, WEIGHT = 1 EFF WEIGHT = 1", rip
        )
        (vs,) = parse_check_data(head + body + real)
        assert vs.key == key
        assert vs.real_servers[0].alive


def test_checker_dump_without_virtual_servers_is_empty() -> None:
    text = check("before").decode()
    globals_only = text[: text.index("------< LVS Topology >------")]
    assert parse_check_data(globals_only) == ()


def error_of(raw: bytes | str, name: str = "keepalived_check.data") -> str:
    with pytest.raises(DumpError) as info:
        parse_check_data(raw, name)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_checker_dump_problems_are_one_clear_line() -> None:
    text = check("before").decode()
    assert "empty file" in error_of(b"")
    assert "not a keepalived checker dump" in error_of("hello\n")
    assert "truncated" in error_of(text[:-5])
    assert "appears twice" in error_of(text.replace("VPORT = 8080", "VPORT = 80"))
    assert "cannot read real server line" in error_of(
        text.replace("RIP = 10.141.0.12, RPORT = 80", "RIP = x")
    )
    no_alive = text.replace("   quorum_state_up = 1\n", "", 1)
    assert re.match(
        r"keepalived_check\.data:\d+: virtual server 10\.140\.0\.100:80 has no 'quorum_state_up'",
        error_of(no_alive),
    )
    assert "not a number" in error_of(text.replace("num failed checkers = 1", "num failed checkers = lots"))


def test_checker_dump_truncated_at_every_byte_offset() -> None:
    raw = check("after")
    parsed, messages = [], []
    for end in range(len(raw) + 1):
        try:
            result = parse_check_data(raw[:end])
        except DumpError as exc:
            messages.append(str(exc))
            continue
        parsed.append(end)
        for vs in result:  # whatever parses is sane: every server has its state
            assert vs.key.startswith("10.140.0.100:")
            for rs in vs.real_servers:
                assert rs.key.startswith("10.141.0.1")
    assert parsed[-1] == len(raw)
    assert all(raw[:end].endswith(b"\n") for end in parsed)  # a cut mid-line is always rejected
    assert messages and not any("\n" in m for m in messages)


def ipvsadm_table(phase: str) -> dict[tuple[str, str], dict[str, int]]:
    """(proto, vs) -> rs -> weight, from `ipvsadm -Ln` (decimal): what the hex parser must agree with."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    current: dict[str, int] = {}
    for line in (LVS / phase / "ipvsadm-Ln.txt").read_text().splitlines()[3:]:
        words = line.split()
        if words[0] == "->":
            current[words[1]] = int(words[3])
        else:
            current = out.setdefault((words[0], words[1]), {})
    return out


@pytest.mark.parametrize("phase", ["before", "after"])
def test_proc_ip_vs_matches_ipvsadm(phase: str) -> None:
    services = parse_proc_ip_vs(proc(phase))
    assert {(s.protocol, s.key): {d.key: d.weight for d in s.dests} for s in services} == ipvsadm_table(phase)
    assert [s.scheduler for s in services] == ["rr", "wrr"]
    assert all(d.counters is None and d.forward == "Masq" for s in services for d in s.dests)


def test_proc_ip_vs_after_keepalived_stopped_is_empty() -> None:
    text = (LVS / "before" / "proc-net-ip_vs.txt").read_text()
    assert parse_proc_ip_vs("".join(text.splitlines(keepends=True)[:3])) == ()


def test_proc_ip_vs_truncated_at_every_byte_offset() -> None:
    raw = proc("after")
    parsed, messages = [], []
    for end in range(len(raw) + 1):
        try:
            parse_proc_ip_vs(raw[:end])
        except IpvsError as exc:
            messages.append(str(exc))
            continue
        parsed.append(end)
    assert messages and not any("\n" in m for m in messages)
    assert parsed[-1] == len(raw)
    assert all(raw[:end].endswith(b"\n") for end in parsed)


def test_proc_ip_vs_ipv6_and_fwmark() -> None:
    text = (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
        "TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:0050 rr\n"
        "  -> [2001:0db8:0000:0000:0000:0000:0000:0011]:0050      Route   2      1          0\n"
        "FWM  00000007 wlc\n"
        "  -> 0A000001:0000      Tunnel  1      0          0\n"
    )
    v6, fwm = parse_proc_ip_vs(text)
    assert (v6.key, v6.protocol, [(d.key, d.forward, d.weight, d.active) for d in v6.dests]) == (
        "[2001:db8::1]:80",
        "TCP",
        [("[2001:db8::11]:80", "Route", 2, 1)],
    )
    assert (fwm.key, fwm.protocol, fwm.dests[0].key) == ("fwmark:7", "FWM", "10.0.0.1:0")


def test_kaconf_reads_virtual_and_real_servers() -> None:
    cfg = parse_text((LVS / "keepalived.conf").read_text(), str(LVS / "keepalived.conf"))
    assert cfg.problems == ()
    assert [(v.key, v.protocol, v.lb_algo, v.quorum, v.delay_loop) for v in cfg.virtual_servers] == [
        (VS80, "TCP", "rr", 1, 2.0),
        (VS8080, "TCP", "wrr", 1, 2.0),
    ]
    assert [(r.key, r.weight, r.inhibit_on_failure) for r in cfg.virtual_servers[1].real_servers] == [
        (f"{RS1}:8080", 3, False),
        (f"{RS2}:8080", 1, True),
    ]
    other = parse_text("virtual_server fwmark 5 {\n real_server 10.0.0.1 {\n weight 2\n }\n}\n")
    assert [(v.key, [r.key for r in v.real_servers]) for v in other.virtual_servers] == [
        ("fwmark:5", ["10.0.0.1:0"])
    ]
    assert lvs_key("2001:db8::1", 443) == "[2001:db8::1]:443"


def _nla(kind: int, payload: bytes) -> bytes:
    return nl._attr(kind, payload)


def test_netlink_service_and_dest_payloads() -> None:
    """The genl encoding as linux/ip_vs.h defines it (the lab checks the same reader on a real kernel)."""
    stats64 = b"".join(
        _nla(i, struct.pack("=Q", v))
        for i, v in enumerate([84, 562, 446, 36940, 41164, 2, 11, 9, 739, 820], 1)
    )
    svc = (
        _nla(nl.SVC_AF, struct.pack("=H", socket.AF_INET))
        + _nla(nl.SVC_PROTOCOL, struct.pack("=H", socket.IPPROTO_TCP))
        + _nla(nl.SVC_ADDR, socket.inet_aton("10.140.0.100") + b"\0" * 12)
        + _nla(nl.SVC_PORT, struct.pack("!H", 8080))
        + _nla(nl.SVC_SCHED, b"wrr\0")
        + _nla(nl.SVC_STATS64 | nl.NLA_F_NESTED, stats64)
    )
    payload = nl._body(nl.IPVS_CMD_GET_SERVICE, _nla(nl.IPVS_CMD_ATTR_SERVICE | nl.NLA_F_NESTED, svc))
    ((service, ident),) = nl.parse_services([payload])
    assert (service.key, service.protocol, service.scheduler) == (VS8080, "TCP", "wrr")
    assert service.counters is not None
    assert (service.counters.connections, service.counters.out_bytes, service.counters.cps) == (84, 41164, 2)
    assert ident in nl.dest_body(ident)
    dest = (
        _nla(nl.DEST_ADDR, socket.inet_aton(RS2) + b"\0" * 12)
        + _nla(nl.DEST_PORT, struct.pack("!H", 8080))
        + _nla(nl.DEST_FWD, struct.pack("=I", 0))
        + _nla(nl.DEST_WEIGHT, struct.pack("=i", 0))
        + _nla(nl.DEST_ACTIVE, struct.pack("=I", 0))
        + _nla(nl.DEST_INACT, struct.pack("=I", 40))
    )
    dpayload = nl._body(nl.IPVS_CMD_GET_DEST, _nla(nl.IPVS_CMD_ATTR_DEST | nl.NLA_F_NESTED, dest))
    (d,) = nl.parse_dests([dpayload])
    assert (d.key, d.forward, d.weight, d.inactive, d.counters) == (f"{RS2}:8080", "Masq", 0, 40, None)
    with pytest.raises(IpvsError, match="runs past"):
        nl.parse_dests([dpayload[:-3]])
    family = nl._body(
        1, _nla(nl.CTRL_ATTR_FAMILY_NAME, b"IPVS\0") + _nla(nl.CTRL_ATTR_FAMILY_ID, b"\x2a\x00")
    )
    other = nl._body(
        1, _nla(nl.CTRL_ATTR_FAMILY_NAME, b"nlctrl\0") + _nla(nl.CTRL_ATTR_FAMILY_ID, b"\x10\x00")
    )
    assert nl.parse_family_id([other, family]) == 42
    assert nl.parse_family_id([other]) is None
