"""Multi-namespace mode against real keepalived: the "routers" lab (lab/routers.py), one exporter.

20 routers = 40 namespaces, 40 keepalived (VRRPv3, one instance each: half MASTER, half BACKUP),
3 split brains made with firewall rules. One `ka-exporter --discover` must report every instance
with its namespace label and flag every split brain (in both namespaces of the pair), then pick up
routers added and drop routers removed while it runs. The suite runs 40 namespaces to stay within
its time budget; bench/bench_multi.py runs 200 (the issue's figure) and prints the costs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter.lab.routers import RoutersLab
from tests.conftest import RunningExporter, start_exporter, stop_exporter, wait_until

# serial: --discover watches every keepalived on the host, so another worker's labs would join its fleet.
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.serial]

PAIRS = 20
SPLITS = (3, 8, 15)
PICKUP = 5.0  # seconds: "picked up within a few seconds" (discovery scans every second)

Seen = dict[str, dict[str, float]]


def seen(exp: RunningExporter) -> Seen:
    """metric name -> {netns: value} for the series the test judges."""
    out: Seen = {"keepalived_vrrp_state": {}, "keepalived_wire_split_brain": {}, "keepalived_up": {}}
    for (name, labels), value in exp.metrics().items():
        if name in out:
            out[name][dict(labels)["netns"]] = value
    return out


def expected(lab: RoutersLab) -> tuple[dict[str, float], dict[str, float]]:
    """(state per namespace, split brain per namespace) the lab should show now."""
    states: dict[str, float] = {}
    splits: dict[str, float] = {}
    for index, (a, b) in lab.routers.items():
        split = index in lab.split_routers
        states[a.netns] = 2.0
        states[b.netns] = 2.0 if split else 1.0
        splits[a.netns] = splits[b.netns] = 1.0 if split else 0.0
    return states, splits


def matches(exp: RunningExporter, lab: RoutersLab) -> bool:
    got = seen(exp)
    states, splits = expected(lab)
    return (
        got["keepalived_vrrp_state"] == states
        and got["keepalived_wire_split_brain"] == splits
        and got["keepalived_up"] == dict.fromkeys(states, 1.0)
    )


def differences(exp: RunningExporter, lab: RoutersLab) -> str:
    got = seen(exp)
    states, splits = expected(lab)
    wrong = [
        f"{name} {ns}: got {got[name].get(ns)}, want {want.get(ns)}"
        for name, want in (("keepalived_vrrp_state", states), ("keepalived_wire_split_brain", splits))
        for ns in sorted(set(want) | set(got[name]))
        if got[name].get(ns) != want.get(ns)
    ]
    return "; ".join(wrong[:12]) + f" ({len(wrong)} differences)"


@pytest.fixture(scope="module")
def lab() -> Iterator[RoutersLab]:
    with RoutersLab(pairs=PAIRS) as lab:
        yield lab


def test_one_exporter_watches_every_namespace(lab: RoutersLab, tmp_path: Path) -> None:
    exp = start_exporter(tmp_path, "--discover", f"--discover.match={lab.prefix}-.*")
    try:
        # every instance, with its namespace label; no split brain yet
        assert wait_until(lambda: matches(exp, lab), 15.0), differences(exp, lab)
        for index in SPLITS:
            lab.split(index)
        assert lab.wait_for(lab.settled, 15.0), lab.summary()
        # every split brain flagged, in both namespaces of the pair (the wire of each sees two masters)
        assert wait_until(lambda: matches(exp, lab), 10.0), differences(exp, lab)
        text = exp.text()
        assert text.count(f'ka_exporter_daemon_info{{netns="{lab.prefix}-') == 2 * PAIRS
        # routers come and go while it runs
        added = [lab.add_router(), lab.add_router()]
        lab.remove_router(0)
        lab.remove_router(SPLITS[0])
        assert wait_until(lambda: matches(exp, lab), PICKUP), differences(exp, lab)
        got = seen(exp)["keepalived_up"]
        assert all(f"{lab.prefix}-{i}{side}" in got for i in added for side in "ab")
        assert f"{lab.prefix}-0a" not in got
        logs = exp.logs()
        assert f"network namespace {lab.prefix}-0a is gone: no longer watched" in logs
        assert "Traceback" not in logs
    finally:
        stop_exporter(exp)


def test_cap_on_watched_daemons(lab: RoutersLab, tmp_path: Path) -> None:
    cap = 5
    exp = start_exporter(
        tmp_path, "--discover", f"--discover.match={lab.prefix}-.*", f"--discover.max-daemons={cap}"
    )
    try:
        total = 2 * len(lab.routers)

        def counted() -> bool:
            m = {name: v for (name, labels), v in exp.metrics().items() if not labels}
            return (m.get("ka_exporter_daemons_watched"), m.get("ka_exporter_daemons_unwatched")) == (
                cap,
                total - cap,
            )

        assert wait_until(counted, 10.0), exp.text()[-2000:]
        assert len(seen(exp)["keepalived_up"]) == cap
        assert wait_until(lambda: "discovery cap reached" in exp.logs(), 5.0)
        lines = [line for line in exp.logs().splitlines() if "discovery cap reached" in line]
        assert len(lines) == 1, lines  # one clear line, not one per scan
        assert "level=warn" in lines[0]
        assert f"watching {cap} keepalived, {total - cap} more not watched" in lines[0]
    finally:
        stop_exporter(exp)
