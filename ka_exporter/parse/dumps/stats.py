"""keepalived.stats: the per-instance counters (SIGUSR2) into InstanceStats records.

A block is accepted only whole: its first and last counters both present.
"""

from __future__ import annotations

from ka_exporter.model import InstanceStats
from ka_exporter.parse.dumps.base import DumpError, _check_complete, _int, to_text

# --------------------------------------------------------------------------------------------------
# keepalived.stats
# --------------------------------------------------------------------------------------------------

_STATS_FIELDS: dict[tuple[str, str], str] = {
    ("Advertisements", "Received"): "advert_rcvd",
    ("Advertisements", "Sent"): "advert_sent",
    ("", "Became master"): "become_master",
    ("", "Released master"): "release_master",
    ("Packet Errors", "Length"): "packet_len_err",
    ("Packet Errors", "TTL"): "ip_ttl_err",
    ("Packet Errors", "Invalid Type"): "invalid_type_rcvd",
    ("Packet Errors", "Advertisement Interval"): "advert_interval_err",
    ("Packet Errors", "Address List"): "addr_list_err",
    ("Authentication Errors", "Invalid Type"): "invalid_authtype",
    ("Authentication Errors", "Type Mismatch"): "authtype_mismatch",
    ("Authentication Errors", "Failure"): "auth_failure",
    ("Priority Zero", "Received"): "pri_zero_rcvd",
    ("Priority Zero", "Sent"): "pri_zero_sent",
}
# first and last counter of every block: both present means the block was written out whole
_STATS_REQUIRED = ("advert_rcvd", "pri_zero_sent")


def parse_stats(raw: str | bytes, name: str = "keepalived.stats") -> dict[str, InstanceStats]:
    """Parse a keepalived.stats dump into {instance name: InstanceStats}.

    Raises DumpError (one line) for anything that is not a complete keepalived stats dump.
    """
    try:
        text = to_text(raw, name)
        lines = _check_complete(text, name)
        return _parse_stats(lines, name)
    except DumpError:
        raise
    except Exception as exc:
        raise DumpError(f"{name}: unreadable dump ({type(exc).__name__})") from None


def _parse_stats(lines: list[str], name: str) -> dict[str, InstanceStats]:
    result: dict[str, InstanceStats] = {}
    cur: str | None = None
    cur_line = 0
    values: dict[str, int] = {}
    group = ""

    def close() -> None:
        if cur is None:
            return
        missing = [f for f in _STATS_REQUIRED if f not in values]
        if missing:
            raise DumpError(f"{name}:{cur_line}: instance {cur}: counters incomplete (truncated dump?)")
        result[cur] = InstanceStats(**values)

    fields = _STATS_FIELDS
    seen: dict[str, tuple[int, str]] = {}  # raw text before ":" -> (indent, key), once per distinct head
    for lineno, raw in enumerate(lines, 1):
        head, _, value = raw.partition(":")
        info = seen.get(head)
        if info is None:
            key = head.lstrip()
            info = seen[head] = (len(head) - len(key), key.rstrip())
        indent, key = info
        if not key:
            continue
        value = value.strip()
        if indent == 0 and key == "VRRP Instance":
            close()
            iname = value
            if not iname:
                raise DumpError(f"{name}:{lineno}: VRRP Instance without a name")
            if iname in result:
                raise DumpError(f"{name}:{lineno}: instance {iname} appears twice")
            cur, cur_line, values, group = iname, lineno, {}, ""
            continue
        if cur is None:
            raise DumpError(f"{name}:{lineno}: not a keepalived stats dump (expected 'VRRP Instance: ...')")
        if not value:  # a group header ("Advertisements:")
            group = key
            continue
        if indent <= 2:
            group = ""
        fname = fields.get((group, key))
        if fname is None:
            continue  # counters we do not export (e.g. 2.4's Authentication Extension Errors)
        try:
            number = int(value)
        except ValueError:
            number = _int(value, f"{name}:{lineno}", f"{group + ' ' if group else ''}{key}")
        if number < 0:
            raise DumpError(f"{name}:{lineno}: {key} is negative")
        values[fname] = number
    close()
    if not result:
        raise DumpError(f"{name}: no instances in stats dump")
    return result
