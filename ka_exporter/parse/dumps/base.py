"""What the three dump parsers share: DumpError, the text check, and the small value parsers.

Values of numeric keys may be quoted in error messages (`_quote`); the password never reaches here.
"""

from __future__ import annotations

import math
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ka_exporter.parse.dumps.data import _DataParser

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
