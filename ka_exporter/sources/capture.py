"""Packet capture for the wire source: AF_PACKET sockets with a kernel BPF filter for VRRP.

Everything that is not VRRP is dropped in the kernel by a classic BPF program attached with
SO_ATTACH_FILTER, so unrelated traffic never wakes Python. The socket is SOCK_DGRAM (no link header:
the filter and the decoder see the IP header at offset 0) and bound with ETH_P_ALL, which is what
makes the kernel also hand us our own outgoing adverts (PACKET_OUTGOING). Because there is no link
header, the filter tells IPv4 from IPv6 with the ancillary load SKF_AD_PROTOCOL (skb->protocol).

Accepted (everything else returns 0 = drop):
  IPv4 protocol 112 (VRRP)            IPv4 protocol 51 (AH), unfragmented, AH next header 112
  IPv6 next header 112                IPv6 next header 51 (AH) with AH next header 112

Own adverts are told from received ones by the kernel too: each interface gets two sockets, one
whose filter drops PACKET_OUTGOING (SKF_AD_PKTTYPE) and one that keeps only those. So the receive path
needs no per-packet sockaddr: CPython resolves the interface name of every address it returns with an
extra ioctl, which would double the cost of a packet.

An advert's time is the kernel's (SO_TIMESTAMPNS: when the packet reached the socket, or left this
host), not when Python got to it, so the wire source may read packets late (a batch window, a busy
GIL) and still time them exactly. The packets are read with recvmmsg(2) (through ctypes: the socket
module has no recvmmsg): one system call for up to RECV_SLOTS packets, each with its timestamp as
ancillary data and no address, into preallocated buffers; 1.5 us a packet, as a bare `recv_into` plus
`time.time()` (which times it late), where `recvmsg` with the same timestamp costs 3.5 us and
`recv_into` plus SIOCGSTAMPNS 3.0 us. Without recvmmsg (not glibc) it falls back to `recv_into`,
timed by `time.time()` on return. Kernel drops come from PACKET_STATISTICS (which resets on every
read; `PacketSocket` accumulates).

Also here: `read_pcap`, a small reader for pcap files (Ethernet, Linux cooked or raw IP link types)
that yields (timestamp, IP packet) pairs, used to replay captures through the same decoder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SKF_AD_PROTOCOL = 0xFFFFF000  # SKF_AD_OFF (-0x1000) + SKF_AD_PROTOCOL (0), as u32
SKF_AD_PKTTYPE = 0xFFFFF004  # SKF_AD_OFF + SKF_AD_PKTTYPE (4)

# classic BPF opcodes
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_LD_B_IND = 0x50
_LDX_B_MSH = 0xB1
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06

SNAPLEN = 0x40000

Insn = tuple[int, int, int, int]  # (code, jt, jf, k)


def _assemble(program: list[tuple[str | None, int, str | int, str | int, int]]) -> list[Insn]:
    """Resolve labels: entries are (label, code, jt, jf, k); jt/jf are labels or 0 (= next)."""
    where = {lab: i for i, (lab, *_rest) in enumerate(program) if lab is not None}
    out: list[Insn] = []
    for i, (_lab, code, jt, jf, k) in enumerate(program):
        t = where[jt] - i - 1 if isinstance(jt, str) else jt
        f = where[jf] - i - 1 if isinstance(jf, str) else jf
        out.append((code, t, f, k))
    return out


def vrrp_filter(outgoing: bool = False) -> list[Insn]:
    """The classic BPF program accepting VRRP (and AH carrying VRRP) over IPv4 and IPv6.

    `outgoing`: accept only packets this host sends (PACKET_OUTGOING), else only the others."""
    return _assemble(
        [
            (None, _LD_W_ABS, 0, 0, SKF_AD_PKTTYPE),  # A = skb->pkt_type
            (None, _JEQ_K, 0 if outgoing else "drop", "drop" if outgoing else 0, PACKET_OUTGOING),
            (None, _LD_W_ABS, 0, 0, SKF_AD_PROTOCOL),  # A = skb->protocol
            (None, _JEQ_K, 0, "v6", ETH_P_IP),
            (None, _LD_B_ABS, 0, 0, 9),  # A = IPv4 protocol
            (None, _JEQ_K, "accept", 0, 112),
            (None, _JEQ_K, 0, "drop", 51),
            (None, _LD_H_ABS, 0, 0, 6),  # flags + fragment offset
            (None, _JSET_K, "drop", 0, 0x3FFF),  # MF or offset: the AH header may not be here
            (None, _LDX_B_MSH, 0, 0, 0),  # X = IHL * 4
            (None, _LD_B_IND, 0, 0, 0),  # A = AH next header
            (None, _JEQ_K, "accept", "drop", 112),
            ("v6", _JEQ_K, 0, "drop", ETH_P_IPV6),
            (None, _LD_B_ABS, 0, 0, 6),  # A = IPv6 next header
            (None, _JEQ_K, "accept", 0, 112),
            (None, _JEQ_K, 0, "drop", 51),
            (None, _LD_B_ABS, 0, 0, 40),  # A = AH next header
            (None, _JEQ_K, "accept", "drop", 112),
            ("accept", _RET_K, 0, 0, SNAPLEN),
            ("drop", _RET_K, 0, 0, 0),
        ]
    )


def _attach_filter(sock: socket.socket, program: list[Insn]) -> None:
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


SO_RCVBUFFORCE = 33  # not in Python 3.11's socket module
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # also the cmsg type (SCM_TIMESTAMPNS)
MSG_DONTWAIT = 0x40
RECV_SLOTS = 32  # packets per recvmmsg call
SLOT = 0x10000  # bytes per packet buffer: an IP packet is at most 65,535
_CTL = socket.CMSG_SPACE(struct.calcsize("@ll"))  # one struct timespec
_TIMESPEC = struct.Struct("@ll")
_CMSGHDR = struct.Struct("@Nii")  # cmsg_len, cmsg_level, cmsg_type


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


def _libc_recvmmsg() -> Callable[[int, int, int, int, None], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    fn.restype = ctypes.c_int
    recvmmsg: Callable[[int, int, int, int, None], int] = fn
    return recvmmsg


_recvmmsg = _libc_recvmmsg()


class _Vectors:
    """recvmmsg's preallocated arguments: RECV_SLOTS message headers, each with one SLOT-byte buffer
    (anonymous memory: only the pages packets touch are resident, a page or so per slot) and room
    for one timestamp."""

    _STRIDE = ctypes.sizeof(_Mmsghdr)
    _CONTROLLEN = _Msghdr.controllen.offset  # within a _Mmsghdr: hdr is first
    _LEN = _Mmsghdr.len.offset

    def __init__(self, recvmmsg: Callable[[int, int, int, int, None], int]) -> None:
        self.recvmmsg = recvmmsg
        self.data = mmap.mmap(-1, RECV_SLOTS * SLOT)
        self.view = memoryview(self.data)
        self.control = ctypes.create_string_buffer(RECV_SLOTS * _CTL)
        self.cview = memoryview(self.control).cast("B")
        self.iov = (_Iovec * RECV_SLOTS)()
        self.msgs = (_Mmsghdr * RECV_SLOTS)()
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.data))
        ctl = ctypes.addressof(self.control)
        for i in range(RECV_SLOTS):
            self.iov[i].base = base + i * SLOT
            self.iov[i].len = SLOT
            hdr = self.msgs[i].hdr
            hdr.iov = ctypes.addressof(self.iov[i])
            hdr.iovlen = 1
            hdr.control = ctl + i * _CTL
            hdr.controllen = _CTL
        self.address = ctypes.addressof(self.msgs)
        raw = (ctypes.c_char * (self._STRIDE * RECV_SLOTS)).from_address(self.address)
        self.mview = memoryview(raw).cast("B")
        self.used = 0  # slots the last call filled: their controllen the kernel rewrote

    def receive(self, fd: int, want: int) -> list[tuple[bytes, float]]:
        """Up to `want` (<= RECV_SLOTS) queued packets with their kernel receive times; [] when none
        is queued. Raises OSError for anything but EAGAIN."""
        mview, stride = self.mview, self._STRIDE
        pack_into = struct.pack_into
        for i in range(self.used):  # the kernel shrinks controllen to what it wrote: room again
            pack_into("@N", mview, i * stride + self._CONTROLLEN, _CTL)
        got = self.recvmmsg(fd, self.address, want, MSG_DONTWAIT, None)
        if got < 0:
            self.used = 0
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            raise OSError(code, os.strerror(code))  # EINTR: an InterruptedError
        self.used = got
        out: list[tuple[bytes, float]] = []
        view, cview = self.view, self.cview
        unpack_from = struct.unpack_from
        head, stamp = _CMSGHDR.unpack_from, _TIMESPEC.unpack_from
        hsize = _CMSGHDR.size
        for i in range(got):
            n = unpack_from("@I", mview, i * stride + self._LEN)[0]
            clen = unpack_from("@N", mview, i * stride + self._CONTROLLEN)[0]
            at = i * _CTL
            ts = 0.0
            if clen >= _CTL:
                _len, level, kind = head(cview, at)
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = stamp(cview, at + hsize)
                    ts = sec + nsec * 1e-9
            off = i * SLOT
            out.append((view[off : off + n].tobytes(), ts or time.time()))
        return out

    def close(self) -> None:
        self.view.release()
        self.data.close()


class CaptureError(Exception):
    """A one-line, user-facing reason why capturing on an interface does not work."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # the errno behind it, if any


class PacketSocket:
    """One AF_PACKET socket on one interface, VRRP-only by kernel filter, non-blocking.

    `outgoing=False` receives what other hosts send; `outgoing=True` only what this host sends."""

    def __init__(self, interface: str, rcvbuf: int = 1 << 20, outgoing: bool = False) -> None:
        self.interface = interface
        self.outgoing = outgoing
        self._vectors: _Vectors | None = None
        self._buf: bytearray | None = None  # without recvmmsg only
        self.packets = 0  # PACKET_STATISTICS totals since open
        self.drops = 0
        try:
            self.ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise CaptureError(
                f"wire: cannot open AF_PACKET socket on {interface}: no such interface"
            ) from None
        try:
            # Protocol 0: the socket receives nothing until bound, so no unfiltered packet can
            # slip in between socket() and SO_ATTACH_FILTER.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except PermissionError:
            raise CaptureError(
                f"wire: cannot open AF_PACKET socket on {interface}: needs CAP_NET_RAW "
                "(run as root or grant AmbientCapabilities=CAP_NET_RAW)"
            ) from None
        except OSError as exc:
            raise CaptureError(
                f"wire: cannot open AF_PACKET socket on {interface}: {exc.strerror or exc}"
            ) from None
        try:
            _attach_filter(sock, vrrp_filter(outgoing))
            try:  # past net.core.rmem_max where allowed (root / CAP_NET_ADMIN): most hosts cap at 208 KiB
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                with contextlib.suppress(OSError):  # else as much as rmem_max allows, or the default
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # kernel receive times
            sock.bind((interface, ETH_P_ALL))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            why = "no such interface" if exc.errno in (errno.ENODEV, errno.ENXIO) else exc.strerror
            raise CaptureError(f"wire: cannot open AF_PACKET socket on {interface}: {why or exc}") from None
        self.sock = sock
        self._vectors = _Vectors(_recvmmsg) if _recvmmsg is not None else None

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, limit: int = 256) -> list[tuple[bytes, float, bool]]:
        """Up to `limit` queued packets as (IP packet, kernel receive time, outgoing). Non-blocking.

        Raises CaptureError when the socket broke (interface went down or away)."""
        vectors = self._vectors
        if vectors is None:
            return self._recv_each(limit)
        out: list[tuple[bytes, float, bool]] = []
        outgoing = self.outgoing
        fd = self.sock.fileno()
        while len(out) < limit:
            want = min(RECV_SLOTS, limit - len(out))
            try:
                got = vectors.receive(fd, want)
            except InterruptedError:
                continue
            except OSError as exc:
                raise self._broke(exc) from None
            out += [(data, ts, outgoing) for data, ts in got]
            if len(got) < want:
                break
        return out

    def _recv_each(self, limit: int) -> list[tuple[bytes, float, bool]]:
        """recv_batch without recvmmsg: one recv_into per packet, timed on its return."""
        out: list[tuple[bytes, float, bool]] = []
        if self._buf is None:
            self._buf = bytearray(SLOT)
        buf = self._buf
        view = memoryview(buf)
        recv_into = self.sock.recv_into
        outgoing = self.outgoing
        now = time.time
        for _ in range(limit):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                raise self._broke(exc) from None
            out.append((view[:n].tobytes(), now(), outgoing))
        return out

    def _broke(self, exc: OSError) -> CaptureError:
        return CaptureError(f"wire: capture on {self.interface} failed: {exc.strerror or exc}", exc.errno)

    def read_stats(self) -> tuple[int, int]:
        """(packets, drops) accumulated from PACKET_STATISTICS (the kernel resets them on read)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self.packets, self.drops
        packets, drops = struct.unpack("II", raw)
        self.packets += packets
        self.drops += drops
        return self.packets, self.drops

    def close(self) -> None:
        self.sock.close()
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None


# --------------------------------------------------------------------------------------------------
# pcap files
# --------------------------------------------------------------------------------------------------

_LINKTYPE_ETHERNET = 1
_LINKTYPE_RAW = (101, 12, 14)
_LINKTYPE_LINUX_SLL = 113
_LINKTYPE_LINUX_SLL2 = 276


def read_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp, packet from the IP header on) for every IPv4/IPv6 packet of a pcap file.

    Non-IP frames (ARP...) are skipped; 802.1Q tags are stripped. Raises ValueError on a file that
    is not a (classic, non-ng) pcap."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file (too short)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        ts = sec + frac * (1e-9 if nano else 1e-6)
        ip = _strip_link(frame, linktype)
        if ip is not None:
            yield ts, ip


def _strip_link(frame: bytes, linktype: int) -> bytes | None:
    if linktype == _LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        etype = int.from_bytes(frame[12:14], "big")
        off = 14
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = int.from_bytes(frame[off + 2 : off + 4], "big")
            off += 4
    elif linktype == _LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        etype = int.from_bytes(frame[14:16], "big")
        off = 16
    elif linktype == _LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        etype = int.from_bytes(frame[0:2], "big")
        off = 20
    elif linktype in _LINKTYPE_RAW:
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    else:
        return None
    if etype not in (ETH_P_IP, ETH_P_IPV6):
        return None
    return frame[off:]
