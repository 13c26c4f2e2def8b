"""The scrape: the exposition of one store snapshot, rendered once per change and served as bytes.

`Renderer.render(accept, accept_encoding)` is the `render` callable of `http.App`: it returns the body,
its content type and its content encoding. The work of a scrape is what changed since the last one:

- the store keeps a version per section (`store.SECTIONS`); each collector part has a cache key made
  of the versions of what it reads (`KEYS`), and its rendered text is kept until that key moves;
- the whole body (and its gzip) is kept until one part's key moves: a scrape of an unchanged state
  copies bytes;
- the text of the parts is formatted by `Formatter`, which writes exactly what prometheus_client's
  `generate_latest` (text 0.0.4 and OpenMetrics 1.0.0) writes for the same families, with the label
  sets' text kept between renders. Anything it does not format itself (other metric types, other
  content types or escapings) goes through prometheus_client's own encoder;
- the parts made of keyed rows (keepalived's instances, the wire's failover accounts, the fused
  verdicts, the L2 witness's VIPs: `collectors.Row`) keep each row's text, and write again only the
  rows whose basis moved (`_KeyedText`): 100 instances going FAULT at once cost 100 rows' lines, not
  the part's families built and formatted again.

One scrape is one consistent snapshot: the parts rendered for it read one snapshot, and a part kept
from an earlier one was made from sections at the same versions, so it says what a fresh render would.

A part with no entry in `KEYS` (a collector this module does not know) is rendered on every scrape
and keyed on what it rendered (its families' samples), unless it has a `cache_key` attribute: a
callable returning what it reads besides the snapshot (the watchdog's counters), its key.
Time-driven verdicts (a router's hold time running out) move the store's "wire" section when they
change (the wire source's tick, every 0.25 s), so a kept wire part is never older than that. The
fused verdict (`collect_fused`) has a memo of its own (`collectors.fused.RowMemo` over
`verdicts.fused.Memo`): a render judges again only the VRIDs whose inputs moved or whose next
time-driven edge (a master silent for its hold time) the snapshot's time reached, and the part is
keyed on the verdicts themselves, so it is written again only when one moved, and never late: a
body is served from the cache (`cached`) only before that edge. A part whose cache key cannot be computed
fails alone (`ka_exporter_collector_success`), as a part whose render raises.

`ka_exporter_scrape_duration_seconds` is the time the served body took to render: a body served from
the cache carries the figure of the render that made it.
"""

from __future__ import annotations

import gzip
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from math import copysign
from typing import Any

from prometheus_client import openmetrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import (
    _escape,
    _is_legacy_labelname_rune,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ka_exporter.collectors import (
    DURATION_HELP,
    DURATION_NAME,
    FailureLog,
    Family,
    Part,
    Rows,
    Series,
    empty_family,
    part_name,
    success_family,
)
from ka_exporter.collectors.exporter import collect_exporter
from ka_exporter.collectors.fused import FAMILIES as FUSED
from ka_exporter.collectors.fused import RowMemo
from ka_exporter.collectors.host import VIP_FAMILIES, VipRows, collect_config, collect_process, collect_vips
from ka_exporter.collectors.keepalived import collect_keepalived
from ka_exporter.model import Snapshot
from ka_exporter.store import Versions

# The logger= name operators' log filters know, kept when the module moved to outputs/.
log = logging.getLogger("ka_exporter.exposition")

__all__ = ["KEYS", "OPENMETRICS", "TEXT", "Formatter", "Renderer", "units_for"]

TEXT = CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS = openmetrics.exposition.CONTENT_TYPE_LATEST
_EOF = b"# EOF\n"
_go_float: Callable[[float], str] = floatToGoString  # how prometheus_client writes a value

KeyFn = Callable[[Snapshot, Versions], object]  # compared with ==
UnitRender = Callable[[Snapshot, Versions], Iterable[Metric]]
TextRender = Callable[[Snapshot, str, "Encoder"], bytes]
# (cache key, or None: rendered on every scrape; its families; or, instead, its text)
Unit = tuple[KeyFn | None, UnitRender, TextRender | None]
Source = Callable[[], tuple[Snapshot, Versions]]
Render = tuple[bytes, str, str | None]
Stamp = Callable[[], "tuple[float, object] | None"]  # Store.stamp
Encoder = Callable[[Collector], bytes]
RowsOf = Callable[[Snapshot], Rows | None]
_OM = "application/openmetrics-text"


def _sections(*names: str) -> KeyFn:
    def key(_snap: Snapshot, versions: Versions) -> object:
        return tuple(versions[n] for n in names)

    return key


def _keepalived_key(snap: Snapshot, versions: Versions) -> object:
    # The VIP mismatch is judged only with a state at least as fresh as the addresses: that
    # comparison, not every publication time, is what the part reads of views_time.
    fresh = snap.state_fresh_since()
    current = fresh is not None and (snap.addresses_changed is None or fresh >= snap.addresses_changed)
    sections = ("views", "config", "process", "addresses", "health", "transitions")
    return (*(versions[n] for n in sections), current)


def _vips_key(snap: Snapshot, versions: Versions) -> object:
    # keepalived.conf lists the VIPs when it lists the instances: keepalived's view is not read then
    # (a state change does not move the part).
    if snap.config is not None and snap.config.instances:
        return (versions["config"], versions["addresses"])
    return (versions["config"], versions["views"], versions["addresses"])


KEYS: dict[Callable[..., Any], KeyFn] = {
    collect_process: _sections("process"),
    collect_vips: _vips_key,
    collect_config: _sections("config"),
    collect_keepalived: _keepalived_key,
    collect_exporter: _sections("health", "health_times"),
}


def _wire_units(memo: RowMemo) -> list[Unit]:
    """collect_wire as two units: the per-VRID verdicts, and the routers and counters.

    Counters and last-advert times move with every advert without a store change, so the routers
    unit is keyed on the records themselves (64 routers compare in microseconds). The verdicts unit
    is keyed on the verdicts themselves, judged by the fused verdict's memo (`RowMemo.wire`, with
    the fused verdicts of the same VRIDs): only the VRIDs whose routers or configuration moved, or
    whose next time-driven edge came, are judged again, so an advert, a state change or the wire
    source's tick that changes no verdict costs one VRID's verdict, not 1,000 (milliseconds).
    """
    from ka_exporter.collectors.wire import router_families, verdict_families

    def verdicts(snap: Snapshot, _versions: Versions) -> Iterable[Metric]:
        got = memo.wire(snap)
        return () if got is None else verdict_families(got)

    def routers_key(snap: Snapshot, _versions: Versions) -> object:
        return (snap.wire_peers, snap.wire_stats)

    def routers(snap: Snapshot, _versions: Versions) -> Iterable[Metric]:
        if snap.wire_peers is None or snap.wire_stats is None:
            return ()
        return router_families(snap.wire_peers, snap.wire_stats)

    return [(memo.wire, verdicts, None), (routers_key, routers, None)]


def _named(part: Part, module: str, name: str) -> bool:
    return getattr(part, "__module__", "") == module and getattr(part, "__name__", "") == name


def _is_collect_wire(part: Part) -> bool:
    return _named(part, "ka_exporter.collectors.wire", "collect_wire")


def _failover_key(snap: Snapshot, versions: Versions) -> object:
    # keepalived.conf too: a configured VRID shows its (empty) histograms
    return (snap.failover, snap.failover_events, versions["config"])


def units_for(
    parts: Sequence[Part], keys: Mapping[Callable[..., Any], KeyFn], formatter: Formatter | None = None
) -> list[list[Unit]]:
    """Each part as the units it is rendered in (see `Unit`). With a `formatter`, the parts made of
    keyed rows (keepalived's instances, the failover accounts, the fused verdicts, the L2 witness)
    are written row by row (`_KeyedText`)."""
    out: list[list[Unit]] = []
    memo = RowMemo()  # the fused verdict's memo, which judges the wire verdicts too
    for part in parts:
        if part not in keys and _is_collect_wire(part):
            out.append(_wire_units(memo))  # imported only when the wire collector runs
        elif part not in keys and _named(part, "ka_exporter.collectors.failover", "collect_failover"):
            # the wire's accounts: keyed on their records
            out.append([(_failover_key, _plain(part), _keyed_text(part, formatter))])
        elif part not in keys and _named(part, "ka_exporter.collectors.fused", "collect_fused"):
            # keyed on its verdicts, judged by the memo (only the VRIDs that can have moved)
            text = None if formatter is None else _KeyedText(formatter, memo.collect, FUSED, memo.rows).text
            out.append([(memo.key, _plain(memo.collect), text)])
        elif part not in keys and _named(part, "ka_exporter.collectors.l2", "collect_l2"):
            out.append([(_sections("l2"), _plain(part), _keyed_text(part, formatter))])
        elif part not in keys and _named(part, "ka_exporter.collectors.lvs", "collect_lvs"):
            out.append([(_sections("config", "lvs"), _plain(part), None)])
        elif part not in keys and callable(own := getattr(part, "cache_key", None)):
            # A part reading something of its own besides the snapshot (the watchdog's counters)
            # says what: its key, also in the stamp (see Renderer.cached).
            out.append([(_own_key(own), _plain(part), None)])
        elif part is collect_keepalived:
            out.append([(keys.get(part), _plain(part), _keyed_text(part, formatter))])
        elif part is collect_vips:
            text = None if formatter is None else _KeyedText(formatter, part, VIP_FAMILIES, VipRows()).text
            out.append([(keys.get(part), _plain(part), text)])
        else:
            out.append([(keys.get(part), _plain(part), None)])
    return out


def _keyed_text(part: Part, formatter: Formatter | None) -> TextRender | None:
    """The text render of a part made of keyed rows (`_KeyedText`), with a formatter; else None
    (its families go through the formatter whole)."""
    if formatter is None:
        return None
    module = sys.modules[part.__module__]
    families: Sequence[Family] = module.FAMILIES
    rows: RowsOf = getattr(module, part_name(part) + "_rows")
    return _KeyedText(formatter, part, families, rows).text


def _own_key(own: Callable[[], object]) -> KeyFn:
    def key(_snap: Snapshot, _versions: Versions) -> object:
        return own()

    return key


def _plain(part: Part) -> UnitRender:
    def render(snap: Snapshot, _versions: Versions) -> Iterable[Metric]:
        return part(snap)

    return render


class _Families(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return iter(self._metrics)


class Formatter:
    """Text of metric families, byte for byte what prometheus_client's encoders write.

    Gauge and counter families of plain samples (no timestamp, exemplar, native histogram, and no
    `_created` sample) are formatted here, with each label set's text remembered (bounded); any other
    family goes through prometheus_client's encoder for the content type.
    """

    LABEL_MEMO_MAX = 200_000
    VALUE_MEMO_MAX = 4096
    FAMILY_MEMO_MAX = 4096

    def __init__(self) -> None:
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}
        self._names: dict[bool, dict[str, str]] = {False: {}, True: {}}  # by OpenMetrics or not
        self._values: dict[float, str] = {}
        self._families: dict[tuple[str, bool], tuple[list[Any], str, str, str]] = {}

    def format(self, metrics: Iterable[Metric], content_type: str, encoder: Encoder | None = None) -> bytes:
        """The exposition of `metrics` in `content_type`, without `# EOF`.

        `encoder` is prometheus_client's encoder for it (from `choose_encoder`); it defaults to the one
        `choose_encoder` picks for text 0.0.4 or OpenMetrics 1.0.0.
        """
        if encoder is None:
            encoder = om_generate_latest if content_type.startswith(_OM) else generate_latest
        kind = _fast_kind(content_type)
        om = kind == "om"
        fast = kind is not None
        out: list[str] = []
        slow: list[bytes] = []
        by_id: dict[int, str] = {}
        metrics = list(metrics)  # holds every labels dict (and so its id) until this returns
        for metric in metrics:
            text = self._family(metric, om, by_id) if fast else None
            if text is None:
                if out:
                    slow.append("".join(out).encode())
                    out = []
                slow.append(_encode([metric], content_type, encoder))
            else:
                out.append(text)
        if not slow:
            return "".join(out).encode()
        if out:
            slow.append("".join(out).encode())
        return b"".join(slow)

    def _family(self, metric: Metric, om: bool, by_id: dict[int, str]) -> str | None:
        # A family whose samples are what they were (most of a part that moved: a wire tick moves
        # the failover accounts' counters, not their histograms) is its text of last time. (Samples
        # compare by value: a 0.0 that became -0.0 would keep its text; no collector writes -0.0.)
        key = (metric.name, om)
        kept = self._families.get(key)
        if (
            kept is not None
            and kept[1] == metric.documentation
            and kept[2] == metric.type
            and kept[0] == metric.samples
        ):
            return kept[3]
        got = self.family_parts(metric, om, by_id)
        if got is None:
            return None
        text = got[0] + "".join(got[1])
        if len(self._families) < self.FAMILY_MEMO_MAX:
            self._families[key] = (metric.samples, metric.documentation, metric.type, text)
        return text

    def line(self, raw: str, labels: Mapping[str, str], value: float, om: bool, by_id: dict[int, str]) -> str:
        """One sample's line of a plain family, as `format` writes it. `by_id`: label texts by the
        labels dict's id, for dicts that live as long as it does."""
        names = self._names[om]
        sname = names.get(raw)
        if sname is None:
            sname = names[raw] = _sample_name(raw, om)
        val = self.value(value)
        if not labels:
            return f"{sname} {val}\n"
        text = by_id.get(id(labels))
        if text is None:
            text = by_id[id(labels)] = self.label_text(labels)
        return f"{sname}{text} {val}\n"

    def sample_names(self, om: bool) -> dict[str, str]:
        """Sample names as written (escaped), by name: the memo `line` keeps."""
        return self._names[om]

    @property
    def values(self) -> dict[float, str]:
        """Values as written, by value (not 0.0 or -0.0): the memo `value` keeps (bounded)."""
        return self._values

    def value(self, value: float) -> str:
        if value == 0:  # 0.0 and -0.0 are one dict key but two texts
            return "-0.0" if copysign(1.0, value) < 0 else "0.0"
        val = self._values.get(value)
        if val is None:
            val = _go_float(value)
            if len(self._values) < self.VALUE_MEMO_MAX:
                self._values[value] = val
        return val

    def label_text(self, labels: Mapping[str, str]) -> str:
        """A label set's text, remembered (bounded). The collectors share one labels dict between
        the families of a series: callers find its text by the dict's identity first (`by_id`)."""
        items = tuple(labels.items())
        text = self._labels.get(items)
        if text is None:
            if len(self._labels) > self.LABEL_MEMO_MAX:
                self._labels.clear()
            text = self._labels[items] = _labels(labels)
        return text

    def family_parts(self, metric: Metric, om: bool, by_id: dict[int, str]) -> tuple[str, list[str]] | None:
        """(HELP and TYPE lines, one line per sample) of a plain family, as `format` writes it;
        None if it is not one `format` writes itself."""
        header = family_header(metric, om)
        if header is None:
            return None
        # The sample names a plain family has; anything else (_created, ...) is the encoder's.
        allowed = _SAMPLE_NAMES[metric.type](metric.name)
        line = self.line
        lines: list[str] = []
        append = lines.append
        for raw, labels, value, ts, exemplar, native in metric.samples:
            if raw not in allowed or ts is not None or exemplar is not None or native is not None:
                return None
            append(line(raw, labels, value, om, by_id))
        return header, lines


_SAMPLE_NAMES: dict[str, Callable[[str], tuple[str, ...]]] = {
    "gauge": lambda name: (name,),
    "counter": lambda name: (name + "_total",),
    "histogram": lambda name: (name + "_bucket", name + "_count", name + "_sum"),
}


def family_header(metric: Metric, om: bool) -> str | None:
    """The HELP and TYPE lines of a plain (gauge, counter, histogram) family; None for any other."""
    mtype = metric.type
    if mtype not in _SAMPLE_NAMES or metric.unit:
        return None
    name = metric.name
    doc = metric.documentation
    if om:
        mname = escape_metric_name(name)
        help_ = _escape(doc, openmetrics.exposition.ALLOWUTF8, _is_legacy_labelname_rune)
    else:
        mname = escape_metric_name(name + "_total" if mtype == "counter" else name)
        help_ = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {mname} {help_}\n# TYPE {mname} {mtype}\n"


def _fast_kind(content_type: str) -> str | None:
    """ "text" / "om" where `Formatter` writes what the encoder for `content_type` writes, else None.

    That is the default escaping (underscores) of text 0.0.4 / 1.0.0 and OpenMetrics 1.x: what
    Prometheus asks for. Other escapings and OpenMetrics 2 (native histograms) are the encoder's.
    """
    kind = _KINDS.get(content_type)
    if kind is None and content_type not in _KINDS:
        fields = [f.strip() for f in content_type.split(";")]
        params = dict(f.partition("=")[::2] for f in fields[1:])
        underscores = params.get("escaping", openmetrics.exposition.UNDERSCORES) == "underscores"
        version = params.get("version", "")
        if fields[0] == "text/plain" and underscores:
            kind = "text"
        elif fields[0] == "application/openmetrics-text" and underscores and version.startswith("1."):
            kind = "om"
        _KINDS[content_type] = kind
    return kind


_KINDS: dict[str, str | None] = {}
_ENCODERS: dict[str, tuple[Encoder, str]] = {}  # choose_encoder by Accept header, as it answers


def _sample_name(name: str, om: bool) -> str:
    if om:
        return _escape(name, openmetrics.exposition.UNDERSCORES, _is_legacy_labelname_rune)
    return escape_metric_name(name)


def _labels(labels: Mapping[str, str]) -> str:
    # As both of prometheus_client's encoders write a label set (sorted by name, values escaped).
    utf8 = openmetrics.exposition.ALLOWUTF8
    inner = ",".join(
        f'{escape_label_name(k)}="{_escape(v, utf8, _is_legacy_labelname_rune)}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


def _encode(metrics: Sequence[Metric], content_type: str, encoder: Encoder) -> bytes:
    """prometheus_client's own encoding of `metrics` for `content_type`, without `# EOF`."""
    body = encoder(_Families(metrics))
    return body.removesuffix(_EOF) if content_type.startswith(_OM) else body


class _KeyedText:
    """The text of a part made of keyed rows (`collectors.Row`: an instance, a VRID, a VIP), in
    which only the rows that moved are written again.

    A D-Bus signal changes one instance of 100 or 1,000, a link going down all of them at once, a
    wire tick every VRID's time accounts but not their histograms: either way a scrape after it
    costs what moved. The part gives its rows with a basis each (what the row's series are made of:
    the instance's record, its VIP mismatch and transitions count; a VRID's counters; its
    histograms); a row whose basis is what it was keeps its text, the others are written by the
    formatter from the row's series (the same series the part's collect function puts in its
    families: prometheus_client's render of them is the test oracle). Then the families are put
    together in order, each row's lines in the snapshot's order of rows.
    """

    def __init__(self, formatter: Formatter, part: Part, families: Sequence[Family], rows: RowsOf) -> None:
        self._formatter = formatter
        self._part = part
        self._families = tuple(families)
        self._rows = rows
        self._kept: dict[str, _Columns] = {}  # by content kind ("text", "om")
        self._headers: dict[bool, tuple[bytes, ...]] = {}  # by OpenMetrics or not, per family

    def text(self, snap: Snapshot, content_type: str, encoder: Encoder) -> bytes:
        kind = _fast_kind(content_type)
        if kind is None:  # an exposition the formatter does not write itself
            return self._formatter.format(self._part(snap), content_type, encoder)
        got = self._rows(snap)
        if got is None:
            self._kept.pop(kind, None)
            return b""
        om = kind == "om"
        shown, rows = got
        keys = tuple(key for key, _basis, _series in rows)
        kept = self._kept.get(kind)
        if kept is not None and kept.keys == keys:
            # The same rows in the same order: only the moved ones change their column entries.
            for r, (_key, basis, series) in enumerate(rows):
                was = kept.bases[r]
                if was is not basis and was != basis:  # the same object: the same row (a memo's verdict)
                    kept.bases[r] = basis
                    for k, text in enumerate(self._lines(series(), om)):
                        column = kept.columns[k]
                        if column[r] != text:  # only the families whose text moved are joined again
                            column[r] = text
                            kept.bodies[k] = None
                            kept.text = None
        else:
            by_key = (
                {}
                if kept is None
                else dict(zip(kept.keys, zip(kept.bases, kept.texts(), strict=True), strict=True))
            )
            made: list[tuple[bytes, ...]] = []
            bases: list[object] = []
            for key, basis, series in rows:
                mine = by_key.get(key)
                same = mine is not None and (mine[0] is basis or mine[0] == basis)
                made.append(mine[1] if mine is not None and same else self._lines(series(), om))
                bases.append(basis)
            kept = self._kept[kind] = _Columns(
                keys,
                bases,
                [list(c) for c in zip(*made, strict=True)] if made else [[] for _ in self._families],
            )
        if kept.text is None or kept.shown != shown:
            kept.text, kept.shown = self._assemble(shown, kept, om), shown
        return kept.text

    def _lines(self, series: list[Series], om: bool) -> tuple[bytes, ...]:
        """One row's text per family (b"" where it has no series), encoded once here rather than
        with the whole part at every scrape; `series` holds the labels dicts (by_id's keys) until
        this returns."""
        # Formatter.line, inlined: a row of 25 series is written per moved instance.
        fm = self._formatter
        names = fm.sample_names(om)
        values = fm.values
        by_id: dict[int, str] = {}
        out = [""] * len(self._families)
        for k, raw, labels, value in series:
            sname = names.get(raw)
            if sname is None:
                sname = names[raw] = _sample_name(raw, om)
            text = by_id.get(id(labels))
            if text is None:
                text = by_id[id(labels)] = fm.label_text(labels)
            val = values.get(value) if value else None  # 0.0 and -0.0: two texts (Formatter.value)
            if val is None:
                val = fm.value(value)
            out[k] = f"{out[k]}{sname}{text} {val}\n"
        return tuple(t.encode() for t in out)

    def _assemble(self, shown: frozenset[int], kept: _Columns, om: bool) -> bytes:
        headers = self._headers.get(om)
        if headers is None:
            headers = self._headers[om] = tuple(_header(f, om).encode() for f in self._families)
        out: list[bytes] = []
        bodies = kept.bodies
        for k, column in enumerate(kept.columns):
            body = bodies[k]
            if body is None:
                body = bodies[k] = b"".join(column)
            if body or k in shown:
                out.append(headers[k])
                out.append(body)
        return b"".join(out)


class _Columns:
    """A keyed part's rows as last written: their keys and bases in order, and per family the
    rows' texts in that order (a column per family: a family's body is one join, kept until one
    of its rows' text moves), and the part's text they made (None: to be assembled again)."""

    __slots__ = ("bases", "bodies", "columns", "keys", "shown", "text")

    def __init__(self, keys: tuple[Hashable, ...], bases: list[object], columns: list[list[bytes]]) -> None:
        self.keys = keys
        self.bases = bases
        self.columns = columns
        self.bodies: list[bytes | None] = [None] * len(columns)
        self.text: bytes | None = None
        self.shown: frozenset[int] = frozenset()

    def texts(self) -> list[tuple[bytes, ...]]:
        """Each row's texts (per family), in row order."""
        return list(zip(*self.columns, strict=True)) if self.keys else []


def _header(family: Family, om: bool) -> str:
    header = family_header(empty_family(family), om)
    if header is None:
        raise ValueError(f"{family[0]}: a keyed family is a gauge, counter or histogram, without a unit")
    return header


class _Body:
    __slots__ = ("body", "chunks", "gzipped", "keys", "stamp", "until")

    def __init__(
        self, keys: tuple[object, ...], body: bytes, stamp: object = None, chunks: tuple[bytes, ...] = ()
    ) -> None:
        self.keys = keys
        self.body = body
        self.chunks = chunks  # the parts' texts and the success family: all of the body but its duration
        self.gzipped: bytes | None = None
        self.stamp = stamp  # the source's stamp it was rendered at (see Renderer.cached); None: unknown
        self.until = math.inf  # the store time from which time alone can change it (a verdict's edge)


class Renderer:
    """Renders the parts over store snapshots, keeping each part's text and the body until they move.

    `source` returns a snapshot and its section versions (`Store.snapshot_versions`); `parts` are the
    collector parts in exposition order; `keys` the cache key of each part (default `KEYS`; the wire
    collector is split in two units of its own, see `_wire_units`). Thread-safe: one render at a
    time (concurrent scrapes of an unchanged state share the bytes).

    `stamp` (`Store.stamp`) tells without a snapshot whether anything moved since a body was made:
    `cached` serves that body then, in microseconds (what the HTTP loop calls before handing a
    scrape to a render thread). It is used only while every part has a cache key.
    """

    def __init__(
        self,
        source: Source,
        parts: Sequence[Part],
        keys: Mapping[Callable[..., Any], KeyFn] | None = None,
        *,
        gzip_level: int = 1,
        clock: Callable[[], float] = time.perf_counter,
        stamp: Stamp | None = None,
    ) -> None:
        self._source = source
        self._parts = tuple(parts)
        self._formatter = Formatter()
        units = units_for(self._parts, KEYS if keys is None else keys, self._formatter)
        # Flat: (index of the part, unit) per unit, in exposition order.
        self._units = [(i, unit) for i, part_units in enumerate(units) for unit in part_units]
        self._stamp = stamp if all(unit[0] is not None for _i, unit in self._units) else None
        # What parts read besides the snapshot (their `cache_key`): in the stamp too.
        self._own = tuple(o for p in self._parts if callable(o := getattr(p, "cache_key", None)))
        # Units whose text time alone can change (the verdicts' memo): their next edge.
        memos = (getattr(unit[0], "__self__", None) for _i, unit in self._units)
        self._edges = tuple(dict.fromkeys(m for m in memos if isinstance(m, RowMemo)))
        self._gzip_level = gzip_level
        self._clock = clock
        self._failures = FailureLog()
        self._lock = threading.Lock()
        self._chunks: dict[tuple[str, int], tuple[object, bytes]] = {}
        self._bodies: dict[str, _Body] = {}
        self.renders = 0  # bodies rendered (not served from the cache), for tests and benches
        self.part_renders = [0] * len(self._parts)  # renders of (a unit of) each part

    def render(self, accept: str = "", accept_encoding: str = "") -> Render:
        """(body, content type, content encoding or None) for a request's Accept headers."""
        encoder, content_type = choose_encoder(accept)
        gz = "gzip" in (accept_encoding or "")
        with self._lock:
            body = self._body(content_type, encoder)
            if not gz:
                return body.body, content_type, None
            if body.gzipped is None:
                body.gzipped = gzip.compress(body.body, compresslevel=self._gzip_level)
            return body.gzipped, content_type, "gzip"

    def cached(self, accept: str = "", accept_encoding: str = "") -> Render | None:
        """What `render` would return, if it is the body already made and nothing moved since (by
        the stamp); else None (a render is running, or is needed). Never blocks, never renders:
        for the HTTP loop."""
        if self._stamp is None:
            return None
        encoder_type = _ENCODERS.get(accept)
        if encoder_type is None:
            if len(_ENCODERS) >= 64:
                _ENCODERS.clear()  # bounded, whatever Accept headers clients send
            encoder_type = _ENCODERS[accept] = choose_encoder(accept)
        content_type = encoder_type[1]
        gz = "gzip" in (accept_encoding or "")
        if not self._lock.acquire(blocking=False):
            return None
        try:
            body = self._bodies.get(content_type)
            stamped = self._stamped()
            if body is None or body.stamp is None or stamped is None or body.stamp != stamped[1]:
                return None
            if stamped[0] >= body.until:
                return None  # a verdict that time alone changes is due: a render judges it again
            if not gz:
                return body.body, content_type, None
            return None if body.gzipped is None else (body.gzipped, content_type, "gzip")
        finally:
            self._lock.release()

    def _stamped(self) -> tuple[float, object] | None:
        """The store's time and a token of everything the body reads (None: unknown)."""
        got = None if self._stamp is None else self._stamp()
        if got is None:
            return None
        return got[0], (got[1], tuple(own() for own in self._own))

    def next_edge(self) -> float:
        """The store time from which time alone can change what the last render made (a fused
        verdict's next edge: a hold time running out); infinity if never."""
        return min((e.next_edge for e in self._edges), default=math.inf)

    def fused_memos(self) -> tuple[RowMemo, ...]:
        """The fused part's memo (for tests and benches: what it judged)."""
        return self._edges

    _until = next_edge

    def body(self, accept: str = "") -> bytes:
        """The uncompressed body for `accept` (for --once and tests)."""
        return self.render(accept, "")[0]

    def _log_render(self, snap: Snapshot, seconds: float, snapshot: float, took: list[float]) -> None:
        """One debug line per body rendered: where its time went, and what it was rendered from.

        `duration` is the body's ka_exporter_scrape_duration_seconds as written (a bench matches
        a scrape to its line by it); `units` each unit's key and render in ms (`_`: more units of
        one part); `snap_time` the snapshot's store time, `views_published` (per view source) and
        `addresses_changed` when what it holds of keepalived's instances and of the addresses was
        last published (store clock): what a bench needs to tell render time from waiting.
        """
        names = [part_name(self._parts[i]) for i, _unit in self._units]
        units = ",".join(
            f"{name}{'_' * names[:u].count(name)}:{t * 1000.0:.2f}"
            for u, (name, t) in enumerate(zip(names, took, strict=True))
        )
        published = ",".join(f"{source}:{t:.6f}" for source, t in snap.views_time) or "none"
        log.debug(
            "body rendered: duration=%s snapshot_ms=%.2f units=%s snap_time=%.6f views_published=%s "
            "addresses_changed=%s",
            _go_float(seconds),
            snapshot * 1000.0,
            units,
            snap.time,
            published,
            "none" if snap.addresses_changed is None else f"{snap.addresses_changed:.6f}",
        )

    def _keys(
        self, snap: Snapshot, versions: Versions, took: list[float]
    ) -> tuple[list[object], dict[int, list[Metric] | BaseException]]:
        """Each unit's cache key for this snapshot, and what the units without one rendered.

        A part with no key is rendered on every scrape and keyed on what it rendered: while that
        is the same, the body (and its gzip) is still the one already made. `took` gets each
        unit's time."""
        clock = self._clock
        rendered: dict[int, list[Metric] | BaseException] = {}
        keys: list[object] = []
        for u, (_i, (key, render, _text)) in enumerate(self._units):
            t0 = clock()
            try:
                if key is not None:
                    keys.append(key(snap, versions))
                else:
                    metrics = list(render(snap, versions))
                    rendered[u] = metrics
                    keys.append([(m.name, m.type, m.documentation, m.unit, m.samples) for m in metrics])
            except Exception as exc:  # this part fails (in _body), not the scrape
                rendered[u] = exc
                keys.append(object())
            took[u] = clock() - t0
        return keys, rendered

    def _body(self, content_type: str, encoder: Encoder) -> _Body:
        started = self._clock()
        clock = self._clock
        # Taken before the snapshot: a change in between makes the next `cached` miss, never serve
        # a body older than its stamp says.
        stamped = self._stamped()
        stamp = None if stamped is None else stamped[1]
        snap, versions = self._source()
        took = [0.0] * len(self._units)  # per unit: its key, and its render if it had one (s)
        snapped = clock()
        keys, rendered = self._keys(snap, versions, took)
        until = self._until()  # the keys were computed: the memos judged this snapshot
        cached = self._bodies.get(content_type)
        if cached is not None and cached.keys == tuple(keys):
            cached.stamp, cached.until = stamp, until
            return cached
        chunks: list[bytes] = []
        failed: set[int] = set()  # parts (by index) with a unit that failed in this render
        for u, (i, (_key, render, text_render)) in enumerate(self._units):
            kept = self._chunks.get((content_type, u))
            if kept is not None and kept[0] == keys[u]:
                chunks.append(kept[1])
                continue
            t0 = clock()
            try:
                got = rendered.get(u)
                if isinstance(got, BaseException):
                    raise got
                if text_render is not None:
                    text = text_render(snap, content_type, encoder)
                else:
                    metrics = got if got is not None else list(render(snap, versions))
                    text = self._formatter.format(metrics, content_type, encoder)
            except Exception:
                self._failures.failed(part_name(self._parts[i]))
                failed.add(i)
                self._chunks.pop((content_type, u), None)
                keys[u] = object()  # tried again on the next scrape
                continue
            took[u] += clock() - t0
            self.part_renders[i] += 1
            self._chunks[(content_type, u)] = (keys[u], text)
            chunks.append(text)
        results = []
        for i, part in enumerate(self._parts):
            if i not in failed:
                self._failures.worked(part_name(part))
            results.append((part_name(part), i not in failed))
        chunks.append(self._formatter.format([success_family(results)], content_type, encoder))
        texts = tuple(chunks)
        if cached is not None and not failed and texts == cached.chunks:
            # A key moved (a counter that did not change the text) but every text is what the cached
            # body holds: serve those bytes, not a copy that differs only in its render time (the
            # merge of --discover would parse it again; a client's ETag or gzip would change for
            # nothing).
            cached.keys = tuple(keys)
            cached.stamp, cached.until = stamp, until
            return cached
        duration = GaugeMetricFamily(DURATION_NAME, DURATION_HELP)
        seconds = clock() - started
        duration.add_metric([], seconds)
        if log.isEnabledFor(logging.DEBUG):
            self._log_render(snap, seconds, snapped - started, took)
        chunks.append(self._formatter.format([duration], content_type, encoder))
        if content_type.startswith(_OM):
            chunks.append(_EOF)
        made = _Body(tuple(keys), b"".join(chunks), None if failed else stamp, () if failed else texts)
        made.until = until
        self._bodies[content_type] = made
        self.renders += 1
        return made
