"""A lean, pure VRRP advertisement decoder: IPv4/IPv6 header in, `Advert` or `Invalid` out.

Input is a packet starting at the IP header (what an AF_PACKET SOCK_DGRAM socket returns). Handles
VRRPv2 (RFC 3768; checksum over the VRRP message only; auth none/PASS/AH), VRRPv2 wrapped in IPsec AH
(IP protocol 51, next header 112, as keepalived's `auth_type AH` sends it) and VRRPv3 (RFC 5798;
checksum over an IPv4/IPv6 pseudo-header). keepalived's "Use VRRPv2 checksum for VRRPv3 IPv4" option
(checksum without pseudo-header) is accepted as well, so such routers are not counted as broken.

Validation follows what a VRRP router checks before it believes an advert: IP header sanity, TTL /
hop limit 255 (for multicast adverts; keepalived skips the check for unicast when `unicast_ttl` is
set, so unicast adverts keep their TTL in the record instead), version, type, address count against
length, a non-zero interval, auth type, checksum. Anything else becomes `Invalid(reason)` with one of
`INVALID_REASONS`: a fixed set, so a metric label over it is bounded.

The PASS password is never stored or returned: `auth_digest` is a keyed BLAKE2b of the 8 auth bytes
under a per-process random key (`PROCESS_KEY`), so two routers can be compared ("same password?")
without the password leaving this function.

`decode` never raises: every input, however malformed, is an `Advert` or an `Invalid`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from hashlib import blake2b
from socket import AF_INET, AF_INET6, inet_ntop

from ka_exporter.model import Advert

__all__ = [
    "INVALID_REASONS",
    "PROCESS_KEY",
    "Invalid",
    "auth_digest",
    "decode",
]

IPPROTO_VRRP = 112
IPPROTO_AH = 51

#: Key for `auth_digest`: random per process, never exported. Digests are only comparable in-process.
PROCESS_KEY: bytes = os.urandom(16)

INVALID_REASONS: tuple[str, ...] = (
    "truncated",  # shorter than its headers or its IP length says
    "bad_ip",  # not IPv4/IPv6, bad IHL/total length, or a fragment
    "not_vrrp",  # IP protocol not 112 (nor AH carrying 112)
    "bad_ah",  # AH header malformed, or AH carrying something else than VRRPv2
    "bad_version",  # VRRP version not 2/3, or v2 over IPv6
    "bad_type",  # not an ADVERTISEMENT (type 1)
    "bad_ttl",  # multicast advert with TTL / hop limit != 255
    "bad_count",  # address count does not fit the VRRP length
    "bad_length",  # bytes left over after the addresses (and v2 auth data)
    "bad_interval",  # advert interval 0
    "bad_auth",  # v2 auth type other than 0/1/2, or AH declared without the AH header
    "bad_checksum",
    "internal",  # a decoder bug (a test proves it never happens); counted, never raised
)


@dataclass(frozen=True, slots=True)
class Invalid:
    """A packet that is not a valid VRRP advertisement. `reason` is one of INVALID_REASONS."""

    reason: str
    detail: str = ""  # a short fixed phrase with numbers only; never packet contents


_TRUNCATED = Invalid("truncated")
_BAD_IP = Invalid("bad_ip")
_NOT_VRRP = Invalid("not_vrrp")
_BAD_AH = Invalid("bad_ah")
_BAD_VERSION = Invalid("bad_version")
_BAD_TYPE = Invalid("bad_type")
_BAD_TTL = Invalid("bad_ttl")
_BAD_COUNT = Invalid("bad_count")
_BAD_LENGTH = Invalid("bad_length")
_BAD_INTERVAL = Invalid("bad_interval")
_BAD_AUTH = Invalid("bad_auth")
_BAD_CHECKSUM = Invalid("bad_checksum")
_INTERNAL = Invalid("internal")

_from_bytes = int.from_bytes


def auth_digest(password_field: bytes, key: bytes) -> str:
    """Keyed BLAKE2b of a PASS auth field (8 bytes, zero padded), 16 hex digits. One-way."""
    return blake2b(password_field, key=key, digest_size=8).hexdigest()


def _sum_ok(value: int) -> bool:
    # The one's-complement sum of 16-bit big-endian words is congruent to the integer value of the
    # (even-length) byte string modulo 0xffff, because 2**16 == 1 (mod 0xffff). A correct Internet
    # checksum makes the folded sum 0xffff, i.e. value % 0xffff == 0 (value 0 only for all-zero data,
    # which never reaches here: a VRRP header with version 0 is rejected before).
    return value % 0xFFFF == 0


def decode(
    packet: bytes,
    *,
    interface: str,
    timestamp: float,
    key: bytes,
    outgoing: bool = False,
) -> Advert | Invalid:
    """Decode one packet (starting at the IP header). Never raises."""
    try:
        return _decode(packet, interface, timestamp, key, outgoing)
    except Exception:
        return _INTERNAL


def _decode(packet: bytes, interface: str, timestamp: float, key: bytes, outgoing: bool) -> Advert | Invalid:
    n = len(packet)
    if n < 1:
        return _TRUNCATED
    ipver = packet[0] >> 4
    if ipver == 4:
        if n < 20:
            return _TRUNCATED
        off = (packet[0] & 0x0F) << 2
        if off < 20:
            return _BAD_IP
        end = (packet[2] << 8) | packet[3]
        if end < off:
            return _BAD_IP
        if end > n:
            return _TRUNCATED
        if (packet[6] & 0x3F) or packet[7]:  # MF flag or a fragment offset
            return _BAD_IP
        ttl = packet[8]
        proto = packet[9]
        src = packet[12:16]
        dst = packet[16:20]
        inet6 = False
        multicast = 224 <= dst[0] <= 239
    elif ipver == 6:
        if n < 40:
            return _TRUNCATED
        off = 40
        end = 40 + ((packet[4] << 8) | packet[5])
        if end > n:
            return _TRUNCATED
        proto = packet[6]
        ttl = packet[7]
        src = packet[8:24]
        dst = packet[24:40]
        inet6 = True
        multicast = dst[0] == 0xFF
    else:
        return _BAD_IP

    ah = False
    if proto == IPPROTO_AH:
        if end - off < 12:
            return _BAD_AH
        if packet[off] != IPPROTO_VRRP:
            return _NOT_VRRP
        ahlen = (packet[off + 1] + 2) << 2
        if ahlen < 12 or off + ahlen > end:
            return _BAD_AH
        off += ahlen
        ah = True
    elif proto != IPPROTO_VRRP:
        return _NOT_VRRP

    vlen = end - off
    if vlen < 8:
        return _TRUNCATED
    vt = packet[off]
    version = vt >> 4
    if version == 2:
        if inet6:
            return _BAD_VERSION
    elif version == 3:
        if ah:
            return _BAD_VERSION
    else:
        return _BAD_VERSION
    if vt & 0x0F != 1:
        return _BAD_TYPE
    if ttl != 255 and multicast:
        return _BAD_TTL

    count = packet[off + 3]
    asize = 16 if inet6 else 4
    alen = asize * count
    need = 8 + alen + (8 if version == 2 else 0)
    if vlen < need:
        return _BAD_COUNT
    if vlen > need:
        return _BAD_LENGTH

    vrrp = packet[off:end]
    if version == 2:
        interval = float(packet[off + 5])
        auth_type = packet[off + 4]
        if ah:
            auth_type = 2
        elif auth_type > 1:
            return _BAD_AUTH
        if interval == 0.0:
            return _BAD_INTERVAL
        if not _sum_ok(_from_bytes(vrrp, "big")):
            return _BAD_CHECKSUM
    else:
        cs = ((packet[off + 4] & 0x0F) << 8) | packet[off + 5]
        if cs == 0:
            return _BAD_INTERVAL
        interval = cs / 100.0
        auth_type = 0
        body = _from_bytes(vrrp, "big")
        pseudo = _from_bytes(src, "big") + _from_bytes(dst, "big") + vlen + IPPROTO_VRRP
        if not _sum_ok(pseudo + body) and (inet6 or not _sum_ok(body)):
            return _BAD_CHECKSUM

    digest: str | None = None
    if auth_type == 1:
        digest = blake2b(vrrp[8 + alen : 16 + alen], key=key, digest_size=8).hexdigest()

    family = AF_INET6 if inet6 else AF_INET
    if count == 0:
        addresses: tuple[str, ...] = ()
    elif count == 1:
        addresses = (inet_ntop(family, vrrp[8 : 8 + asize]),)
    else:
        addresses = tuple(inet_ntop(family, vrrp[i : i + asize]) for i in range(8, 8 + alen, asize))

    return Advert(
        timestamp,
        interface,
        "inet6" if inet6 else "inet",
        inet_ntop(family, src),
        inet_ntop(family, dst),
        version,
        vrrp[1],
        vrrp[2],
        interval,
        addresses,
        auth_type,
        digest,
        ttl,
        outgoing,
    )
