"""Failover timing from the wire (verdicts/failover.py), with plain data: routers' adverts as the peer
table records them, looked at a few times a second as the wire source does."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ka_exporter.model import BUCKETS, Histogram, WirePeer
from ka_exporter.verdicts.failover import FailoverTracker, measure
from ka_exporter.verdicts.wire import RUN_GAP

KEY = ("eth0", "inet", 51)


@dataclass
class Router:
    """A router's adverts: (time, priority). Rendered as the peer table would hold it at a time."""

    source: str
    interval: float = 1.0
    local: bool = False  # sent by this host
    adverts: list[tuple[float, int]] = field(default_factory=list)

    def every(self, start: float, stop: float, priority: int) -> Router:
        t = start
        while t <= stop + 1e-9:
            self.adverts.append((round(t, 6), priority))
            t += self.interval
        return self

    def at(self, t: float, priority: int) -> Router:
        self.adverts.append((t, priority))
        self.adverts.sort()
        return self

    def record(self, now: float) -> WirePeer | None:
        seen = [(t, p) for t, p in sorted(self.adverts) if t <= now]
        if not seen:
            return None
        first, last_zero, prev = seen[0][0], None, None
        for t, p in seen:
            if prev is not None and (t - prev[0] > RUN_GAP * self.interval or prev[1] == 0):
                first = t  # a new run: after a silence or a priority-0 advert
            if p == 0:
                last_zero = t
            prev = (t, p)
        last_t, last_p = seen[-1]
        return WirePeer(
            interface="eth0",
            family="inet",
            vrid=51,
            source=self.source,
            first_seen=first,
            last_seen=last_t,
            priority=last_p,
            interval=self.interval,
            version=3,
            addresses=("10.0.0.100",),
            auth_type=0,
            auth_digest=None,
            adverts=len(seen),
            last_priority_zero=last_zero,
            local=self.local,
        )


def run(routers: list[Router], until: float, step: float = 0.25, listening: float | None = 0.0):
    tracker = FailoverTracker()
    t = 0.0
    while t <= until + 1e-9:
        peers = [r for r in (x.record(t) for x in routers) if r is not None]
        tracker.observe(peers, t, listening)
        t = round(t + step, 6)
    (timing,) = tracker.timings()
    return tracker, timing


def test_a_steady_master_is_available_the_whole_time() -> None:
    _, t = run([Router("10.0.0.1").every(0, 60, 150)], until=60)
    assert t.master == "10.0.0.1"
    assert t.master_changes == 0
    assert t.masterless_seconds == 0.0
    assert t.multi_master_seconds == 0.0
    assert t.observed_seconds == pytest.approx(60 - 1.5 - 0.05, abs=0.3)  # accounted 1.5 intervals behind


def test_crash_gap_is_last_advert_to_first_advert() -> None:
    a = Router("10.0.0.1").every(0, 10, 150)  # SIGKILLed after its advert at 10 s
    b = Router("10.0.0.2").every(13.62, 40, 100)  # master down interval 3 x 1 s + skew 0.62 s
    tracker, t = run([a, b], until=40)
    assert t.master_changes == 1
    assert t.gaps.count == 1
    assert t.gaps.total == pytest.approx(3.62)
    assert t.masterless_seconds == pytest.approx(3.62)
    assert t.overlaps.count == 0
    assert t.multi_master_seconds == 0.0
    (event,) = tracker.recent()
    assert (event.old, event.new, event.gap, event.overlap) == (
        "10.0.0.1",
        "10.0.0.2",
        pytest.approx(3.62),
        None,
    )
    # the histogram puts 3.62 s in the 4 s bucket and above, not in 3 s
    assert dict(zip(BUCKETS, t.gaps.buckets, strict=True))[3.0] == 0
    assert dict(zip(BUCKETS, t.gaps.buckets, strict=True))[4.0] == 1


def test_graceful_stop_gap_is_priority_zero_to_first_advert() -> None:
    a = Router("10.0.0.1").every(0, 10, 150).at(10.3, 0)  # SIGTERM: a priority-0 advert
    b = Router("10.0.0.2").every(10.9, 30, 100)  # skew time (256 - 100) / 256 ~ 0.6 s
    _, t = run([a, b], until=30)
    assert t.master_changes == 1
    assert t.gaps.total == pytest.approx(0.6)
    assert t.masterless_seconds == pytest.approx(0.6)


def test_preemption_is_a_handover_not_a_gap() -> None:
    b = Router("10.0.0.2").every(0, 20, 100)  # the backup was master...
    a = Router("10.0.0.1").every(20.4, 40, 150)  # ...until the preferred master came back
    _, t = run([b, a], until=40)
    assert t.master_changes == 1
    assert t.gaps.count == 0
    assert (t.overlaps.count, t.overlaps.total) == (1, 0.0)
    assert t.masterless_seconds == 0.0
    assert t.multi_master_seconds == 0.0


def test_a_preemption_race_is_an_overlap_of_milliseconds() -> None:
    b = Router("10.0.0.2").every(0, 20, 100).at(20.41, 100)  # one more advert crossed the new master's
    a = Router("10.0.0.1").every(20.4, 40, 150)
    _, t = run([b, a], until=40)
    assert t.master_changes == 1
    assert t.overlaps.total == pytest.approx(0.01)
    assert t.multi_master_seconds == pytest.approx(0.01)
    assert t.masterless_seconds == 0.0


def test_split_brain_is_time_with_more_than_one_master() -> None:
    a = Router("10.0.0.1").every(0, 30, 150)
    b = Router("10.0.0.2").every(10.5, 30, 100)  # b stopped hearing a at 10 s and became master too
    _, t = run([a, b], until=30)
    assert t.multi_master_seconds == pytest.approx(30 - 1.5 - 0.05 - 10.5, abs=0.3)
    assert t.masterless_seconds == 0.0


def test_time_not_listening_is_unknown_not_downtime() -> None:
    tracker = FailoverTracker()
    a = Router("10.0.0.1").every(0, 60, 150)
    for step in range(0, 241):
        now = step * 0.25
        listening = None if 20 <= now < 30 else (30.0 if now >= 30 else 0.0)
        peer = a.record(now)
        tracker.observe([peer] if peer else [], now, listening)
    (t,) = tracker.timings()
    # the 10 s not listening, plus the 1.5 intervals not yet accounted when the capture stopped
    assert 10 <= t.unobserved_seconds <= 10 + 1.5 + 0.3
    assert t.masterless_seconds == 0.0
    assert t.observed_seconds + t.unobserved_seconds == pytest.approx(60 - 1.55, abs=0.3)


def test_measure_and_histogram() -> None:
    assert measure([(0, 1), (2, 3)], 0, 4) == (2.0, 0.0)
    assert measure([(0, 2), (1, 3)], 0, 3) == (0.0, 1.0)
    assert measure([], 5, 7) == (2.0, 0.0)
    h = Histogram().observe(0.02).observe(31.0)
    assert h.count == 2 and h.buckets[0] == 0 and h.buckets[1] == 1 and h.buckets[-1] == 1
