"""The track profile with real keepalived 2.2.7: changing a track_file moves the priority (weight -30) or
puts the instance in FAULT (weight 0), and the exporter's track series follow keepalived's dumps."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args
from ka_exporter.lab.profiles import FAULT_FILE, TRACK_FILE, TRACK_PROCESS
from tests.conftest import free_port, parse_metrics, scrape, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]


class Exporter:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.url, self.log = proc, f"http://127.0.0.1:{port}/metrics", log

    def get(self, family: str, **labels: str) -> float | None:
        try:
            got = parse_metrics(scrape(self.url))
        except OSError:
            return None
        return got.get((family, tuple(sorted(labels.items()))))  # conftest's sample() takes no name= label


@pytest.fixture
def track(tmp_path: Path) -> Iterator[tuple[Lab, dict[str, Exporter]]]:
    if os.geteuid() != 0 or shutil.which("keepalived", path="/usr/sbin:/sbin") is None:
        pytest.skip("needs root and keepalived")
    with Lab(profile="track", nodes=2, dbus=True) as lab:
        exporters: dict[str, Exporter] = {}
        try:
            for name, node in sorted(lab.nodes.items()):
                port = free_port()
                log = tmp_path / f"exporter-{name}.log"
                args = [*exporter_args(node, port, f"node-{name}"), "--keepalived.dump-interval", "1"]
                with open(log, "wb") as out:
                    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
                exporters[name] = Exporter(proc, port, log)
            yield lab, exporters
        finally:
            for exp in exporters.values():
                exp.proc.terminate()
                exp.proc.wait(10)


def test_track_file_moves_the_priority_and_faults_and_the_exporter_follows(
    track: tuple[Lab, dict[str, Exporter]],
) -> None:
    lab, exp = track
    a, b = exp["a"], exp["b"]
    iname, vrid = lab.instances[0].name, str(lab.instances[0].vrid)
    inst = {"iname": iname, "intf": "eth0", "vrid": vrid}

    def at(e: Exporter, state: float, priority: float) -> bool:
        return (
            e.get("keepalived_vrrp_state", **inst) == state
            and e.get("keepalived_vrrp_effective_priority", **inst) == priority
        )

    def tracked(e: Exporter, family: str, name: str) -> float | None:
        return e.get(family, iname=iname, name=name)

    # keepalived in a netns never has the process quorum: priority - 10 on both nodes, exported as 0
    assert wait_until(lambda: at(a, 2.0, 140.0) and at(b, 1.0, 90.0), 20.0), a.log.read_text()[-2000:]
    assert tracked(a, "keepalived_tracked_process_up", TRACK_PROCESS) == 0.0
    assert tracked(a, "keepalived_tracked_process_running", TRACK_PROCESS) == 0.0
    assert tracked(a, "keepalived_tracked_process_weight", TRACK_PROCESS) == -10.0
    assert tracked(a, "keepalived_tracked_file_status", TRACK_FILE) == 0.0
    assert tracked(a, "keepalived_tracked_file_weight", TRACK_FILE) == -30.0
    assert tracked(a, "keepalived_tracked_file_weight", FAULT_FILE) == 0.0
    vip = lab.vips[0]
    assert a.get("keepalived_vip_status", hostname="node-a", vip=vip) == 1.0

    node_a = lab.nodes["a"]
    # 2 in the weight -30 file: 140 - 60 = 80 < 90, node b preempts
    (node_a.dir / "track.file").write_text("2\n")
    assert wait_until(
        lambda: at(a, 1.0, 80.0) and tracked(a, "keepalived_tracked_file_status", TRACK_FILE) == 2.0, 15.0
    )
    assert wait_until(lambda: lab.master() == "b" and b.get("keepalived_vrrp_state", **inst) == 2.0, 10.0)
    assert wait_until(lambda: a.get("keepalived_vip_status", hostname="node-a", vip=vip) == 0.0, 5.0)
    (node_a.dir / "track.file").write_text("0\n")
    assert wait_until(lambda: at(a, 2.0, 140.0) and lab.master() == "a", 15.0)

    # any non-zero number in the weight 0 file: FAULT (the priority does not move)
    (node_a.dir / "fault.file").write_text("1\n")
    assert wait_until(
        lambda: at(a, 3.0, 140.0) and tracked(a, "keepalived_tracked_file_status", FAULT_FILE) == 1.0, 15.0
    )
    assert wait_until(lambda: lab.master() == "b", 10.0)
    (node_a.dir / "fault.file").write_text("0\n")
    # the state comes from D-Bus at once, the track series with the next dump (a state change asks for one)
    assert wait_until(
        lambda: at(a, 2.0, 140.0) and tracked(a, "keepalived_tracked_file_status", FAULT_FILE) == 0.0, 15.0
    )
    assert wait_until(lambda: lab.master() == "a", 10.0)
