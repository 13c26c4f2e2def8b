"""Polling real exporters in a keepalived lab for the fused split-brain verdict (tests/test_fused_lab.py).

Each exporter is scraped every 50 ms by its own thread, as a fast operator's alerting would; every sample
keeps when its scrape started and ended, the fused verdict of the lab's VRID, its witnesses and (node
exporters) whether the node holds the lab's first VIP.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

POLL = 0.05
_LINE = re.compile(
    r"^(keepalived_split_brain(?:_witness)?|keepalived_vip_status|keepalived_wire_last_advert_timestamp_seconds"
    r"|keepalived_master_silent|keepalived_vips_unanswered|keepalived_wire_router_local)"
    r"\{([^}]*)\} (\S+)$",
    re.M,
)
#: The L2 witness probes each VIP every --l2.probe-interval (1 s by default): the acceptance gives it one
#: probe interval more than the wire's two advert intervals.
L2_PROBE = 1.0
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    split: float | None  # keepalived_split_brain for the VRID; None: not exported (or no answer)
    holds: float | None  # keepalived_vip_status for the VIP (node exporters)
    witnesses: frozenset[str]
    last_adverts: tuple[tuple[str, float], ...] = ()  # (source, last advert time) on the VRID
    silent: float | None = None  # keepalived_master_silent for the VRID
    unanswered: float | None = None  # keepalived_vips_unanswered for the VRID
    router_local: tuple[tuple[str, float], ...] = ()  # (source, keepalived_wire_router_local) on the VRID


@dataclass
class Poller:
    label: str
    url: str
    vrid: str
    vip: str
    samples: list[Sample] = field(default_factory=list)

    def poll_once(self) -> None:
        t0 = time.time()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            self.samples.append(Sample(t0, time.time(), None, None, frozenset()))
            return
        t1 = time.time()
        split = holds = None
        witnesses: set[str] = set()
        lasts: list[tuple[str, float]] = []
        local: list[tuple[str, float]] = []
        silent = unanswered = None
        for name, labels, value in _LINE.findall(text):
            lab = dict(_LABEL.findall(labels))
            if name == "keepalived_vip_status":
                if lab.get("vip") == self.vip:
                    holds = float(value)
            elif lab.get("vrid") == self.vrid:
                if name == "keepalived_wire_last_advert_timestamp_seconds":
                    lasts.append((lab["source"], float(value)))
                elif name == "keepalived_wire_router_local":
                    local.append((lab["source"], float(value)))
                elif name == "keepalived_master_silent":
                    silent = float(value)
                elif name == "keepalived_vips_unanswered":
                    unanswered = float(value)
                elif name == "keepalived_split_brain":
                    split = float(value)
                elif float(value) == 1.0:
                    witnesses.add(lab["witness"])
        self.samples.append(
            Sample(t0, t1, split, holds, frozenset(witnesses), tuple(lasts), silent, unanswered, tuple(local))
        )

    def between(self, since: float, until: float) -> list[Sample]:
        return [s for s in self.samples if s.start >= since and s.end <= until]


class Polling:
    """One thread per exporter, polling until closed."""

    def __init__(self, watchers: Iterable[Any], vrid: int, vip: str) -> None:
        self.pollers = {w.label: Poller(w.label, w.url, str(vrid), vip) for w in watchers}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(p,), daemon=True) for p in self.pollers.values()
        ]
        for t in self._threads:
            t.start()

    def _run(self, p: Poller) -> None:
        while not self._stop.is_set():
            p.poll_once()
            self._stop.wait(POLL)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def __getitem__(self, label: str) -> Poller:
        return self.pollers[label]

    def second_holder(self, since: float, nodes: Iterable[str], timeout: float) -> float:
        """When the exporters first showed the VIP on two nodes at once (end of that scrape); waits."""
        names = list(nodes)
        deadline = time.time() + timeout
        while time.time() < deadline:
            events = sorted(
                (s.end, n, s.holds) for n in names for s in self.pollers[n].samples if s.end >= since
            )
            state: dict[str, float | None] = {}
            for n in names:
                before = [s for s in self.pollers[n].samples if s.end < since]
                state[n] = before[-1].holds if before else None
            for end, n, holds in events:
                state[n] = holds
                if sum(1 for v in state.values() if v == 1.0) >= 2:
                    return end
            time.sleep(POLL)
        raise AssertionError(f"the VIP was never on two of {names} at once within {timeout:g} s")

    def wait_split(self, labels: Iterable[str], since: float, timeout: float) -> bool:
        names = list(labels)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(any(s.split == 1.0 for s in self.pollers[n].samples if s.start >= since) for n in names):
                return True
            time.sleep(POLL)
        return False


def assert_fault(
    polling: Polling,
    vantage: Iterable[str],
    second: float,
    removed: float,
    *,
    interval: float,
    margin: float,
    l2: Iterable[str] = (),
) -> dict[str, float]:
    """Every poll of every vantage exporter from `second` + 2 intervals (+ margin) until `removed` reads 1,
    and every poll of each exporter in `l2` (those with an L2 vantage point) shows the l2 witness from
    one probe interval (L2_PROBE) later.

    Returns, per exporter, the delay from the second holder to the first poll that read 1 (and, as
    "NAME l2", to the first that showed the l2 witness).
    """
    delays: dict[str, float] = {}
    for name in vantage:
        p = polling[name]
        window = p.between(second + 2 * interval + margin, removed)
        assert len(window) >= 3, f"{name}: only {len(window)} polls in the fault window"
        wrong = [(round(s.start - second, 3), s.split) for s in window if s.split != 1.0]
        assert wrong == [], (
            f"{name}: polls not reading split brain (s after the 2nd holder, value): {wrong[:10]}"
        )
        first = next(s for s in p.samples if s.end >= second and s.split == 1.0)
        delays[name] = max(0.0, first.end - second)
    for name in l2:
        p = polling[name]
        window = p.between(second + 2 * interval + L2_PROBE + margin, removed)
        assert len(window) >= 3, f"{name}: only {len(window)} polls in the L2 fault window"
        wrong_l2 = [
            (round(s.start - second, 3), sorted(s.witnesses)) for s in window if "l2" not in s.witnesses
        ]
        assert wrong_l2 == [], (
            f"{name}: polls without the l2 witness (s after the 2nd holder): {wrong_l2[:10]}"
        )
        first = next(s for s in p.samples if s.end >= second and "l2" in s.witnesses)
        delays[f"{name} l2"] = max(0.0, first.end - second)
    return delays


def assert_clear(polling: Polling, labels: Iterable[str], since: float, until: float) -> None:
    """Every poll of these exporters from `since` until `until` reads 0 (and there were polls)."""
    for name in labels:
        window = polling[name].between(since, until)
        assert len(window) >= 3, f"{name}: only {len(window)} polls after the fault"
        wrong = [(round(s.start - since, 3), s.split, sorted(s.witnesses)) for s in window if s.split != 0.0]
        assert wrong == [], f"{name}: split brain (or no answer) after the fault was removed: {wrong[:10]}"


def witnesses_seen(polling: Polling, label: str, since: float, until: float) -> set[str]:
    out: set[str] = set()
    for s in polling[label].between(since, until):
        out |= s.witnesses
    return out


def longest_silence(
    polling: Polling, label: str, sources: Iterable[str], since: float, until: float
) -> float:
    """The longest time one of `sources` was silent on the wire, as `label`'s exporter saw it."""
    wanted = set(sources)
    worst = 0.0
    for s in polling[label].between(since, until):
        for source, last in s.last_adverts:
            if source in wanted:
                worst = max(worst, s.start - max(last, since))
    return worst
