"""Least privilege: the exporter really runs as an unprivileged user, with and without capabilities."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ka_exporter.linux import caps
from tests.conftest import REPO, parse_metrics, sample

NOBODY = 65534
SETPRIV = shutil.which("setpriv")

needs_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv (util-linux) to drop privileges"
)

# What /proc/self/status says for a process started by systemd with AmbientCapabilities=CAP_NET_RAW
# and CapabilityBoundingSet=CAP_NET_RAW CAP_KILL.
STATUS = """Name:\tpython3
Uid:\t998\t998\t998\t998
CapInh:\t0000000000002000
CapPrm:\t0000000000002000
CapEff:\t0000000000002000
CapBnd:\t0000000000002020
CapAmb:\t0000000000002000
NoNewPrivs:\t1
"""


def test_status_lines_decode_to_capability_names():
    c = caps.parse_status(STATUS)
    assert c.effective == {"CAP_NET_RAW"}
    assert c.ambient == {"CAP_NET_RAW"}
    assert c.bounding == {"CAP_NET_RAW", "CAP_KILL"}
    assert not caps.missing("net_raw", c)
    assert caps.missing("CAP_KILL", c)  # in the bounding set only: not usable
    assert caps.missing("cap_dac_read_search", c)
    assert caps.decode(1 << 45) == {"CAP_45"}  # a kernel newer than this table
    with pytest.raises(ValueError, match="unknown capability"):
        caps.normalize("CAP_FLY")


def test_explanation_is_one_line_with_what_why_and_how():
    c = caps.parse_status(STATUS)
    line = caps.explain("CAP_KILL", "signal keepalived for fresh dumps", "dumps", c)
    assert "\n" not in line
    assert line.startswith("dumps: needs CAP_KILL to signal keepalived for fresh dumps (")
    assert "AmbientCapabilities=CAP_KILL" in line
    assert f"setcap cap_kill+ep {os.path.realpath(sys.executable)}" in line
    assert "D-Bus" in line  # the alternative that needs no capability
    assert "bounding set" not in line  # CAP_KILL is in the bounding set here
    assert line.endswith("the other sources keep running")
    line = caps.explain("CAP_DAC_READ_SEARCH", "read keepalived's 0600 dumps", "dumps", c)
    assert "CapabilityBoundingSet must include CAP_DAC_READ_SEARCH" in line


# ------------------------------------------------------------------------- really unprivileged


def as_nobody(args: list[str], *, net_raw: bool, bound: bool = True, cwd: Path | None = None):
    """Run args as uid/gid 65534 with no groups, with CAP_NET_RAW ambient (or none at all)."""
    assert SETPRIV is not None
    cmd = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if net_raw:
        cmd += ["--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw"]
    else:
        cmd += ["--inh-caps=-all"]
    if not bound:
        cmd += ["--bounding-set=-net_raw"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd=cwd or REPO, env=env)


PROBE = """
import json, os
from ka_exporter.linux import caps
from ka_exporter.sources.capture import CaptureError, PacketSocket
out = {"uid": os.getuid(), "missing": caps.missing("CAP_NET_RAW"),
       "line": caps.require("CAP_NET_RAW", "open AF_PACKET sockets", "wire")}
try:
    PacketSocket("lo").sock.close()
    out["opened"] = True
except CaptureError as exc:
    out["opened"] = False
    out["error"] = str(exc)
print(json.dumps(out))
"""


@needs_setpriv
@pytest.mark.parametrize("net_raw", [False, True], ids=["without-net_raw", "with-net_raw"])
def test_capability_check_agrees_with_the_kernel(net_raw):
    """What caps.missing() says is what the kernel does when the wire opens its AF_PACKET socket."""
    r = as_nobody([sys.executable, "-c", PROBE], net_raw=net_raw)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == NOBODY
    assert out["opened"] is net_raw
    assert out["missing"] is (not net_raw)
    if net_raw:
        assert out["line"] is None
    else:
        assert out["line"].startswith("wire: needs CAP_NET_RAW to open AF_PACKET sockets (")
        assert "AmbientCapabilities=CAP_NET_RAW" in out["line"]
        assert "CAP_NET_RAW" in out["error"]


@needs_setpriv
def test_capability_outside_the_bounding_set_is_named():
    r = as_nobody([sys.executable, "-c", PROBE], net_raw=False, bound=False)
    out = json.loads(r.stdout)
    assert out["opened"] is False
    assert "CapabilityBoundingSet must include CAP_NET_RAW" in out["line"]


@needs_setpriv
def test_exporter_once_runs_unprivileged_with_its_other_sources(world_dir):
    """As nobody, without any capability: the process, vips and config sources all work."""
    conf = world_dir / "keepalived.conf"
    conf.write_text(
        "vrrp_instance VI_P {\n  interface lo\n  virtual_router_id 51\n  priority 100\n"
        "  authentication {\n    auth_type PASS\n    auth_pass kaT3st01\n  }\n"
        "  virtual_ipaddress {\n    192.0.2.51/32 dev lo\n  }\n}\n"
    )
    conf.chmod(0o644)
    out = world_dir / "textfile"
    out.mkdir()
    shutil.chown(out, NOBODY, NOBODY)
    r = as_nobody(
        [
            sys.executable,
            "-m",
            "ka_exporter",
            "--once",
            "--keepalived.config",
            str(conf),
            "--keepalived.pid-file",
            str(world_dir / "none.pid"),
            "--no-collector.wire",
            "--no-collector.l2",
            "--no-collector.dbus",
            "--no-collector.dumps",
            "--textfile.directory",
            str(out),
        ],
        net_raw=False,
        cwd=world_dir,
    )
    assert r.returncode == 0, r.stderr
    prom = out / "keepalived.prom"
    assert prom.stat().st_uid == NOBODY
    text = prom.read_text()
    m = parse_metrics(text)
    for source in ("process", "vips", "config"):
        assert sample(m, "ka_exporter_source_up", source=source) == 1.0, source
    assert sample(m, "keepalived_vip_status", hostname=_hostname(m), vip="192.0.2.51") == 0.0
    assert "kaT3st01" not in text
    assert "kaT3st01" not in r.stderr


def _hostname(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    for (name, labels), _ in m.items():
        if name == "keepalived_process_status":
            return dict(labels)["hostname"]
    raise AssertionError("no keepalived_process_status")


@needs_setpriv
@pytest.mark.parametrize("net_raw", [False, True], ids=["without-net_raw", "with-net_raw"])
def test_exporter_wire_source_without_and_with_net_raw(world_dir, net_raw):
    """Without CAP_NET_RAW the wire source says so in one line and the others keep running."""
    r = as_nobody(
        [
            sys.executable,
            "-m",
            "ka_exporter",
            "--once",
            "--keepalived.config",
            str(world_dir / "absent.conf"),
            "--no-collector.config",
            "--no-collector.dbus",
            "--no-collector.dumps",
            "--wire.interface",
            "lo",
            "--wire.listen-seconds",
            "0",
        ],
        net_raw=net_raw,
        cwd=world_dir,
    )
    m = parse_metrics(r.stdout)
    assert sample(m, "ka_exporter_source_up", source="process") == 1.0
    assert sample(m, "ka_exporter_source_up", source="vips") == 1.0
    assert sample(m, "ka_exporter_source_up", source="wire") == (1.0 if net_raw else 0.0)
    lines = [line for line in r.stderr.splitlines() if "CAP_NET_RAW" in line]
    if net_raw:
        assert lines == []
        assert r.returncode == 0
    else:
        assert len(lines) == 1, r.stderr
        assert "AmbientCapabilities=CAP_NET_RAW" in lines[0]
        assert r.returncode == 1
