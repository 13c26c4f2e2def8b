"""keepalived.json: the JSON dump (SIGJSON) into InstanceView records.

Unknown keys are skipped; `auth_data` (the PASS password) is never read into a record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ka_exporter.model import InstanceStats, InstanceView, TrackedInterface, VrrpState
from ka_exporter.parse.dumps.base import _AUTH_JSON, DumpError, _vip_item, to_text

# --------------------------------------------------------------------------------------------------
# keepalived.json
# --------------------------------------------------------------------------------------------------


def parse_json(raw: str | bytes, name: str = "keepalived.json") -> tuple[InstanceView, ...]:
    """Parse a keepalived.json dump (array form, or the ``json_version 2`` object ``{"vrrp": [...]}``).

    ``auth_data`` (the PASS password) is never read. Raises DumpError (one line) on any problem.
    """
    try:
        text = to_text(raw, name)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:  # position only: never the document's text
            raise DumpError(
                f"{name}:{exc.lineno}: not valid JSON at column {exc.colno} ({exc.msg})"
            ) from None
        except RecursionError:
            raise DumpError(f"{name}: JSON nested too deeply") from None
        if isinstance(doc, dict):
            if "vrrp" not in doc:
                raise DumpError(f"{name}: JSON object without a 'vrrp' array (json_version 2 form)")
            doc = doc["vrrp"]
        if not isinstance(doc, list):
            raise DumpError(f"{name}: JSON dump is not an array of instances")
        views: list[InstanceView] = []
        seen: set[str] = set()
        for index, entry in enumerate(doc):
            view = _json_instance(entry, index, name)
            if view.name in seen:
                raise DumpError(f"{name}: instance {view.name} appears twice")
            seen.add(view.name)
            views.append(view)
        return tuple(views)
    except DumpError:
        raise
    except Exception as exc:
        raise DumpError(f"{name}: unreadable dump ({type(exc).__name__})") from None


def _jint(obj: Mapping[str, Any], key: str, where: str, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise DumpError(f"{where}: '{key}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DumpError(f"{where}: '{key}' is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise DumpError(f"{where}: '{key}' is not an integer")
        value = int(value)
    return value


def _jfloat(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DumpError(f"{where}: '{key}' is not a number")
    return float(value)


def _jbool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return None


def _jstate(obj: Mapping[str, Any], key: str, where: str) -> VrrpState | None:
    number = _jint(obj, key, where)
    if number is None:
        return None
    try:
        return VrrpState(number)
    except ValueError:
        return None


def _jstrings(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DumpError(f"{where}: '{key}' is not a list of strings")
    return [v for v in value if v.strip()]


def _json_instance(entry: object, index: int, name: str) -> InstanceView:
    where = f"{name}: instance #{index + 1}"
    if not isinstance(entry, dict):
        raise DumpError(f"{where}: not an object")
    data = entry.get("data")
    if not isinstance(data, dict):
        raise DumpError(f"{where}: no 'data' object")
    iname = data.get("iname")
    if not isinstance(iname, str) or not iname.strip():
        raise DumpError(f"{where}: no instance name ('iname')")
    iname = iname.strip()
    where = f"{name}: instance {iname}"
    vrid = _jint(data, "vrid", where, required=True)
    if vrid is None or not 1 <= vrid <= 255:
        raise DumpError(f"{where}: 'vrid' is not in 1..255")
    ifname = data.get("ifp_ifname")
    if ifname is not None and not isinstance(ifname, str):
        raise DumpError(f"{where}: 'ifp_ifname' is not a string")
    vips: list[str] = []
    vips_set: list[str] = []
    for item in _jstrings(data, "vips", where):
        address, installed = _vip_item(item)
        if address is None:
            raise DumpError(f"{where}: a VIP is not an address")
        vips.append(address)
        if installed:
            vips_set.append(address)
    if data.get("vipset") is True and vips and not vips_set:
        vips_set = list(vips)  # older JSON: no per-VIP " set", but the instance-wide flag
    evips: list[str] = []
    for item in _jstrings(data, "evips", where):
        address, _installed = _vip_item(item)
        if address is None:
            raise DumpError(f"{where}: an excluded VIP is not an address")
        evips.append(address)
    state = _jstate(data, "state", where)
    # keepalived keeps the last master's priority after leaving BACKUP: only a BACKUP's value is news
    master_prio = _jint(data, "master_priority", where) if state == VrrpState.BACKUP else None
    nopreempt = _jbool(data, "nopreempt")
    auth_number = _jint(data, "auth_type", where)
    version = _jint(data, "version", where)
    auth = _AUTH_JSON.get(auth_number) if auth_number is not None else ("NONE" if version == 3 else None)
    ifaces = tuple(TrackedInterface(name=n) for n in _jstrings(data, "track_ifp", where))
    stats = _json_stats(entry.get("stats"), where)
    return InstanceView(
        name=iname,
        interface=(ifname or "").strip(),
        vrid=vrid,
        family="inet6" if vips and ":" in vips[0] else "inet",
        state=state,
        wanted_state=_jstate(data, "wantstate", where),
        version=version,
        priority=_jint(data, "base_priority", where),
        effective_priority=_jint(data, "effective_priority", where),
        master_priority=master_prio if master_prio else None,
        advert_int=_jfloat(data, "adver_int", where),
        preempt=None if nopreempt is None else not nopreempt,
        last_transition=_jfloat(data, "last_transition", where),
        auth_type=auth,
        vips=tuple(vips),
        vips_set=tuple(vips_set),
        tracked_interfaces=ifaces,
        stats=stats,
        vips_excluded=tuple(evips),
    )


_JSON_STATS = tuple(f for f in InstanceStats.__dataclass_fields__)


def _json_stats(obj: object, where: str) -> InstanceStats | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise DumpError(f"{where}: 'stats' is not an object")
    values: dict[str, int] = {}
    for key in _JSON_STATS:
        number = _jint(obj, key, f"{where} stats")
        if number is not None:
            if number < 0:
                raise DumpError(f"{where} stats: '{key}' is negative")
            values[key] = number
    return InstanceStats(**values)
