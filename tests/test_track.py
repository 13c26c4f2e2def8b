"""track_process, track_file and virtual_ipaddress_excluded: keepalived 2.2.7's real dumps, parsed and exported.

The fixtures (tests/fixtures/keepalived-2.2.7-debian/track/, README "track/") are real dumps; every
expectation below is written from that README, not from the parser's output.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.host import collect_vips
from ka_exporter.collectors.keepalived import collect_keepalived
from ka_exporter.model import (
    InstanceView,
    LocalAddress,
    ProcessInfo,
    TrackedBfd,
    TrackedFile,
    TrackedProcess,
    VrrpState,
)
from ka_exporter.outputs.exposition import Renderer
from ka_exporter.parse.dumps import DumpError, parse_data, parse_dumps
from ka_exporter.parse.kaconf import read_config
from ka_exporter.store import Store
from ka_exporter.verdicts.vips import held_addresses, vip_mismatch_held

TRACK = Path(__file__).resolve().parent / "fixtures" / "keepalived-2.2.7-debian" / "track"
M, F = VrrpState.MASTER, VrrpState.FAULT

# README "track/": scenario -> {iname: (state, effective priority, VIPs, excluded VIPs, processes, files)}
P = TrackedProcess
T = TrackedFile
EXPECTED: dict[str, dict[str, tuple[VrrpState, int, tuple[str, ...], tuple[str, ...], tuple[P, ...], tuple[T, ...]]]] = {
    "given": {
        "VI_1": (
            M, 120, ("10.250.0.100",), ("10.250.0.200",),
            (P("chk_sleep", -30, False, 0, 1),), (T("chk_flag", -20, 0),),
        ),
    },
    "netns-file-0": {
        "VI_1": (
            M, 120, ("10.251.0.100",), ("10.251.0.200", "fd51::200"),
            (P("chk_proc", -30, False, 0, 1),), (T("chk_flag", -10, 0),),
        ),
        "VI_2": (F, 120, ("10.251.0.101",), (), (P("chk_proc", 0, False, 0, 1),), (T("chk_flag", 0, 0),)),
    },
    "netns-file-3": {
        "VI_1": (
            M, 90, ("10.251.0.100",), ("10.251.0.200", "fd51::200"),
            (P("chk_proc", -30, False, 0, 1),), (T("chk_flag", -10, 3),),
        ),
        "VI_2": (F, 120, ("10.251.0.101",), (), (P("chk_proc", 0, False, 0, 1),), (T("chk_flag", 0, 3),)),
    },
    "root-quorum": {
        "VI_1": (
            F, 130, ("10.251.0.100",), ("10.251.0.200",),
            (P("chk_proc", -30, True, 1, 1),), (T("chk_flag", -10, 2),),
        ),
    },
    "root-quorum-lost": {
        "VI_1": (
            F, 100, ("10.251.0.100",), ("10.251.0.200",),
            (P("chk_proc", -30, False, 0, 1),), (T("chk_flag", -10, 2),),
        ),
    },
}  # fmt: skip


def views(d: Path, use_json: bool) -> tuple[InstanceView, ...]:
    json_dump = (d / "keepalived.json").read_bytes() if use_json else None
    return parse_dumps((d / "keepalived.data").read_bytes(), (d / "keepalived.stats").read_bytes(), json_dump)


@pytest.mark.parametrize("use_json", [False, True], ids=["data", "data+json"])
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_track_dumps_parse_as_readme_says(scenario: str, use_json: bool) -> None:
    got = {
        v.name: (v.state, v.effective_priority, v.vips, v.vips_excluded, v.tracked_processes, v.tracked_files)
        for v in views(TRACK / scenario, use_json)
    }
    assert got == EXPECTED[scenario]


@pytest.mark.parametrize("use_json", [False, True], ids=["data", "data+json"])
def test_track_bfd_up_and_down_as_readme_says(use_json: bool) -> None:
    # README "track/": node a MASTER 150 while the session is up, 130 (weight -20) once node b stopped
    for scenario, up, priority in (("bfd-up", True, 150), ("bfd-down", False, 130)):
        (view,) = views(TRACK / scenario, use_json)
        assert (view.state, view.effective_priority) == (M, priority)
        assert view.tracked_bfds == (TrackedBfd("bfd_peer", -20, up),)
        assert (view.tracked_processes, view.tracked_files, view.vips_excluded) == ((), (), ())
        text = generate_latest(_registry(store_for(scenario, ()))).decode()
        assert f'keepalived_tracked_bfd_up{{iname="VI_1",name="bfd_peer"}} {float(up)}' in text
        assert 'keepalived_tracked_bfd_weight{iname="VI_1",name="bfd_peer"} -20.0' in text


@pytest.mark.parametrize("scenario", ["netns-file-3", "root-quorum", "bfd-up"])
def test_track_dump_truncated_at_every_byte_offset(scenario: str) -> None:
    raw = (TRACK / scenario / "keepalived.data").read_bytes()
    whole = {v.name: v for v in parse_data(raw)}
    for end in range(len(raw)):
        message = ""
        try:
            got = parse_data(raw[:end])
        except DumpError as exc:
            message = str(exc)
        if message:
            assert "\n" not in message
            continue
        assert raw[:end].endswith(b"\n")  # only a cut at a line end may look complete
        for v in got:  # what a cut dump says is what the whole one says, or not yet known
            full = whole[v.name]
            for proc in v.tracked_processes:
                (same,) = [p for p in full.tracked_processes if p.name == proc.name]
                assert proc.up in (None, same.up) and proc.running in (None, same.running)
            for tfile in v.tracked_files:
                (same_file,) = [t for t in full.tracked_files if t.name == tfile.name]
                assert tfile.status in (None, same_file.status)
            for bfd in v.tracked_bfds:
                (same_bfd,) = [b for b in full.tracked_bfds if b.name == bfd.name]
                assert bfd.up in (None, same_bfd.up)


def store_for(scenario: str, held: tuple[str, ...]) -> Store:
    d = TRACK / scenario
    store = Store(hostname="node", clock=lambda: 1796195900.0)
    store.set_config(read_config(d / "keepalived.conf"))
    store.set_process(ProcessInfo(running=True, pid=10, vrrp_pids=(11,)))
    store.set_addresses(tuple(LocalAddress(a, 24, "eth0", "inet6" if ":" in a else "inet") for a in held))
    store.set_instances(views(d, use_json=True), "dumps")
    for name in ("config", "process", "vips", "dumps"):
        store.report(name)
    return store


def test_renderer_writes_what_prometheus_client_writes_for_trackers_and_excluded_vips() -> None:
    store = store_for("netns-file-3", ("10.251.0.100", "10.251.0.200"))
    parts = [collect_vips, collect_keepalived]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store.snapshot, parts))
    renderer = Renderer(store.snapshot_versions, parts)
    cut = b"# HELP ka_exporter_scrape_duration_seconds"

    def same() -> bytes:
        oracle, body = generate_latest(registry), renderer.body()
        assert cut in body and cut in oracle
        assert body.split(cut)[0] == oracle.split(cut)[0]
        assert body.count(b"\n") == oracle.count(b"\n")
        return oracle

    text = same().decode()
    # one instance's file status moves (a new dump): the renderer's per-instance path says what a whole
    # render says, and then the tracker is gone from the next dump (a reload without it)
    vi1, vi2 = store.snapshot().instances or ()
    store.set_instances((replace(vi1, tracked_files=(TrackedFile("chk_flag", -10, 5),)), vi2), "dumps")
    assert b'keepalived_tracked_file_status{iname="VI_1",name="chk_flag"} 5.0' in same()
    store.set_instances((replace(vi1, tracked_files=(), tracked_processes=()), vi2), "dumps")
    assert b'keepalived_tracked_file_status{iname="VI_1"' not in same()
    store.set_instances((vi1, vi2), "dumps")
    assert same().split(cut)[0] == text.encode().split(cut)[0]
    # the seed guide's series keep their labels; excluded VIPs carry excluded="true"
    assert 'keepalived_vip_status{hostname="node",vip="10.251.0.100"} 1.0' in text
    assert 'keepalived_vip_status{excluded="true",hostname="node",vip="10.251.0.200"} 1.0' in text
    assert 'keepalived_vip_status{excluded="true",hostname="node",vip="fd51::200"} 0.0' in text
    assert 'keepalived_vip_status{hostname="node",vip="10.251.0.101"} 0.0' in text
    assert 'keepalived_tracked_file_status{iname="VI_1",name="chk_flag"} 3.0' in text
    assert 'keepalived_tracked_process_up{iname="VI_1",name="chk_proc"} 0.0' in text
    assert 'keepalived_tracked_process_weight{iname="VI_2",name="chk_proc"} 0.0' in text
    # a MASTER missing its excluded fd51::200 is a mismatch; VI_2 (FAULT, holds nothing) is not
    assert 'keepalived_vrrp_vip_mismatch{iname="VI_1",intf="eth0",vrid="77"} 1.0' in text
    assert 'keepalived_vrrp_vip_mismatch{iname="VI_2",intf="eth0",vrid="78"} 0.0' in text


def test_excluded_vips_count_for_the_vip_mismatch() -> None:
    (vi1, _vi2) = views(TRACK / "netns-file-0", use_json=False)
    everything = held_addresses(
        LocalAddress(a, 24, "eth0", "inet") for a in ("10.251.0.100", "10.251.0.200", "fd51::200")
    )
    assert not vip_mismatch_held(vi1, everything)  # a MASTER holding all of them: no mismatch
    backup = InstanceView(
        name="VI_1", interface="eth0", vrid=77, state=VrrpState.BACKUP, vips_excluded=("fd51::200",)
    )
    assert vip_mismatch_held(backup, everything)  # a stale excluded VIP on a BACKUP
    assert not vip_mismatch_held(backup, frozenset())


def test_root_quorum_exports_the_process_counted_and_its_loss() -> None:
    for scenario, up, running in (("root-quorum", 1.0, 1.0), ("root-quorum-lost", 0.0, 0.0)):
        text = generate_latest(_registry(store_for(scenario, ()))).decode()
        assert f'keepalived_tracked_process_up{{iname="VI_1",name="chk_proc"}} {up}' in text
        assert f'keepalived_tracked_process_running{{iname="VI_1",name="chk_proc"}} {running}' in text
        assert 'keepalived_tracked_file_status{iname="VI_1",name="chk_flag"} 2.0' in text


def _registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store.snapshot, [collect_vips, collect_keepalived]))
    return registry


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_trackers_and_excluded_vips() -> None:
    text = generate_latest(_registry(store_for("netns-file-3", ("10.251.0.100", "10.251.0.200")))).decode()
    assert 'excluded="true"' in text and "keepalived_tracked_file_weight" in text
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr
    )
