"""The validity dates of a PEM certificate, read with a minimal DER walker (no cryptography
dependency at run time): enough of X.509 to find notBefore/notAfter.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CertValidity:
    not_before: float
    not_after: float


def _tlv(buf: bytes, i: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at i."""
    tag = buf[i]
    length = buf[i + 1]
    start = i + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[start : start + n], "big")
        start += n
    end = start + length
    if end > len(buf):
        raise ValueError("truncated DER")
    return tag, start, end


def der_validity(der: bytes) -> CertValidity:
    """Walk Certificate -> tbsCertificate -> validity; ValueError if the DER is not a certificate."""
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, i, _ = _tlv(der, start)  # tbsCertificate
    if tag != 0x30:
        raise ValueError("not a certificate")
    if der[i] == 0xA0:  # [0] version
        i = _tlv(der, i)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        i = _tlv(der, i)[2]
    tag, i, _ = _tlv(der, i)  # validity
    if tag != 0x30:
        raise ValueError("no validity in certificate")
    tag1, s1, e1 = _tlv(der, i)
    tag2, s2, e2 = _tlv(der, e1)
    return CertValidity(_asn1_time(tag1, der[s1:e1]), _asn1_time(tag2, der[s2:e2]))


def _asn1_time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime YYMMDDHHMM[SS]Z
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMM[SS]Z
        raise ValueError("not a time")
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]))
    seconds = int(text[12:14]) if len(text) >= 14 else 0
    return float(calendar.timegm((*fields, seconds, 0, 0, 0)))


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
