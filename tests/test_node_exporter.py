"""`--once` for node_exporter's textfile collector, proven with Debian's real node_exporter."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.conftest import EXPORTER, free_port, parse_metrics, sample, scrape

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
NO_KA = ("--no-collector.wire", "--no-collector.dbus", "--no-collector.dumps", "--no-collector.l2")


@pytest.fixture
def node_exporter(tmp_path):
    if not shutil.which(NODE_EXPORTER):
        pytest.fail("prometheus-node-exporter is not installed (make test installs it)")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textdir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                scrape(url, timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield textdir, url
    finally:
        proc.terminate()
        proc.wait(10)


def test_node_exporter_serves_our_textfile_without_error(node_exporter, tmp_path):
    textdir, url = node_exporter
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n"
        " authentication {\n  auth_type PASS\n  auth_pass Zx9secr\n }\n"
        " virtual_ipaddress {\n  192.0.2.200/24\n }\n}\n"
    )
    once = [*EXPORTER, "--once", "--keepalived.config", str(conf), "--hostname", "n1", *NO_KA]
    r = subprocess.run(
        [*once, "--textfile.directory", str(textdir)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    text = scrape(url)
    m = parse_metrics(text)
    assert sample(m, "node_textfile_scrape_error") == 0.0
    assert sample(m, "keepalived_vip_status", hostname="n1", vip="192.0.2.200") == 0.0
    assert sample(m, "keepalived_process_status", hostname="n1") == 0.0
    assert sample(m, "ka_exporter_source_up", source="config") == 1.0
    assert "Zx9secr" not in text
    # A second run replaces the file atomically; node_exporter keeps reading it without error.
    r = subprocess.run(
        [*once, "--textfile.directory", str(textdir)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0
    assert sample(parse_metrics(scrape(url)), "node_textfile_scrape_error") == 0.0
