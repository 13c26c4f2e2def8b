"""End to end on real servers: a keepalived lab, ka-exporter on each node and an observer, Debian's
Prometheus scraping them with the shipped rule files (only `for:` shortened, in a copy).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ka_exporter.devtools.dashboard import dashboard_queries, expand_query
from ka_exporter.lab import Lab
from ka_exporter.lab.demo import wait_up, watchers
from tests.conftest import REPO, wait_until
from tests.prometheus_harness import prometheus

pytestmark = [pytest.mark.lab, pytest.mark.slow]

RULES = REPO / "alerts" / "keepalived.rules.yml"


def poll(pred, timeout: float, step: float = 0.5) -> bool:
    return wait_until(pred, timeout, step)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    with Lab(profile="fast", nodes=2, dbus=True) as lab, watchers(lab, Path(work), 0) as ws:
        wait_up(ws)
        targets = [f"127.0.0.1:{w.port}" for w in ws]
        with prometheus(work / "prom", targets, [RULES]) as prom:
            assert poll(lambda: len(prom.targets_up()) == 3 and set(prom.targets_up().values()) == {"up"}, 20)
            yield lab, ws, prom


def firing_or_pending(prom, names: set[str]) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] in names]


def test_every_dashboard_query_returns_a_series(stack):
    _lab, _ws, prom = stack
    time.sleep(4)  # a few scrapes, so rate() has two samples
    exprs = [
        expand_query(q, rate_interval="1m")
        for q in dashboard_queries()
        # this lab has no LVS: tests/test_lvs_lab.py runs those on the UML guest's scrapes
        if "keepalived_lvs_" not in q and "keepalived_ipvs_" not in q
    ]
    assert any("keepalived_l2_vip_observed_seconds_total" in e for e in exprs)
    empty = exprs

    def all_answer() -> bool:
        # The L2 witness's accounts start with its first agreeing pair of probes (1 s apart), and the
        # observed seconds need two scrapes after that: poll for them rather than guess a sleep.
        nonlocal empty
        empty = [e for e in empty if not prom.query(e)]
        return not empty

    assert poll(all_answer, 20), empty


def test_normal_failover_raises_no_false_alarm(stack):
    """A SIGTERM failover and the preemption back: the wire verdicts never even go pending; the
    cross-node rules may go pending for a scrape (two nodes' samples taken either side of the
    handover) but their `for:` keeps them from firing."""
    lab, ws, prom = stack
    wire = {"KeepalivedSplitBrain"}
    cross = {"KeepalivedSplitBrainVIP", "KeepalivedNoMaster", "KeepalivedMultipleMasters"}
    # The silence below means something only if Prometheus evaluates these rules...
    loaded = {r["name"] for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert wire | cross <= loaded, loaded
    pending_wire: list[dict] = []
    fired: list[dict] = []
    masters_seen: set[str] = set()  # ... and saw each handover (instance label of a MASTER series)

    def target(node: str) -> str:
        return next(f"127.0.0.1:{w.port}" for w in ws if w.label == f"node-{node}")

    def watch(seconds: float) -> None:
        masters_seen.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            masters_seen.update(r["metric"]["instance"] for r in prom.query("keepalived_vrrp_state == 2"))
            alerts = firing_or_pending(prom, wire | cross)
            pending_wire.extend(a for a in alerts if a["labels"]["alertname"] in wire)
            pending_wire.extend(
                a
                for a in alerts
                if a["labels"]["alertname"] == "KeepalivedNoMaster" and a["labels"].get("signal") == "wire"
            )
            fired.extend(a for a in alerts if a["state"] == "firing")
            time.sleep(0.5)

    old = lab.master()
    assert old is not None
    lab.failover()  # SIGTERM: priority-0 advert, the backup takes over
    assert lab.wait_for(lambda: lab.master() not in (None, old), timeout=10)
    new = lab.master()
    assert new is not None
    watch(10)
    assert target(new) in masters_seen, f"Prometheus never saw node-{new} as MASTER: {masters_seen}"
    lab.start_master()  # preemption: the old master has the higher priority and takes over again
    assert lab.wait_for(lambda: lab.master() == old, timeout=10)
    watch(10)
    assert target(old) in masters_seen, f"Prometheus never saw node-{old} back as MASTER: {masters_seen}"
    assert pending_wire == []
    assert fired == []


def test_host_firewall_split_brain_fires_and_resolves(stack):
    lab, _ws, prom = stack
    lab.split(mode="firewall", node="b")
    try:
        assert poll(lambda: prom.alert_state("KeepalivedSplitBrain") == "firing", 30), prom.alerts()
        # Both nodes' own exporters see it (AF_PACKET sees adverts before netfilter drops them).
        instances = {
            a["labels"]["instance"]
            for a in prom.alerts()
            if a["labels"]["alertname"] == "KeepalivedSplitBrain"
        }
        assert len(instances) >= 2
    finally:
        lab.heal()
    assert poll(lambda: prom.alert_state("KeepalivedSplitBrain") is None, 30), prom.alerts()


def test_sigkill_master_fires_keepalived_down(stack):
    lab, ws, prom = stack
    killed = lab.stop_master(kill=True)
    target = next(f"127.0.0.1:{w.port}" for w in ws if w.label == f"node-{killed}")
    try:
        assert poll(lambda: prom.alert_state("KeepalivedDown") == "firing", 30), prom.alerts()
        alert = [a for a in prom.alerts() if a["labels"]["alertname"] == "KeepalivedDown"]
        assert len(alert) == 1
        assert alert[0]["labels"]["instance"] == target
    finally:
        lab.start_master()
    assert poll(lambda: prom.alert_state("KeepalivedDown") is None, 30), prom.alerts()
