"""The L2 witness's time accounts (verdicts.l2.L2Accounts) with plain data: each rule for the instant
of a change, and the cases where no-answerer time must stay 0 (a steady master, the exporter's start
or restart, probes that stop completing, a capture re-opened)."""

from __future__ import annotations

import pytest

from ka_exporter.verdicts.l2 import L2Account, L2Accounts, L2Look, change_instant

KEY = ("eth0", "10.9.8.100")
STALE = 3.2  # three 1 s probe spacings and an answer window, as the witness computes it


def steady(acc: L2Accounts, answerers: int, start: float, end: float, **kw: object) -> L2Account:
    """Looks every 0.25 s; a probe pair agreeing every second confirms `answerers` (first probe of
    the first pair at `start`)."""
    a = L2Account()
    t = start
    while t <= end + 1e-9:
        confirmed = start + int(t - start)  # the latest agreeing probe: one per second
        look = L2Look(answerers, first_probe=start, confirmed=confirmed, **kw)  # type: ignore[arg-type]
        a = acc.observe(KEY, look, t, STALE)
        t += 0.25
    return a


def test_a_steady_master_accounts_only_one_answerer() -> None:
    acc = L2Accounts()
    # this node holds the VIP (netlink); its own probes get no answer (a host does not hear itself)
    a = steady(acc, 1, 100.0, 160.0, held=True, held_changed=50.0, listening_since=99.0)
    assert a.no_answerer == 0.0 and a.multi_answerer == 0.0
    assert a.one_answerer == pytest.approx(60.0)
    assert a.unobserved == pytest.approx(1.0)  # from the capture's start to the first agreeing probe
    assert a.observed == pytest.approx(a.one_answerer)


def test_the_exporter_starting_or_restarting_is_unobserved_not_down() -> None:
    acc = L2Accounts()
    # no probe result yet: unknown
    for t in (10.0, 10.5, 11.0):
        a = acc.observe(KEY, L2Look(None, None, None, listening_since=10.0), t, STALE)
    assert a == L2Account(unobserved=1.0)
    # a restart is a new witness (counters start again at 0): the old master's time is not lost as
    # downtime, and the new witness's first second is unobserved again
    again = L2Accounts()
    a = again.observe(KEY, L2Look(None, None, None, listening_since=500.0), 500.0, STALE)
    a = steady(again, 1, 501.0, 510.0, listening_since=500.0)
    assert a.no_answerer == 0.0 and a.unobserved == pytest.approx(1.0)
    assert a.one_answerer == pytest.approx(9.0)


def test_probes_that_stop_completing_are_unobserved_not_down() -> None:
    acc = L2Accounts()
    a = steady(acc, 1, 0.0, 10.0, listening_since=0.0)
    assert a.one_answerer == pytest.approx(10.0)
    # probes fail from here (ENOBUFS, a closed socket): the published result stays, nothing confirms it
    for i in range(1, 41):
        a = acc.observe(
            KEY, L2Look(1, first_probe=0.0, confirmed=10.0, listening_since=0.0), 10.0 + i / 4, STALE
        )
    assert a.no_answerer == 0.0
    assert a.one_answerer == pytest.approx(10.0)  # only up to the last probe that confirmed it
    # once the evidence is stale, everything after the last confirming probe is unknown
    assert a.unobserved == pytest.approx(20.0 - 10.0)
    # not probing at all (socket closed): unknown as well
    a = acc.observe(KEY, L2Look(None, first_probe=0.0, confirmed=10.0, listening_since=None), 25.0, STALE)
    assert a.no_answerer == 0.0 and a.unobserved == pytest.approx(15.0)


def test_a_result_from_before_the_capture_reopened_is_not_evidence() -> None:
    acc = L2Accounts()
    steady(acc, 1, 0.0, 5.0, listening_since=0.0)
    # the capture re-opened at 20: the published result (first probe at 0) is from before it
    a = acc.observe(KEY, L2Look(0, first_probe=0.0, confirmed=5.0, listening_since=20.0), 20.5, STALE)
    assert a.no_answerer == 0.0 and a.unobserved == pytest.approx(15.5)
    # the first agreeing pair after the re-open: accounted from its first probe on
    a = acc.observe(KEY, L2Look(1, first_probe=21.0, confirmed=22.0, listening_since=20.0), 22.1, STALE)
    assert a.one_answerer == pytest.approx(5.0 + 1.0) and a.unobserved == pytest.approx(16.0)


def test_rule_1_a_new_answerer_changes_the_count_at_its_announcement() -> None:
    # an observer: A answers, A's keepalived stops (VIP gone, nothing said), B takes over and sends
    # gratuitous ARPs at 10.4; probes at 10.0 (A), 10.1 and 10.15 (nobody), 10.5 and 10.55 (B)
    acc = L2Accounts()
    steady(acc, 1, 0.0, 10.0, listening_since=0.0)
    acc.observe(KEY, L2Look(0, first_probe=10.1, confirmed=10.15, listening_since=0.0), 10.2, STALE)
    a = acc.observe(
        KEY, L2Look(1, first_probe=10.5, confirmed=10.55, announced=10.4, listening_since=0.0), 10.6, STALE
    )
    # 1 -> 0: nothing marks it, the midpoint of 10.0 and 10.1; 0 -> 1 at B's announcement
    assert a.no_answerer == pytest.approx(10.4 - 10.05)
    assert a.one_answerer == pytest.approx(10.05 + (10.55 - 10.4))
    assert a.multi_answerer == 0.0 and a.observed == pytest.approx(10.55)


def test_rule_1_two_answerers_after_a_crash_start_at_the_announcement() -> None:
    # a bare SIGKILL of the master's keepalived leaves its VIP: B takes over after the master-down
    # interval and announces at 13.0; from then both answer (multi), until A's address goes at 15.2
    acc = L2Accounts()
    steady(acc, 1, 0.0, 12.0, listening_since=0.0)
    acc.observe(
        KEY, L2Look(2, first_probe=13.05, confirmed=13.1, announced=13.0, listening_since=0.0), 13.2, STALE
    )
    a = acc.observe(
        KEY, L2Look(2, first_probe=13.05, confirmed=15.0, announced=13.0, listening_since=0.0), 15.1, STALE
    )
    a = acc.observe(
        KEY, L2Look(1, first_probe=15.4, confirmed=15.45, announced=13.0, listening_since=0.0), 15.5, STALE
    )
    # 1 -> 2 at the announcement; 2 -> 1: nothing marks it (midpoint of 15.0 and 15.4)
    assert a.multi_answerer == pytest.approx(15.2 - 13.0)
    assert a.no_answerer == 0.0
    assert a.one_answerer == pytest.approx(13.0 + (15.45 - 15.2))


def test_rule_2_this_nodes_own_netlink_event_marks_a_handover_here() -> None:
    # node a holds the VIP, then keepalived removes it here at 20.3 (netlink), B announces at 20.7
    acc = L2Accounts()
    steady(acc, 1, 0.0, 20.0, held=True, held_changed=0.0, listening_since=0.0)
    a = acc.observe(
        KEY,
        L2Look(0, first_probe=0.0, confirmed=20.0, held=False, held_changed=20.3, listening_since=0.0),
        20.35,
        STALE,
    )
    assert a.one_answerer == pytest.approx(20.3) and a.no_answerer == 0.0
    a = acc.observe(
        KEY,
        L2Look(
            1,
            first_probe=20.75,
            confirmed=20.8,
            announced=20.7,
            held=False,
            held_changed=20.3,
            listening_since=0.0,
        ),
        20.9,
        STALE,
    )
    assert a.no_answerer == pytest.approx(0.4)
    assert a.one_answerer == pytest.approx(20.3 + 0.1)


def test_change_instant_rules_in_order() -> None:
    # an announcement only marks a count going up, and only inside the stretch
    assert change_instant(0, 1, 1.0, 2.0, announced=1.7, netlink=1.2) == 1.7
    assert change_instant(1, 0, 1.0, 2.0, announced=1.7, netlink=1.2) == 1.2
    assert change_instant(0, 1, 1.0, 2.0, announced=0.5, netlink=None) == 1.5
    assert change_instant(1, 0, 1.0, 2.0, announced=1.7, netlink=None) == 1.5
    assert change_instant(1, 0, 1.0, 2.0, announced=None, netlink=2.5) == 1.5


def test_nobody_answering_a_completed_probe_is_no_answerer_time() -> None:
    acc = L2Accounts()
    a = steady(acc, 0, 0.0, 30.0, listening_since=0.0)
    assert a.no_answerer == pytest.approx(30.0) and a.one_answerer == 0.0


def test_accounts_of_a_vip_no_longer_watched_are_dropped() -> None:
    acc = L2Accounts()
    steady(acc, 1, 0.0, 3.0, listening_since=0.0)
    acc.forget([])
    a = acc.observe(KEY, L2Look(None, None, None), 10.0, STALE)
    assert a == L2Account()
