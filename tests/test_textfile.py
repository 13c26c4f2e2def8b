"""`--once` and the atomic textfile writer."""

from __future__ import annotations

import os
import subprocess

import pytest

from ka_exporter.outputs.textfile import TextfileError, write_atomic
from tests.conftest import EXPORTER, parse_metrics, sample

NO_KA = ("--no-collector.wire", "--no-collector.dbus", "--no-collector.dumps", "--no-collector.l2")


def test_write_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keepalived.prom").symlink_to(victim)
    write_atomic(str(out), b"x 1\n")
    assert victim.read_text() == "precious\n"
    assert not (out / "keepalived.prom").is_symlink()
    assert (out / "keepalived.prom").read_bytes() == b"x 1\n"
    assert sorted(os.listdir(out)) == ["keepalived.prom"]  # no temporary file left behind


def test_a_directory_that_is_a_symlink_to_a_directory_works(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    write_atomic(str(tmp_path / "link"), b"x 1\n")
    assert sorted(os.listdir(real)) == ["keepalived.prom"]
    assert (real / "keepalived.prom").read_bytes() == b"x 1\n"
    # A symlink to a file is still not a directory: one line, nothing written.
    (tmp_path / "file").write_text("")
    (tmp_path / "flink").symlink_to(tmp_path / "file")
    with pytest.raises(TextfileError, match="textfile directory"):
        write_atomic(str(tmp_path / "flink"), b"x 1\n")


def test_missing_directory_is_one_line(tmp_path):
    with pytest.raises(TextfileError) as err:
        write_atomic(str(tmp_path / "nope"), b"x 1\n")
    assert "\n" not in str(err.value)
    assert "nope" in str(err.value)


def test_once_prints_exposition_and_exit_status_reflects_sources(tmp_path):
    r = subprocess.run(
        [*EXPORTER, "--once", "--no-collector.config", *NO_KA], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    m = parse_metrics(r.stdout)
    assert sample(m, "ka_exporter_source_up", source="process") == 1.0
    # A config that does not exist fails its source: exit 1, the other metrics still printed.
    r = subprocess.run(
        [*EXPORTER, "--once", "--keepalived.config", str(tmp_path / "missing.conf"), *NO_KA],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    m = parse_metrics(r.stdout)
    assert sample(m, "ka_exporter_source_up", source="config") == 0.0
    assert sample(m, "ka_exporter_source_up", source="vips") == 1.0


def test_once_writes_textfile_atomically(tmp_path):
    out = tmp_path / "textfile"
    out.mkdir()
    r = subprocess.run(
        [*EXPORTER, "--once", "--no-collector.config", *NO_KA, "--textfile.directory", str(out)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    m = parse_metrics((out / "keepalived.prom").read_text())
    assert sample(m, "ka_exporter_source_up", source="vips") == 1.0
    assert sorted(os.listdir(out)) == ["keepalived.prom"]


def test_textfile_into_read_only_directory_fails_with_one_line(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(out)], check=True)
    try:
        r = subprocess.run(
            [*EXPORTER, "--once", "--no-collector.config", *NO_KA, "--textfile.directory", str(out)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        subprocess.run(["umount", str(out)], check=False)
    assert r.returncode == 1
    assert "Read-only file system" in r.stderr
    assert "Traceback" not in r.stderr
