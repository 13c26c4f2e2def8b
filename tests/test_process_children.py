"""keepalived's child processes as the process source sees them, against a real keepalived in the lab."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import TypeVar

import pytest
from prometheus_client.registry import CollectorRegistry

from ka_exporter.collectors import SnapshotCollector
from ka_exporter.collectors.host import collect_process
from ka_exporter.lab import Lab
from ka_exporter.sources.process import ProcessSource
from ka_exporter.store import Store
from tests.conftest import in_netns, wait_until

pytestmark = pytest.mark.lab

T = TypeVar("T")


def keepalived_children(pid: int) -> set[int]:
    """What `pgrep -P` says: keepalived's children."""
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10, check=False)
    return {int(x) for x in r.stdout.split()}


def test_children_are_counted_and_a_respawned_vrrp_child_is_seen() -> None:
    with Lab(profile="fast", nodes=2) as lab:
        node = lab.nodes["a"]
        parent = int(node.pidfile.read_text().split()[0])
        store = Store(hostname="a")
        src = in_netns(node.netns, lambda: ProcessSource(store, node.pidfile))  # its namespace
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(store.snapshot, [collect_process]))

        in_netns(node.netns, src.run_once)
        snap = store.snapshot()
        assert snap.process is not None
        kids = keepalived_children(parent)
        assert kids, "keepalived has no children?"
        assert set(snap.process.vrrp_pids) == kids
        assert registry.get_sample_value("keepalived_process_children") == float(len(kids))

        vrrp = int(node.vrrp_pidfile.read_text().split()[0])
        assert vrrp in kids
        os.kill(vrrp, signal.SIGKILL)  # keepalived's parent starts a new VRRP child

        def respawned() -> bool:
            in_netns(node.netns, src.run_once)
            proc = store.snapshot().process
            return (
                proc is not None
                and vrrp not in proc.vrrp_pids
                and set(proc.vrrp_pids) == keepalived_children(parent)
                and len(proc.vrrp_pids) == len(kids)
            )

        assert wait_until(respawned, 10, step=0.2)
        assert registry.get_sample_value("keepalived_process_children") == float(len(kids))
