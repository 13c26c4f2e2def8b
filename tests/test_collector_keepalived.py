"""keepalived's view rendered to Prometheus: golden files of every fixture, promtool, VIP mismatch.

Regenerate the golden files after an intended change with ``KA_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ka_exporter.collectors.keepalived import STATS_COUNTERS, collect_keepalived
from ka_exporter.model import (
    InstanceView,
    LocalAddress,
    ProcessInfo,
    Snapshot,
    SourceHealth,
    VrrpState,
)
from ka_exporter.parse.dumps import parse_dumps
from ka_exporter.store import Store
from ka_exporter.verdicts.vips import missing_vips, stale_vips, vip_mismatch
from tests.conftest import FIXTURES, PEERS, PEERS_ABSENT

GOLDEN = Path(__file__).resolve().parent / "golden"
PASSWORD = "kaT3st01"
DIRS = sorted({p.parent for p in FIXTURES.glob("**/keepalived.data")})
# other projects' real dumps, read from ../shared only: rendered and checked, never kept as golden files
PEER_DIRS = sorted({p.parent for p in PEERS.glob("**/keepalived.data")})
LBL = {"iname": "VI_DB", "intf": "eth0", "vrid": "52"}


class _One(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        return collect_keepalived(self.snap)


def registry_for(snap: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One(snap))
    return registry


def render(snap: Snapshot) -> str:
    return generate_latest(registry_for(snap)).decode()


def views_of(d: Path) -> tuple[InstanceView, ...]:
    stats = d / "keepalived.stats"  # some of the peers' bundles have no .stats
    return parse_dumps((d / "keepalived.data").read_bytes(), stats.read_bytes() if stats.exists() else None)


def snap_of(views: tuple[InstanceView, ...] | None, **kw: object) -> Snapshot:
    kw.setdefault("views_time", (("dumps", 1795622899.0),))  # the dump was read a second ago
    return Snapshot(time=1795622900.0, hostname="node", instances=views, **kw)  # type: ignore[arg-type]


def ident(d: Path) -> str:
    return str(d.relative_to(FIXTURES)).replace("/", "_")


@pytest.mark.parametrize("d", DIRS, ids=ident)
def test_golden(d: Path) -> None:
    """Each fixture rendered through generate_latest() is exactly the committed exposition."""
    text = render(snap_of(views_of(d)))
    golden = GOLDEN / f"{ident(d)}.prom"
    if os.environ.get("KA_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden.name}: run with KA_UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text()
    assert PASSWORD not in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("d", DIRS, ids=ident)
def test_promtool_accepts_the_exposition(d: Path) -> None:
    addresses = (LocalAddress("10.97.0.100", 24, "eth0", "inet"),)
    snap = snap_of(
        views_of(d),
        addresses=addresses,
        transitions=(("VI_1", 2),),
        sources=(SourceHealth("dbus", True),),
    )
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=render(snap), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not PEER_DIRS, reason=PEERS_ABSENT)
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("d", PEER_DIRS, ids=lambda d: str(d.relative_to(PEERS)))
def test_peer_dumps_render_clean(d: Path) -> None:
    """Other projects' real dumps: every instance rendered, promtool-clean, no password."""
    views = views_of(d)
    assert views
    text = render(snap_of(views))
    assert PASSWORD not in text
    for v in views:
        assert f'iname="{v.name}"' in text
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_samples_of_node_a() -> None:
    reg = registry_for(snap_of(views_of(FIXTURES / "keepalived-2.2.7-debian" / "node-a")))
    get = reg.get_sample_value
    assert get("keepalived_vrrp_state", LBL) == 1.0  # BACKUP
    assert get("keepalived_vrrp_state", {"iname": "VI_WEB", "intf": "eth0", "vrid": "51"}) == 2.0
    assert get("keepalived_vrrp_priority", LBL) == 100.0
    assert get("keepalived_vrrp_effective_priority", LBL) == 80.0
    assert get("keepalived_vrrp_master_priority", LBL) == 130.0
    assert get("keepalived_vrrp_master_priority", {"iname": "VI_WEB", "intf": "eth0", "vrid": "51"}) is None
    assert get("keepalived_vrrp_preempt", LBL) == 0.0
    assert get("keepalived_vrrp_advert_interval_seconds", LBL) == 1.0
    assert get("keepalived_script_status", {"name": "chk_ok"}) == 1.0
    assert get("keepalived_script_status", {"name": "chk_bad"}) == 0.0
    assert get("keepalived_tracked_interface_up", {"iname": "VI_DB", "interface": "trk0"}) == 1.0
    info = {**LBL, "family": "inet", "version": "2", "sync_group": "", "auth_type": "PASS"}
    assert get("keepalived_vrrp_instance_info", info) == 1.0
    app6 = {"iname": "VI_APP6", "intf": "eth0", "vrid": "54"}
    assert (
        get(
            "keepalived_vrrp_instance_info",
            {**app6, "family": "inet6", "version": "3"}
            | {
                "sync_group": "SG_APP",
                "auth_type": "NONE",
            },
        )
        == 1.0
    )
    assert get("keepalived_advertisements_received_total", LBL) == 9.0  # .stats: "Received: 9"
    # no addresses known, no D-Bus: neither verdict nor transition series
    assert get("keepalived_vrrp_vip_mismatch", LBL) is None
    assert get("keepalived_vrrp_transitions_total", LBL) is None


def test_fault_and_interface_down() -> None:
    reg = registry_for(snap_of(views_of(FIXTURES / "keepalived-2.4.3" / "node-a-fault")))
    assert reg.get_sample_value("keepalived_vrrp_state", LBL) == 3.0
    assert (
        reg.get_sample_value("keepalived_tracked_interface_up", {"iname": "VI_DB", "interface": "trk0"})
        == 0.0
    )


def test_counter_names_are_those_of_the_common_exporter() -> None:
    """mehdy/keepalived-exporter's names (internal/collector/collector.go), so its dashboards work."""
    assert [name + "_total" for name, _, _ in STATS_COUNTERS] == [
        "keepalived_advertisements_received_total",
        "keepalived_advertisements_sent_total",
        "keepalived_become_master_total",
        "keepalived_release_master_total",
        "keepalived_packet_length_errors_total",
        "keepalived_advertisements_interval_errors_total",
        "keepalived_ip_ttl_errors_total",
        "keepalived_invalid_type_received_total",
        "keepalived_address_list_errors_total",
        "keepalived_authentication_invalid_total",
        "keepalived_authentication_mismatch_total",
        "keepalived_authentication_failure_total",
        "keepalived_priority_zero_received_total",
        "keepalived_priority_zero_sent_total",
    ]
    text = render(snap_of(views_of(FIXTURES / "pcap" / "failover-prio0" / "node-b")))
    assert 'keepalived_priority_zero_received_total{iname="VI_1",intf="eth0",vrid="51"} 1.0' in text


def test_one_state_series_per_instance_not_per_vip() -> None:
    text = render(snap_of(views_of(FIXTURES / "keepalived-2.2.8" / "node-a")))
    state_lines = [line for line in text.splitlines() if line.startswith("keepalived_vrrp_state{")]
    assert len(state_lines) == 4  # VI_WEB has two VIPs, still one series


def test_nothing_known_renders_nothing() -> None:
    assert render(snap_of(None)) == ""
    assert render(snap_of(())) == ""


def test_unknown_values_have_no_sample() -> None:
    bare = InstanceView(name="VI_X", interface="eth1", vrid=9)
    reg = registry_for(snap_of((bare,)))
    labels = {"iname": "VI_X", "intf": "eth1", "vrid": "9"}
    assert reg.get_sample_value("keepalived_vrrp_state", labels) is None
    assert reg.get_sample_value("keepalived_vrrp_priority", labels) is None
    assert reg.get_sample_value("keepalived_advertisements_sent_total", labels) is None
    info = {**labels, "family": "inet", "version": "", "sync_group": "", "auth_type": ""}
    assert reg.get_sample_value("keepalived_vrrp_instance_info", info) == 1.0


def test_dbus_state_wins_and_transitions_are_counted() -> None:
    """Through the real store: dumps give the detail, a D-Bus event the fresher state and the count."""
    store = Store(hostname="node")
    store.set_instances(views_of(FIXTURES / "keepalived-2.2.7-debian" / "node-a"), "dumps")
    store.set_instances((InstanceView("VI_DB", "eth0", 52, state=VrrpState.MASTER),), "dbus")
    store.report("dbus")
    store.count_transition("VI_DB")
    store.count_transition("VI_DB")
    reg = registry_for(store.snapshot())
    assert reg.get_sample_value("keepalived_vrrp_state", LBL) == 2.0
    assert reg.get_sample_value("keepalived_vrrp_effective_priority", LBL) == 80.0  # from the dump
    assert reg.get_sample_value("keepalived_vrrp_transitions_total", LBL) == 2.0
    web = {"iname": "VI_WEB", "intf": "eth0", "vrid": "51"}
    assert reg.get_sample_value("keepalived_vrrp_transitions_total", web) == 0.0


# -- VIP mismatch ----------------------------------------------------------------------------------


def local(*addresses: str) -> tuple[LocalAddress, ...]:
    return tuple(
        LocalAddress(a, 64 if ":" in a else 24, "eth0", "inet6" if ":" in a else "inet") for a in addresses
    )


WEB = InstanceView("VI_WEB", "eth0", 51, state=VrrpState.MASTER, vips=("10.97.0.100", "10.97.0.101"))
V6 = InstanceView("VI_6", "eth0", 54, family="inet6", state=VrrpState.BACKUP, vips=("fd97::120",))


def test_master_with_all_its_vips_is_fine() -> None:
    assert not vip_mismatch(WEB, local("10.97.0.1", "10.97.0.100", "10.97.0.101"))


def test_master_lacking_a_vip() -> None:
    assert vip_mismatch(WEB, local("10.97.0.1", "10.97.0.100"))
    assert missing_vips(WEB, frozenset({"10.97.0.100"})) == ("10.97.0.101",)


@pytest.mark.parametrize("state", [VrrpState.BACKUP, VrrpState.FAULT, VrrpState.INIT, VrrpState.STOP])
def test_non_master_holding_a_vip(state: VrrpState) -> None:
    inst = replace(WEB, state=state)
    assert vip_mismatch(inst, local("10.97.0.1", "10.97.0.101"))
    assert not vip_mismatch(inst, local("10.97.0.1"))
    assert stale_vips(inst, frozenset({"10.97.0.101"})) == ("10.97.0.101",)


def test_unknown_state_is_never_a_mismatch() -> None:
    inst = replace(WEB, state=None)
    assert not vip_mismatch(inst, local("10.97.0.100"))
    assert not vip_mismatch(inst, local())


def test_addresses_compare_in_canonical_form_on_any_interface() -> None:
    held = (LocalAddress("FD97:0:0::120", 64, "dummy7", "inet6"),)
    assert vip_mismatch(V6, held)  # a BACKUP holding its VIP, spelled differently, elsewhere
    assert not vip_mismatch(replace(V6, state=VrrpState.MASTER), held)


def test_mismatch_series_from_the_fixtures() -> None:
    """node-b (2.2.8) is BACKUP of VI_WEB: holding 10.97.0.100 by hand is a stale VIP."""
    views = views_of(FIXTURES / "keepalived-2.2.8" / "node-b")
    own = local("10.97.0.2", "10.97.0.110")  # node b is MASTER of VI_DB: its VIP is there
    reg = registry_for(snap_of(views, addresses=own))
    web = {"iname": "VI_WEB", "intf": "eth0", "vrid": "51"}
    assert reg.get_sample_value("keepalived_vrrp_vip_mismatch", web) == 0.0
    assert reg.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 0.0
    reg = registry_for(snap_of(views, addresses=(*own, *local("10.97.0.100"))))
    assert reg.get_sample_value("keepalived_vrrp_vip_mismatch", web) == 1.0
    reg = registry_for(snap_of(views, addresses=local("10.97.0.2")))  # VI_DB's MASTER without its VIP
    assert reg.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 1.0


def test_no_mismatch_is_judged_from_a_dump_older_than_the_address_change() -> None:
    """Dumps only: a failover moves the VIP before the next dump; that is not a mismatch (yet)."""
    views = views_of(FIXTURES / "keepalived-2.2.8" / "node-b")
    own = local("10.97.0.2")  # VI_DB's MASTER without its VIP
    stale = registry_for(snap_of(views, addresses=own, addresses_changed=1795622899.5))
    assert stale.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 0.0
    caught_up = registry_for(
        snap_of(views, addresses=own, addresses_changed=1795622899.5, views_time=(("dumps", 1795622899.8),))
    )
    assert caught_up.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 1.0


def test_keepalived_not_running_makes_a_left_over_vip_a_mismatch() -> None:
    """After a SIGKILL the last dump still says MASTER; the process source says keepalived is gone."""
    views = views_of(FIXTURES / "keepalived-2.2.8" / "node-b")
    held = local("10.97.0.2", "10.97.0.110")
    running = registry_for(snap_of(views, addresses=held, process=ProcessInfo(running=True)))
    assert running.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 0.0
    killed = registry_for(snap_of(views, addresses=held, process=ProcessInfo(running=False)))
    assert killed.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 1.0
    gone = registry_for(snap_of(views, addresses=local("10.97.0.2"), process=ProcessInfo(running=False)))
    assert gone.get_sample_value("keepalived_vrrp_vip_mismatch", LBL) == 0.0
