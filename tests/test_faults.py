"""Faults under a running, continuously scraped exporter (issue 7, reliability).

One real keepalived pair (lab profile "fast": VRRPv3, advert_int 0.1, D-Bus on) and one real ka-exporter
process watching node a with its default flags, as `ka-exporter demo` runs it. During every test a thread
scrapes /metrics every 50 ms and records every answer. For each fault the test asserts:

- every scrape answered 200 and is consistent (parses with prometheus_client's parser, complete, every
  family and series once, every instance once per family: see tests/fault_helpers.py);
- the fault shows in the metrics, and the recovery once the cause is gone (each within a generous
  timeout; the measured latencies are printed, `pytest -s`);
- the exporter process is the one started at the beginning (nothing needed a restart).

The lab and the exporter are shared by the tests of this module (an exporter takes ~4 s to start: its
first wire pass listens for 3 s); each test starts by waiting for the healthy baseline and leaves the lab
as it found it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ka_exporter.lab import Lab
from ka_exporter.lab.demo import exporter_args, node_args
from ka_exporter.lab.system import spawn
from tests.conftest import free_port, scrape, sh, stop_process, unique
from tests.fault_helpers import Metrics, Recorder, check_exposition, value

pytestmark = pytest.mark.lab

VISIBLE = 10.0  # generous timeouts; the measured latencies are printed and reported, not asserted
LATENCIES: dict[str, float] = {}


@dataclass
class Rig:
    lab: Lab
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def node(self):  # the watched node
        return self.lab.nodes["a"]

    @property
    def iname(self) -> str:
        return self.lab.instances[0].name

    @property
    def vip(self) -> str:
        return self.lab.vips[0]

    def recorder(self) -> Recorder:
        return Recorder(self.url, every=0.05, instances=(self.iname,))

    def state(self, m: Metrics) -> float | None:
        return value(m, "keepalived_vrrp_state", iname=self.iname)

    def healthy(self, m: Metrics) -> bool:
        """keepalived up and MASTER holding its VIP on node a; every source up; the wire sees one master."""
        sources = {dict(_lab)["source"]: v for (n, _lab), v in m.items() if n == "ka_exporter_source_up"}
        return (
            value(m, "keepalived_up") == 1.0
            and self.state(m) == 2.0
            and value(m, "keepalived_vip_status", vip=self.vip) == 1.0
            and value(m, "keepalived_vrrp_vip_mismatch", iname=self.iname) == 0.0
            and value(m, "keepalived_wire_masters", interface="eth0") == 1.0
            and set(sources) == {"config", "process", "vips", "wire", "dbus", "dumps", "l2"}
            and all(v == 1.0 for v in sources.values())
        )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("faults")
    with Lab(profile="fast", nodes=2, dbus=True) as lab:
        port = free_port()
        log = tmp / "exporter.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                exporter_args(lab.nodes["a"], port, "node-a"), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            r = Rig(lab, proc, port, log)
            assert lab.wait_for(lambda: _answers(r.url), 20.0), log.read_text()
            yield r
        finally:
            stop_process(proc)
    if LATENCIES:
        print("\nfault latencies (ms): " + json.dumps({k: round(v * 1000) for k, v in LATENCIES.items()}))


def _answers(url: str) -> bool:
    try:
        scrape(url, timeout=1)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def watched(rig: Rig) -> Iterator[Recorder]:
    """Wait for the healthy baseline, record every scrape, and check the invariants at the end."""
    assert rig.proc.poll() is None, rig.log.read_text()
    try:
        with rig.recorder() as rec:
            t0 = time.monotonic()
            assert rec.wait(rig.healthy, t0, 15.0) is not None, f"no healthy baseline: {_last(rec)}"
            yield rec
    finally:
        restore(rig)
    bad = rec.bad()
    assert not bad, f"{len(bad)} bad scrapes of {len(rec.records)}: {bad[:3]}"
    assert len(rec.records) > 20
    assert rig.proc.poll() is None, f"the exporter exited: {rig.log.read_text()[-2000:]}"
    assert "Traceback" not in rig.log.read_text()


def restore(rig: Rig) -> None:
    """Put node a back as the lab built it, whatever a (failed) test left: its bus, eth0, TMPDIR, keepalived."""
    lab, node = rig.lab, rig.node
    new_bus = node.dbus_proc is None or not node.dbus_proc.alive()
    if new_bus:
        start_dbus(lab, "a")
    if subprocess.run(["ip", "-n", node.netns, "link", "show", "eth0"], capture_output=True).returncode:
        recreate_eth0(lab)
    sh("ip", "-n", node.netns, "link", "set", "eth0", "up")
    node.tmpdir.mkdir(exist_ok=True)
    if not node.running():
        lab.start("a")
    elif new_bus:
        lab.restart("a")  # keepalived 2.2.7 registers on a bus only when it starts


def _last(rec: Recorder) -> str:
    last = rec.latest()
    if last is None:
        return "no scrape"
    keep = ("keepalived_up", "keepalived_vrrp_state", "keepalived_vip_status", "ka_exporter_source_up")
    return str({k: v for k, v in last.metrics.items() if k[0].startswith(keep) or "wire_masters" in k[0]})


def measure(rec: Recorder, label: str, pred: Callable[[Metrics], bool], since: float) -> float:
    took = rec.wait(pred, since, VISIBLE)
    assert took is not None, f"{label}: not seen within {VISIBLE:g} s; last scrape: {_last(rec)}"
    LATENCIES[label] = took
    print(f"{label}: {took * 1000:.0f} ms")
    return took


# --------------------------------------------------------------------------------------------------
# keepalived itself
# --------------------------------------------------------------------------------------------------


def test_keepalived_sigkill_and_restart(rig: Rig) -> None:
    lab = rig.lab
    with watched(rig) as rec:
        restarts = value(rec.latest().metrics, "keepalived_process_restarts_total")  # type: ignore[union-attr]
        t0 = time.monotonic()
        lab.stop("a", signal.SIGKILL)
        # keepalived gone; the VIP it could not remove is still here, and that is a mismatch
        measure(
            rec,
            "sigkill: keepalived_up 0",
            lambda m: (
                value(m, "keepalived_up") == 0.0
                and value(m, "keepalived_process_status", hostname="node-a") == 0.0
            ),
            t0,
        )
        measure(
            rec,
            "sigkill: dbus source down, stale VIP flagged",
            lambda m: (
                value(m, "ka_exporter_source_up", source="dbus") == 0.0
                and value(m, "keepalived_vip_status", vip=rig.vip) == 1.0
                and value(m, "keepalived_vrrp_vip_mismatch", iname=rig.iname) == 1.0
            ),
            t0,
        )
        t1 = time.monotonic()
        lab.start("a")
        measure(rec, "sigkill: recovery keepalived_up 1", lambda m: value(m, "keepalived_up") == 1.0, t1)
        measure(rec, "sigkill: recovery MASTER, all sources up", rig.healthy, t1)
        m = rec.latest().metrics  # type: ignore[union-attr]
        assert value(m, "keepalived_process_restarts_total") == (restarts or 0.0) + 1.0


def test_pid_file_names_another_process_then_a_new_keepalived(rig: Rig) -> None:
    """The pid file names a process that is not keepalived (keepalived gone): reported, never signalled;
    then a new keepalived (new pid, pid file rewritten) is picked up."""
    lab, node = rig.lab, rig.node
    foreign = subprocess.Popen(["ip", "netns", "exec", node.netns, "sleep", "120"])
    try:
        assert lab.wait_for(lambda: Path(f"/proc/{foreign.pid}/comm").read_text().strip() == "sleep", 5.0)
        with watched(rig) as rec:
            m = rec.latest().metrics  # type: ignore[union-attr]
            restarts = value(m, "keepalived_process_restarts_total")
            started = value(m, "keepalived_process_start_time_seconds")
            t0 = time.monotonic()
            node.pidfile.write_text(f"{foreign.pid}\n")
            lab.stop("a", signal.SIGKILL)
            measure(
                rec,
                "pidfile: foreign pid reported, keepalived_up 0",
                lambda m: (
                    value(m, "keepalived_up") == 0.0
                    and value(m, "ka_exporter_source_up", source="process") == 0.0
                ),
                t0,
            )
            # The D-Bus source saw keepalived leave the bus and had the dumps refreshed: the dump source
            # read the pid file and failed, and must not have signalled that pid (SIGUSR1 kills `sleep`).
            measure(
                rec,
                "pidfile: dump refresh refused the foreign pid",
                lambda m: value(m, "ka_exporter_source_up", source="dumps") == 0.0,
                t0,
            )
            time.sleep(1.0)
            assert foreign.poll() is None, "the process named by the pid file was signalled"
            assert "which is not keepalived" in rig.log.read_text()
            t1 = time.monotonic()
            lab.start("a")  # a new keepalived rewrites the pid file with its own pid
            measure(rec, "pidfile: new keepalived pid picked up", rig.healthy, t1)
            m = rec.latest().metrics  # type: ignore[union-attr]
            assert value(m, "keepalived_process_restarts_total") == (restarts or 0.0) + 1.0
            assert value(m, "keepalived_process_start_time_seconds") != started
        assert foreign.poll() is None
    finally:
        foreign.kill()
        foreign.wait(5)


def start_dbus(lab: Lab, node: str) -> None:
    """Start a new dbus-daemon for `node` on the same socket (as tests/test_dbus_source.py does)."""
    n = lab.nodes[node]
    n.dbus_socket.unlink(missing_ok=True)
    n.dbus_proc = spawn(
        ["dbus-daemon", f"--config-file={n.dbus_config}", "--nofork", "--nopidfile"], n.dbus_log
    )
    lab.save_state()  # so that lab.down() stops the new daemon too
    assert lab.wait_for(n.dbus_socket.exists, 5.0)


def test_dbus_daemon_restarted(rig: Rig) -> None:
    """The bus goes away: the D-Bus source says so and keepalived's state still follows reality (from
    the dumps, not D-Bus's last word). The bus comes back without keepalived (2.2.7 re-registers only when
    restarted); keepalived is restarted: the D-Bus source is back."""
    lab, ns = rig.lab, rig.node.netns
    with watched(rig) as rec:
        t0 = time.monotonic()
        assert rig.node.dbus_proc is not None
        rig.node.dbus_proc.stop()
        measure(
            rec,
            "dbus: bus stopped, source_up 0",
            lambda m: value(m, "ka_exporter_source_up", source="dbus") == 0.0,
            t0,
        )
        # A transition while the bus is away: the state must follow it.
        t1 = time.monotonic()
        sh("ip", "-n", ns, "link", "set", "eth0", "down")
        measure(rec, "dbus: bus away, FAULT seen (dumps)", lambda m: rig.state(m) == 3.0, t1)
        t2 = time.monotonic()
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        measure(
            rec,
            "dbus: bus away, MASTER again seen (dumps)",
            lambda m: rig.state(m) == 2.0 and value(m, "keepalived_vip_status", vip=rig.vip) == 1.0,
            t2,
        )
        time.sleep(max(0.0, t0 + 4.0 - time.monotonic()))  # the bus stays away for 4 s in all
        start_dbus(lab, "a")
        t3 = time.monotonic()
        lab.restart("a")
        measure(rec, "dbus: bus back, keepalived restarted, source_up 1", rig.healthy, t3)
        assert all(
            r.metrics.get(("ka_exporter_source_up", (("source", "dbus"),))) == 0.0
            for r in rec.since(t0 + 0.5)
            if r.t < t3
        )


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------


def test_link_down_is_fault(rig: Rig) -> None:
    ns = rig.node.netns
    with watched(rig) as rec:
        t0 = time.monotonic()
        sh("ip", "-n", ns, "link", "set", "eth0", "down")
        try:
            measure(
                rec,
                "link down: FAULT, VIP gone",
                lambda m: rig.state(m) == 3.0 and value(m, "keepalived_vip_status", vip=rig.vip) == 0.0,
                t0,
            )
            # this node hears nobody on a down link: the wire has no master for the VRID
            measure(
                rec,
                "link down: wire no_master",
                lambda m: value(m, "keepalived_wire_no_master", interface="eth0") == 1.0,
                t0,
            )
        finally:
            t1 = time.monotonic()
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        measure(rec, "link down: recovery", rig.healthy, t1)


def recreate_eth0(lab: Lab, name: str = "a") -> None:
    """Re-create node `name`'s eth0 exactly as the lab builds it (ka_exporter/lab/core.py)."""
    node = lab.nodes[name]
    num = list(lab.nodes).index(name) + 1
    sh(
        "ip",
        "link",
        "add",
        f"p-{name}",
        "netns",
        lab.bridge_netns,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        node.netns,
    )
    sh("ip", "-n", lab.bridge_netns, "link", "set", f"p-{name}", "master", "br0", "up")
    sh("ip", "-n", node.netns, "link", "set", "eth0", "address", lab.addressing.mac(num))
    sh("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
    sh("ip", "-n", node.netns, "link", "set", "eth0", "up")


def test_interface_deleted_and_recreated(rig: Rig) -> None:
    lab, ns = rig.lab, rig.node.netns
    with watched(rig) as rec:
        t0 = time.monotonic()
        sh("ip", "-n", ns, "link", "del", "eth0")
        try:
            measure(
                rec,
                "eth0 deleted: FAULT, VIP gone",
                lambda m: rig.state(m) == 3.0 and value(m, "keepalived_vip_status", vip=rig.vip) == 0.0,
                t0,
            )
            measure(
                rec,
                "eth0 deleted: wire source down",
                lambda m: value(m, "ka_exporter_source_up", source="wire") == 0.0,
                t0,
            )
        finally:
            t1 = time.monotonic()
            recreate_eth0(lab)
        measure(
            rec,
            "eth0 re-created: MASTER, VIP back",
            lambda m: rig.state(m) == 2.0 and value(m, "keepalived_vip_status", vip=rig.vip) == 1.0,
            t1,
        )
        measure(
            rec,
            "eth0 re-created: wire source up",
            lambda m: value(m, "ka_exporter_source_up", source="wire") == 1.0,
            t1,
        )
        measure(rec, "eth0 re-created: recovery", rig.healthy, t1)


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------


def test_dump_directory_removed(rig: Rig) -> None:
    tmpdir = rig.node.tmpdir
    mode = tmpdir.stat().st_mode & 0o7777
    with watched(rig) as rec:
        t0 = time.monotonic()
        shutil.rmtree(tmpdir)
        try:
            measure(
                rec,
                "dump dir removed: dumps source down",
                lambda m: value(m, "ka_exporter_source_up", source="dumps") == 0.0,
                t0,
            )
            # keepalived's state is still known (D-Bus) and still exported
            assert rig.state(rec.latest().metrics) == 2.0  # type: ignore[union-attr]
        finally:
            t1 = time.monotonic()
            tmpdir.mkdir(mode=mode, exist_ok=True)
        measure(rec, "dump dir re-created: recovery", rig.healthy, t1)


def once(rig: Rig, directory: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`ka-exporter --once --textfile.directory DIR` against node a; (result, wall seconds)."""
    node = rig.node
    args = [
        sys.executable,
        "-m",
        "ka_exporter",
        "--once",
        "--textfile.directory",
        str(directory),
        "--hostname",
        "node-a",
        "--netns",
        node.netns,
        *node_args(node),
        "--wire.listen-seconds",
        "0.5",
    ]
    t0 = time.monotonic()
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return res, time.monotonic() - t0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (room for keepalived.prom, ~40 KiB, and its replacement), unmounted afterwards."""
    mnt = tmp_path / unique("tf")
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        sh("umount", "-l", str(mnt), check=False)


def _written_ok(rig: Rig, directory: Path) -> bytes:
    body = (directory / "keepalived.prom").read_bytes()
    metrics, problems = check_exposition(body.decode(), (rig.iname,))
    assert problems == []
    assert rig.state(metrics) == 2.0
    return body


def _one_error_line(res: subprocess.CompletedProcess[str], directory: Path, reason: str) -> str:
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if str(directory) in ln]
    assert len(lines) == 1, res.stdout + res.stderr
    assert reason in lines[0]
    assert "Traceback" not in res.stderr
    return lines[0]


def test_textfile_disk_full_and_read_only(rig: Rig, tiny_disk: Path) -> None:
    """--once with --textfile.directory on a full, then read-only, disk: exit 1 with one line naming the
    directory and the reason; the previous keepalived.prom is left whole and no temporary file is left
    behind; once the disk is usable again the next run writes a complete file."""
    res, took = once(rig, tiny_disk)
    assert res.returncode == 0, res.stderr
    LATENCIES["textfile: --once run"] = took
    before = _written_ok(rig, tiny_disk)
    assert len(before) > 4096  # more than a page: the disk filled below has less than that left
    # fill the disk
    filler = tiny_disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 1024)
    res, took = once(rig, tiny_disk)
    LATENCIES["textfile: --once run, disk full"] = took
    assert res.returncode == 1
    line = _one_error_line(res, tiny_disk, "No space left on device")
    print(f"disk full: {line}")
    assert (tiny_disk / "keepalived.prom").read_bytes() == before
    assert sorted(os.listdir(tiny_disk)) == ["filler", "keepalived.prom"]
    filler.unlink()
    res, _ = once(rig, tiny_disk)
    assert res.returncode == 0, res.stderr
    before = _written_ok(rig, tiny_disk)
    # read-only
    sh("mount", "-o", "remount,ro", str(tiny_disk))
    res, took = once(rig, tiny_disk)
    LATENCIES["textfile: --once run, read-only"] = took
    assert res.returncode == 1
    line = _one_error_line(res, tiny_disk, "Read-only file system")
    print(f"read-only: {line}")
    assert (tiny_disk / "keepalived.prom").read_bytes() == before
    sh("mount", "-o", "remount,rw", str(tiny_disk))
    res, _ = once(rig, tiny_disk)
    assert res.returncode == 0, res.stderr
    assert _written_ok(rig, tiny_disk) != before
    assert os.listdir(tiny_disk) == ["keepalived.prom"]
