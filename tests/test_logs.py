"""Logging: every line one logfmt (or JSON) line, uncaught exceptions included; client noise throttled."""

from __future__ import annotations

import json
import subprocess
import sys

from ka_exporter.logs import Throttle
from tests.test_serving_attacks import LOGFMT

CRASH = """
import threading
from ka_exporter import logs
logs.setup("info", "{fmt}")
t = threading.Thread(target=lambda: 1 / 0, name="worker")
t.start()
t.join()
raise ValueError("main\\nsecond line")
"""


def test_uncaught_exceptions_in_threads_and_main_are_one_line_each() -> None:
    for fmt in ("logfmt", "json"):
        r = subprocess.run(
            [sys.executable, "-c", CRASH.format(fmt=fmt)], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 1
        lines = r.stderr.splitlines()
        assert len(lines) == 2, r.stderr
        if fmt == "logfmt":
            assert all(LOGFMT.match(line) for line in lines), lines
            assert "uncaught exception in thread worker" in lines[0]
            assert "ZeroDivisionError" in lines[0]
            assert "ValueError: main | second line" in lines[1]
        else:
            docs = [json.loads(line) for line in lines]
            assert docs[0]["level"] == "error"
            assert "ZeroDivisionError" in docs[0]["exc"]
            assert docs[1]["level"] == "critical"


def test_throttle_allows_a_burst_then_a_rate_and_counts_what_it_left_out() -> None:
    now = [0.0]
    t = Throttle(per_second=2.0, burst=3, clock=lambda: now[0])
    assert [t.hit() for _ in range(5)] == [(True, 0), (True, 0), (True, 0), (False, 0), (False, 0)]
    now[0] += 0.5  # one token back
    assert t.hit() == (True, 2)
    assert t.hit() == (False, 0)
    now[0] += 10.0  # refills to the burst, no more
    assert [t.hit()[0] for _ in range(4)] == [True, True, True, False]
