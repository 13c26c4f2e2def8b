"""--discover's event sources per keepalived, against real keepalived and real dbus-daemons.

A small "routers" lab (lab/routers.py), one pair per case:
- router 0, "dbus": each side its own private dbus-daemon (enable_dbus);
- router 1, "fifo": each side a vrrp_notify_fifo;
- router 2, "shared-dbus": one dbus-daemon for both sides; A took org.keepalived.Vrrp1 first, so B's
  member must refuse that bus (the name is A's keepalived's, not B's).
The exporter runs with the dumps off, so a state it exports can only have come from D-Bus or the FIFO
(and the FIFO members have no D-Bus: keepalived.conf does not set enable_dbus). A split brain made on
routers 0 and 1 moves their B sides to MASTER: seen through D-Bus on one, the FIFO on the other. Then a
keepalived of each is SIGKILLed and started again at once: the member attaches to the new process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter.lab.routers import RoutersLab
from tests.conftest import RunningExporter, start_exporter, stop_exporter, wait_until

# serial: --discover watches every keepalived on the host (see test_multi_lab.py)
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.serial]

DBUS, FIFO, SHARED = 0, 1, 2


@pytest.fixture(scope="module")
def lab() -> Iterator[RoutersLab]:
    with RoutersLab(pairs=3, features={DBUS: "dbus", FIFO: "fifo", SHARED: "shared-dbus"}) as lab:
        yield lab


def by_netns(exp: RunningExporter, name: str, **want: str) -> dict[str, float]:
    """{netns: value} of one metric's samples whose labels include `want`."""
    out: dict[str, float] = {}
    for (metric, labels), value in exp.metrics().items():
        d = dict(labels)
        if metric == name and all(d.get(k) == v for k, v in want.items()):
            out[d["netns"]] = value
    return out


def ns(lab: RoutersLab, index: int, side: str) -> str:
    return f"{lab.prefix}-{index}{side}"


def test_dbus_and_fifo_per_keepalived(lab: RoutersLab, tmp_path: Path) -> None:
    exp = start_exporter(tmp_path, "--discover", f"--discover.match={lab.prefix}-.*", "--no-collector.dumps")
    try:
        d0a, d0b, f1a, f1b, s2a, s2b = (ns(lab, i, s) for i in (DBUS, FIFO, SHARED) for s in "ab")

        def attached() -> bool:
            dbus = by_netns(exp, "ka_exporter_source_up", source="dbus")
            fifo = by_netns(exp, "ka_exporter_source_up", source="fifo")
            return dbus == {d0a: 1.0, d0b: 1.0, s2a: 1.0, s2b: 0.0} and fifo == {f1a: 1.0, f1b: 1.0}

        assert wait_until(attached, 15.0), exp.text()[-3000:]
        # states, with the dumps off: from D-Bus (router 0, and 2's owner) and the FIFO (router 1). The
        # FIFO members' states come from keepalived's first transitions (INIT -> MASTER/BACKUP).
        want = {d0a: 2.0, d0b: 1.0, f1a: 2.0, f1b: 1.0, s2a: 2.0}
        assert wait_until(lambda: by_netns(exp, "keepalived_vrrp_state") == want, 10.0), exp.text()[-3000:]
        logs = exp.logs()
        refused = [line for line in logs.splitlines() if "not attached" in line]
        assert len(refused) == 1, refused  # one line for the one refused member, not one per attempt
        assert s2b in refused[0] and "org.keepalived.Vrrp1" in refused[0]

        # a state change arrives by D-Bus (router 0) and by the FIFO (router 1): B becomes MASTER
        lab.split(DBUS)
        lab.split(FIFO)
        want.update({d0b: 2.0, f1b: 2.0})
        assert wait_until(lambda: by_netns(exp, "keepalived_vrrp_state") == want, 10.0), exp.text()[-3000:]

        def counted() -> bool:  # D-Bus counts when its State read confirms, just after the state shows
            transitions = by_netns(exp, "keepalived_vrrp_transitions_total")
            return transitions.get(d0b, 0.0) >= 1.0 and transitions.get(f1b, 0.0) >= 1.0

        assert wait_until(counted, 5.0), by_netns(exp, "keepalived_vrrp_transitions_total")

        # keepalived restarted in place (SIGKILL: no VrrpStopped, no FIFO STOP line): the members attach
        # to the new processes, and their states come back from the new keepalived.
        old = {r.netns: r.proc.pid for r in (lab.routers[DBUS][1], lab.routers[FIFO][1]) if r.proc}
        lab.restart(DBUS, "b")
        lab.restart(FIFO, "b")
        new = {r.netns: r.proc.pid for r in (lab.routers[DBUS][1], lab.routers[FIFO][1]) if r.proc}
        assert old.keys() == new.keys() == {d0b, f1b} and all(old[k] != new[k] for k in old)

        def reattached() -> bool:
            info = {
                dict(labels)["netns"]: dict(labels)
                for (metric, labels), _ in exp.metrics().items()
                if metric == "ka_exporter_daemon_info"
            }
            return (
                attached()
                and by_netns(exp, "keepalived_vrrp_state") == want
                and all(f"pid {old[k]}, now {new[k]}): re-attached" in exp.logs() for k in new)
                and {d0b, f1b} <= info.keys()
            )

        assert wait_until(reattached, 15.0), exp.text()[-3000:] + exp.logs()[-3000:]
        assert "Traceback" not in exp.logs()
    finally:
        stop_exporter(exp)
