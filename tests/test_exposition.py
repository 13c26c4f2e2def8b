"""The scrape renderer against its oracle: prometheus_client's generate_latest of the same collectors.

Every fixture's keepalived dumps and keepalived.conf, with a replayed capture on the wire, rendered by
`exposition.Renderer` must be byte for byte what `generate_latest` (text) and OpenMetrics'
`generate_latest` write for a `SnapshotCollector` over the same store, except the scrape duration's
value. Then every kind of store change must show in the next scrape (and nothing else re-renders), an
unchanged store must be served as the same bytes, and /metrics must serve what the renderer makes.
"""

from __future__ import annotations

import gzip
import http.client
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import Part, SnapshotCollector
from ka_exporter.collectors.exporter import collect_exporter
from ka_exporter.collectors.failover import collect_failover
from ka_exporter.collectors.fused import collect_fused
from ka_exporter.collectors.host import collect_config, collect_process, collect_vips
from ka_exporter.collectors.keepalived import collect_keepalived
from ka_exporter.collectors.wire import collect_wire
from ka_exporter.model import Advert, LocalAddress, ProcessInfo, Snapshot, VrrpState
from ka_exporter.outputs.exposition import OPENMETRICS, TEXT, Formatter, Renderer
from ka_exporter.outputs.http import App, HttpServer
from ka_exporter.parse.dumps import parse_dumps
from ka_exporter.parse.kaconf import read_config
from ka_exporter.parse.vrrp import PROCESS_KEY, decode
from ka_exporter.sources.capture import read_pcap
from ka_exporter.store import Store
from ka_exporter.store.peers import PeerTable
from ka_exporter.verdicts.failover import FailoverTracker
from tests.conftest import FIXTURES

DIRS = sorted({p.parent for p in FIXTURES.glob("keepalived-*/**/keepalived.data")})
PCAP = FIXTURES / "pcap" / "split-brain.pcap"
PARTS: list[Part] = [
    collect_process,
    collect_vips,
    collect_config,
    collect_keepalived,
    collect_wire,
    collect_failover,
    collect_fused,
    collect_exporter,
]
DURATION = re.compile(rb"^(ka_exporter_scrape_duration_seconds) \S+$", re.M)
KA = collect_keepalived
FUSED = collect_fused
OM_ACCEPT = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def replayed() -> tuple[PeerTable, float]:
    table = PeerTable()
    now = 0.0
    for ts, ip in read_pcap(PCAP):
        if not now:
            table.set_listening({"eth0": ts})
        now = ts
        got = decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY)
        if isinstance(got, Advert):
            table.update(got)
    return table, now


def world(d: Path) -> tuple[Store, Clock, PeerTable]:
    """A store holding everything a fixture node shows: config, process, addresses, views, wire."""
    table, now = replayed()
    clock = Clock(now + 0.5)
    store = Store(hostname="node", clock=clock)
    views = parse_dumps((d / "keepalived.data").read_bytes(), (d / "keepalived.stats").read_bytes())
    if (d / "keepalived.conf").exists():
        store.set_config(read_config(d / "keepalived.conf"))
    store.set_process(ProcessInfo(running=True, pid=10, start_time=now - 100, vrrp_pids=(11,)))
    held = [v for view in views if view.state == VrrpState.MASTER for v in view.vips][:1]
    store.set_addresses(
        (
            LocalAddress("10.97.0.1", 24, "eth0", "inet"),
            *(LocalAddress(a.split("/")[0], 32, "eth0", "inet") for a in held),
        )
    )
    store.set_instances(views, "dumps")
    store.set_wire_provider(table.snapshot)
    tracker = FailoverTracker()
    peers, stats = table.snapshot()
    tracker.observe(peers, now, stats.listening_since)
    store.set_failover_provider(lambda: (tracker.timings(), tracker.recent()))
    for name in ("config", "process", "vips", "dumps", "wire"):
        store.report(name)
    store.report("dbus", error="dbus: cannot connect")
    return store, clock, table


def oracle(store: Store, accept: str = "") -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store.snapshot, PARTS))
    if accept.startswith("application/openmetrics-text"):
        return om.generate_latest(registry)
    return generate_latest(registry)


def masked(body: bytes) -> bytes:
    assert len(DURATION.findall(body)) == 1, "one scrape duration sample"
    return DURATION.sub(rb"\1 D", body)


@pytest.mark.parametrize("d", DIRS, ids=lambda d: str(d.relative_to(FIXTURES)))
def test_every_fixture_renders_as_the_oracle(d: Path) -> None:
    """Text and OpenMetrics, byte for byte generate_latest's output (duration value aside)."""
    store, _clock, _table = world(d)
    renderer = Renderer(store.snapshot_versions, PARTS)
    for accept in ("", OM_ACCEPT):
        body, ctype, encoding = renderer.render(accept, "")
        assert encoding is None
        assert ctype.startswith(OPENMETRICS if accept else TEXT)
        assert masked(body) == masked(oracle(store, accept))
    assert b"keepalived_vrrp_state{" in body
    assert b"keepalived_wire_split_brain{" in body
    assert b"keepalived_vip_status{" in body
    assert b"keepalived_wire_observed_seconds_total{" in body


def test_each_store_change_shows_in_the_next_scrape_and_nothing_else_renders() -> None:
    store, clock, table = world(FIXTURES / "keepalived-2.2.8" / "node-a")
    renderer = Renderer(store.snapshot_versions, PARTS)
    index = {p: i for i, p in enumerate(PARTS)}
    last = renderer.body()
    views = store.snapshot().instances or ()
    fault = tuple(replace(v, state=VrrpState.FAULT) for v in views)
    peers, _stats = table.snapshot()
    advert = next(
        a
        for ts, ip in read_pcap(PCAP)
        if isinstance(a := decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY), Advert)
    )

    def advert_in(a: Advert) -> None:
        if table.update(a):  # as the wire source does after each batch that moved a verdict
            store.wire_changed()

    changes = [
        (
            "instances go FAULT",
            lambda: store.set_instances(fault, "dumps"),
            {collect_keepalived},  # (keepalived.conf lists the VIPs: a state change moves no VIP series)
        ),
        (
            "keepalived stops",
            lambda: store.set_process(ProcessInfo(running=False)),
            {collect_process, KA},
        ),
        ("a VIP goes", lambda: store.set_addresses(()), {collect_vips, KA}),
        ("a D-Bus transition", lambda: store.count_transition(views[0].name), {KA}),
        (
            "a source fails",
            lambda: store.report("vips", error="netlink: gone"),
            {collect_exporter, KA},
        ),
        ("an advert arrives", lambda: advert_in(replace(advert, timestamp=clock.now)), {collect_wire}),
        (
            "time passes (a router's hold runs out)",
            lambda: (setattr(clock, "now", clock.now + 10), store.wire_changed()),
            {collect_wire, FUSED},
        ),
        # (the fused part is rendered again only when one of its verdicts moved: above, when a hold
        # time ran out; a poll's timestamps move none)
        ("a poll works, again", lambda: (setattr(clock, "now", clock.now + 1), store.report("config")), None),
    ]
    for what, change, rendered in changes:
        before = list(renderer.part_renders)
        assert renderer.body() is last, "an unchanged store is served as the same bytes"
        change()
        body = renderer.body()
        assert masked(body) == masked(oracle(store)), what
        assert masked(body) != masked(last), f"{what}: the scrape did not change"
        moved = {p for p in PARTS if renderer.part_renders[index[p]] != before[index[p]]}
        if rendered is not None:
            # The wire part is keyed on every section but timestamps: it moves with any of them.
            assert moved - {collect_wire} == rendered - {collect_wire}, f"{what}: re-rendered {moved}"
        else:
            assert moved == {collect_exporter}, f"{what}: re-rendered {moved}"
        last = body
    assert peers != table.snapshot()[0]


def test_gzip_is_made_once_per_body() -> None:
    store, _clock, _table = world(FIXTURES / "keepalived-2.4.3" / "node-a")
    renderer = Renderer(store.snapshot_versions, PARTS)
    gz, ctype, encoding = renderer.render("", "deflate, gzip")
    again, _, _ = renderer.render("", "gzip")
    assert encoding == "gzip" and ctype == TEXT
    assert gz is again
    assert gzip.decompress(gz) == renderer.body()
    store.set_process(ProcessInfo(running=False))
    fresh, _, _ = renderer.render("", "gzip")
    assert masked(gzip.decompress(fresh)) == masked(oracle(store))


def test_a_failing_part_is_left_out_and_retried_and_unknown_parts_render_every_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = {"bad": 0, "plain": 0}

    def bad(_snap: Snapshot) -> Iterator[Metric]:
        calls["bad"] += 1
        raise RuntimeError("boom")

    def plain(_snap: Snapshot) -> Iterator[Metric]:
        calls["plain"] += 1
        g = GaugeMetricFamily("ka_test_plain", "A part the renderer has no key for.")
        g.add_metric([], float(calls["plain"]))
        yield g

    store = Store(hostname="n", clock=Clock(1000.0))
    store.set_process(ProcessInfo(running=True, pid=1))
    renderer = Renderer(store.snapshot_versions, [collect_process, bad, plain])
    first = renderer.body()
    second = renderer.body()
    assert b"keepalived_up 1.0" in first
    assert b"ka_test_plain 1.0" in first and b"ka_test_plain 2.0" in second
    failed = [r for r in caplog.records if "collector bad failed" in r.getMessage()]
    assert len(failed) == 1, "a part failing at every scrape is logged once, not at every scrape"
    assert calls == {"bad": 2, "plain": 2}
    assert renderer.part_renders[0] == 1
    # node_exporter's node_scrape_collector_success, ours: the failing part reads 0, the others 1
    assert b'ka_exporter_collector_success{collector="process"} 1.0' in second
    assert b'ka_exporter_collector_success{collector="bad"} 0.0' in second
    assert b'ka_exporter_collector_success{collector="plain"} 1.0' in second

    def steady(_snap: Snapshot) -> Iterator[Metric]:
        calls["steady"] = calls.get("steady", 0) + 1
        g = GaugeMetricFamily("ka_test_steady", "A part with no key whose output does not move.")
        g.add_metric([], 7.0)
        yield g

    kept = Renderer(store.snapshot_versions, [collect_process, steady])
    assert kept.body() is kept.body(), "the same output of an unkeyed part: the same body"
    assert calls["steady"] == 2, "an unkeyed part still runs on every scrape"


def test_formatter_hands_other_families_to_prometheus_client() -> None:
    """Info families, _created samples, timestamps, escapes: still exactly the encoder's output."""
    info = InfoMetricFamily("ka_test", "Info with a \\ and \n.", value={"a": 'x"y\\z\n'})
    created = CounterMetricFamily("ka_test_events", "Counted.", labels=["k"], created=5.0)
    created.add_metric(["v"], 3.0, created=5.0)
    stamped = GaugeMetricFamily("ka_test_stamped", 'A "quoted" help.', labels=["k"])
    stamped.add_metric(["\\"], -0.0, timestamp=12.5)
    plain = GaugeMetricFamily("ka_test_plain", 'Help "q" \\ end.', labels=["z", "a"])
    plain.add_metric(['é"\n', "b"], 1e22)
    plain.add_metric(["n", "b"], float("nan"))
    plain.add_metric(["m", "b"], -0.0)
    plain.add_metric(["p", "b"], 0.0)
    hist = HistogramMetricFamily("ka_test_gap_seconds", "Gaps.", labels=["vrid"])
    hist.add_metric(["51"], [("0.5", 1.0), ("4.0", 3.0), ("+Inf", 4.0)], 9.25)
    families = [info, created, stamped, plain, hist]

    class C(CollectorRegistry):
        def collect(self) -> Iterator[Metric]:
            return iter(families)

    text = Formatter()
    assert text.format(families, TEXT) == generate_latest(C())
    assert text.format(families, TEXT) == generate_latest(C()), "from its memo too"
    assert text.format(families, OPENMETRICS) + b"# EOF\n" == om.generate_latest(C())


def test_metrics_endpoint_serves_the_renderer() -> None:
    store, _clock, _table = world(FIXTURES / "keepalived-2.2.8" / "node-b")
    renderer = Renderer(store.snapshot_versions, PARTS)
    server = HttpServer("127.0.0.1", 0, App(CollectorRegistry(), render=renderer.render))
    server.start()
    try:
        for accept, encoding, ctype in (
            ("text/plain", None, TEXT),
            (OM_ACCEPT, "gzip", OPENMETRICS),
        ):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            headers = {"Accept": accept, **({"Accept-Encoding": encoding} if encoding else {})}
            conn.request("GET", "/metrics", headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            conn.close()
            assert resp.status == 200
            assert resp.getheader("Content-Type", "").startswith(ctype)
            assert resp.getheader("Content-Encoding") == encoding
            body = gzip.decompress(raw) if encoding else raw
            assert body == renderer.body(accept)
            assert masked(body) == masked(oracle(store, accept))
    finally:
        server.stop()


def test_one_instance_changing_among_many_renders_as_the_oracle() -> None:
    """keepalived's part is rendered again per instance: every kind of change to one of many."""
    store, clock, _table = world(FIXTURES / "keepalived-2.2.8" / "node-a")
    base = store.snapshot().instances or ()
    many = [
        replace(v, name=f"VI_{k:02d}_{v.name}", vrid=(v.vrid + k) % 255 + 1) for k in range(12) for v in base
    ]
    store.set_instances(tuple(many), "dumps")
    store.report("dbus")  # D-Bus up: transitions are counted, states are current
    renderer = Renderer(store.snapshot_versions, PARTS)
    scripted = next(i for i, v in enumerate(many) if v.tracked_scripts)
    flipped = tuple(
        replace(s, status="GOOD" if s.status == "BAD" else "BAD") for s in many[scripted].tracked_scripts
    )
    stats = next(i for i, v in enumerate(many) if v.stats is not None)
    steps = [
        ("one instance goes FAULT", lambda: many.__setitem__(3, replace(many[3], state=VrrpState.FAULT))),
        (
            "a script flips",
            lambda: many.__setitem__(scripted, replace(many[scripted], tracked_scripts=flipped)),
        ),
        (
            "a counter moves",
            lambda: many.__setitem__(
                stats,
                replace(many[stats], stats=replace(many[stats].stats, advert_rcvd=10**9)),  # type: ignore[type-var]
            ),
        ),
        ("an instance goes away", lambda: many.pop(5)),
        ("its priority changes", lambda: many.__setitem__(0, replace(many[0], effective_priority=1))),
    ]
    for accept in ("", OM_ACCEPT):
        assert masked(renderer.body(accept)) == masked(oracle(store, accept))
    for what, change in steps:
        change()
        store.set_instances(tuple(many), "dumps")
        store.count_transition(many[1].name)
        for accept in ("", OM_ACCEPT):
            assert masked(renderer.body(accept)) == masked(oracle(store, accept)), what
    clock.now += 1
    store.set_addresses(())  # shared by every instance: all of them again
    for accept in ("", OM_ACCEPT):
        assert masked(renderer.body(accept)) == masked(oracle(store, accept))


def test_a_failing_cache_key_fails_only_its_own_part() -> None:
    def bad_key(_snap: Snapshot, _versions: object) -> object:
        raise RuntimeError("boom")

    store = Store(hostname="n", clock=Clock(1000.0))
    store.set_process(ProcessInfo(running=True, pid=1))
    store.report("process")
    renderer = Renderer(
        store.snapshot_versions,
        [collect_process, collect_exporter],
        {collect_process: bad_key, collect_exporter: lambda _s, v: v["health"]},
    )
    body = renderer.body()
    assert b"keepalived_up" not in body
    assert b'ka_exporter_collector_success{collector="process"} 0.0' in body
    assert b'ka_exporter_collector_success{collector="exporter"} 1.0' in body
    assert b'ka_exporter_source_up{source="process"} 1.0' in body


def test_the_fused_verdict_is_judged_again_only_when_its_inputs_or_time_can_move_it() -> None:
    """Scrapes of an unchanged state judge no VRID again until the first instant time alone can change a
    verdict (its memo's next edge); from then on the served verdict is the oracle's, never late."""
    store, clock, table = world(FIXTURES / "keepalived-2.2.8" / "node-a")
    renderer = Renderer(store.snapshot_versions, PARTS)
    i = PARTS.index(FUSED)
    first = renderer.body()
    memo = renderer.fused_memos()[0].memo
    judged, rendered = memo.judged, renderer.part_renders[i]
    edge = renderer.next_edge()
    assert clock.now < edge < math.inf
    for _ in range(3):
        clock.now += (edge - clock.now) / 4
        assert renderer.body() is first
    assert (memo.judged, renderer.part_renders[i]) == (judged, rendered), "judged again before its edge"
    clock.now = edge
    assert masked(renderer.body()) == masked(oracle(store))
    assert memo.judged > judged, "not judged again at its edge"
    silent = b'keepalived_master_silent{family="inet",interface="eth0",vrid="51"} '
    assert silent + b"0.0" in first
    clock.now += 6.0  # nothing moves in the store, but this host's MASTER claim outlives its hold time
    body = renderer.body()
    assert renderer.part_renders[i] == rendered + 1
    assert silent + b"1.0" in body
    fused = re.compile(rb"^keepalived_(?:split_brain|master_silent|foreign_masters|vips_unanswered).*$", re.M)
    assert fused.findall(body) == fused.findall(oracle(store))
    if table.tick(clock.now):  # the wire source's tick: the wire verdicts' own time-driven change
        store.wire_changed()
    assert masked(renderer.body()) == masked(oracle(store))


def _stamped_world() -> tuple[Store, Clock, PeerTable]:
    """world() with versioned wire and failover providers (as the wire source sets them)."""
    store, clock, table = world(FIXTURES / "keepalived-2.2.8" / "node-a")
    tracker = FailoverTracker()
    peers, stats = table.snapshot()
    tracker.observe(peers, clock.now, stats.listening_since)
    store.set_wire_provider(table.snapshot, table.version)
    store.set_failover_provider(lambda: (tracker.timings(), tracker.recent()), lambda: 0)
    return store, clock, table


def test_cached_serves_the_body_of_an_unchanged_state_and_misses_on_any_change() -> None:
    store, clock, table = _stamped_world()
    renderer = Renderer(store.snapshot_versions, PARTS, stamp=store.stamp)
    assert renderer.cached("", "") is None, "nothing rendered yet"
    body = renderer.body()
    hit = renderer.cached("", "")
    assert hit is not None and hit[0] is body and hit[1] == TEXT and hit[2] is None
    assert renderer.cached("", "gzip") is None, "no gzip made yet: a render makes it"
    gz = renderer.render("", "gzip")[0]
    assert (renderer.cached("", "gzip") or (b"",))[0] is gz
    advert = next(
        a
        for ts, ip in read_pcap(PCAP)
        if isinstance(a := decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY), Advert)
    )
    changes = [
        ("an advert (counters only)", lambda: table.update(replace(advert, timestamp=clock.now))),
        ("a poll's timestamps", lambda: store.report("config")),
        ("a fused verdict's next time edge", lambda: setattr(clock, "now", renderer.next_edge())),
        ("a D-Bus transition", lambda: store.count_transition("VI_1")),
    ]
    for what, change in changes:
        change()
        assert renderer.cached("", "") is None, what
        fresh = renderer.body()
        assert masked(fresh) == masked(oracle(store)), what
        assert (renderer.cached("", "") or (b"",))[0] is fresh, what

    # Not knowable without a snapshot: a part with no key, or a provider without a version.
    def plain(_snap: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("ka_test_plain", "A part the renderer has no key for.", value=1.0)

    unkeyed = Renderer(store.snapshot_versions, [*PARTS, plain], stamp=store.stamp)
    unkeyed.body()
    assert unkeyed.cached("", "") is None
    store.set_wire_provider(table.snapshot)
    renderer.body()
    assert renderer.cached("", "") is None


def test_metrics_endpoint_answers_a_cached_body_without_a_render() -> None:
    store, _clock, _table = _stamped_world()
    renderer = Renderer(store.snapshot_versions, PARTS, stamp=store.stamp)
    calls: list[str] = []

    def render(accept: str, encoding: str) -> tuple[bytes, str, str | None]:
        calls.append(accept)
        return renderer.render(accept, encoding)

    server = HttpServer("127.0.0.1", 0, App(CollectorRegistry(), render=render, cached=renderer.cached))
    server.start()
    try:
        bodies = []
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            bodies.append(resp.read())
            conn.close()
            assert resp.status == 200
        assert len(calls) == 1, "the second and third scrapes are the cached body"
        assert bodies[0] == bodies[1] == bodies[2] == renderer.body()
        assert masked(bodies[2]) == masked(oracle(store))
    finally:
        server.stop()


def test_the_daemons_other_parts_keep_the_cached_path_and_a_watchdog_count_misses() -> None:
    from ka_exporter.collectors.l2 import collect_l2
    from ka_exporter.collectors.lvs import collect_lvs
    from ka_exporter.collectors.watchdog import watchdog_part
    from ka_exporter.outputs.watchdog import WatchdogStats

    store, _clock, _table = _stamped_world()
    stats = WatchdogStats()
    parts = [*PARTS, collect_l2, collect_lvs, watchdog_part(stats)]
    renderer = Renderer(store.snapshot_versions, parts, stamp=store.stamp)
    body = renderer.body()
    assert (renderer.cached("", "") or (b"",))[0] is body
    stats.runs += 1
    assert renderer.cached("", "") is None, "the watchdog ran a hook: its part moved"
    fresh = renderer.body()
    assert b"ka_exporter_watchdog_hook_runs_total 1.0" in fresh
    assert (renderer.cached("", "") or (b"",))[0] is fresh
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store.snapshot, parts))
    assert masked(fresh) == masked(generate_latest(registry))


def test_the_peer_tables_version_moves_with_its_snapshot_and_unchanged_records_are_reused() -> None:
    table, now = replayed()
    v0 = table.version()
    peers, stats = table.snapshot()
    assert table.version() == v0 and table.snapshot() == (peers, stats)
    again, _ = table.snapshot()
    assert all(a is b for a, b in zip(peers, again, strict=True)), "records made once per change"
    advert = next(
        a
        for ts, ip in read_pcap(PCAP)
        if isinstance(a := decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY), Advert)
    )
    table.update(replace(advert, timestamp=now + 0.1))
    assert table.version() != v0
    moved, _ = table.snapshot()
    assert moved != peers
    changed = [b for a, b in zip(peers, moved, strict=True) if a is not b]
    assert len(changed) == 1 and changed[0].source == advert.source, "only the advertising router's"


def test_keyed_parts_write_again_only_the_rows_that_moved() -> None:
    """The L2 witness, the failover accounts and keepalived's instances are written row by row: after
    each change the body is the oracle's, and only the rows whose records moved went through their
    series again (counted on the collectors' own row functions)."""
    import ka_exporter.collectors.failover as failover_mod
    import ka_exporter.collectors.keepalived as keepalived_mod
    import ka_exporter.collectors.l2 as l2_mod
    from ka_exporter.collectors.l2 import collect_l2
    from ka_exporter.model import Histogram, VipAnswers, VridTiming

    store, clock, _table = world(FIXTURES / "keepalived-2.2.8" / "node-a")
    base = store.snapshot().instances or ()
    views = [
        replace(v, name=f"VI_{k:02d}_{v.name}", vrid=(v.vrid + k) % 255 + 1) for k in range(8) for v in base
    ]
    store.set_instances(tuple(views), "dumps")
    vips = [VipAnswers(f"10.97.0.{100 + k}", "eth0", "inet", probes_sent=k) for k in range(6)]
    vips[1] = replace(vips[1], answerers=("02:97:00:00:00:02",), last_probe_answers=1)
    store.set_l2(tuple(vips))
    timings = [VridTiming(("eth0", "inet", 60 + k), observed_seconds=10.0 + k) for k in range(5)]
    timings[2] = replace(timings[2], announce=(("10.97.0.102", Histogram().observe(0.01), 0),))
    store.set_failover_provider(lambda: (tuple(timings), ()))
    calls = {"vip": 0, "instance": 0, "counters": 0, "histograms": 0}

    def counting(module: object, name: str, what: str) -> None:
        real = getattr(module, name)

        def counted(*args: object) -> object:
            calls[what] += 1
            return real(*args)

        setattr(module, name, counted)

    with pytest.MonkeyPatch.context() as mp:
        for module, name, what in (
            (l2_mod, "_vip_series", "vip"),
            (keepalived_mod, "instance_series", "instance"),
            (failover_mod, "_counters", "counters"),
            (failover_mod, "_histograms", "histograms"),
        ):
            mp.setattr(module, name, getattr(module, name))  # restored after the test
            counting(module, name, what)
        parts = [*PARTS[:-2], collect_l2, *PARTS[-2:]]
        renderer = Renderer(store.snapshot_versions, parts)

        def oracle_of(accept: str) -> bytes:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SnapshotCollector(store.snapshot, parts))
            return om.generate_latest(registry) if accept else generate_latest(registry)

        steps: list[tuple[str, Callable[[], None], dict[str, int]]] = [
            (
                "one VIP's probe counter moves",
                lambda: vips.__setitem__(3, replace(vips[3], probes_sent=99)),
                {"vip": 1},
            ),
            (
                "a VIP gains an answerer",
                lambda: vips.__setitem__(0, replace(vips[0], answerers=("02:97:00:00:00:03",))),
                {"vip": 1},
            ),
            (
                "a wire tick moves every VRID's time, no histogram",
                lambda: timings.__setitem__(
                    slice(None), [replace(t, observed_seconds=t.observed_seconds + 0.25) for t in timings]
                ),
                {"counters": 5},
            ),
            (
                "a master change on one VRID",
                lambda: timings.__setitem__(
                    1, replace(timings[1], master_changes=1, gaps=Histogram().observe(3.6))
                ),
                {"counters": 1, "histograms": 1},
            ),
            (
                "one instance goes FAULT",
                lambda: views.__setitem__(4, replace(views[4], state=VrrpState.FAULT)),
                {"instance": 1},
            ),
            (
                "every instance goes FAULT",
                lambda: views.__setitem__(slice(None), [replace(v, state=VrrpState.FAULT) for v in views]),
                {"instance": len(views) - 1},
            ),
        ]
        for accept in ("", OM_ACCEPT):
            assert masked(renderer.body(accept)) == masked(oracle_of(accept))
        for what, change, expected in steps:
            change()
            store.set_l2(tuple(vips))
            store.set_instances(tuple(views), "dumps")
            store.wire_changed()  # the failover provider's records are read at every snapshot
            clock.now += 0.001
            before = dict(calls)
            bodies = [renderer.body(accept) for accept in ("", OM_ACCEPT)]
            # each moved row once per content kind (text and OpenMetrics keep their own rows)
            assert {k: (calls[k] - before[k]) / 2 for k in calls} == {k: expected.get(k, 0) for k in calls}, (
                what
            )
            for accept, body in zip(("", OM_ACCEPT), bodies, strict=True):
                assert masked(body) == masked(oracle_of(accept)), what


def test_the_vip_part_written_row_by_row_is_the_oracles_through_address_and_config_moves() -> None:
    store, _clock, _table = world(FIXTURES / "keepalived-2.2.8" / "node-a")
    renderer = Renderer(store.snapshot_versions, PARTS)
    config = store.config()
    vips = [v for v in (store.snapshot().instances or ()) for v in (*v.vips, *v.vips_excluded)]
    assert len(vips) >= 2
    base = (LocalAddress("10.97.0.1", 24, "eth0", "inet"),)
    vip_lines = re.compile(rb"^keepalived_vip_(?:status|on_interface)\b.*$", re.M)
    steps = [
        (
            "every VIP here",
            lambda: store.set_addresses((*base, *(LocalAddress(v, 32, "eth0", "inet") for v in vips))),
        ),
        (
            "one on a second interface",
            lambda: store.set_addresses((*base, LocalAddress(vips[0], 32, "eth1", "inet"))),
        ),
        ("none", lambda: store.set_addresses(base)),
        ("addresses unknown", lambda: store.set_addresses(None)),
        (
            "keepalived.conf gone: the instances list them",
            lambda: (store.set_config(None), store.set_addresses(base)),
        ),
        ("and one comes", lambda: store.set_addresses((*base, LocalAddress(vips[-1], 32, "eth0", "inet")))),
        ("keepalived.conf back", lambda: store.set_config(config)),
    ]
    shown = set()
    for what, step in steps:
        step()
        for accept in ("", OM_ACCEPT):
            body = renderer.body(accept)
            assert masked(body) == masked(oracle(store, accept)), what
        shown.add(tuple(vip_lines.findall(body)))
    assert len(shown) == len(steps), "each step moved the VIP series"
