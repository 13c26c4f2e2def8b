"""deploy/: the systemd units, defaults, YAML and web config examples, D-Bus policy, cron, DaemonSet."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ka_exporter.outputs.webconfig import load_web_config
from tests.conftest import EXPORTER, REPO, parse_metrics, sample

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "ka-exporter.service"
DUMPS_DROPIN = DEPLOY / "systemd" / "ka-exporter.service.d" / "dumps.conf"
ONCE_SERVICE = DEPLOY / "systemd" / "ka-exporter-once.service"
ONCE_TIMER = DEPLOY / "systemd" / "ka-exporter-once.timer"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
INSTALLED = "/opt/ka-exporter/bin/ka-exporter"  # where the deploy files expect the command


def deploy_files() -> list[Path]:
    """Every file under deploy/ except the hooks (someone else's)."""
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "hooks" not in p.relative_to(DEPLOY).parts)


def unit_settings(*paths: Path) -> dict[str, list[str]]:
    """Key -> values of systemd unit files (a key may repeat; an empty assignment resets it)."""
    out: dict[str, list[str]] = {}
    for path in paths:
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            if value == "":
                out[key] = []
            else:
                out.setdefault(key, []).append(value)
    return out


def words(values: list[str]) -> set[str]:
    return {w for v in values for w in v.split()}


# ------------------------------------------------------------------------------ the systemd unit


def test_unit_is_least_privilege():
    u = unit_settings(UNIT)
    assert u["User"] == ["ka-exporter"]
    assert words(u["AmbientCapabilities"]) == {"CAP_NET_RAW"}
    assert words(u["CapabilityBoundingSet"]) == {"CAP_NET_RAW"}
    assert u["NoNewPrivileges"] == ["yes"]
    assert u["ProtectSystem"] == ["strict"]
    assert u["ProtectHome"] == ["yes"]
    # keepalived's dumps live in /tmp: a private /tmp would hide them. Said in a comment, too.
    assert u["PrivateTmp"] == ["no"]
    assert "a private /tmp here would hide them" in UNIT.read_text()
    assert words(u["RestrictAddressFamilies"]) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
        "AF_PACKET",
    }
    assert "@system-service" in words(u["SystemCallFilter"])
    # The process source must see keepalived's /proc/PID: these would hide it.
    assert "ProtectProc" not in u
    assert "ProcSubset" not in u
    assert u["ExecStart"][0].split()[0] == INSTALLED


def test_dumps_dropin_adds_only_kill_and_dac_read_search():
    u = unit_settings(UNIT, DUMPS_DROPIN)
    assert words(u["AmbientCapabilities"]) == {"CAP_NET_RAW", "CAP_KILL", "CAP_DAC_READ_SEARCH"}
    assert words(u["CapabilityBoundingSet"]) == {"CAP_NET_RAW", "CAP_KILL", "CAP_DAC_READ_SEARCH"}


@pytest.fixture
def unit_dir() -> Iterator[Path]:
    """The units as they would be installed, with ExecStart pointing at this checkout's command."""
    exe = shutil.which("ka-exporter", path=str(Path(sys.executable).parent))
    if SYSTEMD_ANALYZE is None or exe is None:
        pytest.skip("needs systemd-analyze and an installed ka-exporter command")
    with tempfile.TemporaryDirectory(prefix="ka-units-") as d:
        out = Path(d)
        for src in (UNIT, ONCE_SERVICE, ONCE_TIMER):
            (out / src.name).write_text(src.read_text().replace(INSTALLED, exe))
        yield out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60)


def test_units_pass_systemd_analyze_verify(unit_dir):
    r = analyze("verify", *(str(unit_dir / n) for n in (UNIT.name, ONCE_SERVICE.name, ONCE_TIMER.name)))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr  # no warnings either (unknown keys, bad values)


def exposure(path: Path) -> float:
    r = analyze("security", "--offline=yes", "--no-pager", str(path))
    assert r.returncode == 0, r.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert match, r.stdout[-500:]
    return float(match.group(1))


def test_systemd_analyze_security_score(unit_dir):
    """The exposure score (0 best, 10 worst); printed for the report, bounded so it cannot rot."""
    main = exposure(unit_dir / UNIT.name)
    once = exposure(unit_dir / ONCE_SERVICE.name)
    dropin = unit_dir / f"{UNIT.name}.d"
    dropin.mkdir()
    shutil.copy(DUMPS_DROPIN, dropin / DUMPS_DROPIN.name)
    with_dumps = exposure(unit_dir / UNIT.name)
    print(f"systemd-analyze security: ka-exporter.service {main}, with dumps.conf {with_dumps}, once {once}")
    assert main <= 2.5
    assert once <= 2.5
    assert main < with_dumps <= 3.0  # the drop-in's capabilities are counted against it


# --------------------------------------------------------------------- flags, env, YAML example


def help_flags() -> set[str]:
    r = subprocess.run([*EXPORTER, "--help"], capture_output=True, text=True, timeout=30, check=True)
    return set(re.findall(r"--[a-z][a-z0-9.-]*[a-z0-9]", r.stdout))


def command_lines() -> list[str]:
    """The ka-exporter command lines in the deploy files (units, cron, defaults, DaemonSet args)."""
    lines: list[str] = []
    for path in deploy_files():
        for line in path.read_text().splitlines():
            if "bin/ka-exporter " in line or line.startswith("KA_EXPORTER_ARGS="):
                lines.append(line)
    ds = yaml.safe_load((DEPLOY / "kubernetes" / "daemonset.yaml").read_text())
    for c in ds["spec"]["template"]["spec"]["containers"]:
        lines.append(" ".join(c.get("args", [])))
    lines.append(" ".join(_sidecar_exporter()["args"]))
    lines.append(" ".join(_compose()["services"]["ka-exporter"]["command"]))
    return lines


def _sidecar() -> dict:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar.yaml").read_text()))
    return next(d for d in docs if d["kind"] == "Deployment")


def _sidecar_exporter() -> dict:
    pod = _sidecar()["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "ka-exporter")


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())


def _inside(path: str, mounts: list[str]) -> bool:
    return any(path == m or path.startswith(m + "/") for m in mounts)


def test_sidecar_recipe_shares_what_the_container_test_shares():
    """deploy/kubernetes/sidecar.yaml: the shape tests/test_containers.py runs (shared pid namespace,
    the /run/keepalived volume at the same path in both containers, keepalived's /tmp for the dumps)."""
    pod = _sidecar()["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert pod["hostNetwork"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    keepalived, exporter = containers["keepalived"], containers["ka-exporter"]
    k_mounts = {m["name"]: m["mountPath"] for m in keepalived["volumeMounts"]}
    e_mounts = {m["name"]: m["mountPath"] for m in exporter["volumeMounts"]}
    assert k_mounts["keepalived-run"] == e_mounts["keepalived-run"] == "/run/keepalived"
    assert k_mounts["keepalived-tmp"] == "/tmp"
    assert "--pid=/run/keepalived/keepalived.pid" in keepalived["args"]
    conf = yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar.yaml").read_text())
    text = next(d for d in conf if d["kind"] == "ConfigMap")["data"]["keepalived.conf"]
    assert "vrrp_notify_fifo /run/keepalived/notify.fifo" in text
    assert exporter["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    for arg in exporter["args"]:
        _, _, value = arg.partition("=")
        if value.startswith("/"):
            assert _inside(value, list(e_mounts.values())), arg


def test_compose_recipe_shares_network_pid_and_volumes():
    services = _compose()["services"]
    keepalived, exporter = services["keepalived"], services["ka-exporter"]
    assert exporter["network_mode"] == "service:keepalived"
    assert exporter["pid"] == "service:keepalived"
    assert exporter["cap_add"] == ["NET_RAW"] and exporter["cap_drop"] == ["ALL"]
    k_vols = {v.split(":")[0]: v.split(":")[1] for v in keepalived["volumes"]}
    e_vols = {v.split(":")[0]: v.split(":")[1] for v in exporter["volumes"]}
    assert k_vols["keepalived-run"] == e_vols["keepalived-run"] == "/run/keepalived"
    assert k_vols["keepalived-tmp"] == "/tmp"
    for arg in exporter["command"]:
        _, _, value = arg.partition("=")
        if value.startswith("/"):
            assert _inside(value, list(e_vols.values())), arg


def test_every_flag_in_deploy_files_exists():
    known = help_flags()
    used: dict[str, set[str]] = {}
    for line in command_lines():
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9.-]*[a-z0-9]", line):
            used.setdefault(flag, set()).add(line.strip()[:60])
    # Dotted flags named anywhere (comments too) are ka-exporter's: they must exist as well.
    for path in deploy_files():
        for flag in re.findall(
            r"(?<![\w-])--(?:no-)?(?:web|keepalived|collector|wire|log|textfile|config|watchdog)\.[a-z0-9.-]*[a-z0-9]",
            path.read_text(),
        ):
            used.setdefault(flag, set()).add(str(path.relative_to(REPO)))
    assert "--once" in used
    assert "--textfile.directory" in used
    unknown = {flag: where for flag, where in used.items() if flag not in known}
    assert unknown == {}


def test_example_yaml_keys_are_flags_and_env_names_are_settings():
    known = help_flags()
    doc = yaml.safe_load((DEPLOY / "ka-exporter.yml").read_text())
    assert isinstance(doc, dict)
    assert {f"--{k}" for k in doc} <= known
    params = {f.lstrip("-").replace(".", "_").replace("-", "_").upper() for f in known}
    env = re.findall(r"^#?(KA_EXPORTER_[A-Z_]+)=", (DEPLOY / "ka-exporter.default").read_text(), re.M)
    assert env
    assert {e.removeprefix("KA_EXPORTER_") for e in env if e != "KA_EXPORTER_ARGS"} <= params


def test_example_yaml_runs_through_the_real_cli(tmp_path):
    """`ka-exporter --config.file deploy/ka-exporter.yml --once`: the file is read, flags win."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "vrrp_instance VI_D {\n  interface lo\n  virtual_router_id 61\n  priority 100\n"
        "  authentication {\n    auth_type PASS\n    auth_pass kaT3st01\n  }\n"
        "  virtual_ipaddress {\n    192.0.2.61/32 dev lo\n  }\n}\n"
    )
    r = subprocess.run(
        [
            *EXPORTER,
            "--config.file",
            str(DEPLOY / "ka-exporter.yml"),
            "--once",
            "--keepalived.config",
            str(conf),
            "--keepalived.pid-file",
            str(tmp_path / "none.pid"),
            "--no-collector.wire",
            "--no-collector.l2",
            "--no-collector.dbus",
            "--no-collector.dumps",
            "--hostname",
            "deploy-test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    m = parse_metrics(r.stdout)
    assert sample(m, "ka_exporter_source_up", source="config") == 1.0
    assert sample(m, "keepalived_vip_status", hostname="deploy-test", vip="192.0.2.61") == 0.0
    assert "kaT3st01" not in r.stdout + r.stderr
    # The file is really read: a typo in a copy of it is refused with the key named.
    bad = tmp_path / "bad.yml"
    bad.write_text((DEPLOY / "ka-exporter.yml").read_text().replace("log.level:", "log.levle:"))
    r = subprocess.run(
        [*EXPORTER, "--config.file", str(bad), "--once"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "unknown setting 'log.levle'" in r.stderr


def test_example_web_config_loads(tmp_path):
    """deploy/web-config.yml with real files in place of /etc/ka-exporter/tls/*: loads, requires auth."""
    key = tmp_path / "server.key"
    crt = tmp_path / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    text = (DEPLOY / "web-config.yml").read_text()
    assert "/etc/ka-exporter/tls/server.crt" in text
    cfg = tmp_path / "web-config.yml"
    cfg.write_text(
        text.replace("/etc/ka-exporter/tls/server.crt", str(crt)).replace(
            "/etc/ka-exporter/tls/server.key", str(key)
        )
    )
    web = load_web_config(cfg)
    assert web.ssl_context() is not None
    assert web.users == ("prometheus",)
    assert web.warnings == ()
    assert not web.authorize(None)


# ------------------------------------------------------------------ cron, sysusers, D-Bus, k8s


def test_cron_file_is_valid_cron_d():
    text = (DEPLOY / "cron" / "ka-exporter").read_text()
    assert text.endswith("\n")  # cron ignores a last line without a newline
    jobs = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    assert len(jobs) == 1
    fields = jobs[0].split()
    assert len(fields) > 7
    assert fields[5] == "ka-exporter"  # cron.d lines name the user
    assert fields[6] == INSTALLED
    assert "--once" in fields
    assert "--textfile.directory" in fields


def test_sysusers_file_creates_the_user(tmp_path):
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("needs systemd-sysusers")
    r = subprocess.run(
        [sysusers, f"--root={tmp_path}", "--dry-run", str(DEPLOY / "sysusers.d" / "ka-exporter.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert "Creating user 'ka-exporter'" in r.stdout + r.stderr


POLICY = DEPLOY / "dbus" / "ka-exporter-keepalived.conf"


def test_dbus_policy_allows_only_the_read_only_methods():
    root = ET.parse(POLICY).getroot()  # noqa: S314 - our own file
    assert root.tag == "busconfig"
    policies = root.findall("policy")
    assert [p.attrib for p in policies] == [{"user": "ka-exporter"}]
    rules = policies[0]
    assert {r.tag for r in rules} == {"allow"}
    allowed = {(r.get("send_interface"), r.get("send_member")) for r in rules}
    assert ("org.keepalived.Vrrp1.Vrrp", "PrintData") in allowed
    assert ("org.keepalived.Vrrp1.Vrrp", "PrintStats") in allowed
    assert all(r.get("send_destination") == "org.keepalived.Vrrp1" for r in rules)
    assert all(r.get("send_member") for r in rules)  # never a whole interface
    assert not any(m in {"ReloadConfig", "CreateInstance", "DestroyInstance", "SendGarp"} for _, m in allowed)


PROBE = """
import json, sys
from jeepney import DBusAddress, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields
from ka_exporter.sources.dbus import DbusSource
from ka_exporter.store import Store

address = sys.argv[1]
store = Store(hostname="probe")
src = DbusSource(store, address=address)
src.run_once()
health = store.health("dbus")
out = {"uid": __import__("os").getuid(), "up": bool(health and health.up),
       "instances": len(store.snapshot().instances or ()),
       "data": src.request_dump("data"), "stats": src.request_dump("stats")}
src.stop()
with open_dbus_connection(bus=address) as conn:
    vrrp = DBusAddress("/org/keepalived/Vrrp1/Vrrp", bus_name="org.keepalived.Vrrp1",
                       interface="org.keepalived.Vrrp1.Vrrp")
    reply = conn.send_and_get_reply(new_method_call(vrrp, "ReloadConfig"), timeout=5)
    out["reload"] = (str(reply.header.fields.get(HeaderFields.error_name))
                     if reply.header.message_type == MessageType.error else "done")
print(json.dumps(out))
"""


def probe_as_nobody(address: str) -> dict[str, object]:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    r = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-c", PROBE, address],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.splitlines()[-1]))


def reload_bus(address: str) -> None:
    """org.freedesktop.DBus.ReloadConfig: returns once the bus has re-read its configuration."""
    from jeepney import DBusAddress, MessageType, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    bus = DBusAddress(
        "/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus"
    )
    with open_dbus_connection(bus=address) as conn:
        reply = conn.send_and_get_reply(new_method_call(bus, "ReloadConfig"), timeout=10)
        assert reply.header.message_type == MessageType.method_return, reply.body


@pytest.mark.lab
def test_dbus_policy_on_a_real_bus_with_real_keepalived():
    """Unprivileged: instance states without the policy; the dumps only with it; ReloadConfig never."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("dbus-daemon", "setpriv", "ip")):
        pytest.skip("needs root, dbus-daemon, setpriv, iproute2")
    from ka_exporter.lab import Lab

    with Lab(profile="fast", dbus=True) as lab:
        node = lab.nodes["a"]
        assert node.dbus_address is not None
        before = probe_as_nobody(node.dbus_address)
        assert before["uid"] == 65534
        assert before["up"] is True  # keepalived's own policy: anyone reads names and states
        assert before["instances"] >= 1
        assert before["data"] is False
        assert before["stats"] is False
        assert before["reload"] == "org.freedesktop.DBus.Error.AccessDenied"

        # Install the policy as deploy/ ships it, for this test's unprivileged user.
        policy = node.dbus_config.parent / "ka-exporter-keepalived.conf"
        policy.write_text(POLICY.read_text().replace('user="ka-exporter"', 'user="nobody"'))
        conf = node.dbus_config.read_text()
        node.dbus_config.write_text(
            conf.replace("</busconfig>", f"  <include>{policy}</include>\n</busconfig>")
        )
        reload_bus(node.dbus_address)

        after = probe_as_nobody(node.dbus_address)
        assert after["up"] is True
        assert after["data"] is True
        assert after["stats"] is True
        assert after["reload"] == "org.freedesktop.DBus.Error.AccessDenied"


def test_daemonset_is_sane():
    ds = yaml.safe_load((DEPLOY / "kubernetes" / "daemonset.yaml").read_text())
    assert ds["apiVersion"] == "apps/v1"
    assert ds["kind"] == "DaemonSet"
    assert ds["metadata"]["name"]
    spec = ds["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["hostPID"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # the one that works with hostNetwork
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"])
    (container,) = pod["containers"]
    assert container["image"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes
        assert mount.get("readOnly") is True
    ports = {p["name"]: p for p in container["ports"]}
    port = ports["metrics"]["containerPort"]
    assert any(a == f"--web.listen-address=:{port}" for a in container["args"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] in ports
    # Every path the args name is inside a mount.
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for arg in container["args"]:
        _, _, value = arg.partition("=")
        if value.startswith("/") or value.startswith("unix:path=/"):
            path = value.removeprefix("unix:path=")
            assert any(path == m or path.startswith(m + "/") for m in mounts), arg
