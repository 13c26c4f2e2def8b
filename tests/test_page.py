"""The landing page at `/` as a browser shows it: Debian's headless Chromium against a real exporter on a lab node.

Each check loads the page in Chromium (`--dump-dom` for what it renders, `--screenshot` for what it looks like)
and reads it the way a person would: the banner, the instance row, the conditions. Set KA_PAGE_SCREENSHOTS to a
directory to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ka_exporter.lab import LAB_PASSWORD, Lab
from ka_exporter.model import Snapshot, WirePeer
from ka_exporter.outputs.views import FAILOVER_COLOUR, SPAN_COLOURS, landing_page
from ka_exporter.verdicts.failover import HISTORY_SPANS, FailoverTracker
from tests.conftest import RunningExporter, parse_metrics, sample, start_node_exporter, stop_exporter

pytestmark = pytest.mark.lab

CHROMIUM = shutil.which("chromium")
# The banner's background colours in views.landing_page (#2a7d2a, #b00): what a glance at the page shows.
GREEN = (0x2A, 0x7D, 0x2A)
RED = (0xBB, 0x00, 0x00)


# ------------------------------------------------------------------------------------------ the browser


class Browser:
    """Debian's chromium, headless, with a throw-away profile; no network beyond the page asked for."""

    def __init__(self, workdir: Path) -> None:
        if CHROMIUM is None:
            pytest.fail("chromium is not installed (scripts/bootstrap.sh --test installs it)")
        self.workdir = workdir
        self.profile = workdir / "chromium-profile"
        self.shots = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert CHROMIUM is not None
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            f"--user-data-dir={self.profile}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        # Its own process group: on a timeout the renderer and helpers go too (only what we started).
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"chromium did not finish: {' '.join(args)}") from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def dom(self, url: str) -> Element:
        r = self._run("--dump-dom", url)
        assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
        return parse_html(r.stdout)

    def screenshot(self, url: str, name: str) -> Path:
        self.shots += 1
        path = self.workdir / f"{self.shots:02d}-{name}.png"
        r = self._run(f"--screenshot={path}", "--window-size=1200,800", "--hide-scrollbars", url)
        assert r.returncode == 0 and path.exists(), r.stderr[-2000:]
        keep = os.environ.get("KA_PAGE_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path


# ---------------------------------------------------------------------------------- reading the DOM


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        """The text a reader sees, whitespace collapsed; list items and table rows on their own lines."""
        parts: list[str] = []
        for c in self.children:
            if isinstance(c, str):
                parts.append(c)
            else:
                parts.append(("\n" if c.tag in {"li", "tr", "br", "p", "div"} else "") + c.text)
        return "\n".join(" ".join(line.split()) for line in "".join(parts).splitlines()).strip()

    def iter(self, tag: str | None = None) -> Iterator[Element]:
        for c in self.children:
            if isinstance(c, Element):
                if tag is None or c.tag == tag:
                    yield c
                yield from c.iter(tag)

    def by_id(self, ident: str) -> Element:
        for el in self.iter():
            if el.attrs.get("id") == ident:
                return el
        raise AssertionError(f"no element with id {ident!r} on the page")

    def table(self) -> list[dict[str, Element]]:
        """A table's body rows as {column title: cell}."""
        titles = [th.text for th in self.iter("th")]
        body = next(self.iter("tbody"))
        return [dict(zip(titles, tr.iter("td"), strict=False)) for tr in body.iter("tr")]


VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "source", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(el)
        if tag not in VOID:
            self.cur = el

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def parse_html(text: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return str(resp.read().decode())


def wait_page(url: str, ready: Callable[[Element], bool], timeout: float = 15.0) -> None:
    """Poll the page cheaply (no browser) until `ready` holds for it; the browser then reads it once."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            last = fetch(url)
            if ready(parse_html(last)):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the page never got there; last seen:\n{parse_html(last).text[:3000]}")


def instance_row(page: Element, name: str = "VI_1") -> dict[str, Element]:
    rows = page.by_id("instances").table()
    for row in rows:
        if row["INSTANCE"].text == name:
            return row
    raise AssertionError(f"no row for {name} in {[r['INSTANCE'].text for r in rows]}")


# ------------------------------------------------------------------------------ reading the pixels


def png_colours(path: Path, rows: int = 250) -> dict[tuple[int, int, int], int]:
    """How many pixels of each colour in the top `rows` rows of an 8-bit RGB/RGBA PNG (Chromium's)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    assert (width, height) == (1200, 800), (width, height)
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * rows)
    prev = bytearray(stride)
    counts: dict[tuple[int, int, int], int] = {}
    for y in range(min(rows, height)):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for i in range(0, stride, bpp):
            px = (line[i], line[i + 1], line[i + 2])
            counts[px] = counts.get(px, 0) + 1
        prev = line
    return counts


# ------------------------------------------------------------------------------------------- tests


def _exporter(lab: Lab, workdir: Path, *extra: str) -> tuple[RunningExporter, str]:
    exp = start_node_exporter(workdir, lab.nodes["a"], "node-a", *extra)
    return exp, f"http://127.0.0.1:{exp.port}/"


def test_page_shows_master_vip_routers_and_then_the_split_brain(tmp_path):
    browser = Browser(tmp_path)
    with Lab(profile="fast", nodes=2, dbus=True) as lab:
        a, b = lab.nodes["a"], lab.nodes["b"]
        vrid, vip = str(lab.instances[0].vrid), lab.vips[0]
        exp, url = _exporter(lab, tmp_path)
        try:

            def healthy(page: Element) -> bool:
                row = instance_row(page)
                return (
                    "ok" in page.by_id("overall").classes
                    and row["STATE"].text == "MASTER"
                    and a.address in row["ROUTERS ON WIRE"].text
                )

            wait_page(url, healthy)
            page = browser.dom(url)
            title = next(page.iter("title")).text
            assert title.startswith("OK"), title
            assert "node-a" in title
            banner = page.by_id("overall")
            assert banner.text.startswith("OK"), banner.text
            assert "node-a" in banner.text
            assert "keepalived running" in banner.text
            row = instance_row(page)
            assert row["VRID"].text == vrid
            assert row["INTERFACE"].text == "eth0"
            assert row["STATE"].text == "MASTER"
            assert "master" in row["STATE"].classes
            assert row["VIPS HELD"].text == vip
            assert row["ROUTERS ON WIRE"].text == f"{a.address} (this host) prio 150"
            assert row["VERDICTS"].text == "ok"
            assert page.by_id("conditions").text == "none"
            sources = {r["source"].text: r["state"].text for r in page.by_id("sources").table()}
            assert sources == dict.fromkeys(
                ("config", "dbus", "dumps", "l2", "process", "vips", "wire"), "up"
            )
            colours = png_colours(browser.screenshot(url, "ok"))
            assert colours.get(GREEN, 0) > 5000, "no green OK banner on the screenshot"
            assert colours.get(RED, 0) == 0

            lab.split(mode="firewall", node="b")  # b no longer hears a: both advertise as master

            def split(page: Element) -> bool:
                return "split_brain" in instance_row(page)["VERDICTS"].text

            wait_page(url, split)
            page = browser.dom(url)
            assert next(page.iter("title")).text.startswith("CRITICAL")
            banner = page.by_id("overall")
            assert banner.text.startswith("CRITICAL"), banner.text
            assert "critical" in banner.classes
            row = instance_row(page)
            assert row["STATE"].text == "MASTER"
            assert row["VERDICTS"].text == "split_brain"
            assert "critical" in row["VERDICTS"].classes
            routers = row["ROUTERS ON WIRE"].text.splitlines()
            assert routers == [f"{a.address} (this host) prio 150", f"{b.address} prio 100"]
            conds = list(page.by_id("conditions").iter("li"))
            assert len(conds) == 1
            assert "critical" in conds[0].classes
            text = conds[0].text
            assert text.startswith(f"split brain: 2 routers advertise as master for VRID {vrid}"), text
            assert a.address in text and b.address in text
            colours = png_colours(browser.screenshot(url, "split-brain"))
            assert colours.get(RED, 0) > 5000, "no red CRITICAL banner on the screenshot"
            assert colours.get(GREEN, 0) == 0
            lab.heal()
        finally:
            stop_exporter(exp)
    assert "Traceback" not in exp.logs()


@pytest.mark.slow
def test_lab_password_never_reaches_the_page(tmp_path):
    """basic profile (VRRPv2, auth PASS): the dumps and the adverts carry the password; the page never does."""
    browser = Browser(tmp_path)
    with Lab(profile="basic", nodes=2, dbus=True) as lab:
        a = lab.nodes["a"]
        assert LAB_PASSWORD in a.config_path.read_text()  # the secret is really there to leak
        exp, url = _exporter(lab, tmp_path, "--keepalived.dump-interval", "1")
        try:
            dump = a.tmpdir / "keepalived.data"

            def everything_read(page: Element) -> bool:
                row = instance_row(page)
                return (
                    dump.exists()
                    and LAB_PASSWORD in dump.read_text()  # keepalived wrote it; the dumps source read it
                    and row["STATE"].text == "MASTER"
                    and a.address in row["ROUTERS ON WIRE"].text  # a PASS advert decoded
                    and "ok" in page.by_id("overall").classes
                )

            wait_page(url, everything_read, timeout=20)
            time.sleep(1.5)  # one more dump refresh after the file was seen
            seen = [browser.dom(url)]
            lab.split(mode="firewall", node="b")
            wait_page(url, lambda page: "split_brain" in instance_row(page)["VERDICTS"].text, timeout=20)
            seen.append(browser.dom(url))
            lab.heal()
        finally:
            stop_exporter(exp)
    assert "critical" in seen[1].by_id("overall").classes
    for page in seen:
        assert LAB_PASSWORD not in page.text
        assert not any(LAB_PASSWORD in v for el in page.iter() for v in el.attrs.values())


# ------------------------------------------------------------------ the history: last hour per VRID


def _peer(source: str, first: float, last: float, priority: int) -> WirePeer:
    return WirePeer(
        "eth0",
        "inet",
        51,
        source,
        first,
        last,
        priority,
        1.0,
        2,
        ("10.0.0.100",),
        0,
        None,
        int(last - first) + 1,
    )


def _tracked_hour(end: float) -> FailoverTracker:
    """The real failover accounts fed an hour of peer tables, a look a second, as the wire source does:
    a master (prio 200) crashes at -1800 s and the backup's first advert is 3.6 s later; from -900 s to
    -600 s a third router (prio 50) advertises too (a split brain)."""
    runs = {
        "10.0.0.1": [(end - 3000, end - 1800, 200)],
        "10.0.0.2": [(end - 1796.4, end, 100)],
        "10.0.0.3": [(end - 900, end - 600, 50)],
    }
    tracker = FailoverTracker()
    now = end - 3000
    while now <= end:
        table = []
        for source, spans in runs.items():
            for start, stop, prio in spans:
                if start <= now:
                    last = start + int(min(stop, now) - start)  # one advert a second
                    if now - last <= 10:  # the peer table lingers a router for a while after it stops
                        table.append(_peer(source, start, last, prio))
        tracker.observe(table, now, listening_since=end - 3600)
        now += 1.0
    return tracker


def test_history_of_the_last_hour_is_drawn_and_listed(tmp_path):
    """The page's picture and transitions table from the failover accounts, in Chromium: one bar for
    VRID 51, green (one master), red (the split brain), the 3.6 s gap and one failover tick, and a table
    row with the measured gap. Inline SVG only: nothing loaded from anywhere."""
    end = 1_800_000_000.0
    tracker = _tracked_hour(end)
    (timing,) = tracker.timings()
    assert timing.master_changes == 1
    states = {s.masters for s in timing.history}
    assert states == {0, 1, 2}, timing.history
    assert len(timing.history) <= HISTORY_SPANS
    snap = Snapshot(time=end, hostname="lb1", failover=tracker.timings(), failover_events=tracker.recent())
    page_html = landing_page(snap, [])
    for external in ("<script", "<link", "<img", "src=", 'href="http', "url("):
        assert external not in page_html, external
    path = tmp_path / "page.html"
    path.write_text(page_html)
    url = path.as_uri()
    browser = Browser(tmp_path)
    page = browser.dom(url)
    svg = page.by_id("history")
    assert svg.tag == "svg"
    rects = list(svg.iter("rect"))
    classes = [r.attrs.get("class", "") for r in rects]
    assert any("m1" in c for c in classes) and any("m2" in c for c in classes)
    assert classes.count("failover") == 1
    assert classes.count("gap") == 1
    assert "VRID 51 inet on eth0" in svg.text
    rows = list(page.by_id("transitions").iter("tr"))[1:]
    assert len(rows) == 1
    cells = [c.text for c in rows[0].iter("td")]
    assert cells[1:] == ["VRID 51 inet on eth0", "10.0.0.1", "10.0.0.2", "gap 3.600 s"], cells
    assert cells[0] == "2027-01-15 07:30:03.600", cells  # end - 1796.4 s, in UTC
    colours = png_colours(browser.screenshot(url, "history"), rows=800)
    rgb = {k: tuple(int(v[i : i + 2], 16) for i in (1, 3, 5)) for k, v in SPAN_COLOURS.items()}
    assert colours.get(rgb[1], 0) > 2000, "no green (one master) on the screenshot"
    assert colours.get(rgb[2], 0) > 500, "no red (split brain) on the screenshot"
    assert colours.get(rgb[0], 0) > 20, "no amber (masterless gap) on the screenshot"
    blue = tuple(int(FAILOVER_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    assert colours.get(blue, 0) > 20, "no failover tick on the screenshot"


def test_page_history_shows_a_real_failover_with_its_measured_gap(tmp_path):
    """A SIGTERM failover on the lab pair: node a's page lists the master change a -> b with the gap its
    exporter measured (the same as the gap histogram's sum on /metrics), and draws its tick."""
    browser = Browser(tmp_path)
    with Lab(profile="fast", nodes=2, dbus=True) as lab:
        a, b = lab.nodes["a"], lab.nodes["b"]
        vrid = str(lab.instances[0].vrid)
        exp, url = _exporter(lab, tmp_path)
        try:
            wait_page(url, lambda page: a.address in instance_row(page)["ROUTERS ON WIRE"].text)
            assert lab.master() == "a"

            def history_knows_a(page: Element) -> bool:
                try:
                    return f"one master ({a.address})" in page.by_id("history").text
                except AssertionError:
                    return False

            # The accounts trail the wire by 1.5 intervals: a master change needs a known master before it.
            wait_page(url, history_knows_a)
            lab.failover()

            def changed(page: Element) -> bool:
                try:
                    return any("gap" in r["measured"].text for r in page.by_id("transitions").table())
                except (AssertionError, KeyError):
                    return False

            wait_page(url, changed, timeout=20)
            page = browser.dom(url)
            (row,) = page.by_id("transitions").table()
            assert row["VRID"].text == f"VRID {vrid} inet on eth0"
            assert (row["from"].text, row["to"].text) == (a.address, b.address)
            metrics = parse_metrics(fetch(url + "metrics"))
            labels = {"interface": "eth0", "family": "inet", "vrid": vrid}
            assert sample(metrics, "keepalived_wire_failover_gap_seconds_count", **labels) == 1.0
            gap = sample(metrics, "keepalived_wire_failover_gap_seconds_sum", **labels)
            assert gap is not None and 0 <= gap < 1.0  # a graceful stop: the backup's skew time
            assert row["measured"].text == f"gap {gap:.3f} s"
            svg = page.by_id("history")
            classes = [r.attrs.get("class", "") for r in svg.iter("rect")]
            assert classes.count("failover") == 1
            titles = " ".join(t.text for t in svg.iter("title"))
            assert f"one master ({a.address})" in titles and f"one master ({b.address})" in titles
            assert f"{a.address} -> {b.address}, gap {gap:.3f} s" in titles
            colours = png_colours(browser.screenshot(url, "failover-history"), rows=800)
            blue = tuple(int(FAILOVER_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
            assert colours.get(blue, 0) > 20, "no failover tick on the screenshot"
        finally:
            stop_exporter(exp)
    assert "Traceback" not in exp.logs()


def test_history_stays_bounded_and_keeps_the_newest():
    """A flapping VRID (two routers taking turns, 3 adverts each, a 1 s gap between): the ring keeps
    HISTORY_SPANS stretches, the latest ones, and the page's table the latest 20 changes."""
    end = 1_800_000_000.0
    start = end - 3600
    tracker = FailoverTracker()
    sources = ("10.0.0.1", "10.0.0.2")
    now = start
    while now <= end:
        k = int((now - start) // 3)
        table = [_peer(sources[k % 2], start + 3 * k, min(now, start + 3 * k + 2), 100)]
        if k:  # the other router lingers in the table with its last run
            table.append(_peer(sources[(k - 1) % 2], start + 3 * (k - 1), start + 3 * k - 1, 100))
        tracker.observe(table, now, listening_since=start)
        now += 1.0
    (timing,) = tracker.timings()
    assert timing.master_changes > 1000
    assert len(timing.history) == HISTORY_SPANS
    assert timing.history[-1].end == pytest.approx(end - 0.05 - 1.5, abs=1e-6)
    snap = Snapshot(time=end, hostname="lb1", failover=tracker.timings(), failover_events=tracker.recent())
    page = parse_html(landing_page(snap, []))
    assert len(page.by_id("transitions").table()) == 20
