"""The wire collector: names, values and promtool-clean exposition over replayed pcap data."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ka_exporter.collectors.wire import collect_wire
from ka_exporter.model import Advert, ConfInstance, KeepalivedConfig, Snapshot, WireStats
from ka_exporter.parse.vrrp import PROCESS_KEY, decode
from ka_exporter.sources.capture import read_pcap
from ka_exporter.store.peers import PeerTable
from ka_exporter.verdicts.wire import CONFLICT_KINDS

PCAPS = Path(__file__).resolve().parent / "fixtures" / "pcap"


class _Once(Collector):
    def __init__(self, snap: Snapshot, **kw: object) -> None:
        self.snap = snap
        self.kw = kw

    def collect(self) -> Iterator[Metric]:
        return collect_wire(self.snap, **self.kw)  # type: ignore[arg-type]


def _replayed(name: str, until_offset: float | None = None, cap: int = 4096) -> tuple[PeerTable, float]:
    """Table after replaying a pcap up to t0 + until_offset; returns (table, now)."""
    table = PeerTable(cap=cap)
    now = 0.0
    t0: float | None = None
    for ts, ip in read_pcap(PCAPS / name):
        if t0 is None:
            t0 = ts
            table.set_listening({"eth0": t0})  # the capture started with its first packet
        if until_offset is not None and ts > t0 + until_offset:
            break
        now = ts
        got = decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY)
        if isinstance(got, Advert):
            table.update(got)
        else:
            table.count_invalid(got.reason)
    return table, now


def _render(table: PeerTable, now: float, **kw: object) -> tuple[bytes, CollectorRegistry]:
    peers, stats = table.snapshot()
    snap = Snapshot(time=now, hostname="obs", wire_peers=peers, wire_stats=stats)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Once(snap, **kw))
    return generate_latest(reg), reg


def _promtool(text: bytes) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed")
    return subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("name", sorted(p.name for p in PCAPS.glob("*.pcap")))
def test_exposition_of_every_pcap_is_promtool_clean_and_password_free(name: str) -> None:
    table, now = _replayed(name)
    text, _ = _render(table, now)
    res = _promtool(text)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    assert b"kaT3st01" not in text
    assert b"keepalived_wire_masters{" in text
    # real keepalived traffic (start races, failover, preemption, split brain, a third router)
    # never makes one router's adverts look like two senders
    assert not any(p.contested for p in table.snapshot()[0])
    assert b'kind="source",vrid="' in text
    assert not [ln for ln in text.splitlines() if b'kind="source"' in ln and not ln.endswith(b" 0.0")]


def test_split_brain_values() -> None:
    table, now = _replayed("split-brain.pcap", until_offset=12.0)
    _, reg = _render(table, now)
    v = {"interface": "eth0", "family": "inet", "vrid": "51"}
    assert reg.get_sample_value("keepalived_wire_split_brain", v) == 1.0
    assert reg.get_sample_value("keepalived_wire_masters", v) == 2.0
    assert reg.get_sample_value("keepalived_wire_routers", v) == 2.0
    assert reg.get_sample_value("keepalived_wire_no_master", v) == 0.0
    for kind in ("auth", "interval", "version", "vips", "source"):
        assert reg.get_sample_value("keepalived_wire_conflict", {**v, "kind": kind}) == 0.0
    a = {**v, "source": "10.97.0.1"}
    b = {**v, "source": "10.97.0.2"}
    assert reg.get_sample_value("keepalived_wire_advert_priority", a) == 150.0
    assert reg.get_sample_value("keepalived_wire_advert_priority", b) == 100.0
    assert reg.get_sample_value("keepalived_wire_advert_interval_seconds", b) == 1.0
    assert reg.get_sample_value("keepalived_wire_router_local", b) == 0.0
    assert reg.get_sample_value("keepalived_wire_adverts_total", a) > 5  # type: ignore[operator]
    last = reg.get_sample_value("keepalived_wire_last_advert_timestamp_seconds", a)
    assert last is not None
    assert now - 1.1 < last <= now
    # the healed end of the capture: split brain gone
    table, now = _replayed("split-brain.pcap")
    _, reg = _render(table, now + 3.0)
    assert reg.get_sample_value("keepalived_wire_split_brain", v) == 0.0


def test_conflict_and_counters() -> None:
    table, now = _replayed("vrid-conflict.pcap", until_offset=12.0)
    _, reg = _render(table, now)
    v = {"interface": "eth0", "family": "inet", "vrid": "51"}
    assert reg.get_sample_value("keepalived_wire_conflict", {**v, "kind": "vips"}) == 1.0
    assert reg.get_sample_value("keepalived_wire_conflict", {**v, "kind": "interval"}) == 1.0
    assert reg.get_sample_value("keepalived_wire_conflict", {**v, "kind": "auth"}) == 0.0
    assert reg.get_sample_value("keepalived_wire_packets_total") is not None
    assert reg.get_sample_value("keepalived_wire_invalid_packets_total", {"reason": "not_vrrp"}) is not None
    assert reg.get_sample_value("keepalived_wire_kernel_drops_total") == 0.0
    assert reg.get_sample_value("keepalived_wire_peer_evictions_total") == 0.0
    assert reg.get_sample_value("keepalived_wire_peers") == 2.0  # a and c; b, BACKUP, is silent


def test_configured_but_silent_vrid_is_no_master_and_exported() -> None:
    table, now = _replayed("v2-multicast-pass.pcap")
    conf = KeepalivedConfig(
        instances=(
            ConfInstance(name="VI_1", interface="eth0", vrid=51),
            ConfInstance(name="VI_X", interface="eth0", vrid=77, family="inet6"),
        )
    )
    peers, stats = table.snapshot()
    snap = Snapshot(time=now, hostname="o", config=conf, wire_peers=peers, wire_stats=stats)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Once(snap))
    x = {"interface": "eth0", "family": "inet6", "vrid": "77"}
    assert reg.get_sample_value("keepalived_wire_no_master", x) == 1.0
    assert reg.get_sample_value("keepalived_wire_masters", x) == 0.0
    assert reg.get_sample_value("keepalived_wire_conflict", {**x, "kind": "vips"}) == 0.0
    assert reg.get_sample_value("keepalived_wire_no_master", {**x, "family": "inet", "vrid": "51"}) == 0.0


CONF = KeepalivedConfig(
    instances=(
        ConfInstance(name="VI_1", interface="eth0", vrid=51),  # advert_int 1, VRRPv2: hold ~4.15 s
        ConfInstance(name="VI_F", interface="eth0", vrid=71, advert_int=0.1, version=3),  # ~0.46 s
        ConfInstance(name="VI_O", interface="eth1", vrid=51),  # an interface not sniffed
    )
)


def _silent(since: float | None, now: float, interfaces: tuple[str, ...] = ("eth0",)) -> CollectorRegistry:
    """Nothing heard; the sniffer listening on `interfaces` since `since` (None: not capturing)."""
    stats = WireStats(interfaces=interfaces if since is not None else (), listening_since=since)
    snap = Snapshot(time=now, hostname="o", config=CONF, wire_peers=(), wire_stats=stats)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Once(snap))
    return reg


def _no_master(reg: CollectorRegistry, vrid: int, interface: str = "eth0") -> float | None:
    return reg.get_sample_value(
        "keepalived_wire_no_master", {"interface": interface, "family": "inet", "vrid": str(vrid)}
    )


def test_an_unheard_configured_vrid_is_no_master_only_after_its_hold_time_of_listening() -> None:
    # just started: nobody could have been heard yet, whatever keepalived does
    reg = _silent(since=1000.0, now=1000.3)
    assert (_no_master(reg, 51), _no_master(reg, 71)) == (0.0, 0.0)
    # 0.5 s: the fast VRID (advert_int 0.1) has had its hold time, the 1 s one has not
    reg = _silent(since=1000.0, now=1000.5)
    assert (_no_master(reg, 51), _no_master(reg, 71)) == (0.0, 1.0)
    reg = _silent(since=1000.0, now=1004.0)
    assert _no_master(reg, 51) == 0.0
    reg = _silent(since=1000.0, now=1004.2)
    assert _no_master(reg, 51) == 1.0
    # an interface the sniffer does not capture on is never judged absent, nor is anything while
    # the sniffer cannot capture at all (no CAP_NET_RAW: the wire source is down)
    assert _no_master(_silent(since=1000.0, now=2000.0), 51, "eth1") == 0.0
    reg = _silent(since=None, now=2000.0)
    assert (_no_master(reg, 51), _no_master(reg, 71)) == (0.0, 0.0)
    assert (
        reg.get_sample_value("keepalived_wire_masters", {"interface": "eth0", "family": "inet", "vrid": "51"})
        == 0.0
    )


def test_a_vrid_heard_since_listening_began_is_no_master_after_its_routers_hold_time() -> None:
    # heard once right after the start, then silent: absence is judged from the router's hold time
    table = PeerTable()
    table.set_listening({"eth0": 1000.0})
    table.update(Advert(1000.2, "eth0", "inet", "10.0.0.1", "224.0.0.18", 3, 71, 100, 0.1, ("10.0.0.171",)))
    v = {"interface": "eth0", "family": "inet", "vrid": "71"}
    _, reg = _render(table, 1000.2 + 0.45)
    assert reg.get_sample_value("keepalived_wire_no_master", v) == 0.0
    _, reg = _render(table, 1000.2 + 0.47)  # hold time of a 0.1 s VRRPv3 router: 0.46 s
    assert reg.get_sample_value("keepalived_wire_no_master", v) == 1.0


@pytest.mark.parametrize(("window", "expected"), [(3.0, 0.0), (5.0, 1.0)])
def test_once_window_shorter_than_the_hold_time_gives_no_verdict_of_absence(
    window: float, expected: float
) -> None:
    # --once: listen `window` seconds, then the other sources take 4 more seconds before the
    # snapshot is rendered. Only the window counts as listening.
    clock = [1000.0]
    table = PeerTable(clock=lambda: clock[0])
    table.set_listening({"eth0": 1000.0})
    table.stop_listening(1000.0 + window)
    clock[0] = 1000.0 + window + 4.0
    peers, stats = table.snapshot()
    assert stats.interfaces == ("eth0",)
    snap = Snapshot(time=clock[0], hostname="o", config=CONF, wire_peers=peers, wire_stats=stats)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Once(snap))
    assert _no_master(reg, 51) == expected  # hold time ~4.15 s
    assert _no_master(reg, 71) == 1.0  # hold time 0.46 s: both windows are long enough


def test_nothing_when_the_wire_source_is_off() -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Once(Snapshot(time=0.0, hostname="x")))
    assert b"keepalived_wire" not in generate_latest(reg)


def test_flood_exposition_is_bounded_by_the_cap() -> None:
    cap = 512
    table = PeerTable(cap=cap)
    rng = random.Random(3)
    for i in range(20_000):
        table.update(
            Advert(
                timestamp=1000.0 + i * 1e-4,
                interface="eth0",
                family="inet",
                source=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                destination="224.0.0.18",
                version=2,
                vrid=rng.randrange(1, 256),
                priority=rng.randrange(256),
                interval=1.0,
                addresses=(f"10.0.0.{rng.randrange(256)}",),
            )
        )
    text, reg = _render(table, 1002.0)
    series = [ln for ln in text.decode().splitlines() if ln and not ln.startswith("#")]
    # 5 per router, 4 + one per conflict kind per VRID (255 at most), and the fixed counters
    assert len(series) <= 5 * cap + (4 + len(CONFLICT_KINDS)) * 255 + len(table.snapshot()[1].invalid) + 4
    assert reg.get_sample_value("keepalived_wire_peers") == cap
    assert reg.get_sample_value("keepalived_wire_peer_evictions_total") == 20_000 - cap
    assert _promtool(text).returncode == 0
