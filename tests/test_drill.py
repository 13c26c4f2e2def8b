"""`ka-exporter lab drill` on the fast profile: every guide scenario happens as expected, and the report
carries what ka-exporter measured (the full three-profile drill takes ~2 minutes; see the README)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_drill_on_the_fast_profile_reports_each_scenario_as_measured() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ka_exporter", "lab", "drill", "--profile", "fast", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["scenario"]: r for r in json.loads(done.stdout)}
    assert list(rows) == [
        "stop keepalived on the master (SIGTERM)",
        "start it again",
        "block VRRP with a firewall rule on the backup, then remove it",
        "crash the master (SIGKILL)",
    ]
    assert all(r["ok"] and r["profile"] == "fast" for r in rows.values())
    # advert_int 0.1: a graceful stop costs the backup's skew time (< one interval), a crash the master
    # down interval (3 x 0.1 s + skew), a preemption no masterless time at all
    term = rows["stop keepalived on the master (SIGTERM)"]
    assert 0 < term["masterless"] < 0.1 and term["claim_held"] is True
    back = rows["start it again"]
    assert back["masterless"] is None and back["overlap"] is not None and back["overlap"] < 0.05
    kill = rows["crash the master (SIGKILL)"]
    assert 0.3 <= kill["masterless"] < 0.45 and kill["claim_held"] is True
    split = rows["block VRRP with a firewall rule on the backup, then remove it"]
    assert split["split_brain"] is not None and split["split_brain"] > 0.1
