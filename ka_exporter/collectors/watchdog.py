"""The watchdog's own counters: transitions, hook runs, what was coalesced or not paged. No I/O."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter.collectors import Part
from ka_exporter.model import Snapshot
from ka_exporter.outputs.watchdog import WatchdogStats

_COUNTERS = (
    (
        "ka_exporter_watchdog_transitions",
        "transitions",
        "Condition transitions (begin or end) the watchdog saw.",
    ),
    (
        "ka_exporter_watchdog_unpaged_transitions",
        "unpaged",
        "Transitions on VRIDs not in keepalived.conf, not given to the hook (--watchdog.unconfigured-vrids).",
    ),
    ("ka_exporter_watchdog_hook_runs", "runs", "Watchdog hook runs started."),
    (
        "ka_exporter_watchdog_hook_failures",
        "failures",
        "Watchdog hook runs that could not start, timed out or exited non-zero.",
    ),
    (
        "ka_exporter_watchdog_coalesced_transitions",
        "coalesced",
        "Transitions folded away before their hook ran (cancelled by the next one, or into a storm event).",
    ),
    (
        "ka_exporter_watchdog_hook_start_retries",
        "retries",
        "Hook starts retried because the system refused a process or thread (TasksMax).",
    ),
)


def watchdog_part(stats: WatchdogStats) -> Part:
    """A collector part reading the watchdog's counters (the snapshot is not needed)."""

    def collect_watchdog(_snap: Snapshot) -> Iterator[Metric]:
        for name, attr, doc in _COUNTERS:
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(getattr(stats, attr)))
            yield c
        running = GaugeMetricFamily("ka_exporter_watchdog_hooks_running", "Watchdog hooks running now.")
        running.add_metric([], float(stats.running))
        yield running
        pending = GaugeMetricFamily(
            "ka_exporter_watchdog_hooks_pending", "Condition transitions queued for the hook, not yet run."
        )
        pending.add_metric([], float(stats.pending))
        yield pending

    def cache_key() -> object:  # what collect_watchdog reads (see outputs.exposition)
        return tuple(getattr(stats, attr) for attr in _FIELDS)

    collect_watchdog.cache_key = cache_key  # type: ignore[attr-defined]
    return collect_watchdog


_FIELDS = (*(attr for _name, attr, _doc in _COUNTERS), "running", "pending")
