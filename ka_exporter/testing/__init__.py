"""Helpers the tests, the benches and the lab demo share: one definition of each.

A free loopback port, a wait that says whether its condition came true (callers assert it), a process
started and stopped the same way everywhere, the real exporter as a subprocess, scrapes parsed into
samples, and a :class:`Sampler` that polls an exporter in the background so that a test can ask what
it saw (and when) after the fact. Nothing here is imported by the exporter itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from prometheus_client.parser import text_string_to_metric_families

EXPORTER = [sys.executable, "-m", "ka_exporter"]

#: {(sample name, sorted labels): value}
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- ports and waits -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], object], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll `pred` every `step` seconds for up to `timeout`; True as soon as it is truthy.

    Returns the last answer rather than raising, so every caller asserts it (with its own message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


# -- processes -------------------------------------------------------------------------------------------


def unix_accepts(path: Path) -> bool:
    """True once a server accepts connections on the Unix socket at `path`. Its file exists from
    bind(), before listen(): connecting in between is refused (a private dbus-daemon starting)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL and reap. A no-op for a process already gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Process:
    """A process its caller started (never anything else), output to `log`; `stop()` ends and reaps it."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        **popen: Any,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        with open(log, "wb") as out:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                **popen,
            )
        self.pid = self.popen.pid
        if stdin is not None and self.popen.stdin is not None:
            self.popen.stdin.write(stdin)
            self.popen.stdin.close()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.popen, timeout)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# -- scrapes ----------------------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether `url` answers at all (any status urllib accepts)."""
    try:
        scrape(url, timeout=timeout)
    except OSError:
        return False
    return True


def parse_metrics(text: str) -> Metrics:
    """Exposition text -> {(sample name, sorted labels): value}."""
    out: Metrics = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


# -- the exporter as a subprocess -------------------------------------------------------------------------


class RunningExporter:
    def __init__(self, proc: subprocess.Popen[Any], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> Metrics:
        return parse_metrics(scrape(self.url))

    def text(self) -> str:
        return scrape(self.url)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(
    proc: subprocess.Popen[Any],
    ready: Callable[[], bool],
    logs: Callable[[], str],
    timeout: float = 15.0,
) -> None:
    """Return once `ready()`; raise AssertionError with the log if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited {proc.returncode}: {logs()}")
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"exporter did not come up: {logs()}")


def start_exporter(
    tmp: Path,
    *args: str,
    wait: bool = True,
    argv: Sequence[str] | None = None,
    port: int | None = None,
    ready: str = "healthy",
) -> RunningExporter:
    """The real exporter on 127.0.0.1:port (a free one by default) with `args`, its output to a log in
    `tmp`. `argv` replaces the default command line (`python -m ka_exporter --web.listen-address ...`).
    With `wait`, return once it is ready: `ready="healthy"` (/-/healthy answers) or `"listening"` (its
    log says "listening on", for TLS and auth set-ups); raise with the log if it exits first."""
    port = free_port() if port is None else port
    log = tmp / f"exporter-{port}.log"
    command = (
        list(argv) if argv is not None else [*EXPORTER, "--web.listen-address", f"127.0.0.1:{port}", *args]
    )
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    exp = RunningExporter(proc, port, log)
    if wait:

        def up() -> bool:
            if ready == "healthy":
                return answers(f"http://127.0.0.1:{port}/-/healthy")
            return "listening on" in exp.logs()

        try:
            wait_ready(proc, up, exp.logs, timeout=15.0 if ready == "healthy" else 20.0)
        except AssertionError:
            stop_exporter(exp)
            raise
    return exp


def stop_exporter(exp: RunningExporter, timeout: float = 10.0) -> None:
    stop_process(exp.proc, timeout)


# -- background pollers ----------------------------------------------------------------------------------


R = TypeVar("R")


class Poller(Generic[R]):
    """Call `take()` every `step` seconds on a thread until `stop()` (or the end of its `with` block)
    and keep what it returns, oldest first (at most `keep`). Subclasses say what one look is."""

    def __init__(self, step: float = 0.02, keep: int = 100_000, name: str = "poller") -> None:
        self.step = step
        self.keep = keep
        self.records: list[R] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def take(self) -> R:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            record = self.take()
            with self._cond:
                self.records.append(record)
                if len(self.records) > self.keep:
                    del self.records[: len(self.records) - self.keep]
                self._cond.notify_all()
            self._stop.wait(max(0.0, self.step - (time.monotonic() - started)))

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[R]:
        with self._cond:
            return list(self.records)

    def wait_record(self, pred: Callable[[R], bool], timeout: float, start: int = 0) -> R | None:
        """The first record (from index `start` on) satisfying `pred`, waiting up to `timeout` seconds
        for new ones; None if there is none by then (assert it)."""
        deadline = time.monotonic() + timeout
        checked = start
        with self._cond:
            while True:
                for r in self.records[checked:]:
                    if pred(r):
                        return r
                checked = len(self.records)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))


@dataclass(frozen=True)
class Seen:
    """One scrape a Sampler made: when (time.monotonic(), after the answer) and what (None: it failed)."""

    at: float
    metrics: Metrics | None


class Sampler(Poller[Seen]):
    """Scrape an exporter's `url` every `step` seconds in the background and keep the parsed samples.

    Tests ask afterwards: `first(pred)` (when it first held), `ever(pred)`, `latest()`, or wait with
    `wait_for(pred, timeout)`; a wait on a sampler is asserted like any other wait."""

    def __init__(self, url: str, step: float = 0.02, timeout: float = 1.0, keep: int = 100_000) -> None:
        super().__init__(step, keep, name=f"sampler {url}")
        self.url = url
        self.timeout = timeout

    def take(self) -> Seen:
        try:
            m: Metrics | None = parse_metrics(scrape(self.url, timeout=self.timeout))
        except (OSError, ValueError):
            m = None
        return Seen(time.monotonic(), m)

    def history(self, since: float = 0.0) -> list[Seen]:
        return [s for s in self.snapshot() if s.at >= since]

    def latest(self) -> Metrics | None:
        for s in reversed(self.snapshot()):
            if s.metrics is not None:
                return s.metrics
        return None

    def first(self, pred: Callable[[Metrics], bool], since: float = 0.0) -> float | None:
        """When (monotonic) a successful scrape at or after `since` first satisfied `pred`; None: never."""
        for s in self.history(since):
            if s.metrics is not None and pred(s.metrics):
                return s.at
        return None

    def ever(self, pred: Callable[[Metrics], bool], since: float = 0.0) -> bool:
        return self.first(pred, since) is not None

    def wait_for(self, pred: Callable[[Metrics], bool], timeout: float, since: float = 0.0) -> float | None:
        """Wait up to `timeout` for a scrape at or after `since` satisfying `pred`; its time, or None."""

        def good(s: Seen) -> bool:
            return s.at >= since and s.metrics is not None and pred(s.metrics)

        seen = self.wait_record(good, timeout)
        return None if seen is None else seen.at
