"""One scrape for many keepalived (multi-namespace mode, `--discover`): each daemon's exposition,
relabelled and merged.

Every watched daemon has its own store and its own cached `Renderer` (the same parts, the same text as
with one namespace). The merged body takes each daemon's text body, adds `netns` and `keepalived`
labels (see `store.fleet.labels`) to each of its samples, and groups the samples of each family under
one HELP/TYPE header, as the text format requires. A daemon whose body did not change (same bytes
object from its renderer's cache) is not parsed again; an unchanged fleet is served the same bytes.

Left out of the daemons' bodies and written once for the whole fleet: `ka_exporter_build_info`,
`ka_exporter_scrape_duration_seconds` (the merge's own render time), and the fleet's gauges
(daemons discovered, watched, over the cap, and `ka_exporter_daemon_info` per watched daemon).
The merged body is always the text format (0.0.4); gzip when asked.
"""

from __future__ import annotations

import gzip
import platform
import threading
import time
from collections.abc import Callable, Sequence

from ka_exporter import __version__
from ka_exporter.collectors import DURATION_HELP, DURATION_NAME, Part
from ka_exporter.outputs.exposition import TEXT, Renderer
from ka_exporter.store.fleet import Fleet, Member, labels

Render = tuple[bytes, str, str | None]

_DROPPED = {b"ka_exporter_build_info", DURATION_NAME.encode()}
# a parsed body: (family name, header lines, relabelled sample lines) per family, in order
Parsed = list[tuple[bytes, list[bytes], list[bytes]]]


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_prefix(netns: str, keepalived: str) -> bytes:
    return f'netns="{escape(netns)}",keepalived="{escape(keepalived)}"'.encode()


def relabel(line: bytes, prefix: bytes) -> bytes:
    """`name{a="b"} 1` -> `name{PREFIX,a="b"} 1`; `name 1` -> `name{PREFIX} 1`."""
    space = line.find(b" ")
    brace = line.find(b"{", 0, space if space >= 0 else len(line))
    if brace >= 0:
        return line[: brace + 1] + prefix + b"," + line[brace + 1 :]
    return line[:space] + b"{" + prefix + b"}" + line[space:]


def parse(body: bytes, prefix: bytes) -> Parsed:
    """A text-format body split into families, each sample relabelled."""
    out: Parsed = []
    current: tuple[bytes, list[bytes], list[bytes]] | None = None
    for line in body.split(b"\n"):
        if not line:
            continue
        if line.startswith(b"# HELP "):
            name = line[7:].split(b" ", 1)[0]
            current = (name, [line], [])
            out.append(current)
        elif line.startswith(b"#"):
            if current is not None:
                current[1].append(line)
        elif current is not None:
            current[2].append(relabel(line, prefix))
    return out


def merge(parsed: Sequence[Parsed]) -> bytes:
    """The families of every body, each under one header (first seen first), samples in body order."""
    order: list[bytes] = []
    headers: dict[bytes, list[bytes]] = {}
    samples: dict[bytes, list[bytes]] = {}
    for families in parsed:
        for name, header, lines in families:
            if name in _DROPPED:
                continue
            if name not in headers:
                order.append(name)
                headers[name] = header
                samples[name] = []
            samples[name].extend(lines)
    chunks: list[bytes] = []
    for name in order:
        chunks.extend(headers[name])
        chunks.extend(samples[name])
    return b"\n".join(chunks) + b"\n" if chunks else b""


def _gauge(name: str, help_text: str, samples: Sequence[tuple[str, float]]) -> bytes:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines.extend(f"{name}{lab} {float(v)!r}" for lab, v in samples)
    return ("\n".join(lines) + "\n").encode()


class MergedRenderer:
    """`render(accept, accept_encoding)` for the HTTP server over a whole fleet (module docstring)."""

    def __init__(
        self,
        fleet: Fleet,
        parts: Sequence[Part],
        discovered: Callable[[], int],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.fleet = fleet
        self.parts = tuple(parts)
        self.discovered = discovered
        self.clock = clock
        self._lock = threading.Lock()
        self._parsed: dict[
            tuple[int, str], tuple[bytes, bytes, Parsed]
        ] = {}  # by key: (body, prefix, parsed)
        self._key: tuple[object, ...] | None = None
        self._body = b""
        self._gzipped: bytes | None = None
        self.renders = 0
        self.parses = 0

    def renderer(self, member: Member) -> Renderer:
        r = member.extra.get("renderer")
        if not isinstance(r, Renderer):
            r = Renderer(member.store.snapshot_versions, self.parts)
            member.extra["renderer"] = r
        return r

    def render(self, accept: str = "", accept_encoding: str = "") -> Render:
        del accept  # always the text format: the merge parses it
        with self._lock:
            body = self._render()
            if "gzip" not in (accept_encoding or ""):
                return body, TEXT, None
            if self._gzipped is None:
                self._gzipped = gzip.compress(body, compresslevel=1)
            return self._gzipped, TEXT, "gzip"

    def body(self) -> bytes:
        return self.render()[0]

    def _render(self) -> bytes:
        started = self.clock()
        members = self.fleet.members()
        names = labels(members, lambda m: cfg.router_id if (cfg := m.store.config()) is not None else None)
        bodies = [self.renderer(m).body() for m in members]
        discovered = self.discovered()
        key = (self.fleet.version, discovered, self.fleet.unwatched, *map(id, bodies), *names)
        if key == self._key:
            return self._body
        parsed: list[Parsed] = []
        seen: set[tuple[int, str]] = set()
        for m, body, (netns, name) in zip(members, bodies, names, strict=True):
            prefix = label_prefix(netns, name)
            pkey = m.daemon.key
            seen.add(pkey)
            kept = self._parsed.get(pkey)
            # Same bytes, same labels: keep the parse. A member's renderer may hand out a new body
            # object of equal bytes (a section it reads moved with no series changing, or its fused
            # part was judged again at a time-driven edge to the same verdicts).
            if kept is not None and (kept[0] is body or kept[0] == body) and kept[1] == prefix:
                parsed.append(kept[2])
                continue
            families = parse(body, prefix)
            self.parses += 1
            self._parsed[pkey] = (body, prefix, families)
            parsed.append(families)
        for gone in set(self._parsed) - seen:
            del self._parsed[gone]
        info = [
            (
                "{" + label_prefix(netns, name).decode() + f',pid_file="{escape(m.daemon.pid_file)}"'
                f',config="{escape(m.daemon.config)}"}}',
                1.0,
            )
            for m, (netns, name) in zip(members, names, strict=True)
        ]
        fleet = [
            _gauge(
                "ka_exporter_daemons_discovered",
                "keepalived daemons found on this host by --discover (watched or not).",
                [("", discovered)],
            ),
            _gauge(
                "ka_exporter_daemons_watched",
                "keepalived daemons watched (at most --discover.max-daemons).",
                [("", len(members))],
            ),
            _gauge(
                "ka_exporter_daemons_unwatched",
                "keepalived daemons found but not watched: the --discover.max-daemons cap was reached.",
                [("", self.fleet.unwatched)],
            ),
            _gauge(
                "ka_exporter_daemon_info",
                "One series per watched keepalived: its namespace, name, pid file and keepalived.conf"
                " (always 1).",
                info,
            ),
            _gauge(
                "ka_exporter_build_info",
                "ka-exporter's version (always 1).",
                [(f'{{version="{__version__}",python_version="{platform.python_version()}"}}', 1.0)],
            ),
        ]
        text = merge(parsed) + b"".join(fleet)
        text += _gauge(DURATION_NAME, DURATION_HELP, [("", self.clock() - started)])
        self._key = key
        self._body = text
        self._gzipped = None
        self.renders += 1
        return text
