"""The exporter as an operator runs it: a real process, real netlink, real processes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import EXPORTER, free_port, sample, sh, wait_until

NO_KA = ("--no-collector.wire", "--no-collector.dbus", "--no-collector.dumps", "--no-collector.l2")


def write_conf(path: Path, vip: str, iface: str = "eth0") -> Path:
    path.write_text(
        "vrrp_instance VI_T {\n"
        f"  interface {iface}\n  virtual_router_id 42\n  priority 100\n"
        "  authentication {\n    auth_type PASS\n    auth_pass s3cretPW\n  }\n"
        f"  virtual_ipaddress {{\n    {vip}/24 dev {iface}\n  }}\n}}\n"
    )
    return path


def test_vip_status_follows_netlink_events_in_a_namespace(netns, exporter_factory, tmp_path):
    """Adding and removing the VIP in the watched namespace shows on the next scrape."""
    conf = write_conf(tmp_path / "keepalived.conf", "10.77.0.100")
    exp = exporter_factory("--netns", netns, "--keepalived.config", str(conf), "--hostname", "node-t", *NO_KA)
    m = exp.metrics()
    assert sample(m, "keepalived_vip_status", hostname="node-t", vip="10.77.0.100") == 0.0
    assert sample(m, "keepalived_process_status", hostname="node-t") == 0.0
    assert (
        sample(
            m,
            "keepalived_config_instance_info",
            iname="VI_T",
            intf="eth0",
            vrid="42",
            family="inet",
            version="2",
        )
        == 1.0
    )

    sh("ip", "-n", netns, "addr", "add", "10.77.0.100/24", "dev", "eth0")
    # An address event, not a poll: the next scrape after the change already sees it.
    assert wait_until(
        lambda: sample(exp.metrics(), "keepalived_vip_status", hostname="node-t", vip="10.77.0.100") == 1.0,
        timeout=2.0,
    )
    m = exp.metrics()
    assert (
        sample(m, "keepalived_vip_on_interface", iname="VI_T", vrid="42", vip="10.77.0.100", interface="eth0")
        == 1.0
    )
    sh("ip", "-n", netns, "addr", "del", "10.77.0.100/24", "dev", "eth0")
    assert wait_until(
        lambda: sample(exp.metrics(), "keepalived_vip_status", hostname="node-t", vip="10.77.0.100") == 0.0,
        timeout=2.0,
    )
    # The host's own addresses are not the namespace's: the exporter really looks inside it.
    assert "s3cretPW" not in exp.text() and "s3cretPW" not in exp.logs()


def test_pid_file_naming_another_program_is_reported_not_trusted(exporter_factory, tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "keepalived.pid"
        pidfile.write_text(f"{sleeper.pid}\n")
        exp = exporter_factory(
            "--keepalived.pid-file", str(pidfile), "--no-collector.config", "--no-collector.vips", *NO_KA
        )
        m = exp.metrics()
        assert sample(m, "ka_exporter_source_up", source="process") == 0.0
        assert sample(m, "keepalived_up") == 0.0
        assert wait_until(lambda: f"names pid {sleeper.pid} (sleep), which is not keepalived" in exp.logs())
        # One line for the problem, not one per poll.
        time.sleep(1.5)
        assert exp.logs().count("which is not keepalived") == 1
        assert sleeper.poll() is None  # never signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def test_port_in_use_is_one_clear_line(tmp_path):
    port = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = subprocess.run(
            [*EXPORTER, "--web.listen-address", f"127.0.0.1:{port}", "--no-collector.config", *NO_KA],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_netns_is_a_clean_exit_2():
    r = subprocess.run(
        [*EXPORTER, "--netns", "ka-no-such-ns", "--once"], capture_output=True, text=True, timeout=20
    )
    assert r.returncode == 2
    assert "network namespace 'ka-no-such-ns' does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_garbled_config_keeps_serving_other_sources(exporter_factory, tmp_path):
    conf = tmp_path / "keepalived.conf"
    conf.write_bytes(b"vrrp_instance VI_X {\n  interface eth0\n  virtual_router_id \xff\xfe\x00\n{{{{\n")
    exp = exporter_factory("--keepalived.config", str(conf), *NO_KA)
    m = exp.metrics()
    assert sample(m, "ka_exporter_source_up", source="config") == 0.0
    assert sample(m, "ka_exporter_source_up", source="process") == 1.0
    assert sample(m, "ka_exporter_source_up", source="vips") == 1.0
    assert str(conf) in exp.logs()
    assert "Traceback" not in exp.logs()


def test_sigterm_stops_cleanly(exporter_factory):
    exp = exporter_factory("--no-collector.config", *NO_KA)
    exp.proc.send_signal(signal.SIGTERM)
    assert exp.proc.wait(10) == 0
