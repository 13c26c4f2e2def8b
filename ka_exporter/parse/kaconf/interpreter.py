"""keepalived.conf, the semantic level: statements -> `model.KeepalivedConfig` records.

Instances, VIPs, scripts, sync groups, notify FIFOs and LVS virtual servers, with a one-line problem for
what cannot be used; unknown keywords are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from ka_exporter.model import (
    ConfInstance,
    ConfNotifyFifo,
    ConfRealServer,
    ConfScript,
    ConfVip,
    ConfVirtualServer,
    KeepalivedConfig,
    lvs_key,
)
from ka_exporter.parse.kaconf.lexer import _FLOAT_RE, _INT_RE, _describe, _Node, _show

if TYPE_CHECKING:
    from ka_exporter.parse.kaconf.reader import _Reader

# --------------------------------------------------------------------------------------------------
# semantic level: statements -> records
# --------------------------------------------------------------------------------------------------

# Keywords that only make sense at the top level: seen inside another block, a '}' is missing.
# global_defs keys naming a FIFO keepalived writes its transitions to (keepalived.conf(5))
_FIFO_KEYS = frozenset({"notify_fifo", "vrrp_notify_fifo"})

_TOP_LEVEL = frozenset(
    {
        "global_defs",
        "vrrp_instance",
        "vrrp_script",
        "vrrp_sync_group",
        "virtual_server",
        "virtual_server_group",
        "static_ipaddress",
        "static_routes",
        "static_rules",
        "linkbeat_interfaces",
        "bfd_instance",
    }
)
_VIP_VALUE_OPTS = frozenset(
    {"brd", "broadcast", "dev", "scope", "label", "peer", "preferred_lft", "track_group", "valid_lft"}
)


@dataclass(slots=True)
class _Draft:
    """A vrrp_instance while it is being read."""

    name: str
    file: str
    line: int
    interface: str | None = None
    vrid: int | None = None
    vrid_bad: bool = False
    state: str | None = None
    priority: int = 100
    advert_int: float = 1.0
    nopreempt: bool = False
    version: int | None = None
    native_ipv6: bool = False
    vips: list[tuple[ConfVip, int, str, int]] = field(default_factory=list)  # vip, version, file, line
    evips: list[ConfVip] = field(default_factory=list)
    unicast_src_ip: str | None = None
    unicast_peers: list[str] = field(default_factory=list)
    track_scripts: list[tuple[str, str, int]] = field(default_factory=list)
    track_interfaces: list[str] = field(default_factory=list)
    auth_type: str | None = None


class _Interpreter:
    def __init__(self, reader: _Reader) -> None:
        self.r = reader
        self.router_id: str | None = None
        self.vrrp_version: int | None = None
        self.enable_dbus = False
        self.fifos: dict[str, str] = {}  # "notify_fifo" / "vrrp_notify_fifo" -> path
        self.fifo_scripts: set[str] = set()  # the kinds that also have a *_notify_fifo_script
        self.drafts: list[_Draft] = []
        self.names: set[str] = set()
        self.scripts: dict[str, ConfScript] = {}
        self.groups: list[tuple[str, list[str], _Node]] = []
        self.virtual_servers: list[ConfVirtualServer] = []

    def problem(self, node: _Node, message: str) -> None:
        self.r.problem(node.file, node.line, message)

    # -- helpers ----------------------------------------------------------------------------------

    def _arg(self, node: _Node) -> str | None:
        if not node.args or not node.args[0]:
            self.problem(node, f"{node.key} needs a value")
            return None
        return node.args[0]

    def _int(self, node: _Node, lo: int, hi: int) -> int | None:
        v = self._arg(node)
        if v is None:
            return None
        if _INT_RE.fullmatch(v) and lo <= int(v) <= hi:
            return int(v)
        self.problem(node, f"{node.key} {_show(v)} is not a whole number in {lo}..{hi}")
        return None

    def _float(self, node: _Node, lo: float, hi: float) -> float | None:
        v = self._arg(node)
        if v is None:
            return None
        if _FLOAT_RE.fullmatch(v):
            f = float(v)
            if lo <= f <= hi:
                return f
        self.problem(node, f"{node.key} {_show(v)} is not a number in {lo:g}..{hi:g}")
        return None

    def _block(self, node: _Node) -> list[_Node]:
        if node.block is None:
            self.problem(node, f"{_describe(node)} has no '{{ ... }}' block")
            return []
        return node.block

    def _no_block(self, node: _Node) -> None:
        if node.block is not None:
            self.problem(node, f"unexpected '{{ ... }}' after {_show(node.key)}: ignored")

    def _nested_top(self, node: _Node, parent: _Node) -> bool:
        if node.key in _TOP_LEVEL:
            self.problem(node, f"{node.key} inside {_describe(parent)}: is a '}}' missing above?")
            return True
        return False

    # -- top level --------------------------------------------------------------------------------

    def run(self, nodes: list[_Node]) -> KeepalivedConfig:
        """The records; `files` and `problems` are the reader's to fill in (`_Reader.finish`)."""
        for node in nodes:
            handler = self._top.get(node.key)
            if handler is not None:
                handler(self, node)
        return self._build()

    def _global_defs(self, node: _Node) -> None:
        for n in self._block(node):
            if self._nested_top(n, node):
                continue
            if n.key == "router_id":
                self._no_block(n)
                v = self._arg(n)
                if v is not None:
                    self.router_id = v
            elif n.key == "vrrp_version":
                self._no_block(n)
                ver = self._int(n, 2, 3)
                if ver is not None:
                    self.vrrp_version = ver
            elif n.key == "enable_dbus":
                self._no_block(n)
                self.enable_dbus = _bool_arg(n.args)
            elif n.key in _FIFO_KEYS:
                # `notify_fifo PATH [user [group]]`: where keepalived writes its transition lines
                self._no_block(n)
                v = self._arg(n)
                if v is not None:
                    self.fifos[n.key] = v
            elif n.key.endswith("_script") and n.key[: -len("_script")] in _FIFO_KEYS:
                self._no_block(n)
                self.fifo_scripts.add(n.key[: -len("_script")])

    def _vrrp_script(self, node: _Node) -> None:
        if not node.args:
            self.problem(node, "vrrp_script needs a name")
            return
        name = node.args[0]
        script: str | None = None
        interval, weight, fall, rise = 1.0, 0, 1, 1
        for n in self._block(node):
            if self._nested_top(n, node):
                continue
            if n.key == "script":
                self._no_block(n)
                if n.args and any(n.args):
                    script = " ".join(n.args)
                else:
                    self.problem(n, "script needs a value")
            elif n.key == "interval":
                self._no_block(n)
                f = self._float(n, 0.000001, 1e9)
                interval = interval if f is None else f
            elif n.key == "weight":
                self._no_block(n)
                w = self._int(n, -253, 253)
                weight = weight if w is None else w
            elif n.key == "fall":
                self._no_block(n)
                v = self._int(n, 1, 1 << 31)
                fall = fall if v is None else v
            elif n.key == "rise":
                self._no_block(n)
                v = self._int(n, 1, 1 << 31)
                rise = rise if v is None else v
        if node.block is None:
            return
        if script is None:
            self.problem(node, f"vrrp_script {_show(name)} has no script: keepalived ignores it")
            return
        self.scripts[name] = ConfScript(name, script, interval, weight, fall, rise)

    def _sync_group(self, node: _Node) -> None:
        if not node.args:
            self.problem(node, "vrrp_sync_group needs a name")
            return
        members: list[str] = []
        for n in self._block(node):
            if self._nested_top(n, node):
                continue
            if n.key == "group":
                for entry in self._block(n):
                    members.extend(w for w in [entry.key, *entry.args] if w and entry.key != "auth_pass")
        if node.block is not None:
            self.groups.append((node.args[0], members, node))

    def _instance(self, node: _Node) -> None:
        if not node.args:
            self.problem(node, "vrrp_instance needs a name")
            return
        name = node.args[0]
        if name in self.names:
            self.problem(node, f"vrrp_instance {_show(name)} is already defined: keepalived ignores this one")
            return
        if node.block is None:
            self._block(node)
            return
        d = _Draft(name, node.file, node.line)
        self.names.add(name)
        for n in node.block:
            if self._nested_top(n, node):
                continue
            handler = self._inst.get(n.key)
            if handler is not None:
                handler(self, d, n)
        self.drafts.append(d)

    def _virtual_server(self, node: _Node) -> None:
        """Only what the lvs source needs: the key, protocol, scheduler, quorum, real servers."""
        args = node.args
        if len(args) >= 2 and args[0] in ("fwmark", "group"):
            key = f"{args[0]}:{args[1]}"
        elif args and (addr := _address(args[0])) is not None:
            port = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
            key = lvs_key(addr, port)
        else:
            self.problem(node, "virtual_server needs IP PORT, fwmark N or group NAME")
            return
        vs = ConfVirtualServer(key=key)
        real: list[ConfRealServer] = []
        for n in self._block(node):
            if n.key == "protocol" and n.args:
                vs = replace(vs, protocol=n.args[0].upper())
            elif n.key in ("lb_algo", "lvs_sched") and n.args:
                vs = replace(vs, lb_algo=n.args[0])
            elif n.key == "quorum" and (q := self._int(n, 0, 2**31 - 1)) is not None:
                vs = replace(vs, quorum=q)
            elif n.key == "delay_loop" and (f := self._float(n, 0, 1e9)) is not None:
                vs = replace(vs, delay_loop=f)
            elif n.key == "sorry_server" and n.args and (a := _address(n.args[0])):
                vs = replace(vs, sorry_server=lvs_key(a, _port_arg(n.args, 0)))
            elif n.key == "real_server":
                a = _address(n.args[0]) if n.args else None
                if a is None:
                    self.problem(n, "real_server needs IP [PORT]")
                    continue
                vport = "0" if vs.key.startswith(("fwmark:", "group:")) else vs.key.rpartition(":")[2]
                rs = ConfRealServer(key=lvs_key(a, _port_arg(n.args, int(vport))))
                for m in n.block or []:
                    if m.key == "weight" and (w := self._int(m, 0, 2**31 - 1)) is not None:
                        rs = replace(rs, weight=w)
                    elif m.key == "inhibit_on_failure":
                        rs = replace(rs, inhibit_on_failure=_bool_arg(m.args))
                real.append(rs)
        self.virtual_servers.append(replace(vs, real_servers=tuple(real)))

    _top: ClassVar[dict[str, Callable[[_Interpreter, _Node], None]]] = {
        "global_defs": _global_defs,
        "vrrp_script": _vrrp_script,
        "vrrp_sync_group": _sync_group,
        "vrrp_instance": _instance,
        "virtual_server": _virtual_server,
    }

    # -- inside vrrp_instance ---------------------------------------------------------------------

    def _i_state(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._arg(n)
        if v is None:
            return
        if v in ("MASTER", "BACKUP"):
            d.state = v
        else:
            self.problem(n, f"unknown state {_show(v)}: keepalived uses BACKUP")
            d.state = "BACKUP"

    def _i_interface(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._arg(n)
        if v is not None:
            d.interface = v

    def _i_vrid(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._int(n, 1, 255)
        if v is None:
            d.vrid_bad = True
        else:
            d.vrid, d.vrid_bad = v, False

    def _i_priority(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._int(n, 1, 255)
        if v is not None:
            d.priority = v

    def _i_advert(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._float(n, 0.01, 255.0)
        if v is not None:
            d.advert_int = v

    def _i_nopreempt(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        d.nopreempt = True

    def _i_preempt(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        d.nopreempt = False

    def _i_version(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._int(n, 2, 3)
        if v is not None:
            d.version = v

    def _i_native_ipv6(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        d.native_ipv6 = True

    def _i_unicast_src(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._arg(n)
        if v is None:
            return
        addr = _address(v)
        if addr is None:
            self.problem(n, f"unicast_src_ip {_show(v)} is not an IP address")
        else:
            d.unicast_src_ip = addr

    def _i_unicast_peer(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            addr = _address(e.key)
            if addr is None:
                self.problem(e, f"unicast_peer {_show(e.key)} is not an IP address")
            elif addr not in d.unicast_peers:
                d.unicast_peers.append(addr)

    def _i_track_script(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n) or e.key == "auth_pass":
                continue
            if e.key not in (t[0] for t in d.track_scripts):
                d.track_scripts.append((e.key, e.file, e.line))

    def _i_track_interface(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n) or e.key == "auth_pass":
                continue
            if e.key not in d.track_interfaces:
                d.track_interfaces.append(e.key)

    def _i_auth(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            if e.key == "auth_type":
                self._no_block(e)
                v = self._arg(e)
                if v in ("PASS", "AH"):
                    d.auth_type = v
                elif v is not None:
                    self.problem(e, f"unknown authentication type {_show(v)} (PASS or AH)")
            # auth_pass: its value was dropped when the line was read; nothing to keep

    def _i_vips(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            vip = self._vip(e)
            if vip is not None:
                d.vips.append((vip, _family(vip.address), e.file, e.line))

    def _i_evips(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            vip = self._vip(e)
            if vip is not None:
                d.evips.append(replace(vip, excluded=True))

    def _vip(self, e: _Node) -> ConfVip | None:
        if e.key == "auth_pass":
            self.problem(e, "auth_pass inside an address block")
            return None
        text = e.key
        host, slash, plen = text.partition("/")
        addr = _address(host)
        if addr is None:
            self.problem(e, f"{_show(text)} is not an IP address")
            return None
        prefix: int | None = None
        if slash:
            limit = 32 if ":" not in addr else 128
            if plen.isascii() and plen.isdigit() and int(plen) <= limit:
                prefix = int(plen)
            else:
                self.problem(e, f"prefix length {_show(plen)} of {addr} is not in 0..{limit}")
        dev: str | None = None
        label: str | None = None
        i = 0
        args = e.args
        while i < len(args):
            opt = args[i]
            if opt in _VIP_VALUE_OPTS:
                value = args[i + 1] if i + 1 < len(args) else None
                if value is None:
                    self.problem(e, f"{opt} needs a value")
                elif opt == "dev":
                    dev = value
                elif opt == "label":
                    label = value
                i += 2
            else:
                i += 1  # flags: home, -nodad, no_track, noprefixroute, autojoin, use_vmac, ...
        return ConfVip(addr, prefix, dev, label)

    _inst: ClassVar[dict[str, Callable[[_Interpreter, _Draft, _Node], None]]] = {
        "state": _i_state,
        "interface": _i_interface,
        "virtual_router_id": _i_vrid,
        "priority": _i_priority,
        "advert_int": _i_advert,
        "nopreempt": _i_nopreempt,
        "no_preempt": _i_nopreempt,
        "preempt": _i_preempt,
        "version": _i_version,
        "native_ipv6": _i_native_ipv6,
        "unicast_src_ip": _i_unicast_src,
        "unicast_peer": _i_unicast_peer,
        "track_script": _i_track_script,
        "track_interface": _i_track_interface,
        "authentication": _i_auth,
        "virtual_ipaddress": _i_vips,
        "virtual_ipaddress_excluded": _i_evips,
    }

    # -- cross references -------------------------------------------------------------------------

    def _build(self) -> KeepalivedConfig:
        member_of: dict[str, str] = {}
        names = {d.name for d in self.drafts}
        sync_groups: list[tuple[str, tuple[str, ...]]] = []
        for gname, members, gnode in self.groups:
            kept: list[str] = []
            for m in members:
                if m not in names:
                    self.problem(
                        gnode, f"vrrp_sync_group {_show(gname)} lists {_show(m)}, not a vrrp_instance"
                    )
                elif m in member_of:
                    self.problem(gnode, f"{_show(m)} is already in vrrp_sync_group {_show(member_of[m])}")
                else:
                    member_of[m] = gname
                    kept.append(m)
            sync_groups.append((gname, tuple(kept)))

        instances: list[ConfInstance] = []
        seen_vrid: dict[tuple[str, str, int], str] = {}
        for d in self.drafts:
            inst = self._instance_record(d, member_of.get(d.name))
            instances.append(inst)
            if inst.vrid is not None and inst.interface is not None and not inst.unicast_peers:
                key = (inst.interface, inst.family, inst.vrid)
                other = seen_vrid.get(key)
                if other is not None:
                    self.r.problem(
                        d.file,
                        d.line,
                        f"{_show(other)} and {_show(d.name)} both use VRID {inst.vrid} "
                        f"({inst.family}) on {_show(inst.interface)}",
                    )
                else:
                    seen_vrid[key] = d.name
        return KeepalivedConfig(
            instances=tuple(instances),
            scripts=tuple(self.scripts.values()),
            sync_groups=tuple(sync_groups),
            router_id=self.router_id,
            vrrp_version=self.vrrp_version,
            enable_dbus=self.enable_dbus,
            notify_fifos=tuple(
                ConfNotifyFifo(kind, path, kind in self.fifo_scripts)
                for kind, path in sorted(self.fifos.items())
            ),
            virtual_servers=tuple(self.virtual_servers),
        )

    def _instance_record(self, d: _Draft, group: str | None) -> ConfInstance:
        if d.vrid is None and not d.vrid_bad:
            self.r.problem(d.file, d.line, f"vrrp_instance {_show(d.name)} has no virtual_router_id")
        if d.interface is None and not d.unicast_peers:
            self.r.problem(d.file, d.line, f"vrrp_instance {_show(d.name)} has no interface")
        family = "inet6" if d.native_ipv6 or (d.vips and d.vips[0][1] == 6) else "inet"
        want = 6 if family == "inet6" else 4
        vips: list[ConfVip] = []
        for vip, ver, file, line in d.vips:
            if ver != want:
                self.r.problem(
                    file,
                    line,
                    f"{vip.address}: address family differs from the instance's ({family}), ignored",
                )
            else:
                vips.append(vip)
        listed = {v.address for v in vips}
        vips.extend(v for v in d.evips if v.address not in listed)
        for sname, file, line in d.track_scripts:
            if sname not in self.scripts:
                self.r.problem(file, line, f"track_script {_show(sname)} is not a defined vrrp_script")
        return ConfInstance(
            name=d.name,
            interface=d.interface,
            vrid=d.vrid,
            state=d.state,
            priority=d.priority,
            advert_int=d.advert_int,
            nopreempt=d.nopreempt,
            version=d.version if d.version is not None else self.vrrp_version,
            family=family,
            vips=tuple(vips),
            unicast_src_ip=d.unicast_src_ip,
            unicast_peers=tuple(d.unicast_peers),
            track_scripts=tuple(t[0] for t in d.track_scripts),
            track_interfaces=tuple(d.track_interfaces),
            auth_type=d.auth_type,
            sync_group=group,
        )


def _address(text: str) -> str | None:
    """A normalised IP address, or None. A zone (`fe80::1%eth0`) is not accepted, as in keepalived."""
    if not text or len(text) > 45 or "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _port_arg(args: list[str], default: int) -> int:
    return int(args[1]) if len(args) > 1 and args[1].isdigit() else default


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _bool_arg(args: list[str]) -> bool:
    if not args:
        return True
    return args[0].lower() not in ("off", "false", "no", "0")
