"""Pure parsers for keepalived's own dumps: ``keepalived.data``, ``keepalived.stats``, ``keepalived.json``.

Formats of keepalived 1.3 through 2.4 are read *by key*: unknown lines, unknown sections and unknown JSON
keys are skipped, so builds with other options and releases between the ones we have seen parse too.

What comes out is :class:`ka_exporter.model.InstanceView` (with :class:`InstanceStats`,
:class:`TrackedScript`, :class:`TrackedInterface`). The VRRP PASS password (``Password = ...`` lines of
the ``.data`` dump, ``auth_data`` of the JSON dump) is dropped where it is read: it is never stored,
never part of an error message.

Errors
------
Every problem is a :class:`DumpError` with a one-line message ``"<file>:<line>: <what>"``. Parsers never
raise anything else, whatever the input (binary garbage, empty, truncated at any byte, wrong JSON shape).

Rejection policy: a dump is accepted or rejected *as a whole*. One instance without a name or a VRID, a
duplicate instance, a last line without its newline (keepalived always ends its lines: a missing newline
means the file was cut short), a stats block without its last counter, or ``.data``/``.stats``/``.json``
naming different sets of instances: the whole set is rejected. Publishing the instances that happened to
parse would make the others vanish from the metrics, which looks exactly like an instance being deleted;
keeping the last good set (the dump source does that) is the honest answer.

Derived values: keepalived 1.3 prints no ``Effective priority``; for those dumps it is computed the way
keepalived computes it (base priority plus the weights of the tracked scripts and interfaces that count:
negative weights of failing trackers, positive weights of good ones, clamped to 1..254).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ka_exporter.model import (
    InstanceStats,
    InstanceView,
    TrackedBfd,
    TrackedFile,
    TrackedInterface,
    TrackedProcess,
    TrackedScript,
    VrrpState,
)

__all__ = [
    "DumpError",
    "combine",
    "parse_data",
    "parse_dumps",
    "parse_json",
    "parse_stats",
    "to_text",
]

_MAX_QUOTE = 32  # longest value quoted in an error message


class DumpError(Exception):
    """A dump that cannot be used, with a one-line message naming the file, the line and what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def _quote(value: str) -> str:
    """A short, printable rendering of a (never secret) value for an error message."""
    text = value if len(value) <= _MAX_QUOTE else value[:_MAX_QUOTE] + "..."
    return repr(text)


def to_text(raw: str | bytes, name: str) -> str:
    """The dump as text, or DumpError when it is empty, binary, or not UTF-8."""
    if isinstance(raw, bytes):
        if not raw.strip():
            raise DumpError(f"{name}: empty file")
        if b"\x00" in raw:
            raise DumpError(f"{name}: binary data (NUL bytes), not a keepalived dump")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DumpError(f"{name}: not UTF-8 text at byte {exc.start}, not a keepalived dump") from None
    else:
        text = raw
        if not text.strip():
            raise DumpError(f"{name}: empty file")
        if "\x00" in text:
            raise DumpError(f"{name}: binary data (NUL bytes), not a keepalived dump")
    return text


def _check_complete(text: str, name: str) -> list[str]:
    """Split into lines; a last line without its newline means the file was cut short."""
    if not text.endswith("\n"):
        lines = text.split("\n")
        raise DumpError(f"{name}:{len(lines)}: truncated (last line has no newline)")
    return text.split("\n")[:-1]


# --------------------------------------------------------------------------------------------------
# small value parsers (values of numeric keys may be quoted in errors; the password never reaches here)
# --------------------------------------------------------------------------------------------------


def _num_int(p: _DataParser, lineno: int, value: str, key: str) -> int:
    """_int() for a value of line `lineno`, building the error location only when there is an error."""
    try:
        return int(value)
    except ValueError:
        return _int(value, p.where(lineno), key)


def _int(value: str, where: str, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    token = value.split(None, 1)[0] if value.strip() else value
    try:
        return int(token)
    except ValueError:
        raise DumpError(f"{where}: {key} is not a number: {_quote(value)}") from None


def _float(value: str, where: str, key: str) -> float:
    token = value.split(None, 1)[0] if value.strip() else value
    try:
        number = float(token)
    except ValueError:
        raise DumpError(f"{where}: {key} is not a number: {_quote(value)}") from None
    if not math.isfinite(number):
        raise DumpError(f"{where}: {key} is not a finite number: {_quote(value)}")
    return number


def _interval(value: str, where: str) -> float:
    """ "1 sec", "1000 milli-sec", "100 milli-sec", "0.10 sec" -> seconds."""
    parts = value.split()
    number = _float(value, where, "Advert interval")
    unit = parts[1].lower() if len(parts) > 1 else "sec"
    if unit.startswith("milli") or unit == "ms":
        return number / 1000.0
    if unit.startswith("centi") or unit == "cs":
        return number / 100.0
    return number


def _address(item: str) -> str | None:
    """First token of a VIP line ("10.97.0.100/24 dev eth0 scope global set"), without its prefix."""
    token = item.split(None, 1)[0].split("/", 1)[0] if item.strip() else ""
    try:
        socket.inet_pton(socket.AF_INET, token)
        return token
    except OSError:
        pass
    try:  # IPv6 in its canonical text form, so that it compares equal to what netlink reports
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, token))
    except (OSError, ValueError):
        return None


def _vip_item(item: str) -> tuple[str | None, bool]:
    """(address, installed): keepalived >= 2.0 appends " set" to VIPs it has installed."""
    return _address(item), item.rstrip().endswith(" set")


_AUTH = {"SIMPLE_PASSWORD": "PASS", "PASS": "PASS", "IPSEC_AH": "AH", "AH": "AH", "NONE": "NONE"}
_AUTH_JSON = {0: "NONE", 1: "PASS", 2: "AH"}


def _split(content: str) -> tuple[str, str | None]:
    """ "Key = value" / "Key = " / "Key (2):" / "Key :" / "Key: value" / "Text" -> (key, value)."""
    key, sep, value = content.partition(" = ")
    if sep:
        return key, value
    if content.endswith(" ="):
        return content[:-2], ""
    if content.endswith(":"):
        key = content[:-1].rstrip()
        if key.endswith(")") and " (" in key:
            key = key[: key.rindex(" (")]
        return key, ""
    key, sep, value = content.partition(": ")
    if sep:
        return key.rstrip(), value
    return content, None


# --------------------------------------------------------------------------------------------------
# keepalived.data
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Inst:
    """An instance being read; turned into an InstanceView once the whole file has been read."""

    name: str
    line: int
    interface: str | None = None
    vrid: int | None = None
    family: str | None = None
    state: VrrpState | None = None
    wanted_state: VrrpState | None = None
    version: int | None = None
    priority: int | None = None
    effective_priority: int | None = None
    master_priority: int | None = None
    master_router: str | None = None
    advert_int: float | None = None
    preempt: bool | None = None
    last_transition: float | None = None
    auth_type: str | None = None
    vips: list[str] = field(default_factory=list)
    vips_set: list[str] = field(default_factory=list)
    sync_group: str | None = None
    track_if: list[tuple[str, int]] = field(default_factory=list)
    track_if_up: dict[str, bool | None] = field(default_factory=dict)  # 1.3 inline NIC blocks
    track_sc: list[tuple[str, int]] = field(default_factory=list)
    track_sc_status: dict[str, str] = field(default_factory=dict)  # 1.3 inline script blocks
    evips: list[str] = field(default_factory=list)  # "Virtual IP Excluded"
    track_file: list[tuple[str, int]] = field(default_factory=list)  # "Tracked files"
    track_proc: list[tuple[str, int]] = field(default_factory=list)  # "Tracked processes"
    track_bfd: list[tuple[str, int]] = field(default_factory=list)  # "Tracked BFDs"


@dataclass(slots=True)
class _TrackFile:
    status: int | None = None


@dataclass(slots=True)
class _TrackProc:
    up: bool | None = None
    running: int | None = None
    quorum: int | None = None


@dataclass(slots=True)
class _Script:
    weight: int = 0
    status: str | None = None


@dataclass(slots=True)
class _Iface:
    up: bool | None = None
    running: bool | None = None

    @property
    def usable(self) -> bool | None:
        """keepalived tracks an interface as up when it is both UP and RUNNING."""
        if self.up is None and self.running is None:
            return None
        return bool(self.up) and self.running is not False


_SCRIPT_KEYS = frozenset(
    {
        "Command",
        "Interval",
        "Timeout",
        "Weight",
        "Rise",
        "Fall",
        "Full",  # 1.3.5's typo for Fall
        "Insecure",
        "Status",
        "Interface weight",
        "Script uid:gid",
        "Result",
        "Init state",
        "State",
    }
)

_SECTION_TOPOLOGY = "VRRP Topology"
_SECTION_SCRIPTS = "VRRP Scripts"
_SECTION_SYNC = "VRRP Sync groups"
_SECTION_IFACES = ("Interfaces", "NIC")
_SECTION_TRACK_FILES = "VRRP Track files"
_SECTION_TRACK_PROCS = "VRRP Track processes"
_SECTION_TRACK_BFDS = "VRRP Track BFDs"


class _DataParser:
    """One pass over the lines of a keepalived.data dump (see the module docstring for the policy)."""

    __slots__ = (
        "by_name",
        "cur",
        "group",
        "groups",
        "iface",
        "ifaces",
        "inline_nic",
        "inline_script",
        "instances",
        "list_indent",
        "list_items",
        "list_kind",
        "name",
        "script",
        "scripts",
        "section",
        "sections",
        "tbfd",
        "tbfds",
        "tfile",
        "tfiles",
        "tproc",
        "tprocs",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.instances: list[_Inst] = []
        self.by_name: dict[str, _Inst] = {}
        self.scripts: dict[str, _Script] = {}
        self.ifaces: dict[str, _Iface] = {}
        self.groups: dict[str, list[str]] = {}
        self.tfiles: dict[str, _TrackFile] = {}
        self.tprocs: dict[str, _TrackProc] = {}
        self.tbfds: dict[str, bool | None] = {}  # "Bfd is up" / "Bfd is down"
        self.tbfd: str | None = None  # current entry of the VRRP Track BFDs section
        self.tfile: str | None = None  # current entry of the VRRP Track files section
        self.tproc: str | None = None  # current entry of the VRRP Track processes section
        self.sections = 0
        # cursor
        self.section = ""
        self.cur: _Inst | None = None
        self.inline_nic = False  # 1.3: NIC blocks printed inside an instance (its tracked interfaces)
        self.inline_script: str | None = None  # 1.3: script blocks printed inside an instance
        self.list_kind: str | None = None
        self.list_indent = -1
        self.list_items = 0
        self.script: str | None = None  # current script of the VRRP Scripts section
        self.iface: str | None = None  # current interface of Interfaces / NIC sections
        self.group: str | None = None

    def where(self, lineno: int) -> str:
        return f"{self.name}:{lineno}"

    # -- driver ------------------------------------------------------------------------------------

    def feed(self, lines: list[str]) -> None:
        topology = self._topology
        skip = _h_skip
        # raw text before " = " (indentation included) -> (handler, or _SKIP, or None for the general
        # path; indent; key): worked out once per distinct head, so most lines cost one dict lookup
        ops: dict[str, tuple[_Handler | None, int, str]] = {}
        bare: dict[str, tuple[_Handler | None, int, str]] = {}  # the same for lines without " = "
        section = self.section
        inline_nic = self.inline_nic
        in_topology = False
        for lineno, raw in enumerate(lines, 1):
            if in_topology:
                head, sep, tail = raw.partition(" = ")
                if sep:
                    op = ops.get(head)
                    if op is None:
                        key = head.lstrip()
                        op = ops[head] = (_FAST.get(key, _OTHER), len(head) - len(key), key)
                    handler, indent, key = op
                    open_list = self.list_kind
                    if self.inline_script is None and (open_list is None or indent <= self.list_indent):
                        if handler is skip:
                            # a key nobody reads (3 lines in 4); it ends any open list, so that no
                            # stray indented line is read as, say, a VIP
                            if open_list is not None:
                                self.list_kind = None
                            continue
                        cur = self.cur
                        if handler is not None and cur is not None:
                            self.list_kind = None
                            self.list_items = 0
                            handler(self, cur, tail.rstrip(), lineno, indent)
                            continue
                    topology(raw.strip(), indent, lineno, key, tail.rstrip())
                    continue
                # a line without " = " ("Flags: none", "Virtual IP (2):", "fd_in 13, fd_out 14", items)
                op2 = bare.get(raw)
                if op2 is None:
                    op2 = bare[raw] = _bare_op(raw)
                handler, indent, value = op2
                open_list = self.list_kind
                cur = self.cur
                if (
                    handler is not None
                    and cur is not None
                    and self.inline_script is None
                    and (open_list is None or indent <= self.list_indent)
                ):
                    self.list_kind = None
                    self.list_items = 0
                    handler(self, cur, value, lineno, indent)
                    continue
            stripped = raw.lstrip()
            if not stripped:
                continue
            if raw[0] == "-" and stripped.startswith("------<"):
                self._section(stripped.rstrip())
                section, inline_nic = self.section, self.inline_nic
                in_topology = section == _SECTION_TOPOLOGY and not inline_nic
                continue
            indent = len(raw) - len(stripped)
            content = stripped.rstrip()
            if in_topology:
                topology(content, indent, lineno, *_split(content))
            elif inline_nic or section in _SECTION_IFACES:
                self._nic(content, indent, lineno)
                section, inline_nic = self.section, self.inline_nic
                in_topology = section == _SECTION_TOPOLOGY and not inline_nic
            elif section == _SECTION_SCRIPTS:
                self._scripts(content, lineno)
            elif section == _SECTION_SYNC:
                self._sync(content, indent)
            elif section == _SECTION_TRACK_FILES:
                self._track_files(content, lineno)
            elif section == _SECTION_TRACK_PROCS:
                self._track_procs(content, lineno)
            elif section == _SECTION_TRACK_BFDS:
                self._track_bfds(content)
        if self.sections == 0:
            raise DumpError(f"{self.name}: not a keepalived data dump (no '------< ... >------' section)")

    def _section(self, content: str) -> None:
        inner = content.strip("-").strip()
        title = inner[1:-1].strip() if inner.startswith("<") and inner.endswith(">") else inner
        self.sections += 1
        # keepalived 1.3 follows "Tracked interfaces = N" (no items) with one NIC block per interface,
        # inside the instance; later versions list "trk0 weight 0" items and print NIC blocks apart
        inline = (
            title == "NIC"
            and self.cur is not None
            and (self.inline_nic or (self.list_kind == "track_if" and self.list_items == 0))
        )
        self.list_kind = None
        self.script = None
        self.iface = None
        self.group = None
        self.tfile = None
        self.tproc = None
        self.tbfd = None
        self.inline_script = None
        if inline:
            self.inline_nic = True
            return
        self.inline_nic = False
        self.cur = None
        self.section = title

    # -- VRRP Topology -----------------------------------------------------------------------------

    def _topology(self, content: str, indent: int, lineno: int, key: str, value: str | None) -> None:
        if key == "Password":  # never kept, never quoted
            self.list_kind = None
            return
        if key == "VRRP Instance" and value is not None:
            self._new_instance(value.strip(), lineno)
            return
        cur = self.cur
        if cur is None:
            return
        if self.list_kind is not None and indent > self.list_indent:
            self.list_items += 1
            self._list_item(cur, content, lineno)
            return
        if key == "VRRP Script" and value is not None:  # 1.3: inline script block
            sname = value.strip()
            self.inline_script = sname
            self.list_kind = None
            if not any(n == sname for n, _ in cur.track_sc):
                cur.track_sc.append((sname, 0))
            return
        if self.inline_script is not None:
            if key in _SCRIPT_KEYS and value is not None:
                self._inline_script_key(cur, self.inline_script, key, value, lineno)
                return
            if key.startswith("Interface weight"):
                weight = _int(
                    key[len("Interface weight") :].strip() or (value or ""), self.where(lineno), key
                )
                cur.track_sc = [(n, weight if n == self.inline_script else w) for n, w in cur.track_sc]
                return
            self.inline_script = None
        self.list_kind = None
        self.list_items = 0
        handler = _INSTANCE_KEYS.get(key)
        if handler is not None:
            handler(self, cur, value if value is not None else "", lineno, indent)
        elif key == "Using Native IPv6":
            cur.family = "inet6"
        elif indent >= 2:
            # any other key opens a list nobody reads (Unicast Peer, Flags, Virtual Routes, ...)
            self.list_kind = "other"
            self.list_indent = indent

    def _new_instance(self, iname: str, lineno: int) -> None:
        if not iname:
            raise DumpError(f"{self.where(lineno)}: VRRP Instance without a name")
        if iname in self.by_name:
            raise DumpError(f"{self.where(lineno)}: instance {iname} appears twice")
        inst = _Inst(name=iname, line=lineno)
        self.instances.append(inst)
        self.by_name[iname] = inst
        self.cur = inst
        self.list_kind = None
        self.inline_script = None

    def _inline_script_key(self, cur: _Inst, sname: str, key: str, value: str, lineno: int) -> None:
        script = self.scripts.setdefault(sname, _Script())
        if key == "Status":
            script.status = value.strip().upper() or None
            cur.track_sc_status[sname] = script.status or ""
        elif key == "Weight":
            script.weight = _int(value, self.where(lineno), key)
            cur.track_sc = [(n, script.weight if n == sname else w) for n, w in cur.track_sc]

    def _list_item(self, cur: _Inst, content: str, lineno: int) -> None:
        kind = self.list_kind
        if kind == "vips":
            address, installed = _vip_item(content)
            if address is None:
                raise DumpError(f"{self.where(lineno)}: instance {cur.name}: VIP is not an address")
            cur.vips.append(address)
            if installed:
                cur.vips_set.append(address)
        elif kind == "evips":
            address, _installed = _vip_item(content)
            if address is None:
                raise DumpError(f"{self.where(lineno)}: instance {cur.name}: excluded VIP is not an address")
            cur.evips.append(address)
        elif kind in ("track_file", "track_proc", "track_bfd"):
            # "chk_flag, weight -20" (and " reverse" when configured so); BFDs: "bfd_peer: weight -20"
            parts = content.split()
            weight = 0
            if len(parts) >= 3 and parts[1] == "weight":
                weight = _int(parts[2], self.where(lineno), "weight")
            name = parts[0].rstrip(",:")
            {"track_file": cur.track_file, "track_proc": cur.track_proc, "track_bfd": cur.track_bfd}[
                kind
            ].append((name, weight))
        elif kind in ("track_if", "track_sc"):
            parts = content.split()
            weight = 0
            if len(parts) >= 3 and parts[1] == "weight":
                weight = _int(parts[2], self.where(lineno), "weight")
            target = cur.track_if if kind == "track_if" else cur.track_sc
            target.append((parts[0], weight))

    # -- NIC / Interfaces --------------------------------------------------------------------------

    def _nic(self, content: str, indent: int, lineno: int) -> None:
        if self.inline_nic and indent >= 3 and self.cur is not None:
            # the end of 1.3's inline NIC block: back to the instance
            self.inline_nic = False
            self.section = _SECTION_TOPOLOGY
            self._topology(content, indent, lineno, *_split(content))
            return
        key, value = _split(content)
        if self.inline_nic and key in ("VRRP Instance", "VRRP Script") and self.cur is not None:
            self.inline_nic = False
            self.section = _SECTION_TOPOLOGY
            self._topology(content, indent, lineno, *_split(content))
            return
        if key == "Name" and value is not None:
            ifname = value.strip()
            self.iface = ifname
            self.ifaces.setdefault(ifname, _Iface())
            if self.inline_nic and self.cur is not None:
                cur = self.cur
                if not any(n == ifname for n, _ in cur.track_if):
                    cur.track_if.append((ifname, 0))
            return
        if self.iface is None:
            return
        iface = self.ifaces[self.iface]
        if key == "State" and value is not None:
            flags = [f.strip() for f in value.split(",")]
            iface.up = "UP" in flags and "not UP" not in flags
            iface.running = "RUNNING" in flags and "not RUNNING" not in flags
        elif content.startswith("is "):
            word = content[3:].strip()
            if word == "UP":
                iface.up = True
            elif word == "DOWN":
                iface.up = False
            elif word == "RUNNING":
                iface.running = True
            elif word in ("not RUNNING", "NOT RUNNING"):
                iface.running = False

    # -- VRRP Scripts ------------------------------------------------------------------------------

    def _scripts(self, content: str, lineno: int) -> None:
        key, value = _split(content)
        if key == "VRRP Script" and value is not None:
            self.script = value.strip()
            self.scripts.setdefault(self.script, _Script())
            return
        if self.script is None or value is None:
            return
        script = self.scripts[self.script]
        if key == "Status":
            script.status = value.strip().upper() or None
        elif key == "Weight":
            script.weight = _int(value, self.where(lineno), key)

    # -- VRRP Track files / VRRP Track processes ----------------------------------------------------

    def _track_files(self, content: str, lineno: int) -> None:
        key, value = _split(content)
        if key == "Track file" and value is not None:
            self.tfile = value.strip()
            self.tfiles.setdefault(self.tfile, _TrackFile())
        elif self.tfile is not None and key == "Status" and value is not None:
            self.tfiles[self.tfile].status = _int(value, self.where(lineno), "Status")

    def _track_procs(self, content: str, lineno: int) -> None:
        key, value = _split(content)
        if key == "VRRP Track process" and value is not None:
            self.tproc = value.strip()
            self.tprocs.setdefault(self.tproc, _TrackProc())
            return
        if self.tproc is None or value is None:
            return
        proc = self.tprocs[self.tproc]
        if key == "Have quorum":
            proc.up = value.strip().lower() in ("true", "yes", "1")
        elif key == "Current processes":
            proc.running = _int(value, self.where(lineno), key)
        elif key == "Min processes":
            proc.quorum = _int(value, self.where(lineno), key)

    def _track_bfds(self, content: str) -> None:
        key, value = _split(content)
        if key == "VRRP Track BFD" and value is not None:
            self.tbfd = value.strip()
            self.tbfds.setdefault(self.tbfd, None)
        elif self.tbfd is not None and content.startswith("Bfd is "):
            word = content[len("Bfd is ") :].strip().lower()
            self.tbfds[self.tbfd] = True if word == "up" else False if word == "down" else None

    # -- VRRP Sync groups --------------------------------------------------------------------------

    def _sync(self, content: str, indent: int) -> None:
        key, value = _split(content)
        if key == "VRRP Sync Group" and value is not None:
            self.group = value.split(",", 1)[0].strip()
            self.groups.setdefault(self.group, [])
            self.list_kind = None
            return
        if self.group is None:
            return
        if key == "monitor" and value is not None:  # 1.3
            self.groups[self.group].append(value.strip())
        elif key == "VRRP member instances":
            self.list_kind = "members"
            self.list_indent = indent
        elif self.list_kind == "members" and indent > self.list_indent and value is None:
            self.groups[self.group].append(content.split(maxsplit=1)[0])
        else:
            self.list_kind = None

    # -- result ------------------------------------------------------------------------------------

    def result(self) -> tuple[InstanceView, ...]:
        member_of = {m: g for g, members in self.groups.items() for m in members}
        return tuple(self._view(inst, member_of) for inst in self.instances)

    def _view(self, inst: _Inst, member_of: Mapping[str, str]) -> InstanceView:
        where = self.where(inst.line)
        if inst.vrid is None:
            raise DumpError(f"{where}: instance {inst.name} has no Virtual Router ID (incomplete dump?)")
        scripts = tuple(
            TrackedScript(
                name=n,
                weight=w,
                status=(
                    inst.track_sc_status.get(n) or (self.scripts[n].status if n in self.scripts else None)
                ),
            )
            for n, w in inst.track_sc
        )
        ifaces = tuple(
            TrackedInterface(name=n, weight=w, up=self.ifaces[n].usable if n in self.ifaces else None)
            for n, w in inst.track_if
        )
        files = tuple(
            TrackedFile(name=n, weight=w, status=self.tfiles[n].status if n in self.tfiles else None)
            for n, w in inst.track_file
        )
        procs = tuple(
            TrackedProcess(name=n, weight=w, up=p.up, running=p.running, quorum=p.quorum)
            if (p := self.tprocs.get(n)) is not None
            else TrackedProcess(name=n, weight=w)
            for n, w in inst.track_proc
        )
        bfds = tuple(TrackedBfd(name=n, weight=w, up=self.tbfds.get(n)) for n, w in inst.track_bfd)
        family = inst.family
        if family is None:
            first = inst.vips or inst.evips  # an instance whose VIPs are all excluded
            family = "inet6" if first and ":" in first[0] else "inet"
        auth = inst.auth_type
        if auth is None and inst.version == 3:
            auth = "NONE"  # VRRPv3 has no authentication; keepalived prints no line for it
        effective = inst.effective_priority
        if effective is None and inst.priority is not None:
            effective = _derive_effective(inst.priority, scripts, ifaces)
        return InstanceView(
            name=inst.name,
            interface=inst.interface or "",
            vrid=inst.vrid,
            family=family,
            state=inst.state,
            wanted_state=inst.wanted_state,
            version=inst.version,
            priority=inst.priority,
            effective_priority=effective,
            master_priority=inst.master_priority if inst.state == VrrpState.BACKUP else None,
            master_router=inst.master_router if inst.state == VrrpState.BACKUP else None,
            advert_int=inst.advert_int,
            preempt=inst.preempt,
            last_transition=inst.last_transition,
            auth_type=auth,
            vips=tuple(inst.vips),
            vips_set=tuple(inst.vips_set),
            sync_group=inst.sync_group or member_of.get(inst.name),
            tracked_scripts=scripts,
            tracked_interfaces=ifaces,
            tracked_processes=procs,
            tracked_files=files,
            vips_excluded=tuple(inst.evips),
            tracked_bfds=bfds,
        )


def _derive_effective(
    base: int, scripts: Iterable[TrackedScript], ifaces: Iterable[TrackedInterface]
) -> int | None:
    """keepalived's effective priority for dumps that do not print it (1.3); None when unknowable."""
    if base >= 255:
        return base
    total = base
    for s in scripts:
        if s.weight == 0:
            continue
        if s.status not in ("GOOD", "BAD"):
            return None
        if (s.weight > 0 and s.status == "GOOD") or (s.weight < 0 and s.status == "BAD"):
            total += s.weight
    for i in ifaces:
        if i.weight == 0:
            continue
        if i.up is None:
            return None
        if (i.weight > 0 and i.up) or (i.weight < 0 and not i.up):
            total += i.weight
    return max(1, min(254, total))


# handlers of instance keys: (parser, instance, value, line, indent) -> None
_Handler = Callable[[_DataParser, _Inst, str, int, int], None]


def _h_vrid(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    vrid = _num_int(p, n, v, "Virtual Router ID")
    if not 1 <= vrid <= 255:
        raise DumpError(f"{p.where(n)}: instance {i.name}: Virtual Router ID {vrid} is not in 1..255")
    i.vrid = vrid


_STATES = {s.name: s for s in VrrpState}


def _state(value: str) -> VrrpState | None:
    state = _STATES.get(value)
    if state is None and value.strip():
        state = VrrpState.parse(value)
    return state


def _h_state(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    i.state = _state(v)


def _h_wantstate(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    i.wanted_state = _state(v)


def _h_version(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    i.version = _num_int(p, n, v, "VRRP Version")


def _h_interface(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    # use_vmac: "Interface = vrrp.1, vmac on vlan1". keepalived.conf, the VIP series and keepalived's
    # D-Bus object path all name the base interface (vlan1), so the instance is labelled with it.
    name, _sep, rest = v.partition(",")
    base = rest.strip().removeprefix("vmac on ").strip() if rest.strip().startswith("vmac on ") else ""
    name = base or name.strip()
    i.interface = name.split()[0] if name else None


def _h_priority(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    i.priority = _num_int(p, n, v, "Priority")


def _h_effective(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    i.effective_priority = _num_int(p, n, v, "Effective priority")


def _h_master_prio(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    prio = _num_int(p, n, v, "Master priority")
    i.master_priority = prio if prio > 0 else None


def _h_master_router(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    i.master_router = _address(v)


def _h_advert(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    if v == "1 sec":  # by far the most common
        i.advert_int = 1.0
    else:
        i.advert_int = _interval(v, p.where(n))


def _h_preempt(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    i.preempt = v.strip().lower() in ("enabled", "true", "yes")


def _h_transition(p: _DataParser, i: _Inst, v: str, n: int, _indent: int) -> None:
    try:
        i.last_transition = float(v.split(None, 1)[0])
    except (ValueError, IndexError):
        i.last_transition = _float(v, p.where(n), "Last transition")
    else:
        if not math.isfinite(i.last_transition):
            i.last_transition = _float(v, p.where(n), "Last transition")


def _h_auth(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    i.auth_type = _AUTH.get(v.strip().upper(), v.strip().upper() or None)


def _h_sync(_p: _DataParser, i: _Inst, v: str, _n: int, _indent: int) -> None:
    i.sync_group = v.strip() or None


def _list(kind: str) -> _Handler:
    def handler(p: _DataParser, _i: _Inst, _v: str, _n: int, indent: int) -> None:
        p.list_kind = kind
        p.list_indent = indent

    return handler


_INSTANCE_KEYS: dict[str, _Handler] = {
    "Virtual Router ID": _h_vrid,
    "State": _h_state,
    "Wantstate": _h_wantstate,
    "VRRP Version": _h_version,
    "Interface": _h_interface,
    "Listening device": _h_interface,
    "Priority": _h_priority,
    "Effective priority": _h_effective,
    "Master priority": _h_master_prio,
    "Master router": _h_master_router,
    "Advert interval": _h_advert,
    "Preempt": _h_preempt,
    "Last transition": _h_transition,
    "Authentication type": _h_auth,
    "Sync group": _h_sync,
    "Virtual IP": _list("vips"),
    "Virtual IP Excluded": _list("evips"),
    "Tracked files": _list("track_file"),
    "Tracked processes": _list("track_proc"),
    "Tracked BFDs": _list("track_bfd"),
    "Tracked interfaces": _list("track_if"),
    "Tracked scripts": _list("track_sc"),
}


def _h_skip(_p: _DataParser, _i: _Inst, _v: str, _n: int, _indent: int) -> None:
    """Marks a "key = value" line nobody reads (see _DataParser.feed)."""


# the fast path of feed(): keys whose handler runs directly; keys the general path (_topology) must see
# (None: they need more than the instance, i.e. new instances and 1.3's inline scripts); others skipped
_FAST: dict[str, _Handler | None] = {
    **_INSTANCE_KEYS,
    "Password": _h_skip,  # never kept, never quoted
    "VRRP Instance": None,
    "VRRP Script": None,
}
_OTHER: _Handler = _h_skip


def _h_native6(_p: _DataParser, i: _Inst, _v: str, _n: int, _indent: int) -> None:
    i.family = "inet6"


def _h_other(p: _DataParser, _i: _Inst, _v: str, _n: int, indent: int) -> None:
    """Any other key line opens a list nobody reads (Unicast Peer, Flags, Virtual Routes, ...)."""
    if indent >= 2:
        p.list_kind = "other"
        p.list_indent = indent


def _bare_op(raw: str) -> tuple[_Handler | None, int, str]:
    """What a topology line without " = " does, when it is not an item of an open list (see feed())."""
    stripped = raw.lstrip()
    indent = len(raw) - len(stripped)
    content = stripped.rstrip()
    if not content or content.startswith("------<"):
        return None, indent, ""
    key, value = _split(content)
    if key in ("Password", "VRRP Instance", "VRRP Script"):
        return None, indent, ""
    handler = _INSTANCE_KEYS.get(key)
    if handler is None:
        handler = _h_native6 if key == "Using Native IPv6" else _h_other
    return handler, indent, value if value is not None else ""


def parse_data(raw: str | bytes, name: str = "keepalived.data") -> tuple[InstanceView, ...]:
    """Parse a keepalived.data dump (1.3 - 2.4) into instances (without stats).

    Raises DumpError (one line) for anything that is not a complete keepalived data dump.
    """
    try:
        text = to_text(raw, name)
        lines = _check_complete(text, name)
        parser = _DataParser(name)
        parser.feed(lines)
        return parser.result()
    except DumpError:
        raise
    except Exception as exc:  # a parser never raises anything else
        raise DumpError(f"{name}: unreadable dump ({type(exc).__name__})") from None


# --------------------------------------------------------------------------------------------------
# keepalived.stats
# --------------------------------------------------------------------------------------------------

_STATS_FIELDS: dict[tuple[str, str], str] = {
    ("Advertisements", "Received"): "advert_rcvd",
    ("Advertisements", "Sent"): "advert_sent",
    ("", "Became master"): "become_master",
    ("", "Released master"): "release_master",
    ("Packet Errors", "Length"): "packet_len_err",
    ("Packet Errors", "TTL"): "ip_ttl_err",
    ("Packet Errors", "Invalid Type"): "invalid_type_rcvd",
    ("Packet Errors", "Advertisement Interval"): "advert_interval_err",
    ("Packet Errors", "Address List"): "addr_list_err",
    ("Authentication Errors", "Invalid Type"): "invalid_authtype",
    ("Authentication Errors", "Type Mismatch"): "authtype_mismatch",
    ("Authentication Errors", "Failure"): "auth_failure",
    ("Priority Zero", "Received"): "pri_zero_rcvd",
    ("Priority Zero", "Sent"): "pri_zero_sent",
}
# first and last counter of every block: both present means the block was written out whole
_STATS_REQUIRED = ("advert_rcvd", "pri_zero_sent")


def parse_stats(raw: str | bytes, name: str = "keepalived.stats") -> dict[str, InstanceStats]:
    """Parse a keepalived.stats dump into {instance name: InstanceStats}.

    Raises DumpError (one line) for anything that is not a complete keepalived stats dump.
    """
    try:
        text = to_text(raw, name)
        lines = _check_complete(text, name)
        return _parse_stats(lines, name)
    except DumpError:
        raise
    except Exception as exc:
        raise DumpError(f"{name}: unreadable dump ({type(exc).__name__})") from None


def _parse_stats(lines: list[str], name: str) -> dict[str, InstanceStats]:
    result: dict[str, InstanceStats] = {}
    cur: str | None = None
    cur_line = 0
    values: dict[str, int] = {}
    group = ""

    def close() -> None:
        if cur is None:
            return
        missing = [f for f in _STATS_REQUIRED if f not in values]
        if missing:
            raise DumpError(f"{name}:{cur_line}: instance {cur}: counters incomplete (truncated dump?)")
        result[cur] = InstanceStats(**values)

    fields = _STATS_FIELDS
    seen: dict[str, tuple[int, str]] = {}  # raw text before ":" -> (indent, key), once per distinct head
    for lineno, raw in enumerate(lines, 1):
        head, _, value = raw.partition(":")
        info = seen.get(head)
        if info is None:
            key = head.lstrip()
            info = seen[head] = (len(head) - len(key), key.rstrip())
        indent, key = info
        if not key:
            continue
        value = value.strip()
        if indent == 0 and key == "VRRP Instance":
            close()
            iname = value
            if not iname:
                raise DumpError(f"{name}:{lineno}: VRRP Instance without a name")
            if iname in result:
                raise DumpError(f"{name}:{lineno}: instance {iname} appears twice")
            cur, cur_line, values, group = iname, lineno, {}, ""
            continue
        if cur is None:
            raise DumpError(f"{name}:{lineno}: not a keepalived stats dump (expected 'VRRP Instance: ...')")
        if not value:  # a group header ("Advertisements:")
            group = key
            continue
        if indent <= 2:
            group = ""
        fname = fields.get((group, key))
        if fname is None:
            continue  # counters we do not export (e.g. 2.4's Authentication Extension Errors)
        try:
            number = int(value)
        except ValueError:
            number = _int(value, f"{name}:{lineno}", f"{group + ' ' if group else ''}{key}")
        if number < 0:
            raise DumpError(f"{name}:{lineno}: {key} is negative")
        values[fname] = number
    close()
    if not result:
        raise DumpError(f"{name}: no instances in stats dump")
    return result


# --------------------------------------------------------------------------------------------------
# keepalived.json
# --------------------------------------------------------------------------------------------------


def parse_json(raw: str | bytes, name: str = "keepalived.json") -> tuple[InstanceView, ...]:
    """Parse a keepalived.json dump (array form, or the ``json_version 2`` object ``{"vrrp": [...]}``).

    ``auth_data`` (the PASS password) is never read. Raises DumpError (one line) on any problem.
    """
    try:
        text = to_text(raw, name)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:  # position only: never the document's text
            raise DumpError(
                f"{name}:{exc.lineno}: not valid JSON at column {exc.colno} ({exc.msg})"
            ) from None
        except RecursionError:
            raise DumpError(f"{name}: JSON nested too deeply") from None
        if isinstance(doc, dict):
            if "vrrp" not in doc:
                raise DumpError(f"{name}: JSON object without a 'vrrp' array (json_version 2 form)")
            doc = doc["vrrp"]
        if not isinstance(doc, list):
            raise DumpError(f"{name}: JSON dump is not an array of instances")
        views: list[InstanceView] = []
        seen: set[str] = set()
        for index, entry in enumerate(doc):
            view = _json_instance(entry, index, name)
            if view.name in seen:
                raise DumpError(f"{name}: instance {view.name} appears twice")
            seen.add(view.name)
            views.append(view)
        return tuple(views)
    except DumpError:
        raise
    except Exception as exc:
        raise DumpError(f"{name}: unreadable dump ({type(exc).__name__})") from None


def _jint(obj: Mapping[str, Any], key: str, where: str, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise DumpError(f"{where}: '{key}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DumpError(f"{where}: '{key}' is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise DumpError(f"{where}: '{key}' is not an integer")
        value = int(value)
    return value


def _jfloat(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DumpError(f"{where}: '{key}' is not a number")
    return float(value)


def _jbool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return None


def _jstate(obj: Mapping[str, Any], key: str, where: str) -> VrrpState | None:
    number = _jint(obj, key, where)
    if number is None:
        return None
    try:
        return VrrpState(number)
    except ValueError:
        return None


def _jstrings(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DumpError(f"{where}: '{key}' is not a list of strings")
    return [v for v in value if v.strip()]


def _json_instance(entry: object, index: int, name: str) -> InstanceView:
    where = f"{name}: instance #{index + 1}"
    if not isinstance(entry, dict):
        raise DumpError(f"{where}: not an object")
    data = entry.get("data")
    if not isinstance(data, dict):
        raise DumpError(f"{where}: no 'data' object")
    iname = data.get("iname")
    if not isinstance(iname, str) or not iname.strip():
        raise DumpError(f"{where}: no instance name ('iname')")
    iname = iname.strip()
    where = f"{name}: instance {iname}"
    vrid = _jint(data, "vrid", where, required=True)
    if vrid is None or not 1 <= vrid <= 255:
        raise DumpError(f"{where}: 'vrid' is not in 1..255")
    ifname = data.get("ifp_ifname")
    if ifname is not None and not isinstance(ifname, str):
        raise DumpError(f"{where}: 'ifp_ifname' is not a string")
    vips: list[str] = []
    vips_set: list[str] = []
    for item in _jstrings(data, "vips", where):
        address, installed = _vip_item(item)
        if address is None:
            raise DumpError(f"{where}: a VIP is not an address")
        vips.append(address)
        if installed:
            vips_set.append(address)
    if data.get("vipset") is True and vips and not vips_set:
        vips_set = list(vips)  # older JSON: no per-VIP " set", but the instance-wide flag
    evips: list[str] = []
    for item in _jstrings(data, "evips", where):
        address, _installed = _vip_item(item)
        if address is None:
            raise DumpError(f"{where}: an excluded VIP is not an address")
        evips.append(address)
    state = _jstate(data, "state", where)
    # keepalived keeps the last master's priority after leaving BACKUP: only a BACKUP's value is news
    master_prio = _jint(data, "master_priority", where) if state == VrrpState.BACKUP else None
    nopreempt = _jbool(data, "nopreempt")
    auth_number = _jint(data, "auth_type", where)
    version = _jint(data, "version", where)
    auth = _AUTH_JSON.get(auth_number) if auth_number is not None else ("NONE" if version == 3 else None)
    ifaces = tuple(TrackedInterface(name=n) for n in _jstrings(data, "track_ifp", where))
    stats = _json_stats(entry.get("stats"), where)
    return InstanceView(
        name=iname,
        interface=(ifname or "").strip(),
        vrid=vrid,
        family="inet6" if (vips or evips) and ":" in (vips or evips)[0] else "inet",
        state=state,
        wanted_state=_jstate(data, "wantstate", where),
        version=version,
        priority=_jint(data, "base_priority", where),
        effective_priority=_jint(data, "effective_priority", where),
        master_priority=master_prio if master_prio else None,
        advert_int=_jfloat(data, "adver_int", where),
        preempt=None if nopreempt is None else not nopreempt,
        last_transition=_jfloat(data, "last_transition", where),
        auth_type=auth,
        vips=tuple(vips),
        vips_set=tuple(vips_set),
        tracked_interfaces=ifaces,
        stats=stats,
        vips_excluded=tuple(evips),
    )


_JSON_STATS = tuple(f for f in InstanceStats.__dataclass_fields__)


def _json_stats(obj: object, where: str) -> InstanceStats | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise DumpError(f"{where}: 'stats' is not an object")
    values: dict[str, int] = {}
    for key in _JSON_STATS:
        number = _jint(obj, key, f"{where} stats")
        if number is not None:
            if number < 0:
                raise DumpError(f"{where} stats: '{key}' is negative")
            values[key] = number
    return InstanceStats(**values)


# --------------------------------------------------------------------------------------------------
# putting the dumps together
# --------------------------------------------------------------------------------------------------


def _names(views: Iterable[InstanceView]) -> set[str]:
    return {v.name for v in views}


def _differ(a: set[str], b: set[str]) -> str:
    only = sorted(a ^ b)
    return ", ".join(only[:5]) + (f" and {len(only) - 5} more" if len(only) > 5 else "")


def combine(
    data: tuple[InstanceView, ...] | None,
    stats: Mapping[str, InstanceStats] | None = None,
    json_views: tuple[InstanceView, ...] | None = None,
    names: tuple[str, str, str] = ("keepalived.data", "keepalived.stats", "keepalived.json"),
) -> tuple[InstanceView, ...]:
    """One view per instance from whatever dumps there are, matched *by instance name*.

    The JSON dump (when given) is authoritative for state, priorities, VIPs and counters; the data dump
    adds what only it carries (track script and interface status, sync group, master router, family,
    and the base interface of a use_vmac instance: its JSON names only the macvlan).
    Without JSON, the data dump gives the instances and the stats dump their counters. Dumps from
    different keepalived versions combine the same way. Dumps naming different instances (one of them
    incomplete, or keepalived reloaded between them) raise DumpError.
    """
    data_name, stats_name, json_name = names
    if json_views is not None:
        if data is not None and _names(data) != _names(json_views):
            differ = _differ(_names(data), _names(json_views))
            raise DumpError(
                f"{json_name} and {data_name} name different instances ({differ})"
                ": one is incomplete or keepalived reloaded between them"
            )
        by_name = {v.name: v for v in data or ()}
        out = []
        for j in json_views:
            d = by_name.get(j.name)
            view = j
            if d is not None:
                view = replace(
                    j,
                    family=d.family,
                    master_router=d.master_router if j.state == VrrpState.BACKUP else None,
                    sync_group=d.sync_group,
                    tracked_scripts=d.tracked_scripts,
                    tracked_interfaces=d.tracked_interfaces or j.tracked_interfaces,
                    tracked_processes=d.tracked_processes,  # the JSON dump has no track data
                    tracked_files=d.tracked_files,
                    tracked_bfds=d.tracked_bfds,
                    vips_excluded=j.vips_excluded or d.vips_excluded,
                    vips_set=j.vips_set or d.vips_set,
                    # the data dump names the base interface with use_vmac; the JSON only the
                    # macvlan (ifp_ifname == vmac_ifname, e.g. "vrrp.1")
                    interface=d.interface or j.interface,
                )
            if view.stats is None and stats is not None and view.name in stats:
                view = replace(view, stats=stats[view.name])
            out.append(view)
        return tuple(out)
    if data is None:
        if stats is not None:
            raise DumpError(f"{stats_name} alone does not identify instances (no VRID): need {data_name}")
        raise DumpError("no dump to read")
    if stats is None:
        return data
    if _names(data) != set(stats):
        raise DumpError(
            f"{data_name} and {stats_name} name different instances ({_differ(_names(data), set(stats))})"
            ": one is incomplete or keepalived reloaded between them"
        )
    return tuple(replace(v, stats=stats[v.name]) for v in data)


def parse_dumps(
    data: str | bytes | None = None,
    stats: str | bytes | None = None,
    json_dump: str | bytes | None = None,
    names: tuple[str, str, str] = ("keepalived.data", "keepalived.stats", "keepalived.json"),
) -> tuple[InstanceView, ...]:
    """Parse and combine whichever of the three dumps are given (see :func:`combine`)."""
    data_name, stats_name, json_name = names
    d = parse_data(data, data_name) if data is not None else None
    s = parse_stats(stats, stats_name) if stats is not None else None
    j = parse_json(json_dump, json_name) if json_dump is not None else None
    return combine(d, s, j, names)
