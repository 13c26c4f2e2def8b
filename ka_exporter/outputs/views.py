"""Human views of one snapshot: the `status` table, the `check` plugin output, the landing page.

Pure functions of a snapshot and its conditions; no I/O.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass

from ka_exporter import __version__
from ka_exporter.model import FailoverEvent, Snapshot, VrrpState, WirePeer, canonical_ip
from ka_exporter.verdicts.conditions import Condition

# C0 and C1 controls (ESC, CR, BEL, ...), and the invisible Unicode format characters that reorder or
# hide text (bidi overrides and isolates, zero-width characters, line separators, BOM).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def printable(text: str) -> str:
    """`text` with every control or invisible format character shown as an escape (ESC -> \\x1b).

    Instance names, interface names, errors and summaries come from keepalived.conf, keepalived and
    the wire: a terminal must never receive an escape sequence from them, and `check` stays one line.
    """
    if not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(lambda m: _escape(m.group()), text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@dataclass(frozen=True, slots=True)
class Row:
    instance: str
    vrid: str
    interface: str
    family: str
    state: str
    priority: str
    master_priority: str
    vips_held: str
    routers: str
    verdicts: str


COLUMNS = (
    ("instance", "INSTANCE"),
    ("vrid", "VRID"),
    ("interface", "INTERFACE"),
    ("state", "STATE"),
    ("priority", "PRIO base/eff"),
    ("master_priority", "MASTER PRIO"),
    ("vips_held", "VIPS HELD"),
    ("routers", "ROUTERS ON WIRE"),
    ("verdicts", "VERDICTS"),
)


def wire_routers(snap: Snapshot, vrid: int | None, family: str) -> list[WirePeer]:
    """The routers heard advertising `vrid` (of `family`) on the wire, by address."""
    if vrid is None:
        return []
    peers = [p for p in snap.wire_peers or () if p.vrid == vrid and p.family == family]
    return sorted(peers, key=lambda p: p.source)


def rows(snap: Snapshot, conditions: list[Condition]) -> list[Row]:
    """One row per VRRP instance known from keepalived.conf or from keepalived itself."""
    held = {canonical_ip(a.address) for a in snap.addresses or ()}
    views = {v.name: v for v in snap.instances or ()}
    conf = {c.name: c for c in (snap.config.instances if snap.config else ())}
    out: list[Row] = []
    for name in sorted(set(views) | set(conf)):
        v, c = views.get(name), conf.get(name)
        vrid = v.vrid if v is not None else (c.vrid if c is not None else None)
        interface = (v.interface if v is not None else None) or (c.interface if c else None) or "-"
        family = (v.family if v is not None else None) or (c.family if c else "inet")
        state = v.state.name if v is not None and isinstance(v.state, VrrpState) else "-"
        if snap.process is not None and not snap.process.running:
            state = "DOWN"
        base = v.priority if v is not None and v.priority is not None else (c.priority if c else None)
        eff = v.effective_priority if v is not None else None
        prio = f"{base if base is not None else '-'}/{eff if eff is not None else '-'}"
        mprio = str(v.master_priority) if v is not None and v.master_priority else "-"
        vips = [canonical_ip(x) for x in (v.vips if v is not None else ())] or [
            canonical_ip(x.address) for x in (c.vips if c else ())
        ]
        mine = [x for x in vips if x in held]
        routers = [
            f"{p.source}{'*' if p.local else ''}({p.priority})" for p in wire_routers(snap, vrid, family)
        ]
        verdicts = [
            cond.kind
            for cond in conditions
            if ("vrid", str(vrid)) in cond.labels or ("iname", name) in cond.labels
        ]
        out.append(
            Row(
                instance=name,
                vrid=str(vrid) if vrid is not None else "-",
                interface=interface,
                family=family,
                state=state,
                priority=prio,
                master_priority=mprio,
                vips_held=",".join(mine) if mine else "none",
                routers=" ".join(routers) if routers else "-",
                verdicts=",".join(sorted(set(verdicts))) or "ok",
            )
        )
    return out


def status_table(snap: Snapshot, conditions: list[Condition]) -> str:
    """A fixed-width table for a terminal, then the conditions and any failed source."""
    rs = rows(snap, conditions)
    table = [[title for _, title in COLUMNS]] + [[printable(getattr(r, f)) for f, _ in COLUMNS] for r in rs]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in table]
    if not rs:
        lines.append("(no VRRP instance known: no keepalived.conf, keepalived not answering)")
    proc = snap.process
    if proc is not None:
        lines.insert(
            0,
            f"{printable(snap.hostname)}: keepalived "
            + (f"running (pid {proc.pid})" if proc.running else "NOT running")
            + (
                " but STOPPED (pid " + ", ".join(map(str, proc.stopped_pids)) + ")"
                if proc.stopped_pids
                else ""
            ),
        )
    for cond in conditions:
        lines.append(f"{'CRITICAL' if cond.severity >= 2 else 'WARNING'}: {printable(cond.summary)}")
    for h in snap.sources:
        if not h.up:
            lines.append(f"source {h.name} failing: {printable(h.error or '')}")
    return "\n".join(lines) + "\n"


def check_result(snap: Snapshot, conditions: list[Condition]) -> tuple[int, str]:
    """Nagios/Icinga plugin output: (exit status 0/1/2/3, one status line + perfdata)."""
    crit = [c for c in conditions if c.severity >= 2]
    warn = [c for c in conditions if c.severity < 2]
    failed = [h for h in snap.sources if not h.up]
    if crit:
        code, word = 2, "CRITICAL"
    elif warn or failed:
        code, word = 1, "WARNING"
    else:
        code, word = 0, "OK"
    rs = rows(snap, conditions)
    masters = sum(1 for r in rs if r.state == "MASTER")
    if conditions:
        text = "; ".join(c.summary for c in conditions)
    elif failed:
        text = "; ".join(f"source {h.name} failing: {h.error}" for h in failed)
    else:
        text = f"{len(rs)} instance(s), {masters} MASTER here"
    held = sum(1 for r in rs for _ in ([] if r.vips_held == "none" else r.vips_held.split(",")))
    perf = [
        f"instances={len(rs)}",
        f"master={masters}",
        f"vips_held={held}",
        f"critical={len(crit)};;1",
        f"warning={len(warn)};1",
        f"sources_failed={len(failed)};1",
    ]
    return code, f"KEEPALIVED {word} - {printable(text)} | {' '.join(perf)}"


HISTORY_WINDOW = 3600.0  # seconds: the status page draws the last hour
# The picture's colours (tests/test_page.py finds them on the screenshot).
SPAN_COLOURS = {1: "#3c9c3c", 0: "#f0a000", 2: "#d01010", -1: "#bbbbbb"}
FAILOVER_COLOUR = "#1f4fd0"
_SPAN_NAMES = {1: "one master", 0: "no master", 2: "several masters", -1: "not listening"}


def _vrid_name(key: tuple[str, str, int]) -> str:
    return f"VRID {key[2]} {key[1]} on {key[0]}"


def history_svg(snap: Snapshot, window: float = HISTORY_WINDOW, width: int = 960) -> str:
    """An inline SVG of the last `window` seconds per VRID heard on the wire: one bar each, green while
    one router is master, amber with no master, red with several (a split brain or a preemption
    race), grey while the sniffer was not listening; a blue tick at each master change. '' without
    the wire's failover accounts."""
    timings = [t for t in snap.failover or () if t.history]
    if not timings:
        return ""
    label_w, bar_h, row_h, top = 200, 18, 30, 8
    plot_w = width - label_w - 10
    lo, hi = snap.time - window, snap.time

    def x(t: float) -> float:
        return label_w + (min(max(t, lo), hi) - lo) / window * plot_w

    def e(text: str) -> str:
        return html.escape(printable(text))

    parts = []
    for i, t in enumerate(timings):
        y = top + i * row_h
        parts.append(f'<text x="0" y="{y + bar_h - 4}" class="vrid">{e(_vrid_name(t.key))}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{plot_w}" height="{bar_h}" fill="#f4f4f4"/>')
        for span in t.history:
            if span.end <= lo or span.start >= hi:
                continue
            x0, x1 = x(span.start), x(span.end)
            what = _SPAN_NAMES.get(span.masters, "?") + (f" ({span.master})" if span.master else "")
            parts.append(
                f'<rect class="span m{span.masters}" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.5):.1f}" '
                f'height="{bar_h}" fill="{SPAN_COLOURS.get(span.masters, "#000")}">'
                f"<title>{e(what)}</title></rect>"
            )
            if span.master and x1 - x0 > 8 * len(span.master):  # name the master where it fits
                parts.append(
                    f'<text x="{x0 + 4:.1f}" y="{y + bar_h - 5}" class="master">{e(span.master)}</text>'
                )
        for ev in snap.failover_events:
            if ev.key != t.key or not lo <= ev.at <= hi:
                continue
            if ev.gap:  # the masterless gap itself, exact from the event (a step of the bar is ~1 s),
                # at least 4 px wide left of the tick: a 3.6 s gap is under a pixel of an hour
                g1 = x(ev.at) - 1.5
                g0 = min(x(ev.at - ev.gap), g1 - 4)
                parts.append(
                    f'<rect class="gap" x="{g0:.1f}" y="{y}" width="{g1 - g0:.1f}" '
                    f'height="{bar_h}" fill="{SPAN_COLOURS[0]}"/>'
                )
            parts.append(
                f'<rect class="failover" x="{x(ev.at) - 1.5:.1f}" y="{y - 3}" width="3" height="{bar_h + 6}" '
                f'fill="{FAILOVER_COLOUR}"><title>{e(_event_text(ev))}</title></rect>'
            )
    axis_y = top + len(timings) * row_h + 4
    for frac, text in ((0.0, f"-{window / 60:g} min"), (0.5, f"-{window / 120:g} min"), (1.0, "now")):
        anchor = ("start", "middle", "end")[int(frac * 2)]
        parts.append(
            f'<text x="{label_w + frac * plot_w:.1f}" y="{axis_y + 8}" text-anchor="{anchor}" '
            f'class="axis">{text}</text>'
        )
    height = axis_y + 14
    return (
        f'<svg id="history" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="last hour per VRID">{"".join(parts)}</svg>'
    )


def _event_text(ev: FailoverEvent) -> str:
    how = f"gap {ev.gap:.3f} s" if ev.gap is not None else f"overlap {ev.overlap or 0.0:.3f} s"
    return f"{_vrid_name(ev.key)}: {ev.old or '?'} -> {ev.new}, {how}"


def transitions_rows(snap: Snapshot, limit: int = 20) -> list[tuple[str, str, str, str, str]]:
    """The latest master changes, newest first: (time UTC, VRID, from, to, measured gap or overlap)."""
    out = []
    for ev in reversed(snap.failover_events[-limit:]):
        when = dt.datetime.fromtimestamp(ev.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        how = f"gap {ev.gap:.3f} s" if ev.gap is not None else f"overlap {ev.overlap or 0.0:.3f} s"
        out.append((when, _vrid_name(ev.key), ev.old or "?", ev.new, how))
    return out


def landing_page(snap: Snapshot, conditions: list[Condition], telemetry_path: str = "/metrics") -> str:
    """The page at `/`: the same status as `ka-exporter status` and `check`, for a browser."""

    def e(text: str) -> str:
        return html.escape(printable(text))

    rs = rows(snap, conditions)
    code, _line = check_result(snap, conditions)
    overall = ("ok", "warning", "critical")[code]
    severity: dict[str, int] = {}
    for c in conditions:
        severity[c.kind] = max(severity.get(c.kind, 0), c.severity)

    def cell(r: Row, f: str) -> str:
        value = str(getattr(r, f))
        cls = f
        if f == "state":
            cls += f" {value.lower()}"
        elif f == "verdicts":
            worst = max((severity.get(k, 1) for k in value.split(",") if k != "ok"), default=0)
            cls += " " + ("ok", "warning", "critical")[min(worst, 2)]
        elif f == "routers" and r.routers != "-":
            peers = wire_routers(snap, int(r.vrid) if r.vrid.isdigit() else None, r.family)
            items = "".join(
                f"<li>{e(p.source)}{' <em>(this host)</em>' if p.local else ''} prio {p.priority}</li>"
                for p in peers
            )
            return f'<td class="{cls}"><ul>{items}</ul></td>'
        return f'<td class="{e(cls)}">{e(value)}</td>'

    head = "".join(f"<th>{e(title)}</th>" for _, title in COLUMNS)
    body = "".join("<tr>" + "".join(cell(r, f) for f, _ in COLUMNS) + "</tr>" for r in rs)
    if not rs:
        body = (
            f'<tr><td colspan="{len(COLUMNS)}">no VRRP instance known '
            "(no keepalived.conf, keepalived not answering)</td></tr>"
        )
    conds = "".join(
        f'<li class="{"critical" if c.severity >= 2 else "warning"}">{e(c.summary)}</li>' for c in conditions
    )
    sources = "".join(
        f'<tr><td>{e(h.name)}</td><td class="{"ok" if h.up else "critical"}">{"up" if h.up else "DOWN"}</td>'
        f"<td>{e(h.error or '')}</td></tr>"
        for h in snap.sources
    )
    facts = [snap.hostname]
    proc = snap.process
    if proc is not None:
        facts.append(f"keepalived running (pid {proc.pid})" if proc.running else "keepalived NOT running")
    failed = sum(1 for h in snap.sources if not h.up)
    if conditions:
        facts.append(f"{len(conditions)} condition{'s' if len(conditions) != 1 else ''}")
    else:
        masters = sum(1 for r in rs if r.state == "MASTER")
        facts.append(f"{len(rs)} instance{'s' if len(rs) != 1 else ''}, {masters} MASTER here")
    if failed:
        facts.append(f"{failed} source{'s' if failed != 1 else ''} failing")
    when = dt.datetime.fromtimestamp(snap.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    svg = history_svg(snap)
    trans = "".join(
        "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in transitions_rows(snap)
    )
    history = ""
    none_yet = '<tr><td colspan="5">no master change yet</td></tr>'
    if svg or trans:
        history = f"""<h2>Last hour on the wire</h2>
{svg}
<p class="legend">Per VRID heard on the wire: green while one router is master, amber with no master,
red with several (split brain, or a preemption race), grey while the exporter was not listening; blue
ticks are master changes. Hover for the router.</p>
<table id="transitions"><thead><tr><th>time (UTC)</th><th>VRID</th><th>from</th><th>to</th>
<th>measured</th></tr></thead><tbody>{trans or none_yet}</tbody></table>
"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{overall.upper()} - ka-exporter on {e(snap.hostname)}</title>
<meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} h1 small{{color:#777;font-weight:normal;font-size:.5em}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}} th{{background:#eee}} td ul{{margin:0;padding:0;list-style:none}}
.master,.verdicts.ok{{color:#060;font-weight:bold}} .fault,.down,.critical{{color:#b00;font-weight:bold}}
.warning{{color:#a60;font-weight:bold}} .ok{{color:#060}} .backup{{color:#036}}
#overall{{font-size:1.3em;padding:.5em .8em;border-radius:.3em;display:inline-block;color:#fff;margin:.2em 0}}
#overall.ok{{background:#2a7d2a}} #overall.warning{{background:#b86e00}} #overall.critical{{background:#b00}}
#overall span{{font-weight:normal}} .legend,.updated{{color:#666;font-size:.9em}} .legend{{max-width:60em}}
#history text{{font-size:12px;fill:#222}} #history text.master{{fill:#fff;font-size:11px}}
</style></head><body>
<h1>ka-exporter <small>{e(__version__)}</small></h1>
<div id="overall" class="{overall}">{overall.upper()} <span>&mdash; {e(" · ".join(facts))}</span></div>
<p class="updated">As of {when}; this page reloads every 5 s.
<a href="{e(telemetry_path)}">Metrics</a> &middot; <a href="/-/healthy">Health</a></p>
<h2>VRRP instances</h2>
<table id="instances"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p class="legend">PRIO: configured/effective priority. MASTER PRIO: what a BACKUP last heard from its master.
ROUTERS ON WIRE: the routers recently heard advertising this VRID, with their advertised priority;
normally only the master advertises.</p>
{history}<h2>Conditions</h2>
<ul id="conditions">{conds or '<li class="ok">none</li>'}</ul>
<h2>Sources</h2>
<table id="sources"><thead><tr><th>source</th><th>state</th><th>last error</th></tr></thead>
<tbody>{sources}</tbody></table>
</body></html>
"""
