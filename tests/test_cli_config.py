"""Settings from flags, environment and a YAML file, and how bad settings are refused."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import EXPORTER, free_port, parse_metrics, sample, scrape

NO_KA = ("--no-collector.wire", "--no-collector.dbus", "--no-collector.dumps", "--no-collector.l2")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXPORTER, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


def test_yaml_file_sets_flags_and_environment_and_flags_win(tmp_path):
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "vrrp_instance VI_Y {\n interface eth9\n virtual_router_id 77\n virtual_ipaddress {\n  192.0.2.77\n }\n}\n"
    )
    yml = tmp_path / "ka.yml"
    yml.write_text(
        f"keepalived.config: {conf}\nhostname: from-yaml\ncollector.wire: false\ncollector.l2: false\n"
        "collector.dbus: false\ndumps: false\n"  # "dumps" is short for collector.dumps
    )
    r = run("--config.file", str(yml), "--once")
    assert r.returncode == 0, r.stderr
    m = parse_metrics(r.stdout)
    assert sample(m, "keepalived_vip_status", hostname="from-yaml", vip="192.0.2.77") == 0.0
    assert not any(name.startswith("keepalived_wire_") for name, _ in m)
    # The environment wins over the file, a flag over both.
    r = run("--config.file", str(yml), "--once", env={"KA_EXPORTER_HOSTNAME": "from-env"})
    assert sample(parse_metrics(r.stdout), "keepalived_process_status", hostname="from-env") == 0.0
    r = run(
        "--config.file",
        str(yml),
        "--once",
        "--hostname",
        "from-flag",
        env={"KA_EXPORTER_HOSTNAME": "from-env"},
    )
    assert sample(parse_metrics(r.stdout), "keepalived_process_status", hostname="from-flag") == 0.0


def test_listen_address_from_environment(tmp_path):
    port = free_port()
    env = {"KA_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [*EXPORTER, "--no-collector.config", *NO_KA],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        deadline = time.monotonic() + 10
        text = None
        while time.monotonic() < deadline and text is None:
            try:
                text = scrape(f"http://127.0.0.1:{port}/metrics", timeout=1)
            except OSError:
                time.sleep(0.05)
        assert text is not None
        assert sample(parse_metrics(text), "ka_exporter_source_up", source="process") == 1.0
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_settings_exit_2_with_one_line(tmp_path):
    yml = tmp_path / "bad.yml"
    yml.write_text("web.listen-adress: ':1'\n")  # typo
    for args, needle in [
        (("--config.file", str(yml)), "unknown setting 'web.listen-adress'"),
        (("--config.file", str(tmp_path / "missing.yml")), "cannot read"),
        (("--web.listen-address", "nonsense"), "is not [host]:port"),
        (("--log.level", "loud"), "'loud' is not one of"),
        (("--wire.max-peers", "0"), "--wire.max-peers"),
        (("--textfile.directory", str(tmp_path)), "--textfile.directory needs --once"),
    ]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    yml.write_text("- just\n- a list\n")
    r = run("--config.file", str(yml))
    assert r.returncode == 2
    assert "must be a mapping" in r.stderr


def test_no_keepalived_on_this_host_is_reported_not_fatal(tmp_path):
    """No keepalived running (nor installed for this purpose): one line per failing source, exit 1."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "vrrp_instance VI_N {\n interface lo\n virtual_router_id 9\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n"
    )
    r = run(
        "--once",
        "--keepalived.config",
        str(conf),
        "--keepalived.pid-file",
        str(tmp_path / "none.pid"),
        "--keepalived.dumps-dir",
        str(tmp_path),
        "--no-collector.wire",
        "--no-collector.l2",
    )
    assert r.returncode == 1
    m = parse_metrics(r.stdout)
    assert sample(m, "keepalived_up") == 0.0
    assert sample(m, "ka_exporter_source_up", source="dumps") == 0.0
    assert sample(m, "ka_exporter_source_up", source="vips") == 1.0
    dump_lines = [line for line in r.stderr.splitlines() if "source dumps" in line]
    assert len(dump_lines) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_documented_and_old_environment_names_reach_the_daemon(tmp_path):
    """KA_EXPORTER_NETNS (the README's name, derived from --netns) was ignored until settings.py derived
    the names; KA_EXPORTER_NETNS_NAME (what click derived from the old parameter name) still works."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text("vrrp_instance VI_E {\n interface lo\n virtual_router_id 8\n}\n")
    missing = f"kt-none-{os.getpid()}"
    for name in ("KA_EXPORTER_NETNS", "KA_EXPORTER_NETNS_NAME"):
        r = run("--once", "--keepalived.config", str(conf), *NO_KA, env={name: missing})
        assert r.returncode == 2, (name, r.stderr)
        assert f"network namespace '{missing}' does not exist" in r.stderr, (name, r.stderr)
