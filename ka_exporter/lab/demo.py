"""`ka-exporter demo`: a real keepalived pair in namespaces, watched by real ka-exporter processes."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.settings import DEFAULT_PORT
from ka_exporter.testing import free_port, stop_process


@dataclass
class Watcher:
    """One ka-exporter process watching one lab namespace."""

    label: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


def base_args(netns: str, port: int, name: str) -> list[str]:
    """A ka-exporter process serving on loopback PORT and watching network namespace NETNS."""
    return [
        sys.executable,
        "-m",
        "ka_exporter",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--netns",
        netns,
        "--hostname",
        name,
    ]


def exporter_args(node: Any, port: int, name: str) -> list[str]:
    """A ka-exporter process serving on PORT and watching one lab node (also used by the tests)."""
    return base_args(node.netns, port, name) + node_args(node)


def node_args(node: Any) -> list[str]:
    """The flags that point ka-exporter at one lab node's keepalived (`--netns` aside)."""
    args: list[str] = []
    if getattr(node, "config_path", None):
        args += ["--keepalived.config", str(node.config_path)]
    if getattr(node, "pidfile", None):
        args += ["--keepalived.pid-file", str(node.pidfile)]
    if getattr(node, "tmpdir", None):
        args += ["--keepalived.dumps-dir", str(node.tmpdir)]
    if getattr(node, "dbus_address", None):
        args += ["--keepalived.dbus-address", str(node.dbus_address)]
    return args


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=3) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


STATE = {0.0: "INIT", 1.0: "BACKUP", 2.0: "MASTER", 3.0: "FAULT", 4.0: "STOP"}


def summary(w: Watcher) -> str:
    """One line a newcomer can read: keepalived up, each instance's state, the VIPs this node holds."""
    try:
        m = scrape(w.url)
    except OSError as exc:
        return f"{w.label:<9} exporter not answering ({exc})"
    up = {v for _, v in m.get("keepalived_up", [])}
    states = [
        f"{lab.get('iname')}={STATE.get(v, '?')}"
        for lab, v in sorted(m.get("keepalived_vrrp_state", []), key=lambda x: x[0].get("iname", ""))
    ]
    vips = sorted(lab["vip"] for lab, v in m.get("keepalived_vip_status", []) if v == 1.0)
    wire = [f"vrid {lab['vrid']}: {int(v)} master(s)" for lab, v in m.get("keepalived_wire_masters", [])]
    split = any(v == 1.0 for _, v in m.get("keepalived_wire_split_brain", []))
    parts = [f"{w.label:<9}"]
    if up:
        parts.append(f"keepalived {'up' if 1.0 in up else 'DOWN'}")
    if states:
        parts.append(" ".join(states))
    if m.get("keepalived_vip_status"):
        parts.append("holds " + (", ".join(vips) if vips else "no VIP"))
    if wire:
        parts.append("wire: " + "; ".join(wire) + (" SPLIT BRAIN" if split else ""))
    return " | ".join(parts)


@contextlib.contextmanager
def watchers(lab: Any, workdir: Path, base_port: int = 0) -> Iterator[list[Watcher]]:
    """One exporter per node on ports base_port, base_port+1, ..., then the observer's.

    base_port 0 picks a free port for each (tests running in parallel).
    """
    started: list[Watcher] = []

    def next_port(previous: int | None) -> int:
        if base_port == 0:
            return free_port()
        return base_port if previous is None else previous + 1

    try:
        port = next_port(None)
        for name, node in sorted(lab.nodes.items()):
            log = workdir / f"exporter-{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    exporter_args(node, port, f"node-{name}"), stdout=out, stderr=subprocess.STDOUT
                )
            started.append(Watcher(f"node-{name}", port, proc, log))
            port = next_port(port)
        obs = lab.observer
        log = workdir / "exporter-observer.log"
        args = [
            *base_args(obs.netns, port, "observer"),
            "--keepalived.config",
            str(lab.nodes["a"].config_path),
            "--wire.interface",
            obs.interface,
            "--no-collector.process",
            "--no-collector.vips",
            "--no-collector.dumps",
            "--no-collector.dbus",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        started.append(Watcher("observer", port, proc, log))
        yield started
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in started:
            stop_process(w.proc, 5)


def wait_up(ws: list[Watcher], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for w in ws:
        while True:
            try:
                scrape(w.url)
                break
            except OSError:
                if w.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"exporter for {w.label} did not start: {w.log.read_text()[-500:]}"
                    ) from None
                time.sleep(0.1)


def run_demo(profile: str = "fast", seconds: float | None = None, base_port: int = DEFAULT_PORT) -> int:
    """Bring up the lab, start the exporters, print what they see until Ctrl-C (or `seconds`)."""
    from ka_exporter.lab import DEFAULT_NAME, Lab, known_labs

    stop = {"now": False}

    def _stop(_s: int, _f: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"ka-exporter demo: starting a keepalived pair ({profile} profile) in network namespaces...")
    name = DEFAULT_NAME if DEFAULT_NAME not in known_labs() else None
    with Lab(profile=profile, nodes=2, dbus=True, prefix=name) as lab:
        print(lab.status())
        workdir = Path(lab.workdir)
        with watchers(lab, workdir, base_port) as ws:
            wait_up(ws)
            time.sleep(1.0)  # let the wire see a few adverts
            print()
            for w in ws:
                print(f"  {w.label:<9} {w.url}")
            print()
            for w in ws:
                print(summary(w))
            print()
            hint = "" if lab.prefix == DEFAULT_NAME else f" --name {lab.prefix}"
            print(f"Try in another shell:  .venv/bin/ka-exporter lab failover{hint}")
            print(f"                       (or: lab split{hint}, lab heal{hint}, lab start-master{hint})")
            print("Ctrl-C stops the exporters and removes the lab.")
            started = time.monotonic()
            last = ""
            while not stop["now"]:
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                now = "\n".join(summary(w) for w in ws)
                if now != last:
                    print(time.strftime("%H:%M:%S"))
                    print(now)
                    last = now
                time.sleep(1.0)
    print("demo stopped; lab removed.")
    return 0
