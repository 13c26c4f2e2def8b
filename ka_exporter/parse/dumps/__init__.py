"""Pure parsers for keepalived's own dumps: ``keepalived.data``, ``keepalived.stats``, ``keepalived.json``.

Formats of keepalived 1.3 through 2.4 are read *by key*: unknown lines, unknown sections and unknown JSON
keys are skipped, so builds with other options and releases between the ones we have seen parse too.

One module per format: `data` (keepalived.data), `stats` (keepalived.stats), `jsondump` (keepalived.json),
with `base` for what they share (DumpError, the value parsers); this module puts them together
(`combine`, `parse_dumps`) and is the API: import from here.

What comes out is :class:`ka_exporter.model.InstanceView` (with :class:`InstanceStats`,
:class:`TrackedScript`, :class:`TrackedInterface`). The VRRP PASS password (``Password = ...`` lines of
the ``.data`` dump, ``auth_data`` of the JSON dump) is dropped where it is read: it is never stored,
never part of an error message.

Errors
------
Every problem is a :class:`DumpError` with a one-line message ``"<file>:<line>: <what>"``. Parsers never
raise anything else, whatever the input (binary garbage, empty, truncated at any byte, wrong JSON shape).

Rejection policy: a dump is accepted or rejected *as a whole*. One instance without a name or a VRID, a
duplicate instance, a last line without its newline (keepalived always ends its lines: a missing newline
means the file was cut short), a stats block without its last counter, or ``.data``/``.stats``/``.json``
naming different sets of instances: the whole set is rejected. Publishing the instances that happened to
parse would make the others vanish from the metrics, which looks exactly like an instance being deleted;
keeping the last good set (the dump source does that) is the honest answer.

Derived values: keepalived 1.3 prints no ``Effective priority``; for those dumps it is computed the way
keepalived computes it (base priority plus the weights of the tracked scripts and interfaces that count:
negative weights of failing trackers, positive weights of good ones, clamped to 1..254).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from ka_exporter.model import InstanceStats, InstanceView, VrrpState
from ka_exporter.parse.dumps.base import DumpError, to_text
from ka_exporter.parse.dumps.data import parse_data
from ka_exporter.parse.dumps.jsondump import parse_json
from ka_exporter.parse.dumps.stats import parse_stats

__all__ = [
    "DumpError",
    "combine",
    "parse_data",
    "parse_dumps",
    "parse_json",
    "parse_stats",
    "to_text",
]


# --------------------------------------------------------------------------------------------------
# putting the dumps together
# --------------------------------------------------------------------------------------------------


def _names(views: Iterable[InstanceView]) -> set[str]:
    return {v.name for v in views}


def _differ(a: set[str], b: set[str]) -> str:
    only = sorted(a ^ b)
    return ", ".join(only[:5]) + (f" and {len(only) - 5} more" if len(only) > 5 else "")


def combine(
    data: tuple[InstanceView, ...] | None,
    stats: Mapping[str, InstanceStats] | None = None,
    json_views: tuple[InstanceView, ...] | None = None,
    names: tuple[str, str, str] = ("keepalived.data", "keepalived.stats", "keepalived.json"),
) -> tuple[InstanceView, ...]:
    """One view per instance from whatever dumps there are, matched *by instance name*.

    The JSON dump (when given) is authoritative for state, priorities, VIPs and counters; the data dump
    adds what only it carries (track script and interface status, sync group, master router, family,
    and the base interface of a use_vmac instance: its JSON names only the macvlan).
    Without JSON, the data dump gives the instances and the stats dump their counters. Dumps from
    different keepalived versions combine the same way. Dumps naming different instances (one of them
    incomplete, or keepalived reloaded between them) raise DumpError.
    """
    data_name, stats_name, json_name = names
    if json_views is not None:
        if data is not None and _names(data) != _names(json_views):
            differ = _differ(_names(data), _names(json_views))
            raise DumpError(
                f"{json_name} and {data_name} name different instances ({differ})"
                ": one is incomplete or keepalived reloaded between them"
            )
        by_name = {v.name: v for v in data or ()}
        out = []
        for j in json_views:
            d = by_name.get(j.name)
            view = j
            if d is not None:
                view = replace(
                    j,
                    family=d.family,
                    master_router=d.master_router if j.state == VrrpState.BACKUP else None,
                    sync_group=d.sync_group,
                    tracked_scripts=d.tracked_scripts,
                    tracked_interfaces=d.tracked_interfaces or j.tracked_interfaces,
                    tracked_processes=d.tracked_processes,  # the JSON dump has no track data
                    tracked_files=d.tracked_files,
                    tracked_bfds=d.tracked_bfds,
                    vips_excluded=j.vips_excluded or d.vips_excluded,
                    vips_set=j.vips_set or d.vips_set,
                    # the data dump names the base interface with use_vmac; the JSON only the
                    # macvlan (ifp_ifname == vmac_ifname, e.g. "vrrp.1")
                    interface=d.interface or j.interface,
                )
            if view.stats is None and stats is not None and view.name in stats:
                view = replace(view, stats=stats[view.name])
            out.append(view)
        return tuple(out)
    if data is None:
        if stats is not None:
            raise DumpError(f"{stats_name} alone does not identify instances (no VRID): need {data_name}")
        raise DumpError("no dump to read")
    if stats is None:
        return data
    if _names(data) != set(stats):
        raise DumpError(
            f"{data_name} and {stats_name} name different instances ({_differ(_names(data), set(stats))})"
            ": one is incomplete or keepalived reloaded between them"
        )
    return tuple(replace(v, stats=stats[v.name]) for v in data)


def parse_dumps(
    data: str | bytes | None = None,
    stats: str | bytes | None = None,
    json_dump: str | bytes | None = None,
    names: tuple[str, str, str] = ("keepalived.data", "keepalived.stats", "keepalived.json"),
) -> tuple[InstanceView, ...]:
    """Parse and combine whichever of the three dumps are given (see :func:`combine`)."""
    data_name, stats_name, json_name = names
    d = parse_data(data, data_name) if data is not None else None
    s = parse_stats(stats, stats_name) if stats is not None else None
    j = parse_json(json_dump, json_name) if json_dump is not None else None
    return combine(d, s, j, names)
