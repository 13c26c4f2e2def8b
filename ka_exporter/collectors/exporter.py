"""The exporter's own health: build info and whether each source's last attempt worked."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ka_exporter import __version__
from ka_exporter.model import Snapshot


def collect_exporter(snap: Snapshot) -> Iterator[Metric]:
    build = GaugeMetricFamily(
        "ka_exporter_build_info",
        "ka-exporter's version (always 1).",
        labels=["version", "python_version"],
    )
    build.add_metric([__version__, platform.python_version()], 1.0)
    yield build
    up = GaugeMetricFamily(
        "ka_exporter_source_up",
        "1 if the source's last attempt worked; 0 if it failed (its last good data is still exported).",
        labels=["source"],
    )
    last = GaugeMetricFamily(
        "ka_exporter_source_last_success_timestamp_seconds",
        "When the source last worked (unix time).",
        labels=["source"],
    )
    for health in snap.sources:
        up.add_metric([health.name], 1.0 if health.up else 0.0)
        if health.last_success is not None:
            last.add_metric([health.name], health.last_success)
    yield up
    yield last
