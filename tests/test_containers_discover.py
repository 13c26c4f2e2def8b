"""`--discover` in container shapes: what --discover refuses or says at start (the watchdog hook, the L2
witness, LVS)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import EXPORTER, free_port, start_exporter, stop_exporter, unique

# ------------------------------------------------------------------------------ refusals at start


def test_watchdog_hook_with_discover_refuses_to_start(tmp_path: Path) -> None:
    """A hook that would never run is worse than an exporter that does not start (multi.refusal)."""
    r = subprocess.run(
        [*EXPORTER, "--web.listen-address", f"127.0.0.1:{free_port()}", "--discover",
         f"--discover.match={unique('none')}", "--watchdog.exec", "/bin/true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "level=error" in lines[0]
    assert "--watchdog.exec is not run per keepalived with --discover: refusing to start" in lines[0]


def test_sources_not_run_per_keepalived_say_so_once(tmp_path: Path) -> None:
    exp = start_exporter(tmp_path, "--discover", f"--discover.match={unique('none')}", ready="listening")
    try:
        logs = exp.logs()
    finally:
        stop_exporter(exp)
    for what, flag in (("the L2 witness", "l2"), ("LVS", "lvs")):
        lines = [line for line in logs.splitlines() if f"{what} does not run per keepalived" in line]
        assert len(lines) == 1, logs
        assert "level=info" in lines[0] and f"--no-collector.{flag} silences this" in lines[0]
    quiet = start_exporter(
        tmp_path,
        "--discover",
        f"--discover.match={unique('none')}",
        "--no-collector.l2",
        "--no-collector.lvs",
        ready="listening",
    )
    try:
        assert "does not run per keepalived" not in quiet.logs()
    finally:
        stop_exporter(quiet)
