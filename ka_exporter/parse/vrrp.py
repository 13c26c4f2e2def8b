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

Speed (bench/bench_decode.py): three costs dominated a decode and are avoided without changing a
field of the result. (1) Building the frozen `Advert`: a frozen dataclass's `__init__` sets each of
its 14 fields through `object.__setattr__`, ~2.3 us a record. The decoder fills a plain object of
a twin class with the very same `__slots__` layout (`_AdvertSlots`) by ordinary attribute stores
and then sets its `__class__` to `Advert`: the result *is* an `Advert` (same type, equality, hash,
repr, still frozen), built in ~0.3 us. An import-time self-check falls back to the constructor if
the layouts ever differ. (2) `inet_ntop`: the text of the source and destination pair and of the
VIP list is memoized per raw address bytes (addresses are not secret; bounded, cleared when full). (3) The
keyed BLAKE2b: the state after absorbing the key is computed once per key and copied per packet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from hashlib import blake2b
from socket import AF_INET, AF_INET6, inet_ntop
from typing import cast

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
    "bad_count",  # address count does not fit the VRRP length, or a VRRPv3 advert with no address
    "bad_length",  # bytes left over after the addresses (and v2 auth data)
    "bad_interval",  # advert interval 0
    "bad_auth",  # v2 auth type other than 0/1/2, or AH declared without the AH header
    "bad_checksum",
    "bad_vrid",  # VRID 0 (VRIDs are 1-255)
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
_BAD_VRID = Invalid("bad_vrid")
_INTERNAL = Invalid("internal")

_from_bytes = int.from_bytes


def auth_digest(password_field: bytes, key: bytes) -> str:
    """Keyed BLAKE2b of a PASS auth field (8 bytes, zero padded), 16 hex digits. One-way."""
    return blake2b(password_field, key=key, digest_size=8).hexdigest()


_KEYED: dict[bytes, blake2b] = {}  # key -> BLAKE2b state with the key absorbed (copied per use)


def _digest(password_field: bytes, key: bytes) -> str:
    """`auth_digest`, from a copy of the keyed state (the key block is hashed once per key)."""
    base = _KEYED.get(key)
    if base is None:
        if len(_KEYED) >= 8:
            _KEYED.clear()
        base = _KEYED[key] = blake2b(key=key, digest_size=8)
    h = base.copy()
    h.update(password_field)
    return h.hexdigest()


# Text of addresses by their raw bytes: a segment has a handful of routers, VIPs and groups, so
# nearly every lookup hits; a flood of random sources only refills it (bounded: cleared when full).
_CACHE_MAX = 4096
_ENDS: dict[bytes, tuple[str, str]] = {}  # IP source + destination (8 or 32 bytes: unambiguous)
_LIST4: dict[bytes, tuple[str, ...]] = {}  # an IPv4 VIP list
_LIST6: dict[bytes, tuple[str, ...]] = {}  # an IPv6 VIP list


def _ends(raw: bytes) -> tuple[str, str]:
    """(source, destination) text of the IP addresses `raw` (src + dst bytes); fills `_ENDS`."""
    family, size = (AF_INET, 4) if len(raw) == 8 else (AF_INET6, 16)
    got = (inet_ntop(family, raw[:size]), inet_ntop(family, raw[size:]))
    if len(_ENDS) >= _CACHE_MAX:
        _ENDS.clear()
    _ENDS[raw] = got
    return got


def _addresses(raw: bytes, inet6: bool) -> tuple[str, ...]:
    """Text of a VIP list (`raw`: the addresses' bytes); fills `_LIST4` / `_LIST6`."""
    cache = _LIST6 if inet6 else _LIST4
    got = cache.get(raw)
    if got is None:
        size, family = (16, AF_INET6) if inet6 else (4, AF_INET)
        got = tuple(inet_ntop(family, raw[i : i + size]) for i in range(0, len(raw), size))
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[raw] = got
    return got


class _AdvertSlots:
    """Same slots, same order as the frozen `Advert`: filled by plain stores, then made an Advert."""

    __slots__ = tuple(f.name for f in fields(Advert))

    timestamp: float
    interface: str
    family: str
    source: str
    destination: str
    version: int
    vrid: int
    priority: int
    interval: float
    addresses: tuple[str, ...]
    auth_type: int
    auth_digest: str | None
    ttl: int
    outgoing: bool


def _slots_work() -> bool:
    """Import-time proof that a filled `_AdvertSlots` turns into an Advert equal to the constructor's."""
    want = Advert(1.0, "i", "inet", "s", "d", 2, 1, 100, 1.0, ("a",), 1, "x", 255, True)
    try:
        got = _AdvertSlots()
        for f in fields(Advert):
            setattr(got, f.name, getattr(want, f.name))
        got.__class__ = Advert  # type: ignore[assignment]
    except TypeError:  # "object layout differs": the model changed shape
        return False
    made = cast(object, got)
    return type(made) is Advert and made == want and repr(made) == repr(want)


_FAST_ADVERT = _slots_work()


def _sum_ok(value: int) -> bool:
    # The one's-complement sum of 16-bit big-endian words is congruent to the integer value of the
    # (even-length) byte string modulo 0xffff, because 2**16 == 1 (mod 0xffff). A correct Internet
    # checksum makes the folded sum 0xffff, i.e. value % 0xffff == 0 (value 0 only for all-zero data,
    # which never reaches here: a VRRP header with version 0 is rejected before).
    return value % 0xFFFF == 0


def decode(  # noqa: C901, PLR0912, PLR0915 - the VRRP decoder checks each RFC 3768/5798 field in wire order; flat for speed (bench_decode)
    packet: bytes,
    *,
    interface: str,
    timestamp: float,
    key: bytes,
    outgoing: bool = False,
) -> Advert | Invalid:
    """Decode one packet (starting at the IP header). Never raises."""
    try:
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
            ends = packet[12:20]  # source + destination
            inet6 = False
            multicast = 224 <= packet[16] <= 239
        elif ipver == 6:
            if n < 40:
                return _TRUNCATED
            off = 40
            end = 40 + ((packet[4] << 8) | packet[5])
            if end > n:
                return _TRUNCATED
            proto = packet[6]
            ttl = packet[7]
            ends = packet[8:40]
            inet6 = True
            multicast = packet[24] == 0xFF
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

        if packet[off + 1] == 0:
            return _BAD_VRID
        count = packet[off + 3]
        if count == 0 and version == 3:
            return _BAD_COUNT  # RFC 5798 5.2.5: Count IPvX Addr is at least 1
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
            half = len(ends) >> 1  # source and destination
            pseudo = _from_bytes(ends[:half], "big") + _from_bytes(ends[half:], "big") + vlen + IPPROTO_VRRP
            if not _sum_ok(pseudo + body) and (inet6 or not _sum_ok(body)):
                return _BAD_CHECKSUM

        digest: str | None = None
        if auth_type == 1:
            digest = _digest(vrrp[8 + alen : 16 + alen], key)

        if count:
            raw = vrrp[8 : 8 + alen]
            cached = (_LIST6 if inet6 else _LIST4).get(raw)
            addresses = _addresses(raw, inet6) if cached is None else cached
        else:
            addresses = ()
        names = _ENDS.get(ends)
        if names is None:
            names = _ends(ends)
        if not _FAST_ADVERT:
            return Advert(
                timestamp,
                interface,
                "inet6" if inet6 else "inet",
                names[0],
                names[1],
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
        a = _AdvertSlots()
        a.timestamp = timestamp
        a.interface = interface
        a.family = "inet6" if inet6 else "inet"
        a.source, a.destination = names
        a.version = version
        a.vrid = vrrp[1]
        a.priority = vrrp[2]
        a.interval = interval
        a.addresses = addresses
        a.auth_type = auth_type
        a.auth_digest = digest
        a.ttl = ttl
        a.outgoing = outgoing
        a.__class__ = Advert  # type: ignore[assignment]  # now a frozen Advert (see the module docstring)
        return cast(Advert, a)
    except Exception:  # a decoder bug: counted as "internal", never raised (zero cost when not taken)
        return _INTERNAL
