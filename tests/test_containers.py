"""keepalived and ka-exporter in separate containers, as a container runtime makes them: each in its own
mount namespace (private /proc and /run; keepalived also a private /tmp), sharing the network namespace
(a pod, or Compose's `network_mode: service:keepalived`) and volumes; with and without a shared pid namespace
(`shareProcessNamespace: true` / `pid: service:keepalived`). The recipes are deploy/kubernetes/sidecar.yaml
and deploy/compose/docker-compose.yml; this builds the same shapes with unshare and nsenter."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ka_exporter.lab import Lab
from tests.conftest import REPO, free_port, in_netns, parse_metrics, sample, scrape, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

RUN_VOLUME = "/run/keepalived"  # the volume both containers mount at the same path (pid files, FIFO)


@dataclass
class Pod:
    lab: Lab
    netns: str
    conf: Path  # the ConfigMap: keepalived.conf, mounted read-only in both containers
    run: Path  # emptyDir at /run/keepalived in both containers
    tmp: Path  # emptyDir: keepalived's /tmp (its dumps), at this path in the exporter's container
    keepalived: subprocess.Popen[bytes] | None = None
    exporter: subprocess.Popen[bytes] | None = None
    port: int = 0

    def keepalived_pid(self) -> int:
        """keepalived's parent as the host sees it (a child of its container's init)."""
        assert self.keepalived is not None
        for child in psutil.Process(self.keepalived.pid).children(recursive=True):
            if child.name() == "keepalived" and psutil.Process(child.ppid()).name() != "keepalived":
                return child.pid
        raise AssertionError("keepalived did not start in its container")

    def init_pid(self) -> int:
        """The container's pid 1 (the pause process of a pod: keeps the namespace when keepalived dies)."""
        assert self.keepalived is not None
        return psutil.Process(self.keepalived.pid).children()[0].pid

    def metrics(self) -> dict:
        try:
            return in_netns(
                self.netns, lambda: parse_metrics(scrape(f"http://127.0.0.1:{self.port}/metrics"))
            )
        except OSError:
            return {}


def vip(pod: Pod) -> str:
    return pod.lab.vips[0]


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    """Node a of a fast lab, its keepalived replaced by a containerised one using the same config."""
    with Lab(profile="fast", nodes=2, dbus=False) as lab:
        a = lab.nodes["a"]
        lab.stop("a")
        base = Path(tempfile.mkdtemp(prefix="ka-pod-", dir="/var/tmp"))  # not under /tmp or /run
        base.chmod(0o755)
        conf, run, tmp = base / "conf", base / "run", base / "tmp"
        for d in (conf, run, tmp):
            d.mkdir()
        text = a.config_path.read_text()
        text = text.replace(
            "global_defs {", f"global_defs {{\n    vrrp_notify_fifo {RUN_VOLUME}/notify.fifo", 1
        )
        (conf / "keepalived.conf").write_text(text)
        p = Pod(lab=lab, netns=a.netns, conf=conf, run=run, tmp=tmp)
        try:
            yield p
        finally:
            _stop_containers(p)
            shutil.rmtree(base, ignore_errors=True)


def _stop_containers(p: Pod) -> None:
    for proc in (p.exporter, p.keepalived):
        if proc is not None and proc.poll() is None:
            # killing a container's pid 1 ends every process of its pid namespace
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            proc.kill()
            proc.wait(10)


def start_keepalived(pod: Pod, log: Path) -> None:
    script = (
        f"mount -t proc proc /proc && mount --bind {pod.tmp} /tmp && mount -t tmpfs tmpfs /run"
        f" && mkdir {RUN_VOLUME} && mount --bind {pod.run} {RUN_VOLUME}"
        f" && {{ env TMPDIR=/tmp keepalived --dont-fork --log-console --no-syslog -f {pod.conf}/keepalived.conf"
        f" --pid={RUN_VOLUME}/keepalived.pid --vrrp_pid={RUN_VOLUME}/vrrp.pid --checkers_pid={RUN_VOLUME}/checkers.pid &"
        # pid 1 stays and reaps, as a pod's pause container does: keepalived dying does not end the namespace
        " }; while true; do wait; sleep 0.2; done"
    )
    with open(log, "wb") as out:
        pod.keepalived = subprocess.Popen(
            ["ip", "netns", "exec", pod.netns, "unshare", "--pid", "--mount", "--fork", "--propagation", "private",
             "sh", "-c", script],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    assert wait_until((pod.run / "vrrp.pid").exists, 10), log.read_text()
    assert pod.lab.wait_for(lambda: pod.lab.master() == "a", 10), log.read_text()


def start_exporter(pod: Pod, log: Path, *, share_pid: bool, args: list[str]) -> None:
    """The exporter's container: private /proc and /run, the shared volume at /run/keepalived. Its /tmp
    stays the host's: the checkout and its virtualenv may live there (CI clones into a temporary
    folder), and the exporter must not depend on keepalived's /tmp anyway (it reads the volume)."""
    pod.port = free_port()
    script = (
        "mount -t proc proc /proc && mount -t tmpfs tmpfs /run"
        f" && mkdir {RUN_VOLUME} && mount --bind {pod.run} {RUN_VOLUME}"
        f" && exec {sys.executable} -m ka_exporter --web.listen-address 127.0.0.1:{pod.port} --hostname node-a"
        f" --keepalived.config {pod.conf}/keepalived.conf --keepalived.pid-file {RUN_VOLUME}/keepalived.pid "
        + " ".join(args)
    )
    target = ["nsenter", "-t", str(pod.init_pid()), "--net"]
    if share_pid:
        target += ["--pid", "--", "unshare", "--mount", "--propagation", "private"]
    else:
        target += ["--", "unshare", "--pid", "--fork", "--mount", "--propagation", "private"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        pod.exporter = subprocess.Popen(
            [*target, "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    assert wait_until(lambda: pod.metrics() != {}, 20, 0.2), log.read_text()


def test_sidecar_sharing_the_pid_namespace(pod: Pod, tmp_path: Path) -> None:
    """Kubernetes sidecar with shareProcessNamespace (Compose: pid: service:keepalived): everything works
    but the D-Bus view: the exporter sees keepalived's processes, signals it for dumps it reads from
    keepalived's /tmp volume, reads the FIFO from the shared volume, and sees the wire and the VIPs."""
    start_keepalived(pod, tmp_path / "keepalived.log")
    start_exporter(pod, tmp_path / "exporter.log", share_pid=True, args=[f"--keepalived.dumps-dir {pod.tmp}"])
    vrid = str(pod.lab.instances[0].vrid)

    def healthy() -> bool:
        m = pod.metrics()
        return (
            sample(m, "keepalived_up") == 1.0
            and sample(m, "keepalived_vrrp_state", iname="VI_1", intf="eth0", vrid=vrid) == 2.0
            and sample(m, "keepalived_vip_status", hostname="node-a", vip=vip(pod)) == 1.0
            and all(
                sample(m, "ka_exporter_source_up", source=s) == 1.0
                for s in ("process", "dumps", "fifo", "wire")
            )
        )

    assert wait_until(healthy, 20, 0.2), (tmp_path / "exporter.log").read_text()
    os.kill(pod.keepalived_pid(), signal.SIGKILL)
    assert wait_until(lambda: sample(pod.metrics(), "keepalived_up") == 0.0, 10, 0.1)


def test_separate_pid_namespaces_read_the_fifo(pod: Pod, tmp_path: Path) -> None:
    """Two containers that share the network and a volume but not the pid namespace (Compose's default,
    or two pods on the host network): the exporter cannot see or signal keepalived, so the process and
    dump sources are off; keepalived's state comes from its notify FIFO on the shared volume."""
    start_keepalived(pod, tmp_path / "keepalived.log")
    start_exporter(
        pod,
        tmp_path / "exporter.log",
        share_pid=False,
        args=["--no-collector.process", "--no-collector.dumps", "--no-collector.dbus"],
    )
    vrid = str(pod.lab.instances[0].vrid)

    def state() -> float | None:
        return sample(pod.metrics(), "keepalived_vrrp_state", iname="VI_1", intf="eth0", vrid=vrid)

    # the FIFO's backlog (keepalived wrote BACKUP then MASTER at start, nobody read) gives the state
    assert wait_until(lambda: state() == 2.0, 20, 0.2), (tmp_path / "exporter.log").read_text()
    os.kill(pod.keepalived_pid(), signal.SIGTERM)  # keepalived stops: its last FIFO lines say STOP
    assert wait_until(lambda: state() == 4.0, 10, 0.05), (tmp_path / "exporter.log").read_text()
    assert pod.lab.wait_for(lambda: pod.lab.master() == "b", 10)
    m = pod.metrics()
    assert sample(m, "ka_exporter_source_up", source="fifo") == 1.0
    assert sample(m, "ka_exporter_source_up", source="process") is None  # really off
