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
from ka_exporter.model import Advert, ConfInstance, KeepalivedConfig, Snapshot
from ka_exporter.parse.vrrp import PROCESS_KEY, decode
from ka_exporter.peers import PeerTable
from ka_exporter.sources.capture import read_pcap

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pcap"


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
        t0 = ts if t0 is None else t0
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


def test_split_brain_values() -> None:
    table, now = _replayed("split-brain.pcap", until_offset=12.0)
    _, reg = _render(table, now)
    v = {"interface": "eth0", "family": "inet", "vrid": "51"}
    assert reg.get_sample_value("keepalived_wire_split_brain", v) == 1.0
    assert reg.get_sample_value("keepalived_wire_masters", v) == 2.0
    assert reg.get_sample_value("keepalived_wire_routers", v) == 2.0
    assert reg.get_sample_value("keepalived_wire_no_master", v) == 0.0
    for kind in ("auth", "interval", "version", "vips"):
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
    # 5 per router, 8 per VRID (255 at most), and the fixed counters
    assert len(series) <= 5 * cap + 8 * 255 + len(table.snapshot()[1].invalid) + 4
    assert reg.get_sample_value("keepalived_wire_peers") == cap
    assert reg.get_sample_value("keepalived_wire_peer_evictions_total") == 20_000 - cap
    assert _promtool(text).returncode == 0
