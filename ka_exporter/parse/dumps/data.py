"""keepalived.data: the instance dump (SIGUSR1), section by section, into InstanceView records.

Read by key; the `Password = ...` line is dropped where it is read. keepalived 1.3's missing
`Effective priority` is derived here (`_derive_effective`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ka_exporter.model import (
    InstanceView,
    TrackedBfd,
    TrackedFile,
    TrackedInterface,
    TrackedProcess,
    TrackedScript,
    VrrpState,
)
from ka_exporter.parse.dumps.base import (
    _AUTH,
    DumpError,
    _address,
    _check_complete,
    _float,
    _int,
    _interval,
    _num_int,
    _split,
    _vip_item,
    to_text,
)

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
            family = "inet6" if inst.vips and ":" in inst.vips[0] else "inet"
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
