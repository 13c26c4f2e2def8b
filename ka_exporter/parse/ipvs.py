"""The kernel's IPVS table: `/proc/net/ip_vs` text, and IPVS generic-netlink messages.

Pure: bytes in, records out (the socket lives in `sources.lvs`).

- `/proc/net/ip_vs` is readable by any user but has no counters per service or destination: only
  weights and active/inactive connections (addresses and ports in hex; persistence in jiffies).
- Generic netlink (family "IPVS", what ipvsadm and keepalived use) has everything, including 64-bit
  counters and the kernel's rate estimates, but the kernel accepts its commands only with
  CAP_NET_ADMIN (every IPVS genl operation is GENL_ADMIN_PERM).

Attribute numbers are those of linux/ip_vs.h.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from ka_exporter.model import IpvsCounters, IpvsDest, IpvsService, lvs_key

__all__ = [
    "IpvsError",
    "dest_body",
    "family_body",
    "parse_dests",
    "parse_family_id",
    "parse_proc_ip_vs",
    "parse_services",
    "service_body",
]


class IpvsError(Exception):
    """IPVS data that cannot be used, in one line."""


_FORWARD = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}  # IP_VS_CONN_F_FWD_MASK values
_PROTO = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", 132: "SCTP"}


# --------------------------------------------------------------------------------------------------
# /proc/net/ip_vs
# --------------------------------------------------------------------------------------------------


def _hex_endpoint(text: str, where: str) -> tuple[str, int]:
    """`0A8C0064:0050` or `[2001:0db8:...:0001]:0050` -> ("10.140.0.100", 80)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise IpvsError(f"{where}: cannot read address {text[:48]!r}")
    try:
        number = int(port, 16)
        if host.startswith("[") and host.endswith("]"):
            return str(ipaddress.IPv6Address(host[1:-1])), number
        if len(host) != 8:
            raise ValueError(host)
        return str(ipaddress.IPv4Address(int(host, 16))), number
    except ValueError:
        raise IpvsError(f"{where}: cannot read address {text[:48]!r}") from None


def parse_proc_ip_vs(raw: bytes | str, name: str = "/proc/net/ip_vs") -> tuple[IpvsService, ...]:
    """Services and destinations (weights, connections; no counters) from /proc/net/ip_vs."""
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise IpvsError(f"{name}: not ASCII text") from None
    if not text.startswith("IP Virtual Server version"):
        raise IpvsError(f"{name}:1: not an IPVS table")
    if not text.endswith("\n"):
        raise IpvsError(f"{name}:{text.count(chr(10)) + 1}: truncated (last line has no newline)")
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or not lines[1].startswith("Prot ") or not lines[2].lstrip().startswith("->"):
        raise IpvsError(f"{name}: truncated (header incomplete)")
    services: list[IpvsService] = []
    current: tuple[str, str, str, list[IpvsDest]] | None = None
    seen: set[str] = set()

    def close() -> None:
        if current is not None:
            key, proto, sched, dests = current
            services.append(IpvsService(key=key, protocol=proto, scheduler=sched, dests=tuple(dests)))

    for n, line in enumerate(lines[3:], 4):
        where = f"{name}:{n}"
        words = line.split()
        if not words:
            continue
        if words[0] == "->":
            if current is None:
                raise IpvsError(f"{where}: cannot read destination line {line.strip()[:48]!r}")
            current[3].append(_dest_line(words, where, line))
            continue
        close()
        key = _service_key(words, where, line)
        if (words[0], key) in {(s.protocol, s.key) for s in services} or (words[0] + key) in seen:
            raise IpvsError(f"{where}: service {words[0]} {key} appears twice")
        seen.add(words[0] + key)
        current = (key, words[0], words[2], [])
    close()
    return tuple(services)


def _dest_line(words: list[str], where: str, line: str) -> IpvsDest:
    """`-> ADDR:PORT Forward Weight ActiveConn InActConn` (hex address and port)."""
    if len(words) != 6:
        raise IpvsError(f"{where}: cannot read destination line {line.strip()[:48]!r}")
    address, port = _hex_endpoint(words[1], where)
    try:
        weight, active, inactive = int(words[3]), int(words[4]), int(words[5])
    except ValueError:
        raise IpvsError(f"{where}: cannot read destination line {line.strip()[:48]!r}") from None
    return IpvsDest(lvs_key(address, port), words[2], weight, active, inactive)


def _service_key(words: list[str], where: str, line: str) -> str:
    """The `virtual_server` label of a service line: `TCP ADDR:PORT sched ...` or `FWM MARK sched ...`."""
    if len(words) < 3 or words[0] not in ("TCP", "UDP", "SCTP", "FWM"):
        raise IpvsError(f"{where}: cannot read service line {line.strip()[:48]!r}")
    if words[0] == "FWM":
        try:
            return f"fwmark:{int(words[1], 16)}"
        except ValueError:
            raise IpvsError(f"{where}: cannot read service line {line.strip()[:48]!r}") from None
    return lvs_key(*_hex_endpoint(words[1], where))


# --------------------------------------------------------------------------------------------------
# generic netlink
# --------------------------------------------------------------------------------------------------

GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
IPVS_CMD_GET_SERVICE, IPVS_CMD_GET_DEST = 4, 8
IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK, SVC_SCHED = 1, 2, 3, 4, 5, 6
SVC_STATS, SVC_STATS64 = 10, 12
DEST_ADDR, DEST_PORT, DEST_FWD, DEST_WEIGHT, DEST_ACTIVE, DEST_INACT = 1, 2, 3, 4, 7, 8
DEST_STATS, DEST_AF, DEST_STATS64 = 10, 11, 12
NLA_F_NESTED = 0x8000
_GENL = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")

# Requests are the generic netlink header and attributes (what follows the nlmsghdr); the socket side
# (`rtnl.netlink_dump`) sends them as dumps and hands back each reply's payload.


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLA.pack(_NLA.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _body(cmd: int, attrs: bytes = b"") -> bytes:
    return _GENL.pack(cmd, 1, 0) + attrs


def family_body() -> bytes:
    """CTRL_CMD_GETFAMILY, sent as a dump of every family (the IPVS one is picked by name)."""
    return _body(CTRL_CMD_GETFAMILY)


def service_body() -> bytes:
    return _body(IPVS_CMD_GET_SERVICE)


def dest_body(service_attrs: bytes) -> bytes:
    """Dump the destinations of the service whose identifying attributes are `service_attrs`."""
    return _body(IPVS_CMD_GET_DEST, _attr(IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, service_attrs))


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, off)
        if length < _NLA.size or off + length > len(data):
            raise IpvsError("netlink attribute runs past its message")
        out.setdefault(kind & 0x3FFF, data[off + _NLA.size : off + length])
        off += (length + 3) & ~3
    return out


def parse_family_id(payloads: list[bytes], name: str = "IPVS") -> int | None:
    """The id of generic netlink family `name` in a CTRL_CMD_GETFAMILY dump, None if not registered."""
    for payload in payloads:
        attrs = _attrs(payload[_GENL.size :])
        raw = attrs.get(CTRL_ATTR_FAMILY_ID)
        if (
            attrs.get(CTRL_ATTR_FAMILY_NAME, b"").split(b"\0", 1)[0] == name.encode()
            and raw
            and len(raw) >= 2
        ):
            return int(struct.unpack_from("=H", raw)[0])
    return None


def _u32(raw: bytes | None) -> int:
    return int(struct.unpack_from("=I", raw)[0]) if raw is not None and len(raw) >= 4 else 0


def _u64(raw: bytes | None) -> int:
    return int(struct.unpack_from("=Q", raw)[0]) if raw is not None and len(raw) >= 8 else 0


def _counters(attrs: dict[int, bytes], stats: int, stats64: int) -> IpvsCounters | None:
    raw64 = attrs.get(stats64)
    if raw64 is not None:
        s = _attrs(raw64)
        return IpvsCounters(*(_u64(s.get(i)) for i in range(1, 11)))
    raw = attrs.get(stats)
    if raw is None:
        return None
    s = _attrs(raw)
    # 32-bit stats: conns and packets u32, bytes u64, rates u32 (u64 for the byte rates' kind: u32)
    return IpvsCounters(
        _u32(s.get(1)),
        _u32(s.get(2)),
        _u32(s.get(3)),
        _u64(s.get(4)),
        _u64(s.get(5)),
        _u32(s.get(6)),
        _u32(s.get(7)),
        _u32(s.get(8)),
        _u32(s.get(9)),
        _u32(s.get(10)),
    )


def _address(af: int, raw: bytes | None) -> str:
    if raw is None:
        raise IpvsError("IPVS entry without an address")
    if af == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def _port(raw: bytes | None) -> int:
    return int(struct.unpack_from("!H", raw)[0]) if raw is not None and len(raw) >= 2 else 0


def parse_services(payloads: list[bytes]) -> list[tuple[IpvsService, bytes]]:
    """Services of a GET_SERVICE dump, each with the attributes that identify it for GET_DEST."""
    out: list[tuple[IpvsService, bytes]] = []
    for payload in payloads:
        top = _attrs(payload[_GENL.size :])
        nested = top.get(IPVS_CMD_ATTR_SERVICE)
        if nested is None:
            continue
        a = _attrs(nested)
        af = struct.unpack_from("=H", a[SVC_AF])[0] if SVC_AF in a else socket.AF_INET
        fwmark = _u32(a.get(SVC_FWMARK))
        sched = a.get(SVC_SCHED, b"").split(b"\0", 1)[0].decode("ascii", "replace")
        if fwmark:
            key, proto = f"fwmark:{fwmark}", "FWM"
            ident = _attr(SVC_AF, a[SVC_AF] if SVC_AF in a else struct.pack("=H", af)) + _attr(
                SVC_FWMARK, a[SVC_FWMARK]
            )
        else:
            proto_no = struct.unpack_from("=H", a[SVC_PROTOCOL])[0] if SVC_PROTOCOL in a else 0
            proto = _PROTO.get(proto_no, str(proto_no))
            key = lvs_key(_address(af, a.get(SVC_ADDR)), _port(a.get(SVC_PORT)))
            ident = b"".join(_attr(k, a[k]) for k in (SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT) if k in a)
        service = IpvsService(
            key=key, protocol=proto, scheduler=sched, counters=_counters(a, SVC_STATS, SVC_STATS64)
        )
        out.append((service, ident))
    return out


def parse_dests(payloads: list[bytes], service_af: int = socket.AF_INET) -> list[IpvsDest]:
    out: list[IpvsDest] = []
    for payload in payloads:
        top = _attrs(payload[_GENL.size :])
        nested = top.get(IPVS_CMD_ATTR_DEST)
        if nested is None:
            continue
        a = _attrs(nested)
        af = struct.unpack_from("=H", a[DEST_AF])[0] if DEST_AF in a else service_af
        out.append(
            IpvsDest(
                key=lvs_key(_address(af, a.get(DEST_ADDR)), _port(a.get(DEST_PORT))),
                forward=_FORWARD.get(_u32(a.get(DEST_FWD)) & 0x7, "?"),
                weight=struct.unpack_from("=i", a[DEST_WEIGHT])[0] if DEST_WEIGHT in a else 0,
                active=_u32(a.get(DEST_ACTIVE)),
                inactive=_u32(a.get(DEST_INACT)),
                counters=_counters(a, DEST_STATS, DEST_STATS64),
            )
        )
    return out
