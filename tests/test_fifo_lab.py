"""A real keepalived writing its vrrp_notify_fifo, read by a real exporter with D-Bus and dumps off."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args
from tests.conftest import free_port, parse_metrics, sample, scrape, sh, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_transitions_come_from_the_fifo_alone(tmp_path: Path) -> None:
    with Lab(profile="fifo", nodes=2, dbus=False) as lab:
        assert lab.master() == "a"
        b = lab.nodes["b"]
        port = free_port()
        log = tmp_path / "exporter-b.log"
        args = [
            *exporter_args(b, port, "node-b"),
            "--no-collector.dbus",
            "--no-collector.dumps",
            "--no-collector.wire",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        vrid = str(lab.instances[0].vrid)

        def metric(name: str, **labels: str) -> float | None:
            try:
                return sample(parse_metrics(scrape(url, timeout=2)), name, **labels)
            except OSError:
                return None

        def state() -> float | None:
            return metric("keepalived_vrrp_state", iname="VI_1", intf="eth0", vrid=vrid)

        try:
            assert wait_until(lambda: metric("ka_exporter_source_up", source="fifo") == 1.0, 20, 0.1), (
                log.read_text()
            )
            # keepalived wrote "INSTANCE VI_1 BACKUP" at start; nobody read it: the backlog gives the state
            assert wait_until(lambda: state() == 1.0, 5), log.read_text()

            seen: dict[str, float] = {}
            vip = lab.vips[0]

            def watch_vip() -> None:  # the reference: the VIP appearing on node b (keepalived's own act)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and "vip" not in seen:
                    out = sh("ip", "-n", b.netns, "-o", "addr", "show", "dev", "eth0").stdout
                    if f" {vip}/" in out:
                        seen["vip"] = time.monotonic()
                    time.sleep(0.002)

            def watch_state() -> None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and "state" not in seen:
                    if state() == 2.0:
                        seen["state"] = time.monotonic()
                    time.sleep(0.002)

            threads = [threading.Thread(target=watch_vip), threading.Thread(target=watch_state)]
            for t in threads:
                t.start()
            lab.failover()
            for t in threads:
                t.join(15)
            assert "vip" in seen, "the VIP never moved to node b"
            assert "state" in seen, f"the exporter never showed MASTER from the FIFO: {log.read_text()}"
            lag = seen["state"] - seen["vip"]
            print(f"FIFO: MASTER in a scrape {lag * 1000:.0f} ms after the VIP appeared on node b")
            assert lag < 0.1
            # the instance's transition is counted from the FIFO (D-Bus is off)
            assert (
                metric("keepalived_vrrp_transitions_total", iname="VI_1", intf="eth0", vrid=vrid) or 0
            ) >= 1.0
            assert metric("ka_exporter_source_up", source="dbus") is None  # really off
            assert metric("ka_exporter_source_up", source="dumps") is None
        finally:
            proc.terminate()
            proc.wait(10)
