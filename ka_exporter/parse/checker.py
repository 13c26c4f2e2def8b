"""keepalived's checker dump (`keepalived_check.data`, written by the checker child on SIGUSR1).

It is the only place keepalived tells what its health checkers think: per virtual server its quorum
state and whether it is alive, per real server alive, configured and effective weight, inhibit, the
number of failed checkers and whether keepalived put it in IPVS, and per checker Up and the failed URL.
There are no traffic counters in it (those come from IPVS, see `parse.ipvs`).

The layout (keepalived 2.x, `dump_vs`/`dump_rs`/`dump_checker` in check_data.c/check_api.c)::

    ------< LVS Topology >------
     ------< Virtual server >------
     VS VIP = 10.140.0.100, VPORT = 80          (or "VS FWMARK = 1", "VS GROUP = name")
       lvs_sched = rr
       protocol = TCP
       quorum = 1, hysteresis = 0
       alive = 1
       quorum_state_up = 1
       ------< Real server >------
       RIP = 10.141.0.11, RPORT = 80, WEIGHT = 1 EFF WEIGHT = 1
       Inhibit on failure is OFF
       initial weight = 1
       alive = 1
       num failed checkers = 0
       RS set = 1
    ------< Health checkers >------
     [10.140.0.100]:tcp:80 -> [10.141.0.11]:tcp:80
       Up = yes
       Keepalive method = TCP_CHECK

A dump that cannot be used is rejected whole with one `DumpError` line naming the file and line, the
same contract as the other dumps: a cut mid-line is "truncated", a virtual or real server whose state
lines are missing is incomplete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ka_exporter.model import CheckerView, RealServerView, VirtualServerView, canonical_ip, lvs_key
from ka_exporter.parse.dumps import DumpError, to_text

__all__ = ["parse_check_data"]

_VS_VIP = re.compile(r"VS VIP = (\S+), VPORT = (\d+)\Z")
_VS_FWM = re.compile(r"VS FWMARK = (\d+)\Z")
_VS_GROUP = re.compile(r"VS GROUP = (.+)\Z")
_RIP = re.compile(r"RIP = (\S+), RPORT = (\d+), WEIGHT = (-?\d+)(?: EFF WEIGHT = (-?\d+))?\Z")
_CHECKER = re.compile(r"(.+) -> \[(.+)\]:(\w+):(\d+)\Z")
_TRIO = re.compile(r"\[(.+)\]:(\w+):(\d+)\Z")


@dataclass(slots=True)
class _Rs:
    key: str
    line: int
    weight: int
    eff: int | None
    fields: dict[str, str] = field(default_factory=dict)
    checkers: list[CheckerView] = field(default_factory=list)


@dataclass(slots=True)
class _Vs:
    key: str
    line: int
    fields: dict[str, str] = field(default_factory=dict)
    rs: list[_Rs] = field(default_factory=list)


def _int(value: str, where: str, key: str) -> int:
    try:
        return int(value.split(None, 1)[0])
    except (ValueError, IndexError):
        raise DumpError(f"{where}: {key} is not a number: {value[:32]!r}") from None


def _need(fields: dict[str, str], key: str, where: str, what: str) -> str:
    value = fields.get(key)
    if value is None:
        raise DumpError(f"{where}: {what} has no '{key}' line (dump incomplete?)")
    return value


def _vs_key(line: str) -> str | None:
    if m := _VS_VIP.match(line):
        return lvs_key(canonical_ip(m.group(1)), int(m.group(2)))
    if m := _VS_FWM.match(line):
        return f"fwmark:{m.group(1)}"
    if m := _VS_GROUP.match(line):
        group = re.fullmatch(r"\[(.+)\]:\d+", m.group(1))  # FMT_VS of a group: "[name]:port"
        return f"group:{group.group(1) if group else m.group(1)}"
    return None


def _checker_vs_key(text: str) -> str | None:
    """The virtual server part of a checker line: `[addr]:tcp:80`, `FWM 1`, `[group]:80`."""
    if m := _TRIO.match(text):
        return lvs_key(canonical_ip(m.group(1)), int(m.group(3)))
    if text.startswith("FWM "):
        return f"fwmark:{text[4:].strip()}"
    if m := re.fullmatch(r"\[(.+)\]:(\d+)", text):
        return f"group:{m.group(1)}"
    return None


def parse_check_data(raw: str | bytes, name: str = "keepalived_check.data") -> tuple[VirtualServerView, ...]:  # noqa: C901, PLR0912, PLR0915 - one pass over keepalived_check.data, one branch per line kind, as keepalived prints them
    """The virtual servers of a checker dump (empty when keepalived has none), or DumpError."""
    text = to_text(raw, name)
    if not text.endswith("\n"):
        raise DumpError(f"{name}:{text.count(chr(10)) + 1}: truncated (last line has no newline)")
    lines = text.split("\n")[:-1]
    if not lines or not lines[0].startswith("------< "):
        raise DumpError(f"{name}:1: not a keepalived checker dump")
    servers: list[_Vs] = []
    section = ""
    vs: _Vs | None = None
    rs: _Rs | None = None
    expect_vs = False  # the line after a "Virtual server" header names it
    checker: tuple[str, str] | None = None  # (vs key, rs key) of the checker being read
    checker_fields: dict[str, str] = {}
    pending: list[tuple[tuple[str, str], dict[str, str], int]] = []
    for n, line in enumerate(lines, 1):
        where = f"{name}:{n}"
        stripped = line.strip()
        if line.startswith("------< "):
            if expect_vs:
                raise DumpError(f"{where}: virtual server without its address line")
            section = stripped
            vs = rs = None
            continue
        if section == "------< LVS Topology >------":
            if stripped == "------< Virtual server >------":
                vs, rs, expect_vs = None, None, True
                continue
            if stripped == "------< Real server >------":
                if vs is None:
                    raise DumpError(f"{where}: real server outside a virtual server")
                rs = None
                continue
            if expect_vs:
                key = _vs_key(stripped)
                if key is None:
                    raise DumpError(f"{where}: cannot read virtual server line {stripped[:48]!r}")
                if any(s.key == key for s in servers):
                    raise DumpError(f"{where}: virtual server {key} appears twice")
                vs, expect_vs = _Vs(key, n), False
                servers.append(vs)
                continue
            if vs is None:
                continue
            if stripped.startswith("RIP = "):
                m = _RIP.match(stripped)
                if m is None:
                    raise DumpError(f"{where}: cannot read real server line {stripped[:48]!r}")
                rs = _Rs(
                    lvs_key(canonical_ip(m.group(1)), int(m.group(2))),
                    n,
                    int(m.group(3)),
                    int(m.group(4)) if m.group(4) is not None else None,
                )
                vs.rs.append(rs)
                continue
            k, sep, v = stripped.partition(" = ")
            if not sep:
                k, sep, v = stripped.partition(" is ")  # "Inhibit on failure is ON"
            if sep:
                (rs.fields if rs is not None else vs.fields).setdefault(k, v)
            continue
        if section == "------< Health checkers >------":
            if line.startswith(" ") and not line.startswith("  "):
                if checker is not None:
                    pending.append((checker, checker_fields, n - 1))
                m = _CHECKER.match(stripped)
                vkey = _checker_vs_key(m.group(1)) if m else None
                if m is None or vkey is None:
                    raise DumpError(f"{where}: cannot read checker line {stripped[:48]!r}")
                checker = (vkey, lvs_key(canonical_ip(m.group(2)), int(m.group(4))))
                checker_fields = {}
            elif checker is not None:
                k, sep, v = stripped.partition(" = ")
                if sep:
                    checker_fields.setdefault(k, v)
    if expect_vs:
        raise DumpError(f"{name}:{len(lines)}: virtual server without its address line (dump incomplete?)")
    if checker is not None:
        pending.append((checker, checker_fields, len(lines)))
    by_key = {(s.key, r.key): r for s in servers for r in s.rs}
    for (vkey, rkey), fields, n in pending:
        where = f"{name}:{n}"
        up = _need(fields, "Up", where, f"checker {vkey} -> {rkey}")
        method = _need(fields, "Keepalive method", where, f"checker {vkey} -> {rkey}")
        target = by_key.get((vkey, rkey))
        if target is None:
            continue  # a checker of something not in the topology (a sorry server, a group entry)
        target.checkers.append(
            CheckerView(
                method=method.split(",", 1)[0].strip(), up=up == "yes", failed_url=fields.get("Failed URL")
            )
        )
    return tuple(_vs_view(s, name) for s in servers)


def _vs_view(vs: _Vs, name: str) -> VirtualServerView:
    where = f"{name}:{vs.line}"
    what = f"virtual server {vs.key}"
    f = vs.fields
    quorum_text = _need(f, "quorum", where, what)
    q, _, h = quorum_text.partition(", hysteresis = ")
    sorry = f.get("sorry server")
    if sorry is not None and (m := _TRIO.match(sorry)):
        sorry = lvs_key(canonical_ip(m.group(1)), int(m.group(3)))
    return VirtualServerView(
        key=vs.key,
        protocol=f.get("protocol", "none"),
        scheduler=f.get("lvs_sched"),
        quorum=_int(q, where, "quorum"),
        hysteresis=_int(h, where, "hysteresis") if h else 0,
        alive=_int(_need(f, "alive", where, what), where, "alive") != 0,
        quorum_up=_int(_need(f, "quorum_state_up", where, what), where, "quorum_state_up") != 0,
        delay_loop=_float(f.get("delay_loop", "60"), where),
        sorry_server=sorry,
        real_servers=tuple(_rs_view(r, vs.key, name) for r in vs.rs),
    )


def _float(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DumpError(f"{where}: delay_loop is not a number: {value[:32]!r}") from None


def _rs_view(rs: _Rs, vs_key: str, name: str) -> RealServerView:
    where = f"{name}:{rs.line}"
    what = f"real server {rs.key} of {vs_key}"
    f = rs.fields
    initial = f.get("initial weight")
    eff = f.get("effective weight")
    return RealServerView(
        key=rs.key,
        weight=_int(initial, where, "initial weight") if initial is not None else rs.weight,
        effective_weight=(
            _int(eff, where, "effective weight")
            if eff is not None
            else (rs.eff if rs.eff is not None else rs.weight)
        ),
        alive=_int(_need(f, "alive", where, what), where, "alive") != 0,
        inhibit_on_failure=f.get("Inhibit on failure", "OFF") == "ON",
        failed_checkers=_int(_need(f, "num failed checkers", where, what), where, "num failed checkers"),
        in_ipvs=_int(_need(f, "RS set", where, what), where, "RS set") != 0,
        checkers=tuple(rs.checkers),
    )
