"""254 spoofed VRIDs sent into a lab's segment: no hook storm, configured VRIDs still page.

Node a's exporter runs with the defaults: VRIDs only heard on the wire never reach its hook, and the
lab's own VRID still does (a real split brain). Node b's exporter pages them all
(`--watchdog.unconfigured-vrids`) with at most 2 hooks at once: the hook's own record shows the bound,
and every transition was delivered or counted as coalesced.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRPv3

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args
from tests.conftest import free_port, in_netns, parse_metrics, sample, scrape, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def hook(tmp: Path, name: str, pause: float) -> tuple[Path, Path]:
    """A hook that records each event (JSON) and how many of its kind were running when it started."""
    events = tmp / f"{name}.jsonl"
    running = tmp / f"{name}.running"
    running.mkdir()
    script = tmp / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"touch {running}/$$\n"
        f'n=$(ls {running} | wc -l); echo "$n" >> {tmp}/{name}.concurrency\n'
        f"cat >> {events}\n"
        f"sleep {pause}\n"
        f"rm -f {running}/$$\n"
    )
    script.chmod(0o755)
    return script, events


def events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spoof(lab: Lab, skip: set[int]) -> int:
    """Four adverts (enough to be believed) per VRID 1-255 but the lab's, from the observer."""
    src = lab.observer.address
    frames = [
        Ether(src="02:00:5e:00:00:99", dst="01:00:5e:00:00:12")
        / IP(src=src, dst="224.0.0.18", ttl=255, proto=112)
        / VRRPv3(vrid=v, priority=100, adv=10, addrlist=[f"198.51.100.{v}"])
        for v in range(1, 256)
        if v not in skip
    ]

    raw = [bytes(f) for f in frames]

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind(("eth0", 0))
            for _ in range(4):
                for frame in raw:
                    sock.send(frame)
                time.sleep(0.1)

    in_netns(lab.observer.netns, send)
    return len(frames)


def metric(port: int, name: str) -> float | None:
    return sample(parse_metrics(scrape(f"http://127.0.0.1:{port}/metrics")), name)


def test_spoofed_vrids_do_not_page_and_a_paging_observer_is_bounded(tmp_path):
    with Lab(profile="fast", nodes=2, dbus=False) as lab:
        ours = {inst.vrid for inst in lab.instances}
        hook_a, events_a = hook(tmp_path, "a", 0.0)
        hook_b, events_b = hook(tmp_path, "b", 0.1)
        port_a, port_b = free_port(), free_port()
        procs = []
        logs = {}
        for node, port, extra in (
            ("a", port_a, ["--watchdog.exec", str(hook_a)]),
            (
                "b",
                port_b,
                [
                    "--watchdog.exec",
                    str(hook_b),
                    "--watchdog.max-concurrent",
                    "2",
                    "--watchdog.unconfigured-vrids",
                ],
            ),
        ):
            logs[node] = tmp_path / f"exporter-{node}.log"
            with open(logs[node], "w") as out:
                args = [*exporter_args(lab.nodes[node], port, f"node-{node}"), *extra]
                procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
        try:
            for port in (port_a, port_b):
                assert wait_until(lambda p=port: _answers(p), timeout=20)
            time.sleep(1.0)  # the wire has listened for a hold time: absence is judged from now on
            assert events(events_a) == [] and events(events_b) == []
            sent = spoof(lab, ours)
            assert sent == 255 - len(ours)
            # Every spoofed VRID went quiet: its no_master began, on both exporters.
            assert wait_until(
                lambda: (metric(port_a, "ka_exporter_watchdog_unpaged_transitions_total") or 0) >= sent,
                timeout=20,
            ), logs["a"].read_text()[-3000:]
            assert wait_until(
                lambda: (metric(port_b, "ka_exporter_watchdog_transitions_total") or 0) >= sent, timeout=20
            )
            # b drains its queue: at most 2 hooks at a time, nothing left pending.
            assert wait_until(
                lambda: (
                    metric(port_b, "ka_exporter_watchdog_hooks_pending") == 0
                    and metric(port_b, "ka_exporter_watchdog_hooks_running") == 0
                ),
                timeout=60,
            ), logs["b"].read_text()[-3000:]
            m_b = parse_metrics(scrape(f"http://127.0.0.1:{port_b}/metrics"))
            got_b = events(events_b)
            # The lab's own VRID still pages on a: a real split brain.
            lab.split(mode="firewall", node="b")
            assert wait_until(
                lambda: any(e["kind"] == "split_brain" for e in events(events_a)), timeout=15
            ), logs["a"].read_text()[-3000:]
            lab.heal()
            m_a = parse_metrics(scrape(f"http://127.0.0.1:{port_a}/metrics"))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    got_a = events(events_a)
    assert got_a, "a's hook never ran"
    assert {dict(e["labels"]).get("vrid") for e in got_a} <= {str(v) for v in ours}, got_a  # type: ignore[arg-type]
    assert sample(m_a, "ka_exporter_watchdog_unpaged_transitions_total") >= sent  # type: ignore[operator]
    # b: bounded, and every transition accounted for.
    concurrency = [int(x) for x in (tmp_path / "b.concurrency").read_text().split()]
    assert max(concurrency) <= 2, concurrency
    storms = [e for e in got_b if e["kind"] == "watchdog_storm"]
    assert storms, "254 begins at once and no storm event"
    individual = len(got_b) - len(storms)
    transitions = sample(m_b, "ka_exporter_watchdog_transitions_total")
    coalesced = sample(m_b, "ka_exporter_watchdog_coalesced_transitions_total")
    assert transitions is not None and coalesced is not None
    assert sample(m_b, "ka_exporter_watchdog_hook_runs_total") == len(got_b)
    assert individual + coalesced == transitions, (individual, coalesced, transitions)
    assert len(got_b) < 100  # damped: not one hook per spoofed VRID
    print(
        f"spoofed {sent} VRIDs: a paged {len(got_a)} event(s), all on VRID(s) {sorted(ours)};"
        f" b ran {len(got_b)} hook(s) (max {max(concurrency)} at once), {int(coalesced)} coalesced"
    )
    for node, path in logs.items():
        for line in path.read_text().splitlines():
            assert line.startswith("ts="), f"{node}: unformatted line: {line!r}"


def _answers(port: int) -> bool:
    try:
        scrape(f"http://127.0.0.1:{port}/metrics", timeout=2)
        return True
    except OSError:
        return False
