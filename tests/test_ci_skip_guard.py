"""The CI skip guard (conftest): under CI=true a skipped test fails the run, unless it skips because the
peers fixtures are absent. Run on a throwaway test module by a real pytest, with and without CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PEERS_ABSENT, REPO

MODULE = f"""
import pytest

def test_skips_for_a_tool():
    pytest.skip("needs a tool")

@pytest.mark.skipif(True, reason={PEERS_ABSENT!r})
def test_skips_for_the_peers():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_xfails():
    raise ValueError

def test_passes():
    pass
"""


def run(tmp: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    target = REPO / "tests" / f"test_zz_guard_{os.getpid()}_{tmp.name}.py"
    target.write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        target.unlink()


def test_outside_ci_a_skip_is_a_skip(tmp_path: Path) -> None:
    r = run(tmp_path, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 2 skipped, 1 xfailed" in r.stdout


def test_under_ci_only_the_peers_skip_is_allowed(tmp_path: Path) -> None:
    r = run(tmp_path, "true")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in r.stdout
    assert "test_skips_for_a_tool - skipped under CI=true (Skipped: needs a tool)" in r.stdout
