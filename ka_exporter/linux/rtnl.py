"""Just enough rtnetlink for the VIP source: dump links and addresses, and subscribe to their events.

A plain ``AF_NETLINK`` socket and ``struct``, so that reading a few addresses does not import a netlink
library of ~400 modules (pyroute2 cost ~0.4 s and ~23 MiB of RSS at start-up, most of a ``--once`` run).
Sockets are opened in the calling thread's network namespace, like any socket.

- :func:`addresses` dumps RTM_GETLINK (interface names) and RTM_GETADDR (every address, IPv4 and IPv6);
  a dump the kernel flags as interrupted (NLM_F_DUMP_INTR: the table changed meanwhile) is redone.
- :func:`subscribe` returns a socket bound to multicast groups (e.g. RTMGRP_IPV4_IFADDR); it becomes
  readable when an event arrives, and :func:`drain` empties it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

from ka_exporter.linux import fdwait

__all__ = ["Address", "NetlinkError", "addresses", "drain", "open_socket", "subscribe"]

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_GETADDR = 16, 18, 20, 22
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_MULTI, _NLM_F_DUMP_INTR, _NLM_F_DUMP = 0x1, 0x2, 0x10, 0x300
_IFLA_IFNAME = 3
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_NLA_TYPE_MASK = 0x3FFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")
_RETRIES = 5


class NetlinkError(OSError):
    """The kernel refused or broke off a netlink request; the message is one line."""


class Address(NamedTuple):
    """One address on one interface, as `ip address` shows it (IFA_LOCAL, else IFA_ADDRESS)."""

    address: str
    prefixlen: int
    interface: str
    family: str  # "inet" / "inet6"


def open_socket() -> socket.socket:
    """A NETLINK_ROUTE socket for :func:`addresses` (a caller that dumps often can keep one)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)


def _attrs(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each rtattr in data[offset:]."""
    end = len(data)
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            return
        yield kind & _NLA_TYPE_MASK, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def _dump(sock: socket.socket, msg_type: int, body: bytes, seq: int) -> tuple[list[tuple[int, bytes]], bool]:
    """Messages (type, payload after the header) of one dump, and whether the kernel flagged it
    interrupted."""
    sock.send(_HEADER.pack(_HEADER.size + len(body), msg_type, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0) + body)
    out: list[tuple[int, bytes]] = []
    interrupted = False
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, flags, msg_seq, _port = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size or offset + length > len(data):
                raise NetlinkError("truncated netlink message")
            payload = data[offset + _HEADER.size : offset + length]
            offset += (length + 3) & ~3
            if msg_seq != seq:
                continue  # a late answer to an earlier request on this socket
            interrupted = interrupted or bool(flags & _NLM_F_DUMP_INTR)
            if kind == _NLMSG_DONE:
                return out, interrupted
            if kind == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else errno.EIO
                if code == 0:
                    return out, interrupted
                raise NetlinkError(code, f"netlink dump refused: {os.strerror(code)}")
            out.append((kind, payload))


def netlink_dump(sock: socket.socket, msg_type: int, body: bytes, seq: int) -> list[bytes]:
    """The payloads of one dump on any netlink socket (also generic netlink: `sources.lvs`)."""
    return [payload for _kind, payload in _dump(sock, msg_type, body, seq)[0]]


def _read(sock: socket.socket, seq: int) -> tuple[list[Address], bool]:
    links, cut1 = _dump(sock, _RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), seq)
    names: dict[int, str] = {}
    for kind, payload in links:
        if kind != _RTM_NEWLINK or len(payload) < _IFINFOMSG.size:
            continue
        index = _IFINFOMSG.unpack_from(payload)[2]
        for attr, value in _attrs(payload, _IFINFOMSG.size):
            if attr == _IFLA_IFNAME:
                names[index] = value.split(b"\0", 1)[0].decode(errors="replace")
    addrs, cut2 = _dump(sock, _RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), seq + 1)
    out: list[Address] = []
    for kind, payload in addrs:
        if kind != _RTM_NEWADDR or len(payload) < _IFADDRMSG.size:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
        if family == socket.AF_INET:
            size, name = 4, "inet"
        elif family == socket.AF_INET6:
            size, name = 16, "inet6"
        else:
            continue
        found = dict(_attrs(payload, _IFADDRMSG.size))
        # IPv4: IFA_LOCAL is the address itself (IFA_ADDRESS is the peer on point-to-point links)
        raw = (found.get(_IFA_LOCAL) if family == socket.AF_INET else None) or found.get(_IFA_ADDRESS)
        if raw is None or len(raw) != size:
            continue
        text = socket.inet_ntop(family, raw)
        out.append(Address(text, prefixlen, names.get(index, str(index)), name))
    return out, cut1 or cut2


def addresses(sock: socket.socket | None = None) -> tuple[Address, ...]:
    """Every address on every interface of the calling thread's network namespace, sorted by
    (interface, family, address). Raises NetlinkError (an OSError) when netlink fails."""
    own = sock is None
    s = open_socket() if sock is None else sock
    try:
        for attempt in range(_RETRIES):
            found, interrupted = _read(s, 1 + 2 * attempt)
            if not interrupted:
                return tuple(sorted(found, key=lambda a: (a.interface, a.family, a.address)))
        raise NetlinkError(errno.EAGAIN, "the address table kept changing during the netlink dump")
    finally:
        if own:
            s.close()


def subscribe(groups: int) -> socket.socket:
    """A netlink socket that receives the events of `groups` (RTMGRP_* bits)."""
    s = open_socket()
    try:
        s.bind((0, groups))
    except OSError:
        s.close()
        raise
    return s


def drain(sock: socket.socket, linger: float = 0.0) -> int:
    """Read every pending event, then any arriving within `linger` seconds; return how many reads.

    An overrun (ENOBUFS: the kernel dropped events) counts as an event: the caller re-reads the table.
    """
    count = 0
    timeout = 0.0
    while fdwait.readable([sock], timeout):
        try:
            sock.recv(1 << 16)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        count += 1
        timeout = linger
    return count
