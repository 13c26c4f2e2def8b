"""The watchdog's transition bookkeeping and its hook runner, with real hook processes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ka_exporter.outputs.watchdog import Event, HookRunner, Transitions, Watchdog
from ka_exporter.verdicts.conditions import Condition
from tests.conftest import wait_until

SB = Condition("split_brain", (("family", "inet"), ("interface", "eth0"), ("vrid", "51")), "two masters")


def test_debounce_ignores_a_blip_and_fires_begin_and_end_once():
    t = Transitions(debounce=1.0)
    cur = {SB.key: SB}
    assert t.update(cur, 0.0) == []
    assert t.update({}, 0.5) == []  # gone before the debounce: nothing fired, nothing to end
    assert t.update(cur, 1.0) == []
    assert t.update(cur, 1.9) == []
    assert t.update(cur, 2.0) == [(SB, "begin")]
    assert t.update(cur, 3.0) == []  # still on: no repeat
    assert t.update({}, 3.5) == []  # not gone long enough
    assert t.update({}, 4.0) == [(SB, "end")]
    assert t.update({}, 9.0) == []


def test_zero_debounce_fires_immediately():
    t = Transitions(debounce=0.0)
    assert t.update({SB.key: SB}, 10.0) == [(SB, "begin")]
    assert t.update({}, 10.1) == [(SB, "end")]


def hook(tmp: Path, body: str) -> Path:
    p = tmp / "hook.sh"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return p


def test_hook_gets_event_in_env_and_json_on_stdin(tmp_path, caplog):
    out = tmp_path / "out"
    script = hook(tmp_path, f"cat > {out}.json\nenv | grep ^KA_ | sort > {out}.env\n")
    runner = HookRunner(str(script), timeout=5)
    caplog.set_level(logging.INFO)
    runner.submit(Event(SB, "begin", 1234.5, "node-a"))
    assert runner.wait_idle(10)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["event"] == "split_brain_begin"
    assert doc["labels"] == {"family": "inet", "interface": "eth0", "vrid": "51"}
    env = (tmp_path / "out.env").read_text()
    assert "KA_EVENT=split_brain_begin" in env
    assert "KA_VRID=51" in env
    assert "KA_HOSTNAME=node-a" in env
    assert "exited 0" in caplog.text


def test_hanging_hook_is_killed_and_logged_without_blocking(tmp_path, caplog):
    script = hook(tmp_path, "sleep 30\n")
    runner = HookRunner(str(script), timeout=0.5)
    caplog.set_level(logging.INFO)
    t0 = time.monotonic()
    runner.submit(Event(SB, "begin", 1.0, "n"))
    assert time.monotonic() - t0 < 0.5  # submit returns at once: collection never waits for a hook
    assert runner.wait_idle(10)
    assert "timed out after 0.5s and was killed" in caplog.text
    assert runner.failures == 1


def test_missing_hook_is_one_line(tmp_path, caplog):
    runner = HookRunner(str(tmp_path / "nope.sh"), timeout=1)
    caplog.set_level(logging.INFO)
    runner.submit(Event(SB, "begin", 1.0, "n"))
    assert runner.wait_idle(5)
    lines = [r for r in caplog.records if "could not start" in r.getMessage()]
    assert len(lines) == 1
    assert "No such file or directory" in lines[0].getMessage()


def test_never_two_runs_at_once_for_the_same_condition(tmp_path):
    log = tmp_path / "runs"
    # Each run records start and end; overlapping runs would interleave "start start".
    script = hook(tmp_path, f'echo start >> {log}\nsleep 0.3\nread x\necho "end $KA_STATE" >> {log}\n')
    runner = HookRunner(str(script), timeout=5)
    runner.submit(Event(SB, "begin", 1.0, "n"))
    assert wait_for(log.exists)  # the begin is running
    runner.submit(Event(SB, "end", 2.0, "n"))
    runner.submit(Event(SB, "begin", 3.0, "n"))  # cancels the queued "end": the hook's view is unchanged
    assert runner.wait_idle(10)
    assert log.read_text().split("\n")[:-1] == ["start", "end begin"]
    assert runner.stats.coalesced == 2  # counted, not silently dropped
    assert runner.stats.runs == 1


def wait_for(pred, timeout: float = 10.0) -> bool:
    return wait_until(pred, timeout, 0.01)


def test_hooks_never_run_more_than_the_bound_at_once_and_every_transition_is_accounted_for(tmp_path):
    """40 conditions begin at once: at most 3 hooks at a time, every transition run or coalesced."""
    running = tmp_path / "running"
    running.mkdir()
    seen = tmp_path / "seen"
    script = hook(
        tmp_path,
        f"touch {running}/$$\nls {running} | wc -l >> {seen}\nsleep 0.2\nrm {running}/$$\n"
        f'echo "$KA_EVENT $KA_VRID" >> {tmp_path}/delivered\n',
    )
    runner = HookRunner(str(script), timeout=10, max_concurrent=3, max_pending=16)
    conds = [Condition("no_master", (("vrid", str(v)),), f"vrid {v}") for v in range(1, 41)]
    for c in conds:
        runner.submit(Event(c, "begin", 1.0, "n"))
    for c in conds[:5]:  # five of them end while still queued or running
        runner.submit(Event(c, "end", 2.0, "n"))
    assert runner.wait_idle(60)
    counts = [int(x) for x in seen.read_text().split()]
    assert max(counts) <= 3, counts
    assert max(counts) >= 2  # they did run side by side: the bound, not a serial queue, held them
    delivered = (tmp_path / "delivered").read_text().splitlines()
    storm = [d for d in delivered if d.startswith("watchdog_storm_begin")]
    assert len(storm) >= 1  # more than 16 queued: the rest folded into a storm event
    st = runner.stats
    assert st.runs == len(delivered)
    # 45 transitions: each either ran as itself or was coalesced (a storm event stands for several).
    assert st.runs - len(storm) + st.coalesced == 45, (st, delivered)
    assert st.failures == 0


def test_watchdog_step_reports_transitions(tmp_path):
    state: dict[str, list[Condition]] = {"conds": [SB]}
    clock = {"t": 0.0}
    wd = Watchdog(lambda: (clock["t"], "node-a", state["conds"]), runner=None, debounce=0.0)
    assert [(e.condition.kind, e.state) for e in wd.step()] == [("split_brain", "begin")]
    clock["t"] = 1.0
    assert wd.step() == []
    state["conds"] = []
    clock["t"] = 2.0
    assert [(e.condition.kind, e.state) for e in wd.step()] == [("split_brain", "end")]


def test_hook_does_not_inherit_the_exporters_ambient_capabilities(tmp_path):
    """Run as nobody with ambient CAP_NET_RAW (as the systemd unit grants it): the hook has none."""
    import shutil
    import subprocess
    import sys
    import tempfile

    # pytest's tmp_path is under a 0700 directory nobody cannot enter: use a world-writable one.
    work = Path(tempfile.mkdtemp(prefix="ka-hookcaps-"))
    work.chmod(0o777)
    out = work / "status"
    script = hook(work, f"grep -E '^Cap(Amb|Eff)' /proc/self/status > {out}\n")
    code = (
        "from ka_exporter.outputs.watchdog import HookRunner, Event;"
        "from ka_exporter.verdicts.conditions import Condition;"
        f"r = HookRunner({str(script)!r}, timeout=5);"
        "r.submit(Event(Condition('split_brain', (('vrid','1'),), 's'), 'begin', 1.0, 'n'));"
        "r.wait_idle(10)"
    )
    setpriv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=+net_raw",
        "--ambient-caps=+net_raw",
    ]
    probe = subprocess.run([*setpriv, "grep", "^CapAmb", "/proc/self/status"], capture_output=True, text=True)
    assert probe.stdout.split()[1] != "0000000000000000"  # the exporter side really has it
    try:
        r = subprocess.run([*setpriv, sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        caps = dict(line.split(":\t") for line in out.read_text().splitlines())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert caps["CapAmb"].strip() == "0000000000000000"
    assert caps["CapEff"].strip() == "0000000000000000"


def test_a_condition_with_a_hold_must_last_that_long_even_without_debounce():
    mm = Condition("vip_mismatch", (("iname", "VI_1"), ("vrid", "51")), "MASTER without VIP", hold=2.0)
    t = Transitions(debounce=0.0)
    assert t.update({mm.key: mm}, 0.0) == []
    assert t.update({mm.key: mm}, 0.5) == []
    assert t.update({}, 0.6) == []  # a failover's ordering gap: gone before the hold, never fired
    assert t.update({mm.key: mm}, 1.0) == []
    assert t.update({mm.key: mm}, 2.9) == []
    assert t.update({mm.key: mm}, 3.0) == [(mm, "begin")]
    assert t.update({}, 3.1) == [(mm, "end")]


def test_next_deadline_says_when_a_pending_transition_falls_due():
    mm = Condition("vip_mismatch", (("iname", "VI_1"),), "x", hold=2.0)
    t = Transitions(debounce=0.5)
    assert t.next_deadline() is None
    t.update({mm.key: mm}, 10.0)
    assert t.next_deadline() == 12.0  # the hold, longer than the debounce
    t.update({mm.key: mm}, 12.0)
    assert t.next_deadline() is None  # active and present: nothing pending
    assert t.update({}, 12.2) == []
    assert t.next_deadline() == 12.5  # absent since after 12.0: its end is due at last_seen + debounce
    assert t.update({}, 12.5) == [(mm, "end")]
    assert t.next_deadline() is None


CHILD = """
import json, os, sys
open(sys.argv[1] + "/cgroup.procs", "w").write(str(os.getpid()))
from ka_exporter.verdicts.conditions import Condition
from ka_exporter.outputs.watchdog import Event, HookRunner
runner = HookRunner(sys.argv[2], timeout=10, max_concurrent=4)
runner.backoff = 0.05
for v in range(1, 13):
    runner.submit(Event(Condition("no_master", (("vrid", str(v)),), "x"), "begin", 1.0, "n"))
ok = runner.wait_idle(90)
st = runner.stats
print(json.dumps({"idle": ok, "runs": st.runs, "retries": st.retries, "failures": st.failures}))
"""


def test_under_a_tasks_limit_no_event_is_lost(tmp_path):
    """The unit's TasksMax, emulated with a pids cgroup: hooks that cannot start are retried, not lost."""
    import os
    import secrets
    import subprocess
    import sys

    import pytest

    root = Path("/sys/fs/cgroup/pids")
    if os.geteuid() != 0 or not (root / "cgroup.procs").exists():
        pytest.skip("needs root and the cgroup v1 pids controller")
    cg = root / f"ka-h6-{secrets.token_hex(4)}"
    cg.mkdir()
    try:
        # The interpreter and its 4 workers, plus room for one hook (sh + sleep) at a time.
        (cg / "pids.max").write_text("7\n")
        out = tmp_path / "delivered"
        script = hook(tmp_path, f'echo "$KA_VRID" >> {out}\nsleep 0.1\n')
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(cg), str(script)], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["idle"] is True
        assert res["retries"] > 0, res  # the limit really refused starts
        # (A hook whose own `sleep` the limit refuses exits non-zero: it ran, and is counted a failure.)
        assert sorted(int(x) for x in out.read_text().split()) == list(range(1, 13))  # every one ran
        assert res["runs"] == 12
    finally:
        cg.rmdir()
