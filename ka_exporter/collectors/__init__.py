"""Collectors render one store snapshot into fresh metric families per scrape. They do no I/O."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ka_exporter.model import Snapshot

log = logging.getLogger("ka_exporter.collectors")

Part = Callable[[Snapshot], Iterable[Metric]]

# A part made of keyed rows (an instance, a VRID, a VIP), for a renderer that writes again only the
# rows that moved (outputs/exposition.py): its families, in exposition order, as (name, type,
# help, label names); each row as (key, basis, series): `series()` gives the row's series, and two
# rows with the same key and equal bases give the same ones. A series is (index in the families,
# sample name, labels, value); the series of one family come out in row order.
Family = tuple[str, str, str, tuple[str, ...]]
Series = tuple[int, str, dict[str, str], float]
Row = tuple[Hashable, object, Callable[[], list[Series]]]
# (the families shown even without a sample, the rows), or None: nothing to show
Rows = tuple[frozenset[int], list[Row]]


def empty_family(family: Family) -> Metric:
    """A family of `FAMILIES` with no sample."""
    name, mtype, doc, labels = family
    if mtype == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    if mtype == "histogram":
        return HistogramMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def keyed_families(families: Sequence[Family], got: Rows | None) -> Iterator[Metric]:
    """The metric families of a keyed part's rows: those with a sample, and those shown without."""
    if got is None:
        return
    shown, rows = got
    out = [empty_family(f) for f in families]
    for _key, _basis, series in rows:
        for k, name, labels, value in series():
            out[k].add_sample(name, labels, value)
    for k, metric in enumerate(out):
        if metric.samples or k in shown:
            yield metric


DURATION_NAME = "ka_exporter_scrape_duration_seconds"
DURATION_HELP = (
    "Time this exporter took to render the served exposition from its in-memory state (it is "
    "rendered when that state changes; scrapes in between are served the same bytes)."
)


SUCCESS_NAME = "ka_exporter_collector_success"
SUCCESS_HELP = (
    "1 if the collector part rendered in this scrape, 0 if it failed (its metrics are left out of the "
    "scrape and the log says why), as node_exporter's node_scrape_collector_success."
)


def part_name(part: Part) -> str:
    """`collect_wire` -> "wire": the `collector` label of a part."""
    name = str(getattr(part, "__name__", repr(part)))
    return name.removeprefix("collect_")


def success_family(results: Iterable[tuple[str, bool]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(SUCCESS_NAME, SUCCESS_HELP, labels=["collector"])
    for name, ok in results:
        family.add_metric([name], 1.0 if ok else 0.0)
    return family


class FailureLog:
    """One log line when a part starts failing (with the traceback) and one when it recovers, not one
    per scrape: a broken part would otherwise write a traceback at every scrape."""

    def __init__(self) -> None:
        self._failing: set[str] = set()

    def failed(self, name: str) -> None:
        if name not in self._failing:
            self._failing.add(name)
            log.exception(
                "collector %s failed; its metrics are left out of the scrape until it recovers", name
            )

    def worked(self, name: str) -> None:
        if name in self._failing:
            self._failing.discard(name)
            log.info("collector %s recovered", name)


class SnapshotCollector(Collector):
    """Takes one snapshot per scrape and renders it through every part.

    One snapshot per scrape makes the scrape one consistent read. A part that raises is logged and
    skipped, so a bug in one part never takes the other parts' metrics down with it.
    """

    def __init__(self, snapshot: Callable[[], Snapshot], parts: Sequence[Part]) -> None:
        self._snapshot = snapshot
        self._parts = tuple(parts)
        self._failures = FailureLog()
        self.last_snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        snap = self._snapshot()
        self.last_snapshot = snap
        out: list[Metric] = []
        results: list[tuple[str, bool]] = []
        for part in self._parts:
            name = part_name(part)
            try:
                out.extend(part(snap))
            except Exception:
                self._failures.failed(name)
                results.append((name, False))
                continue
            self._failures.worked(name)
            results.append((name, True))
        out.append(success_family(results))
        duration = GaugeMetricFamily(DURATION_NAME, DURATION_HELP)
        duration.add_metric([], time.perf_counter() - started)
        out.append(duration)
        yield from out

    def describe(self) -> Iterator[Metric]:
        return iter(())
