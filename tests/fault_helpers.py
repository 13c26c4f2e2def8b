"""Helpers for the fault and load tests: a scraper that records every answer, and torn-scrape checks.

`Recorder` scrapes one exporter every ~50 ms in a background thread and keeps every answer (status,
parse result, problems). `check_exposition` says what is wrong with one exposition: not parsable, cut
short, a family or a series appearing twice, an instance appearing more than once in a family.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.testing import Poller

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Answer = tuple[float, int | None, str | None, str]  # (time answered, status, error, body)

#: The family the collector always renders last: its presence proves the body was not cut short.
LAST_FAMILY = "ka_exporter_scrape_duration_seconds"


def check_exposition(text: str, instances: tuple[str, ...] = ()) -> tuple[Metrics, list[str]]:
    """(samples, problems) of one /metrics body. No problems means: it parses with prometheus_client's
    parser, it is complete, every family and every series appears once, and every instance (`iname`
    label) appears at most once per sample name; the names in `instances` exactly once in
    keepalived_config_instance_info (exported from keepalived.conf whatever keepalived does)."""
    problems: list[str] = []
    metrics: Metrics = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:
        return {}, [f"does not parse: {type(exc).__name__}: {exc}"]
    if not text.endswith("\n"):
        problems.append("body does not end with a newline")
    seen_families: set[str] = set()
    for fam in families:
        if fam.name in seen_families:
            problems.append(f"family {fam.name} appears twice")
        seen_families.add(fam.name)
        per_instance: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in metrics:
                problems.append(f"series {s.name}{dict(key[1])} appears twice")
            metrics[key] = s.value
            if "iname" in s.labels:
                # an instance's identity in the family: everything but the labels that carry values
                # (tracked interfaces and VIPs are several per instance)
                rest = tuple(sorted((k, v) for k, v in s.labels.items() if k in ("interface", "vip")))
                ident = (s.name, s.labels["iname"], rest)
                per_instance[ident] = per_instance.get(ident, 0) + 1
        for (name, iname, _rest), count in per_instance.items():
            if count > 1:
                problems.append(f"instance {iname} appears {count} times in {name}")
    if LAST_FAMILY not in seen_families:
        problems.append(f"incomplete: no {LAST_FAMILY}")
    for iname in instances:
        n = sum(
            1
            for (name, labels) in metrics
            if name == "keepalived_config_instance_info" and dict(labels).get("iname") == iname
        )
        if n != 1:
            problems.append(f"instance {iname} appears {n} times in keepalived_config_instance_info")
    return metrics, problems


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` whose labels include `labels` (None if none; error if many)."""
    want = set(labels.items())
    found = [v for (n, lab), v in metrics.items() if n == name and want <= set(lab)]
    if len(found) > 1:
        raise AssertionError(f"{len(found)} samples of {name} match {labels}")
    return found[0] if found else None


@dataclass
class Scrape:
    """One answer (or failure) of the exporter, as the scraper saw it."""

    t: float  # time.monotonic() when the answer was complete
    status: int | None
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    metrics: Metrics = field(default_factory=dict)

    @property
    def good(self) -> bool:
        return self.status == 200 and self.error is None and not self.problems


def fetch(url: str, timeout: float = 5.0) -> Answer:
    """(time answered, status, error, body) of one GET, on a new connection."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = int(resp.status)
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        return time.monotonic(), exc.code, f"HTTP {exc.code}", ""
    except (OSError, http.client.HTTPException, UnicodeDecodeError) as exc:
        return time.monotonic(), None, f"{type(exc).__name__}: {exc}", ""
    return time.monotonic(), status, None, text


def checked(answer: Answer, instances: tuple[str, ...] = ()) -> Scrape:
    t, status, error, text = answer
    if error is not None:
        return Scrape(t, status, error=error)
    metrics, problems = check_exposition(text, instances)
    return Scrape(t, status, problems=problems, metrics=metrics)


def scrape_once(url: str, instances: tuple[str, ...] = (), timeout: float = 5.0) -> Scrape:
    return checked(fetch(url, timeout), instances)


class Recorder(Poller[Scrape]):
    """Scrapes `url` every `every` seconds in a thread and records every answer, checked
    (ka_exporter.testing's Poller: the Sampler's loop, with the exposition checks of check_exposition).

    `with Recorder(url) as rec:` starts and stops it. `rec.wait(pred, since, timeout)` returns how long
    after `since` (a time.monotonic()) the first recorded scrape satisfying `pred` was answered.
    """

    def __init__(self, url: str, every: float = 0.05, instances: tuple[str, ...] = ()) -> None:
        super().__init__(every, name="recorder")
        self.url = url
        self.every = every
        self.instances = instances

    def take(self) -> Scrape:
        return scrape_once(self.url, self.instances)

    def since(self, t0: float) -> list[Scrape]:
        return [r for r in self.snapshot() if r.t >= t0]

    def bad(self, t0: float = 0.0) -> list[Scrape]:
        """Every scrape since `t0` that was not a complete, consistent 200."""
        return [r for r in self.since(t0) if not r.good]

    def latest(self) -> Scrape | None:
        records = self.snapshot()
        return records[-1] if records else None

    def wait(self, pred: Callable[[Metrics], bool], since: float, timeout: float = 10.0) -> float | None:
        """Seconds from `since` to the first good scrape (answered after `since`) where `pred` holds;
        None if none within `timeout`."""
        left = since + timeout - time.monotonic()
        r = self.wait_record(lambda r: r.t >= since and r.good and pred(r.metrics), max(left, 0.0))
        return None if r is None else r.t - since


@dataclass
class LoadResult:
    """What `run_load` got: every answer, its latency, and the wall time of the run; `check()` parses."""

    answers: list[Answer]
    latencies: list[float]
    seconds: float

    def check(self, instances: tuple[str, ...] = ()) -> list[Scrape]:
        return [checked(a, instances) for a in self.answers]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_load(url: str, total: int, threads: int) -> LoadResult:
    """`threads` scrapers hitting `url` back to back (a new connection each time) until `total` scrapes
    were made. Every answer is kept, to be checked afterwards (`LoadResult.check`): prometheus_client's
    parser takes ~8 ms per scrape, which would otherwise make the scrapers, not the exporter, the
    bottleneck on a 2-core machine."""
    lock = threading.Lock()
    answers: list[Answer] = []
    latencies: list[float] = []
    left = [total]

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            t0 = time.monotonic()
            answer = fetch(url, timeout=30.0)
            with lock:
                answers.append(answer)
                latencies.append(answer[0] - t0)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return LoadResult(answers, latencies, time.monotonic() - started)


class Failovers:
    """Moves the lab's master at once and then every `every` seconds, in a thread: SIGTERM the master
    (the backup takes over), then start it again (it preempts back). `with Failovers(lab, 2.0) as f:`;
    f.done counts the moves made."""

    def __init__(self, lab: Any, every: float) -> None:
        self.lab = lab
        self.every = every
        self.done = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failovers", daemon=True)

    def __enter__(self) -> Failovers:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        started = time.monotonic()
        step = 0
        while True:
            # the first move at once, then one every `every` seconds
            if self._stop.wait(max(0.0, started + step * self.every - time.monotonic())):
                return
            step += 1
            try:
                if self.lab.stopped_master is None:
                    self.lab.failover()
                else:
                    self.lab.start_master()
                self.done += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
