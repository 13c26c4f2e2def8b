"""Collectors render one store snapshot into fresh metric families per scrape. They do no I/O."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ka_exporter.model import Snapshot

log = logging.getLogger("ka_exporter.collectors")

Part = Callable[[Snapshot], Iterable[Metric]]

DURATION_NAME = "ka_exporter_scrape_duration_seconds"
DURATION_HELP = (
    "Time this exporter took to render the served exposition from its in-memory state (it is "
    "rendered when that state changes; scrapes in between are served the same bytes)."
)


class SnapshotCollector(Collector):
    """Takes one snapshot per scrape and renders it through every part.

    One snapshot per scrape makes the scrape one consistent read. A part that raises is logged and
    skipped, so a bug in one part never takes the other parts' metrics down with it.
    """

    def __init__(self, snapshot: Callable[[], Snapshot], parts: Sequence[Part]) -> None:
        self._snapshot = snapshot
        self._parts = tuple(parts)
        self.last_snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        snap = self._snapshot()
        self.last_snapshot = snap
        out: list[Metric] = []
        for part in self._parts:
            try:
                out.extend(part(snap))
            except Exception:
                log.exception("collector %s failed; its metrics are left out of this scrape", part.__name__)
        duration = GaugeMetricFamily(DURATION_NAME, DURATION_HELP)
        duration.add_metric([], time.perf_counter() - started)
        out.append(duration)
        yield from out

    def describe(self) -> Iterator[Metric]:
        return iter(())
