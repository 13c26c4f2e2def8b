"""Multi-namespace mode's pure parts: keepalived's command line, the fleet (cap, names), the merge.

The merge is checked on real stores rendered by the real renderer: every sample carries the
daemon's `netns` and `keepalived` labels, each family has one header, and promtool accepts it.
Discovery, the shared loop and the whole mode run against real keepalived in tests/test_multi_lab.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.daemon import build_parts
from ka_exporter.model import KeepalivedConfig, LocalAddress, ProcessInfo
from ka_exporter.outputs.merge import MergedRenderer, parse, relabel
from ka_exporter.settings import Settings
from ka_exporter.sources.discovery import DEFAULT_CONFIG, DEFAULT_PID_FILE, parse_cmdline
from ka_exporter.store.fleet import Daemon, Fleet, labels


def daemon(ns: str, pid: int, pid_file: str = "/run/k.pid") -> Daemon:
    return Daemon(
        pid=pid, start_time=1, netns_inode=1000 + pid, netns_name=ns, pid_file=pid_file, config="/k.conf"
    )


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["keepalived"], {}),
        (["keepalived", "-f", "/a.conf", "-p", "/a.pid"], {"config": "/a.conf", "pid_file": "/a.pid"}),
        (["keepalived", "--use-file=/b.conf", "--pid=/b.pid"], {"config": "/b.conf", "pid_file": "/b.pid"}),
        (["keepalived", "-f/c.conf", "-i", "c1"], {"config": "/c.conf", "config_id": "c1"}),
        (["keepalived", "--use-file", "/d.conf", "--vrrp_pid", "/v.pid", "-D"], {"config": "/d.conf"}),
        (["keepalived", "-r", "/r.pid", "--pid", "/e.pid"], {"pid_file": "/e.pid"}),
    ],
)
def test_keepalived_command_line(argv: list[str], want: dict[str, str]) -> None:
    assert parse_cmdline(argv) == want
    assert DEFAULT_CONFIG == "/etc/keepalived/keepalived.conf"
    assert DEFAULT_PID_FILE == "/run/keepalived.pid"


def test_fleet_cap_and_order() -> None:
    fleet = Fleet(cap=2)
    assert fleet.add(daemon("ns-b", 2)) is not None
    assert fleet.add(daemon("ns-a", 1)) is not None
    assert fleet.add(daemon("ns-c", 3)) is None  # over the cap: not watched
    assert [m.daemon.netns_name for m in fleet.members()] == ["ns-a", "ns-b"]
    version = fleet.version
    assert fleet.remove(daemon("ns-a", 1).key) is not None
    assert fleet.version == version + 1
    assert fleet.add(daemon("ns-c", 3)) is not None


def test_names_prefer_a_unique_router_id() -> None:
    fleet = Fleet(cap=10)
    members = [
        fleet.add(daemon("ns1", 1, "/run/a.pid")),
        fleet.add(Daemon(1, 1, 1001, "ns1", "/run/b.pid", "/k.conf")),  # same namespace, same router_id
        fleet.add(daemon("ns2", 2)),
        fleet.add(daemon("ns3", 3)),
    ]
    ids = {"ns1": "r1", "ns2": "r2", "ns3": None}
    got = labels([m for m in members if m is not None], lambda m: ids[m.daemon.netns_name])
    assert got == [("ns1", "/run/a.pid"), ("ns1", "/run/b.pid"), ("ns2", "r2"), ("ns3", "/run/k.pid")]


def test_relabel() -> None:
    p = b'netns="n",keepalived="k"'
    assert relabel(b"keepalived_up 1.0", p) == b'keepalived_up{netns="n",keepalived="k"} 1.0'
    assert relabel(b'x{a="b c"} 2.0', p) == b'x{netns="n",keepalived="k",a="b c"} 2.0'
    assert parse(b"# HELP x h\n# TYPE x gauge\nx 1.0\n", p) == [
        (b"x", [b"# HELP x h", b"# TYPE x gauge"], [b'x{netns="n",keepalived="k"} 1.0'])
    ]


def test_merged_scrape_labels_every_series_once_per_daemon() -> None:
    fleet = Fleet(cap=10)
    parts = build_parts(Settings(collectors=frozenset({"process", "vips", "config", "wire", "dumps"})))
    merged = MergedRenderer(fleet, parts, discovered=lambda: 3)
    for i, ns in enumerate(["qrouter-1", "qrouter-2", 'we"ird\\ns']):
        m = fleet.add(daemon(ns, i + 1))
        assert m is not None
        m.store.set_config(KeepalivedConfig(router_id=f"r{i}"))
        m.store.set_process(ProcessInfo(running=True, pid=i + 1))
        m.store.set_addresses((LocalAddress(f"10.0.0.{i}", 24, "eth0", "inet"),))
        m.store.report("process", None)
    body = merged.body()
    assert merged.body() is body  # unchanged fleet: the same bytes, nothing parsed again
    parses = merged.parses
    text = body.decode()
    heads = [line for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(heads) == len(set(heads)), "a family header appears twice"
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ups = {(s.labels["netns"], s.labels["keepalived"]): s.value for s in fams["keepalived_up"].samples}
    assert ups == {("qrouter-1", "r0"): 1.0, ("qrouter-2", "r1"): 1.0, ('we"ird\\ns', "r2"): 1.0}
    fleet_level = {"ka_exporter_build_info", "ka_exporter_scrape_duration_seconds"}
    fleet_level |= {n for n in fams if n.startswith("ka_exporter_daemons_")}
    for name, fam in fams.items():
        for s in fam.samples:
            assert ("netns" in s.labels) == (name not in fleet_level), (name, s)
    assert len(fams["ka_exporter_build_info"].samples) == 1
    assert fams["ka_exporter_daemons_discovered"].samples[0].value == 3
    assert fams["ka_exporter_daemons_watched"].samples[0].value == 3
    assert len(fams["ka_exporter_daemon_info"].samples) == 3
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (scripts/bootstrap.sh installs it)"
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # one daemon changes: only its body is parsed again, even when time has passed (the others' bodies
    # are kept, or made again to the same bytes: a loaded CI run once parsed all three)
    member = fleet.members()[0]
    time.sleep(0.3)
    member.store.set_process(ProcessInfo(running=False, pid=1))
    assert merged.body() != body
    assert merged.parses == parses + 1
    # one daemon goes: its series go with it
    fleet.remove(member.daemon.key)
    text = merged.body().decode()
    assert 'netns="qrouter-1"' not in text
    assert 'netns="qrouter-2"' in text
