"""Hangs are noticed: a frozen dbus-daemon (SIGSTOP) takes the D-Bus source down within 5 s and the
dumps carry the state; a frozen keepalived (SIGSTOP) is reported while keepalived_up stays 1."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args
from tests.conftest import free_port, parse_metrics, sample, scrape, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_frozen_dbus_daemon_and_frozen_keepalived_are_noticed(tmp_path):
    with Lab(profile="fast", nodes=2, dbus=True) as lab:
        node = lab.nodes["a"]
        port = free_port()
        log = tmp_path / "exporter.log"
        args = [*exporter_args(node, port, "node-a"), "--keepalived.dump-interval", "2"]
        with open(log, "w") as out:
            exp = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"

        def m() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return parse_metrics(scrape(url, timeout=3))

        def up(source: str) -> float | None:
            try:
                return sample(m(), "ka_exporter_source_up", source=source)
            except OSError:
                return None

        bus = node.dbus_proc
        assert bus is not None
        frozen: list[int] = []
        try:
            assert wait_until(lambda: up("dbus") == 1.0 and up("dumps") == 1.0, timeout=20), log.read_text()
            # -- a frozen dbus-daemon
            os.kill(bus.pid, signal.SIGSTOP)
            frozen.append(bus.pid)
            t0 = time.monotonic()
            assert wait_until(lambda: up("dbus") == 0.0, timeout=5.0, step=0.1), log.read_text()[-3000:]
            took = time.monotonic() - t0
            print(f"D-Bus source down {took:.2f} s after the dbus-daemon was frozen")
            # The dumps carry the state: refreshed after the freeze (by signal, not through the bus).
            frozen_at = time.time()
            assert wait_until(
                lambda: (
                    (sample(m(), "ka_exporter_source_last_success_timestamp_seconds", source="dumps") or 0)
                    > frozen_at + 0.5
                    and up("dumps") == 1.0
                ),
                timeout=15,
            ), log.read_text()[-3000:]
            states = [v for (n, _), v in m().items() if n == "keepalived_vrrp_state"]
            assert states and all(v in (1.0, 2.0) for v in states), states
            assert "no answer from the bus" in log.read_text()
            os.kill(bus.pid, signal.SIGCONT)
            frozen.remove(bus.pid)
            assert wait_until(lambda: up("dbus") == 1.0, timeout=15), log.read_text()[-3000:]
            # -- a frozen keepalived
            pid = node.pid
            assert pid is not None
            assert sample(m(), "keepalived_process_stopped") == 0.0
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
            t0 = time.monotonic()
            assert wait_until(lambda: sample(m(), "keepalived_process_stopped") == 1.0, timeout=5, step=0.1)
            took = time.monotonic() - t0
            print(f"frozen keepalived reported {took:.2f} s after SIGSTOP")
            page = scrape(f"http://127.0.0.1:{port}/", timeout=3)
            assert sample(m(), "keepalived_up") == 1.0
            assert "keepalived_frozen" in page or "is stopped" in page
            os.kill(pid, signal.SIGCONT)
            frozen.remove(pid)
            assert wait_until(lambda: sample(m(), "keepalived_process_stopped") == 0.0, timeout=5)
        finally:
            for p in frozen:
                os.kill(p, signal.SIGCONT)
            exp.terminate()
            exp.wait(10)
        for line in log.read_text().splitlines():
            assert line.startswith("ts="), f"unformatted line: {line!r}"
