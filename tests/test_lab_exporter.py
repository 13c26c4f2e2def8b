"""ka-exporter against a real keepalived lab: what an operator sees on each node and the observer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ka_exporter.lab import LAB_PASSWORD, Lab, LabNode
from ka_exporter.lab.demo import exporter_args, node_args, wait_up, watchers
from tests.conftest import (
    RunningExporter,
    Sampler,
    free_port,
    parse_metrics,
    sample,
    scrape,
    start_node_exporter,
    stop_exporter,
)

pytestmark = pytest.mark.lab


def vip_status(w, vip: str) -> float | None:
    return sample(parse_metrics(scrape(w.url)), "keepalived_vip_status", hostname=w.label, vip=vip)


def promtool_check(text: str) -> str:
    r = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    return (r.stdout + r.stderr).strip() if r.returncode else ""


@pytest.fixture
def watched_lab(tmp_path):
    """A fast two-node lab with D-Bus, and an exporter on each node and the observer (conftest's fast_lab
    has no D-Bus and no exporters)."""
    with Lab(profile="fast", nodes=2, dbus=True) as lab, watchers(lab, tmp_path, 0) as ws:
        wait_up(ws)
        yield lab, {w.label: w for w in ws}


def test_failover_moves_the_vip_between_exporters_and_output_is_promtool_clean(watched_lab):
    lab, ws = watched_lab
    a, b = ws["node-a"], ws["node-b"]
    vip = lab.vips[0]
    assert vip_status(a, vip) == 1.0
    assert vip_status(b, vip) == 0.0
    time.sleep(0.5)  # the observer has heard adverts
    for w in ws.values():
        problems = promtool_check(scrape(w.url))
        assert problems == "", f"{w.label}: {problems}"

    def holds(w, value: float):
        return lambda m: sample(m, "keepalived_vip_status", hostname=w.label, vip=vip) == value

    # Both exporters polled every 20 ms, as an operator's alerting would see them.
    with Sampler(a.url) as on_a, Sampler(b.url) as on_b:
        t0 = time.monotonic()
        lab.failover()
        gained = on_b.wait_for(holds(b, 1.0), timeout=5, since=t0)
        dropped = on_a.wait_for(holds(a, 0.0), timeout=5, since=t0)
    assert gained is not None, "the VIP never moved to node-b's exporter"
    assert dropped is not None, "node-a's exporter never showed the VIP gone"
    print(f"failover: VIP moved between exporters in {(max(gained, dropped) - t0) * 1000:.0f} ms")
    m = parse_metrics(scrape(b.url))
    assert (
        sample(m, "keepalived_vrrp_state", iname="VI_1", intf="eth0", vrid=str(lab.instances[0].vrid)) == 2.0
    )


def test_sigkill_leaves_a_stale_vip_that_the_exporters_show(watched_lab):
    lab, ws = watched_lab
    vip = lab.vips[0]
    killed = lab.stop_master(kill=True)
    other = "b" if killed == "a" else "a"
    k, o = ws[f"node-{killed}"], ws[f"node-{other}"]

    def both_hold() -> bool:
        mk, mo = parse_metrics(scrape(k.url)), parse_metrics(scrape(o.url))
        return (
            sample(mk, "keepalived_process_status", hostname=k.label) == 0.0
            and sample(mk, "keepalived_vip_status", hostname=k.label, vip=vip) == 1.0
            and sample(mo, "keepalived_vip_status", hostname=o.label, vip=vip) == 1.0
        )

    assert lab.wait_for(both_hold, timeout=10)
    # The killed node's page names the stale VIP.
    page = scrape(f"http://127.0.0.1:{k.port}/")
    assert "vip_mismatch" in page or "still on this host" in page


def test_watchdog_hook_fires_once_on_split_brain_and_once_on_its_end(tmp_path):
    out = tmp_path / "events.jsonl"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat >> {out}\n")
    hook.chmod(0o755)
    with Lab(profile="fast", nodes=2, dbus=False) as lab:
        exp = start_node_exporter(tmp_path, lab.nodes["a"], "node-a", "--watchdog.exec", str(hook))
        try:
            time.sleep(1.0)
            # A normal failover and the preemption back never fire it.
            lab.failover()
            assert lab.wait_for(lambda: lab.master() == "b", timeout=5), "the failover to b did not happen"
            time.sleep(1.0)
            lab.start_master()
            assert lab.wait_for(lambda: lab.master() == "a", timeout=5), "a did not preempt back"
            time.sleep(1.0)
            # keepalived on a really was stopped between the two: keepalived_down may page for that gap
            # (the process source sees an exit at once); nothing about the wire does.
            assert [e for e in _events(out) if e["kind"] != "keepalived_down"] == []
            lab.split(mode="firewall", node="b")
            assert lab.wait_for(lambda: len(_split_events(out)) >= 1, timeout=10), exp.logs()
            lab.heal()
            assert lab.wait_for(lambda: len(_split_events(out)) >= 2, timeout=10), exp.logs()
            time.sleep(1.0)
        finally:
            stop_exporter(exp)
    events = _events(out)
    split = [e for e in events if e["kind"] == "split_brain"]
    assert [e["state"] for e in split] == ["begin", "end"]
    vrid = str(lab.instances[0].vrid)
    assert split[0]["labels"]["vrid"] == vrid
    routers = split[0]["details"]["routers"]
    assert lab.nodes["a"].address in routers
    assert lab.nodes["b"].address in routers


def _split_events(path: Path) -> list[dict[str, object]]:
    return [e for e in _events(path) if e["kind"] == "split_brain"]


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_pass_password_never_leaves_the_exporter(tmp_path):
    """basic profile (VRRPv2, auth PASS, D-Bus on): every output an operator can see, searched."""
    out = tmp_path / "hook-out"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\n(env; cat) >> {out}\n")
    hook.chmod(0o755)
    with Lab(profile="basic", nodes=2, dbus=True) as lab:
        assert LAB_PASSWORD in lab.nodes["a"].config_path.read_text()  # the secret is really there
        collected: list[str] = []
        exps: list[tuple[RunningExporter, LabNode]] = []
        try:
            for name in ("a", "b"):
                node = lab.nodes[name]
                extra = (
                    "--keepalived.dump-interval",
                    "1",
                    "--log.level",
                    "debug",
                    "--watchdog.exec",
                    str(hook),
                )
                exps.append((start_node_exporter(tmp_path, node, f"node-{name}", *extra), node))
            time.sleep(3.0)  # dumps refreshed (they contain the password), adverts sniffed
            lab.split(mode="firewall", node="b")  # a split brain runs the hook
            assert lab.wait_for(out.exists, timeout=15), "the split brain never ran the watchdog hook"
            lab.heal()
            time.sleep(2.0)
            for exp, node in exps:
                collected.append(scrape(exp.url))
                collected.append(scrape(f"http://127.0.0.1:{exp.port}/"))
                for view in ("status", "check"):
                    r = subprocess.run(
                        [*exporter_args(node, free_port(), "x")[:2], *_view_args(node), view],
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                    collected.append(r.stdout + r.stderr)
            dump = Path(lab.nodes["a"].tmpdir) / "keepalived.data"
            assert dump.exists()
            assert LAB_PASSWORD in dump.read_text()  # keepalived wrote it; we must not repeat it
        finally:
            for exp, _node in exps:
                stop_exporter(exp)
        for exp, _node in exps:
            collected.append(exp.logs())
        assert out.exists(), "the watchdog hook never ran"
        collected.append(out.read_text())
    everything = "\n".join(collected)
    assert "keepalived_wire_advert_priority" in everything  # the wire did decode the PASS adverts
    assert LAB_PASSWORD not in everything


def _view_args(node) -> list[str]:
    return ["--netns", node.netns, *node_args(node), "--wire.listen-seconds", "1.5"]


def test_status_and_check_on_a_lab_node(watched_lab):
    lab, _ws = watched_lab
    node = lab.nodes["a"]
    r = subprocess.run(
        [sys.executable, "-m", "ka_exporter", *_view_args(node), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("VI_1"))
    assert "MASTER" in line
    assert lab.vips[0] in line
    assert node.address in line and lab.nodes["b"].address not in line.split("MASTER")[0]
    r = subprocess.run(
        [sys.executable, "-m", "ka_exporter", *_view_args(node), "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("KEEPALIVED OK - 1 instance(s), 1 MASTER here |")
    lab.split(mode="firewall", node="b")
    time.sleep(1.0)
    r = subprocess.run(
        [sys.executable, "-m", "ka_exporter", *_view_args(node), "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lab.heal()
    assert r.returncode == 2, r.stdout
    assert r.stdout.startswith("KEEPALIVED CRITICAL - split brain")


def test_dbus_on_and_off_give_the_same_instance_series(watched_lab, tmp_path):
    lab, ws = watched_lab
    exp = start_node_exporter(tmp_path, lab.nodes["b"], "node-b", "--no-collector.dbus")
    try:
        url = exp.url

        def series(u: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
            return {
                k
                for k in parse_metrics(scrape(u))
                if k[0].startswith("keepalived_vrrp_") and not k[0].startswith("keepalived_vrrp_transitions")
            }

        assert lab.wait_for(lambda: series(url) == series(ws["node-b"].url), timeout=10), series(
            url
        ) ^ series(ws["node-b"].url)
        assert series(url)
        # With D-Bus, node-b's exporter logs the transition as it happens (one info line).
        lab.failover()
        assert lab.wait_for(lambda: "BACKUP -> MASTER" in ws["node-b"].log.read_text(), timeout=10)
    finally:
        stop_exporter(exp)
