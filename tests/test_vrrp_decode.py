"""The VRRP decoder against scapy's VRRP/VRRPv3 layers on every fixture packet, plus properties."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.utils import rdpcap

from ka_exporter.model import Advert
from ka_exporter.parse.vrrp import INVALID_REASONS, PROCESS_KEY, Invalid, decode
from ka_exporter.sources.capture import read_pcap

PCAPS = Path(__file__).resolve().parent / "fixtures" / "pcap"
PCAP_FILES = sorted(PCAPS.glob("*.pcap"))
PASSWORD = "kaT3st01"
KEY = PROCESS_KEY

# VRRP adverts per file (tcpdump 'ip proto 112 or ip proto 51 or ip6 proto 112' | wc -l)
EXPECTED_ADVERTS = {
    "failover-prio0.pcap": 14,
    "split-brain.pcap": 31,
    "v2-ah.pcap": 15,
    "v2-multicast-pass.pcap": 15,
    "v2-unicast.pcap": 15,
    "v3-ipv4-fast.pcap": 127,
    "v3-ipv6.pcap": 15,
    "vrid-conflict.pcap": 22,
}


def _dec(data: bytes, ts: float = 0.0) -> Advert | Invalid:
    return decode(data, interface="eth0", timestamp=ts, key=KEY)


def _real_adverts() -> list[bytes]:
    out = []
    for f in PCAP_FILES:
        for _ts, ip in read_pcap(f):
            if isinstance(_dec(ip), Advert):
                out.append(ip)
    return out


REAL = _real_adverts()


def test_fixture_files_are_all_there() -> None:
    assert sorted(p.name for p in PCAP_FILES) == sorted(EXPECTED_ADVERTS)


@pytest.mark.parametrize("path", PCAP_FILES, ids=lambda p: p.name)
def test_every_fixture_packet_matches_scapy(path: Path) -> None:
    adverts = 0
    for pkt in rdpcap(str(path)):
        raw = bytes(pkt)
        if pkt.type not in (0x0800, 0x86DD):
            continue  # ARP: the kernel filter never hands these over
        ip = raw[14:]
        got = _dec(ip, float(pkt.time))
        net = pkt.payload
        vrrp = None
        wrapped = False
        if AH in pkt and pkt[AH].nh == 112:
            inner = bytes(pkt[AH].payload)
            vrrp = VRRP(inner)
            wrapped = True
        elif VRRP in pkt:
            vrrp = pkt[VRRP]
        elif VRRPv3 in pkt:
            vrrp = pkt[VRRPv3]
        if vrrp is None:
            assert got == Invalid("not_vrrp"), pkt.summary()
            continue
        adverts += 1
        assert isinstance(got, Advert), (pkt.summary(), got)
        assert got.timestamp == float(pkt.time)
        assert got.family == ("inet6" if IPv6 in pkt else "inet")
        assert got.source == net.src
        assert got.destination == net.dst
        assert got.ttl == (net.hlim if IPv6 in pkt else net.ttl) == 255
        assert got.version == vrrp.version
        assert vrrp.type == 1
        assert got.vrid == vrrp.vrid
        assert got.priority == vrrp.priority
        assert len(got.addresses) == vrrp.ipcount
        assert list(got.addresses) == [str(a) for a in vrrp.addrlist]
        if vrrp.version == 2:
            assert got.interval == vrrp.adv
            assert got.auth_type == (2 if wrapped else vrrp.authtype)
            if wrapped:
                assert vrrp.authtype == 2
        else:
            assert got.interval == vrrp.adv / 100
            assert got.auth_type == 0
        # the checksum the decoder accepted is the one scapy computes for these fields
        ref = VRRP(bytes(vrrp)) if vrrp.version == 2 else vrrp.copy()
        ref.chksum = None
        if vrrp.version == 3:
            under = net.copy()
            under[VRRPv3].chksum = None
            rebuilt = (IPv6 if IPv6 in pkt else IP)(bytes(under))
            assert rebuilt[VRRPv3].chksum == vrrp.chksum
        else:
            assert VRRP(bytes(ref)).chksum == vrrp.chksum
        assert got.outgoing is False
    assert adverts == EXPECTED_ADVERTS[path.name]


def test_pass_password_never_in_a_decoded_record() -> None:
    for data in REAL:
        adv = _dec(data)
        assert PASSWORD not in repr(adv)
        assert PASSWORD.encode().hex() not in repr(adv)


def test_pass_digest_compares_passwords_without_revealing_them() -> None:
    pass_adverts = [a for a in map(_dec, REAL) if isinstance(a, Advert) and a.auth_type == 1]
    assert pass_adverts
    digests = {a.auth_digest for a in pass_adverts}
    assert len(digests) == 1  # one password in all fixtures
    other_key = decode(REAL[0], interface="eth0", timestamp=0, key=b"another key")
    assert isinstance(other_key, Advert)
    assert other_key.auth_digest not in digests  # keyed: useless outside this process
    # a different password gives a different digest (re-checksum the v2 packet)
    first = next(d for d in REAL if _dec(d) in pass_adverts)
    changed = _v2_with_password(first, b"other!!!")
    adv = _dec(changed)
    assert isinstance(adv, Advert)
    assert adv.auth_digest not in digests


def _v2_with_password(ip: bytes, password: bytes) -> bytes:
    ihl = (ip[0] & 0xF) * 4
    v = bytearray(ip[ihl:])
    n = v[3]
    v[8 + 4 * n : 16 + 4 * n] = password.ljust(8, b"\0")
    v[6:8] = b"\0\0"
    v[6:8] = struct.pack("!H", _csum(bytes(v)))
    return ip[:ihl] + bytes(v)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def test_ah_wrapped_v2_is_decoded() -> None:
    ah = [a for a in map(_dec, (ip for _t, ip in read_pcap(PCAPS / "v2-ah.pcap"))) if isinstance(a, Advert)]
    assert len(ah) == 15
    assert {(a.vrid, a.auth_type, a.auth_digest, a.addresses) for a in ah} == {
        (61, 2, None, ("10.97.0.161",))
    }


def test_v3_ipv6_and_unicast_are_decoded() -> None:
    v6 = [a for _t, ip in read_pcap(PCAPS / "v3-ipv6.pcap") if isinstance(a := _dec(ip), Advert)]
    assert {(a.family, a.source, a.destination, a.interval, a.addresses) for a in v6} == {
        ("inet6", "fe80::97:ff:fe00:1", "ff02::12", 1.0, ("fe80::97:81", "fd97::181"))
    }
    uni = [a for _t, ip in read_pcap(PCAPS / "v2-unicast.pcap") if isinstance(a := _dec(ip), Advert)]
    assert {(a.source, a.destination) for a in uni} == {("10.97.0.1", "10.97.0.2")}


def _v4_v3(vrid: int = 7, prio: int = 100, cs: int = 100, ttl: int = 255, dst: str = "224.0.0.18") -> bytes:
    pkt = IP(src="10.1.2.3", dst=dst, ttl=ttl, proto=112) / VRRPv3(
        vrid=vrid, priority=prio, adv=cs, addrlist=["10.1.2.100"]
    )
    return bytes(pkt)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:0], "truncated"),
        (lambda b: b[:-4], "truncated"),  # IP total length says more
        (lambda b: b"\x50" + b[1:], "bad_ip"),
        (lambda b: b[:6] + b"\x20\x00" + b[8:], "bad_ip"),  # MF: a fragment
        (lambda b: b[:9] + b"\x11" + b[10:], "not_vrrp"),
        (lambda b: b[:20] + b"\x41" + b[21:], "bad_version"),
        (lambda b: b[:20] + b"\x32" + b[21:], "bad_type"),
        (lambda b: b[: 20 + 3] + b"\x02" + b[24:], "bad_count"),
        (lambda b: b[: 20 + 3] + b"\x00" + b[24:], "bad_count"),  # v3 with no address (RFC 5798 5.2.5)
        (lambda b: b[: 20 + 1] + b"\x00" + b[22:], "bad_vrid"),
        (lambda b: b[: 20 + 4] + b"\x00\x00" + b[26:], "bad_interval"),
        (lambda b: b[: 20 + 2] + bytes([b[22] ^ 1]) + b[23:], "bad_checksum"),
    ],
)
def test_malformed_packets_get_a_reason(mutate: object, reason: str) -> None:
    got = _dec(mutate(_v4_v3()))  # type: ignore[operator]
    assert got == Invalid(reason)


def test_ttl_must_be_255_for_multicast_but_not_unicast() -> None:
    assert _dec(_v4_v3(ttl=64)) == Invalid("bad_ttl")
    uni = _dec(_v4_v3(ttl=64, dst="10.1.2.4"))
    assert isinstance(uni, Advert)
    assert uni.ttl == 64


def test_v3_ipv4_with_keepalived_v2_style_checksum_is_accepted() -> None:
    good = _v4_v3()
    v = bytearray(good[20:])
    v[6:8] = b"\0\0"
    v[6:8] = struct.pack("!H", _csum(bytes(v)))
    adv = _dec(good[:20] + bytes(v))
    assert isinstance(adv, Advert)
    assert adv.version == 3


def test_vrid_0_and_v3_without_addresses_are_invalid_but_v2_without_addresses_is_kept() -> None:
    # Valid checksums: only the rule under test can reject them.
    assert _dec(_v4_v3(vrid=0)) == Invalid("bad_vrid")
    empty = bytes(IP(src="10.1.2.3", dst="224.0.0.18", ttl=255, proto=112) / VRRPv3(vrid=7, addrlist=[]))
    assert _dec(empty) == Invalid("bad_count")
    v2 = bytes(IP(src="10.1.2.3", dst="224.0.0.18", ttl=255, proto=112) / VRRP(vrid=7, addrlist=[]))
    assert isinstance(_dec(v2), Advert)
    v6 = bytes(IPv6(src="fe80::1", dst="ff02::12", hlim=255, nh=112) / VRRPv3(vrid=0, addrlist=["fe80::5"]))
    assert _dec(v6) == Invalid("bad_vrid")


def test_v2_over_ipv6_and_v3_inside_ah_are_rejected() -> None:
    v6 = bytes(IPv6(src="fe80::1", dst="ff02::12", hlim=255, nh=112) / VRRP(addrlist=[]))
    assert _dec(v6) == Invalid("bad_version")


def test_invalid_reasons_are_a_fixed_small_set() -> None:
    assert len(INVALID_REASONS) == len(set(INVALID_REASONS)) <= 16


# -- properties -----------------------------------------------------------------------------------


def _check(result: object) -> None:
    assert isinstance(result, Advert | Invalid)
    if isinstance(result, Invalid):
        assert result.reason in INVALID_REASONS
        assert result.reason != "internal"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    _check(_dec(data))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["45", "60"]),
    st.sampled_from([112, 51]),
    st.binary(min_size=0, max_size=120),
)
def test_random_vrrp_looking_packets_never_raise(ver: str, proto: int, body: bytes) -> None:
    if ver == "45":
        head = bytes.fromhex("45c0") + struct.pack("!H", 20 + len(body)) + bytes(4)
        head += bytes([255, proto]) + bytes(2) + bytes([10, 0, 0, 1, 224, 0, 0, 18])
    else:
        head = bytes.fromhex("60000000") + struct.pack("!H", len(body)) + bytes([proto, 255])
        head += bytes(15) + b"\x01" + b"\xff\x02" + bytes(13) + b"\x12"
    _check(_dec(head + body))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(REAL), st.data())
def test_mutated_real_packets_never_raise(packet: bytes, data: st.DataObject) -> None:
    buf = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 6))):
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    _check(_dec(bytes(buf[:cut])))
    _check(_dec(bytes(buf)))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(REAL), st.data())
def test_any_single_byte_change_in_the_vrrp_part_is_caught(packet: bytes, data: st.DataObject) -> None:
    # The checksum covers the whole VRRP message; one changed byte can never keep it valid.
    start = 40 if packet[0] >> 4 == 6 else (packet[0] & 0xF) * 4
    if packet[0] >> 4 == 4 and packet[9] == 51:
        start += (packet[start + 1] + 2) * 4
    i = data.draw(st.integers(start, len(packet) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda v: v != packet[i]))
    mutated = packet[:i] + bytes([new]) + packet[i + 1 :]
    got = _dec(mutated)
    assert isinstance(got, Invalid), (i, new)
    assert got.reason != "internal"


def test_a_decoded_advert_is_a_genuine_frozen_advert_equal_to_the_constructors() -> None:
    """The decoder's cheap construction (see parse/vrrp.py) yields exactly what Advert(...) would."""
    import dataclasses

    from ka_exporter.parse import vrrp

    assert vrrp._FAST_ADVERT  # the fast construction is in use (else the bench figures mean nothing)
    for data in REAL:
        got = _dec(data, 5.0)
        assert type(got) is Advert
        twin = Advert(**{f.name: getattr(got, f.name) for f in dataclasses.fields(Advert)})
        assert got == twin
        assert hash(got) == hash(twin)
        assert repr(got) == repr(twin)
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.priority = 255  # type: ignore[misc]
        assert dataclasses.replace(got, priority=1).priority == 1


def test_pass_digest_from_the_copied_keyed_state_is_the_keyed_blake2b() -> None:
    from ka_exporter.parse.vrrp import auth_digest

    first = next(d for d in REAL if (a := _dec(d)) and isinstance(a, Advert) and a.auth_type == 1)
    for pw, key in ((b"kaT3st01", KEY), (b"other!!!", KEY), (b"kaT3st01", b"another key")):
        adv = decode(_v2_with_password(first, pw), interface="eth0", timestamp=0, key=key)
        assert isinstance(adv, Advert)
        assert adv.auth_digest == auth_digest(pw, key)


def test_address_text_caches_stay_right_past_their_bound() -> None:
    from ka_exporter.parse import vrrp

    base = bytearray(next(d for d in REAL if d[0] == 0x45 and d[9] == 112 and _dec(d).version == 2))  # type: ignore[union-attr]
    for i in range(vrrp._CACHE_MAX + 500):  # more distinct sources than the cache holds
        p = bytearray(base)
        p[12:16] = bytes([10, (i >> 16) & 255, (i >> 8) & 255, i & 255])  # (not in the VRRP checksum)
        got = _dec(bytes(p))
        assert isinstance(got, Advert)
        assert got.source == f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        assert got.destination == "224.0.0.18"
    assert len(vrrp._ENDS) <= vrrp._CACHE_MAX
