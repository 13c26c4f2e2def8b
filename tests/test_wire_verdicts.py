"""Wire verdicts on plain timelines (no network) and on the fixture pcaps replayed with their timestamps.

Every scenario is polled every 20 ms of (simulated or packet) time, as an operator's watchdog would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from ka_exporter.model import Advert, WirePeer
from ka_exporter.parse.vrrp import PROCESS_KEY, decode
from ka_exporter.sources.capture import read_pcap
from ka_exporter.store.peers import PeerTable
from ka_exporter.verdicts.wire import (
    ALWAYS,
    DEFAULT_HOLD,
    Listening,
    VridVerdict,
    conflicts,
    hold_time,
    judge,
    split_brain,
)

PCAPS = Path(__file__).resolve().parent / "fixtures" / "pcap"
STEP = 0.02
KEY = ("eth0", "inet", 51)


def adv(
    source: str,
    t: float,
    *,
    prio: int = 100,
    interval: float = 1.0,
    version: int = 2,
    vips: tuple[str, ...] = ("10.0.0.100",),
    auth: tuple[int, str | None] = (0, None),
    vrid: int = 51,
) -> Advert:
    return Advert(
        timestamp=t,
        interface="eth0",
        family="inet",
        source=source,
        destination="224.0.0.18",
        version=version,
        vrid=vrid,
        priority=prio,
        interval=interval,
        addresses=vips,
        auth_type=auth[0],
        auth_digest=auth[1],
    )


def every(source: str, start: float, stop: float, interval: float = 1.0, **kw: object) -> list[Advert]:
    out = []
    t = start
    while t <= stop + 1e-9:
        out.append(adv(source, round(t, 6), interval=interval, **kw))  # type: ignore[arg-type]
        t += interval
    return out


def replay(
    adverts: Iterable[Advert],
    until: float,
    start: float = 0.0,
    configured: Sequence[tuple[str, str, int]] = (),
    key: tuple[str, str, int] = KEY,
    *,
    listening: Listening | None = ALWAYS,
    holds: dict[tuple[str, str, int], float] | None = None,
) -> list[tuple[float, VridVerdict | None]]:
    """Feed adverts into a PeerTable in time order; judge every STEP. Returns (t, verdict of KEY)."""
    todo = sorted(adverts, key=lambda a: a.timestamp)
    table = PeerTable()
    out: list[tuple[float, VridVerdict | None]] = []
    i = 0
    now = start
    while now <= until:
        while i < len(todo) and todo[i].timestamp <= now:
            table.update(todo[i])
            i += 1
        peers, _ = table.snapshot()
        verdicts = {v.key: v for v in judge(peers, now, configured, listening=listening, holds=holds)}
        out.append((now, verdicts.get(key)))
        now = round(now + STEP, 6)
    return out


def split_times(timeline: list[tuple[float, VridVerdict | None]]) -> list[float]:
    return [t for t, v in timeline if v is not None and v.split_brain]


# -- plain timelines ------------------------------------------------------------------------------


def test_steady_master_is_one_master_and_no_split() -> None:
    tl = replay(every("10.0.0.1", 0.0, 20.0, prio=150), until=20.0)
    assert split_times(tl) == []
    assert {v.masters for _t, v in tl if v} == {1}
    assert not any(v.no_master for _t, v in tl if v)


def test_graceful_stop_with_priority_zero_is_not_split_brain_nor_no_master() -> None:
    a = [*every("10.0.0.1", 0.0, 7.0, prio=150), adv("10.0.0.1", 7.1, prio=0)]
    b = every("10.0.0.2", 7.1 + 0.61, 20.0, prio=100)  # skew time for priority 100
    tl = replay(a + b, until=20.0)
    assert split_times(tl) == []
    assert max(v.masters for _t, v in tl if v) == 1
    assert not any(v.no_master for _t, v in tl if v)
    after = dict(tl)[7.2]
    assert after is not None
    assert after.masters == 0  # a resigned, b not yet master


def test_crash_failover_is_not_split_brain() -> None:
    a = every("10.0.0.1", 0.0, 7.0, prio=150)
    b = every("10.0.0.2", 7.0 + 3 + 0.61, 25.0, prio=100)  # master down interval later
    tl = replay(a + b, until=25.0)
    assert split_times(tl) == []
    assert dict(tl)[24.0].masters == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("crossing", [None, 0.001, 0.02])
def test_preemption_is_not_split_brain(crossing: float | None) -> None:
    # b (100) is master; a (150) comes back and advertises; b goes BACKUP on receipt. With
    # `crossing`, b's timer fired just before a's advert reached it: one extra b advert.
    t_a = 10.37
    b = every("10.0.0.2", 0.0, 10.0, prio=100)
    if crossing is not None:
        b.append(adv("10.0.0.2", t_a + crossing, prio=100))
    a = every("10.0.0.1", t_a, 25.0, prio=150)
    tl = replay(a + b, until=25.0)
    assert split_times(tl) == []


@pytest.mark.parametrize("phase", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_real_split_brain_fires_within_two_intervals_and_clears(phase: float) -> None:
    a = every("10.0.0.1", 0.0, 30.0, prio=150)
    t_b = 10.0 + phase  # b's first advert as a second master
    b = every("10.0.0.2", t_b, 20.0 + phase, prio=100)  # then b goes BACKUP again
    tl = replay(a + b, until=30.0)
    fired = split_times(tl)
    assert fired, "split brain never detected"
    assert t_b < fired[0] <= t_b + 2 * 1.0
    # continuous while both advertise, cleared within RUN_GAP intervals after b stops
    assert all(t_b + 2 <= t <= 20.0 + phase + 2.5 + STEP for t in fired[-1:])
    assert not [t for t in fired if t > 20.0 + phase + 2.5 + STEP]
    assert [t for t in fired if fired[0] <= t <= 20.0 + phase] == [
        t for t, _v in tl if fired[0] <= t <= 20.0 + phase
    ]


def test_fast_v3_split_brain_fires_within_two_intervals() -> None:
    a = every("10.0.0.1", 0.0, 3.0, interval=0.1, version=3, prio=150)
    b = every("10.0.0.2", 1.013, 3.0, interval=0.1, version=3, prio=100)
    fired = split_times(replay(a + b, until=3.0))
    assert fired
    assert 1.013 < fired[0] <= 1.013 + 0.2 + STEP


def test_v3_start_race_with_one_advert_is_not_split_brain() -> None:
    b = [adv("10.0.0.2", 0.0, prio=100, interval=0.1, version=3)]
    a = every("10.0.0.1", 0.02, 5.0, interval=0.1, version=3, prio=150)
    assert split_times(replay(a + b, until=5.0)) == []


def test_incompatible_routers_are_split_brain_on_their_first_overlapping_advert() -> None:
    # keepalived drops adverts with another interval (v2) or VIP list: neither yields.
    a = every("10.0.0.1", 0.0, 20.0, prio=150, vips=("10.0.0.100", "10.0.0.101"))
    c = [adv("10.0.0.3", 11.5, prio=120, interval=2.0, vips=("10.0.0.150",))]
    tl = replay(a + c, until=20.0)
    fired = split_times(tl)
    assert fired
    assert fired[0] == pytest.approx(11.5, abs=STEP)
    v = dict(tl)[12.0]
    assert v is not None
    assert v.conflicts == {"interval", "vips"}


def test_v3_interval_mismatch_is_a_conflict_but_routers_still_preempt() -> None:
    b = every("10.0.0.2", 0.0, 5.0, interval=0.1, version=3, prio=100)
    a = every("10.0.0.1", 5.05, 10.0, interval=0.2, version=3, prio=150)
    tl = replay(a + b, until=10.0)
    assert split_times(tl) == []
    assert dict(tl)[5.1].conflicts == {"interval"}  # type: ignore[union-attr]


def test_no_master_after_hold_time_of_silence_and_for_configured_unseen_vrids() -> None:
    a = every("10.0.0.1", 0.0, 5.0, prio=150)
    conf = [KEY, ("eth0", "inet", 99)]
    tl = replay(a, until=12.0, configured=conf)
    hold = hold_time(1.0, 2)
    nm = [t for t, v in tl if v is not None and v.no_master]
    assert nm
    assert 5.0 + hold - STEP <= nm[0] <= 5.0 + hold + STEP
    table = PeerTable()
    for x in a:
        table.update(x)
    verdicts = {v.key: v for v in judge(table.snapshot()[0], 3.0, conf)}
    assert verdicts[("eth0", "inet", 99)].no_master
    assert verdicts[("eth0", "inet", 99)].configured
    assert verdicts[("eth0", "inet", 99)].routers == 0
    assert not verdicts[KEY].no_master


# -- listening: no verdict of absence before a hold time of capture ---------------------------------


def no_master_times(timeline: list[tuple[float, VridVerdict | None]]) -> list[float]:
    return [t for t, v in timeline if v is not None and v.no_master]


def test_exporter_start_no_master_for_a_silent_configured_vrid_only_after_its_hold_time() -> None:
    # The exporter starts listening at 100.0; nobody advertises VRID 51 (configured, advert_int 1).
    tl = replay(
        [], until=110.0, start=100.0, configured=[KEY], listening=Listening(100.0, frozenset({"eth0"}))
    )
    first = no_master_times(tl)[0]
    assert 100.0 + DEFAULT_HOLD <= first <= 100.0 + DEFAULT_HOLD + STEP
    assert no_master_times(tl) == [t for t, _v in tl if t >= first]  # and from then on


def test_exporter_and_keepalived_start_together_is_never_no_master() -> None:
    # keepalived (state MASTER) only advertises after its master down timer, ~3.4 s after start
    # (v2-multicast-pass.pcap); an exporter started with it must not call that "no master".
    a = every("10.0.0.1", 103.4, 120.0, prio=150)
    tl = replay(
        a, until=120.0, start=100.0, configured=[KEY], listening=Listening(100.0, frozenset({"eth0"}))
    )
    assert no_master_times(tl) == []
    assert dict(tl)[110.0].masters == 1  # type: ignore[union-attr]
    # without the listening gate (the old rule) this start-up read "no master" at once
    old = replay(a, until=120.0, start=100.0, configured=[KEY])
    assert no_master_times(old)[0] == 100.0


def test_configured_hold_time_sets_the_gate_and_silence_after_a_heard_router_is_absence() -> None:
    fast = ("eth0", "inet", 71)
    holds = {fast: hold_time(0.1, 3)}
    listening = Listening(100.0, frozenset({"eth0"}))
    tl = replay([], until=102.0, start=100.0, configured=[fast], key=fast, listening=listening, holds=holds)
    assert 100.0 + holds[fast] <= no_master_times(tl)[0] <= 100.0 + holds[fast] + STEP + 1e-9
    # a router heard after the start, then silent: absence after its own hold time, gate or not
    a = every("10.0.0.1", 100.5, 101.5, prio=150)
    tl = replay(a, until=110.0, start=100.0, configured=[KEY], listening=listening)
    first = no_master_times(tl)[0]
    assert 101.5 + hold_time(1.0, 2) <= first <= 101.5 + hold_time(1.0, 2) + STEP


def test_no_verdict_of_absence_off_the_captured_interfaces_or_when_not_capturing() -> None:
    for listening in (Listening(100.0, frozenset({"eth1"})), None):
        tl = replay([], until=120.0, start=100.0, configured=[KEY], listening=listening)
        assert no_master_times(tl) == []
        assert all(v is not None and v.configured and v.masters == 0 for _t, v in tl)


def test_a_capture_that_ended_counts_only_its_window() -> None:
    # --once: listened 100.0 .. 103.0 (3 s < hold 4.15 s), judged later: not known, not "no master"
    ended = Listening(100.0, frozenset({"eth0"}), until=103.0)
    (v,) = judge([], 109.0, [KEY], listening=ended)
    assert not v.no_master
    (v,) = judge([], 109.0, [KEY], listening=Listening(100.0, frozenset({"eth0"}), until=104.2))
    assert v.no_master


# -- contested: one source address, two senders ----------------------------------------------------


def contested_times(adverts: list[Advert], until: float) -> list[float]:
    tl = replay(adverts, until=until)
    return [t for t, v in tl if v is not None and "source" in v.conflicts]


def test_spoofer_with_the_masters_address_and_another_password_is_contested_within_an_interval() -> None:
    real = every("10.0.0.1", 0.0, 40.0, prio=150, auth=(1, "real"))
    spoof = every("10.0.0.1", 10.5, 20.5, prio=150, auth=(1, "wrong"))  # same source address
    tl = replay(real + spoof, until=40.0)
    marked = [t for t, v in tl if v is not None and "source" in v.conflicts]
    assert marked
    assert 10.5 < marked[0] <= 11.0 + STEP  # real advert at 11.0 puts the profile back: A, B, A
    assert marked == [t for t, _v in tl if marked[0] <= t <= marked[-1]]  # continuous
    # clears at the first advert one hold time after the last return (the real one at 21.0)
    assert 21.0 + hold_time(1.0, 2) <= marked[-1] + STEP <= 21.0 + hold_time(1.0, 2) + 1.0 + STEP
    assert split_times(tl) == []  # one address advertising is not two masters
    assert {v.masters for _t, v in tl if v} == {1}


def test_spoofer_flipping_only_the_priority_is_contested_and_conditions_see_it() -> None:
    from ka_exporter.model import Snapshot
    from ka_exporter.verdicts import conditions

    real = every("10.0.0.1", 0.0, 30.0, prio=150)
    spoof = every("10.0.0.1", 10.5, 30.5, prio=255)
    marked = contested_times(real + spoof, until=30.0)
    assert marked
    # a return on every advert (every 0.5 s): more than 5 within the hold time after 3 s
    assert 12.0 < marked[0] <= 13.5 + STEP
    table = PeerTable()
    for a in sorted(real + spoof, key=lambda a: a.timestamp):
        table.update(a)
    peers, stats = table.snapshot()
    (row,) = peers
    assert row.contested
    snap = Snapshot(time=30.6, hostname="h", wire_peers=peers, wire_stats=stats)
    found = [c for c in conditions.evaluate(snap) if c.kind == "wire_conflict"]
    assert [dict(c.labels)["conflict"] for c in found] == ["source"]


@pytest.mark.parametrize(
    "story",
    [
        "track_script_once",
        "track_script_recovers",
        "script_toggling_every_advert",
        "reload_new_vips",
        "restart",
    ],
)
def test_a_legitimate_router_changing_is_never_contested(story: str) -> None:
    src = "10.0.0.1"
    if story == "track_script_once":  # priority lowered once by a failing check, then stays
        ads = every(src, 0.0, 9.0, prio=150) + every(src, 9.3, 30.0, prio=130)  # immediate advert
    elif story == "track_script_recovers":
        ads = (
            every(src, 0.0, 9.0, prio=150)
            + every(src, 10.0, 12.0, prio=130)
            + every(src, 13.0, 30.0, prio=150)
        )
    elif story == "script_toggling_every_advert":  # the fastest a tracked script can flap
        ads = [adv(src, float(t), prio=150 if t % 2 else 130) for t in range(31)]
    elif story == "reload_new_vips":  # SIGHUP with another VIP list
        ads = every(src, 0.0, 9.0, prio=150) + every(
            src, 10.0, 30.0, prio=150, vips=("10.0.0.100", "10.0.0.102")
        )
    else:  # graceful stop (priority 0), a restart with another priority
        ads = [*every(src, 0.0, 9.0, prio=150), adv(src, 9.1, prio=0), *every(src, 13.0, 30.0, prio=120)]
    assert contested_times(ads, until=30.0) == []


def _peer(source: str, **kw: object) -> WirePeer:
    base = WirePeer(
        interface="eth0",
        family="inet",
        vrid=51,
        source=source,
        first_seen=0.0,
        last_seen=10.0,
        priority=100,
        interval=1.0,
        version=2,
        addresses=("10.0.0.100",),
        auth_type=1,
        auth_digest="aaaa",
        adverts=10,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "kinds"),
    [
        ({}, set()),
        ({"addresses": ("10.0.0.100", "10.0.0.101")}, {"vips"}),
        ({"addresses": ("10.0.0.100",)}, set()),
        ({"interval": 2.0}, {"interval"}),
        ({"version": 3, "auth_type": 0, "auth_digest": None}, {"version", "auth"}),
        ({"auth_digest": "bbbb"}, {"auth"}),
        ({"auth_type": 0, "auth_digest": None}, {"auth"}),
    ],
)
def test_conflict_kinds(change: dict[str, object], kinds: set[str]) -> None:
    peers = [_peer("10.0.0.1"), _peer("10.0.0.2", **change)]
    assert conflicts(peers, now=10.5) == kinds


def test_vip_order_is_not_a_conflict_and_silent_routers_do_not_conflict() -> None:
    a = _peer("10.0.0.1", addresses=("10.0.0.100", "10.0.0.101"))
    b = _peer("10.0.0.2", addresses=("10.0.0.101", "10.0.0.100"))
    assert conflicts([a, b], 10.5) == set()
    gone = _peer("10.0.0.3", interval=5.0, last_seen=-100.0)
    assert conflicts([a, gone], 10.5) == set()


def test_spoofed_priority_255_gets_its_own_row_and_raises_split_and_conflict() -> None:
    real = every("10.0.0.1", 0.0, 20.0, prio=150, auth=(1, "realdigest"))
    spoof = every("10.66.6.6", 8.0, 20.0, prio=255, auth=(1, "wrongdigest"))
    table = PeerTable()
    for x in sorted(real + spoof, key=lambda a: a.timestamp):
        table.update(x)
    peers, _ = table.snapshot()
    rows = {p.source: p for p in peers}
    assert rows["10.0.0.1"].priority == 150  # the real master's row is untouched
    assert rows["10.66.6.6"].priority == 255
    assert split_brain(peers, 20.0)
    (v,) = judge(peers, 20.0)
    assert v.masters == 2
    assert v.conflicts == {"auth"}


# -- fixture pcaps through decoder + table + verdicts -----------------------------------------------


def pcap_timeline(name: str) -> tuple[float, list[tuple[float, VridVerdict | None]], list[Advert]]:
    ads = []
    for ts, ip in read_pcap(PCAPS / name):
        a = decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY)
        if isinstance(a, Advert):
            ads.append(a)
    t0 = ads[0].timestamp
    keys = {(a.interface, a.family, a.vrid) for a in ads}
    assert len(keys) == 1
    return t0, replay(ads, until=ads[-1].timestamp + 6.0, start=t0, key=keys.pop()), ads


def test_split_brain_pcap() -> None:
    _t0, tl, ads = pcap_timeline("split-brain.pcap")
    b_first = min(a.timestamp for a in ads if a.source == "10.97.0.2" and a.priority > 0)
    b_last = max(a.timestamp for a in ads if a.source == "10.97.0.2")
    fired = split_times(tl)
    assert fired
    assert b_first < fired[0] <= b_first + 2.0  # within two advert intervals
    assert all(b_first < t <= b_last + 2.5 + STEP for t in fired)
    # on continuously from detection until b stopped advertising (the nft rule was removed)
    assert all(v is not None and v.split_brain for t, v in tl if fired[0] <= t <= b_last)
    assert not tl[-1][1].split_brain  # type: ignore[union-attr]
    assert tl[-1][1].conflicts == frozenset()  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["failover-prio0.pcap", "v3-ipv4-fast.pcap"])
def test_failover_and_start_race_pcaps_never_raise_split_brain(name: str) -> None:
    _t0, tl, ads = pcap_timeline(name)
    assert split_times(tl) == []
    assert {a.source for a in ads} == {"10.97.0.1", "10.97.0.2"}  # two routers did advertise
    last = ads[-1].timestamp
    end = [v for t, v in tl if t <= last][-1]
    assert end is not None
    assert end.masters == 1
    assert not any(v.no_master for t, v in tl if v and t <= last)  # (capture ends at `last`)


def test_failover_pcap_priority_zero_marks_resignation() -> None:
    _t0, _tl, ads = pcap_timeline("failover-prio0.pcap")
    table = PeerTable()
    for a in ads:
        table.update(a)
    rows = {p.source: p for p in table.snapshot()[0]}
    assert rows["10.97.0.1"].priority == 0
    assert rows["10.97.0.1"].last_priority_zero is not None
    assert rows["10.97.0.2"].priority == 100
    assert rows["10.97.0.2"].first_seen > rows["10.97.0.1"].last_priority_zero


def test_vrid_conflict_pcap() -> None:
    _t0, tl, ads = pcap_timeline("vrid-conflict.pcap")
    c = [a for a in ads if a.source == "10.97.0.3"]
    assert len(c) == 1  # the fixture's surprise: c advertises once, then stays MASTER silently
    kinds = {k for _t, v in tl if v for k in v.conflicts}
    assert kinds == {"interval", "vips"}
    fired = split_times(tl)
    assert fired
    assert fired[0] == pytest.approx(c[0].timestamp, abs=STEP + 1e-6)
    first_conflict = min(t for t, v in tl if v and v.conflicts)
    assert first_conflict == pytest.approx(c[0].timestamp, abs=STEP + 1e-6)


@pytest.mark.parametrize("name", ["v2-multicast-pass.pcap", "v2-ah.pcap", "v2-unicast.pcap", "v3-ipv6.pcap"])
def test_quiet_pcaps_have_one_master_and_nothing_else(name: str) -> None:
    _t0, tl, ads = pcap_timeline(name)
    assert split_times(tl) == []
    assert not any(v.conflicts for _t, v in tl if v)
    during = [v for t, v in tl if v and t <= ads[-1].timestamp]
    assert {v.masters for v in during} == {1}


def test_pcap_through_the_live_ingest_path_matches_decode_and_update() -> None:
    from ka_exporter.sources.wire import WireSource
    from ka_exporter.store import Store

    for name in ("split-brain.pcap", "v3-ipv4-fast.pcap", "vrid-conflict.pcap"):
        frames = list(read_pcap(PCAPS / name))
        src = WireSource(Store(hostname="t"), ["eth0"])
        plain = PeerTable()
        for ts, ip in frames:
            src.ingest("eth0", [(ip, ts, False)])
            got = decode(ip, interface="eth0", timestamp=ts, key=PROCESS_KEY)
            if isinstance(got, Advert):
                plain.update(got)
            else:
                plain.count_invalid(got.reason)
        assert src.table.snapshot() == plain.snapshot()
