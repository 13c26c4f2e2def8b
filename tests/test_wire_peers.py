"""The bounded peer table: caps, eviction order, expiry, resignation, change signalling, threads."""

from __future__ import annotations

import random
import threading
import tracemalloc

from ka_exporter.model import Advert
from ka_exporter.store.peers import PeerTable
from ka_exporter.verdicts.wire import hold_time, judge


def adv(source: str, t: float, vrid: int = 51, prio: int = 100, **kw: object) -> Advert:
    fields: dict[str, object] = {
        "timestamp": t,
        "interface": "eth0",
        "family": "inet",
        "source": source,
        "destination": "224.0.0.18",
        "version": 2,
        "vrid": vrid,
        "priority": prio,
        "interval": 1.0,
        "addresses": ("10.0.0.100",),
    }
    fields.update(kw)
    return Advert(**fields)  # type: ignore[arg-type]


def test_flood_of_random_routers_stays_at_cap_and_real_routers_survive() -> None:
    rng = random.Random(7)
    table = PeerTable(cap=256)
    for t in (0.0, 0.5, 1.0):  # established before the flood starts
        table.update(adv("192.0.2.1", t, prio=150))
        table.update(adv("192.0.2.2", t + 0.3, prio=100))
    t = 1.3
    for i in range(20_000):
        t += 0.0001
        src = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        table.update(adv(src, t, vrid=rng.randrange(1, 256), prio=rng.randrange(256)))
        if i % 500 == 0:  # the real master and a real backup-turned-master keep advertising
            table.update(adv("192.0.2.1", t, prio=150))
            table.update(adv("192.0.2.2", t, prio=100))
        assert len(table) <= 256
    peers, stats = table.snapshot()
    assert len(peers) == 256
    assert stats.evictions >= 20_000 - 256
    rows = {p.source: p for p in peers if p.vrid == 51}
    assert rows["192.0.2.1"].adverts == 43
    assert rows["192.0.2.1"].first_seen == 0.0
    # the real split brain is still visible under the flood
    (v,) = [v for v in judge(peers, t) if v.key == ("eth0", "inet", 51)]
    assert v.split_brain


def test_when_only_established_routers_remain_the_stalest_is_evicted() -> None:
    table = PeerTable(cap=3)
    for r in range(3):
        for k in range(3):
            table.update(adv(f"10.0.0.{r}", r + k * 0.1))
    table.update(adv("10.0.0.9", 10.0))
    sources = {p.source for p in table.snapshot()[0]}
    assert sources == {"10.0.0.1", "10.0.0.2", "10.0.0.9"}
    assert table.snapshot()[1].evictions == 1


def test_memory_is_bounded_by_the_cap_not_by_the_flood() -> None:
    table = PeerTable(cap=500)
    rng = random.Random(1)

    def flood(n: int, t0: float) -> None:
        for i in range(n):
            src = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            table.update(adv(src, t0 + i * 1e-5, vrid=rng.randrange(1, 256)))

    tracemalloc.start()
    flood(2_500, 0.0)  # fills the table (traced, so every live entry is counted)
    full = tracemalloc.get_traced_memory()[0]
    flood(12_000, 1.0)
    grown = tracemalloc.get_traced_memory()[0] - full
    tracemalloc.stop()
    assert len(table) == 500
    assert full > 150_000  # the measurement sees the table...
    assert grown < 30_000  # ...and five times more flood adds nothing to it


def test_expiry_after_hold_time_and_removal_after_linger() -> None:
    table = PeerTable(linger=60.0)
    table.update(adv("10.0.0.1", 0.0))
    hold = hold_time(1.0, 2)
    assert table.tick(hold - 0.01) is False
    assert table.snapshot()[1].expirations == 0
    assert table.tick(hold + 0.01) is True  # masters 1 -> 0, no master
    assert table.snapshot()[1].expirations == 1
    table.tick(30.0)
    assert table.snapshot()[1].expirations == 1  # counted once
    assert len(table) == 1  # still visible: "no master" and the last advert time
    table.tick(60.5)
    assert len(table) == 0


def test_priority_zero_marks_resignation_and_a_new_run_starts_after_it() -> None:
    table = PeerTable()
    table.update(adv("10.0.0.1", 0.0, prio=150))
    table.update(adv("10.0.0.1", 1.0, prio=150))
    assert table.update(adv("10.0.0.1", 1.5, prio=0)) is True
    (p,) = table.snapshot()[0]
    assert (p.priority, p.last_priority_zero, p.first_seen) == (0, 1.5, 0.0)
    assert table.update(adv("10.0.0.1", 2.0, prio=150)) is True
    (p,) = table.snapshot()[0]
    assert (p.priority, p.first_seen, p.adverts) == (150, 2.0, 4)


def test_a_gap_longer_than_run_gap_starts_a_new_run() -> None:
    table = PeerTable()
    for t in (0.0, 1.0, 2.0, 3.0):
        table.update(adv("10.0.0.1", t))
    table.update(adv("10.0.0.1", 5.4))  # one advert lost: same run
    assert table.snapshot()[0][0].first_seen == 0.0
    table.update(adv("10.0.0.1", 8.0))  # 2.6 intervals of silence: it had stopped
    assert table.snapshot()[0][0].first_seen == 8.0


def test_update_signals_only_verdict_relevant_changes() -> None:
    table = PeerTable()
    assert table.update(adv("10.0.0.1", 0.0, prio=150)) is True  # new router
    # its run reached two adverts: the fused verdict's address witness counts it from now on
    assert table.update(adv("10.0.0.1", 1.0, prio=150)) is True
    assert table.update(adv("10.0.0.1", 2.0, prio=150)) is False
    assert table.update(adv("10.0.0.2", 2.4, prio=100)) is True  # new router: masters 1 -> 2
    peers, _ = table.snapshot()
    assert judge(peers, 2.4)[0].masters == 2
    assert table.update(adv("10.0.0.1", 3.0, prio=150)) is False  # runs overlap 0.6 - 0.4 = 0.2 s
    assert judge(table.snapshot()[0], 3.0)[0].split_brain is False
    assert table.update(adv("10.0.0.2", 3.4, prio=100)) is True  # overlap 3.0 - 2.4 >= 0.5: split
    assert judge(table.snapshot()[0], 3.4)[0].split_brain is True
    assert table.update(adv("10.0.0.1", 4.0, prio=150)) is False  # still split
    assert table.update(adv("10.0.0.1", 5.0, prio=150, addresses=("10.9.9.9",))) is True  # conflict


def test_invalid_and_packet_counters() -> None:
    table = PeerTable()
    table.count_invalid("bad_checksum")
    table.count_invalid("bad_checksum")
    table.count_invalid("bad_ttl")
    table.update(adv("10.0.0.1", 0.0))
    _, stats = table.snapshot()
    invalid = dict(stats.invalid)
    assert invalid["bad_checksum"] == 2
    assert invalid["bad_ttl"] == 1
    assert invalid["truncated"] == 0  # every reason is always there (series known in advance)
    assert stats.packets == 4


def test_concurrent_writers_and_readers() -> None:
    table = PeerTable(cap=100)
    errors: list[BaseException] = []
    done = threading.Event()

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for i in range(5_000):
                table.update(adv(f"10.0.{seed}.{rng.randrange(256)}", i * 0.001, vrid=rng.randrange(1, 9)))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not done.is_set():
                peers, _stats = table.snapshot()
                assert len(peers) <= 100
                assert len({(p.interface, p.family, p.vrid, p.source) for p in peers}) == len(peers)
                table.tick(1.0)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(s,)) for s in range(3)]
    reader = threading.Thread(target=read)
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    assert errors == []
    assert table.snapshot()[1].packets == 15_000


def test_repeat_fast_path_is_equivalent_to_update() -> None:
    """The source's shortcut for byte-identical adverts gives the same table and the same signals."""
    rng = random.Random(42)
    slow, fast = PeerTable(cap=6), PeerTable(cap=6)
    shapes: dict[tuple[object, ...], Advert] = {}  # what the source caches per packet shape
    t = 0.0
    hits = 0
    for _ in range(5_000):
        t += rng.choice([0.05, 0.3, 1.0, 1.0, 1.0, 3.0]) / 4
        r = rng.randrange(1, 5)  # 4 routers on 2 VRIDs: 8 keys for 6 places, so evictions too
        prio = 50 * r if rng.random() > 0.05 else rng.choice([0, 255])
        a = adv(f"10.0.0.{r}", t, vrid=51 + r % 2 if rng.random() > 0.1 else 53, prio=prio)
        shape = (a.source, a.vrid, a.priority)
        known = shapes.get(shape)
        got = fast.repeat(known, t, False) if known is not None else None
        if got is None:
            shapes[shape] = a
            got = fast.update(a)
        else:
            hits += 1
        assert got == slow.update(a), (t, a)
        if rng.random() < 0.05:
            now = t + rng.random() * 5
            assert fast.tick(now) == slow.tick(now)
    assert fast.snapshot() == slow.snapshot()
    assert hits > 1_000


def test_repeat_does_not_apply_to_unknown_or_new_entries() -> None:
    table = PeerTable()
    a = adv("10.0.0.1", 0.0)
    assert table.repeat(a, 1.0, False) is None
    table.update(a)
    assert table.repeat(a, 1.0, False) is None  # probationary: the slow path promotes it
    table.update(adv("10.0.0.1", 1.0))
    b = adv("10.0.0.1", 2.0)
    table.update(b)
    assert table.repeat(b, 3.0, False) is False
    assert table.repeat(a, 4.0, False) is None  # not what last updated the entry
    assert table.repeat(b, 9.0, False) is None  # after a gap: a new run, slow path


def test_contested_row_is_signalled_and_cleared_and_keeps_the_last_adverts_values() -> None:
    table = PeerTable()
    for t in (0.0, 1.0, 2.0):
        table.update(adv("10.0.0.1", t, prio=150, auth_type=1, auth_digest="real"))
    # one change (a reload?) is not a contest, and one router cannot conflict: no verdict changed
    assert table.update(adv("10.0.0.1", 2.5, prio=150, auth_type=1, auth_digest="spoof")) is False
    assert table.snapshot()[0][0].contested is False
    assert table.update(adv("10.0.0.1", 3.0, prio=150, auth_type=1, auth_digest="real")) is True
    (row,) = table.snapshot()[0]
    assert row.contested
    assert row.auth_digest == "real"
    (v,) = judge(table.snapshot()[0], 3.0)
    assert v.conflicts == {"source"}
    # the spoofer stops; the real master goes on; one hold time after the last return it clears
    hold = hold_time(1.0, 2)
    t = 3.0
    cleared = None
    while t < 12.0:
        t += 1.0
        if table.update(adv("10.0.0.1", t, prio=150, auth_type=1, auth_digest="real")):
            cleared = t
            break
    assert cleared is not None
    assert 3.0 + hold < cleared <= 3.0 + hold + 1.0
    assert table.snapshot()[0][0].contested is False


def test_a_change_reverted_long_after_is_not_a_return() -> None:
    table = PeerTable()
    for t in range(0, 10):
        table.update(adv("10.0.0.1", float(t), prio=150))
    for t in range(10, 60):  # a reload with another VIP list, reverted 50 s later
        table.update(adv("10.0.0.1", float(t), prio=150, addresses=("10.0.0.102",)))
    for t in range(60, 70):
        table.update(adv("10.0.0.1", float(t), prio=150))
    for t in range(70, 200):  # a tracked script lowers the priority and recovers, over and over,
        table.update(adv("10.0.0.1", float(t), prio=130 if (t // 10) % 2 else 150))  # every 10 s
        assert table.snapshot()[0][0].contested is False


def test_the_repeat_fast_path_does_not_hide_a_contested_row_clearing() -> None:
    slow, fast = PeerTable(), PeerTable()
    real = [adv("10.0.0.1", float(t), prio=150, auth_type=1, auth_digest="r") for t in range(30)]
    spoof = [adv("10.0.0.1", t + 0.5, prio=150, auth_type=1, auth_digest="s") for t in range(5, 10)]
    ads = sorted(real + spoof, key=lambda a: a.timestamp)
    shapes: dict[str | None, Advert] = {}
    for a in ads:
        known = shapes.get(a.auth_digest)
        got = fast.repeat(known, a.timestamp, False) if known is not None else None
        if got is None:
            shapes[a.auth_digest] = a
            got = fast.update(a)
        assert got == slow.update(a), a.timestamp
        assert fast.snapshot() == slow.snapshot()
    assert slow.snapshot()[0][0].contested is False  # cleared by the end


def test_listening_is_reported_and_a_stopped_capture_counts_its_window_only() -> None:
    clock = [100.0]
    table = PeerTable(clock=lambda: clock[0])
    assert table.snapshot()[1].listening_since is None
    assert table.listening() is None
    table.set_listening({"eth0": 100.0, "eth1": 101.0})
    _, stats = table.snapshot()
    assert (stats.listening_since, stats.interfaces) == (101.0, ("eth0", "eth1"))  # the whole set
    table.stop_listening(104.0)
    clock[0] = 110.0
    _, stats = table.snapshot()
    assert stats.interfaces == ("eth0", "eth1")
    assert stats.listening_since is not None
    assert clock[0] - stats.listening_since == 3.0  # listened 101 .. 104
    table.set_listening({"eth0": 120.0})  # a new capture
    assert table.snapshot()[1].listening_since == 120.0


def test_tick_skips_steady_vrids_yet_says_what_a_full_judgement_says() -> None:
    """tick() judges a VRID with one router present only once until its hold time can run out; at
    every tick its verdicts still equal judging every VRID from the table's records."""
    rng = random.Random(12)
    table = PeerTable()
    events: list[tuple[float, Advert]] = []
    for vrid in range(1, 41):
        stop = rng.choice((4.0, 9.0, 30.0))  # some fall silent and expire, some keep advertising
        prio = rng.choice((100, 150))
        t = rng.random()
        while t < stop:
            changed = vrid % 7 == 0 and 10.0 < t < 12.0  # a few change priority, or resign, meanwhile
            events.append(
                (t, adv("192.0.2.1", t, vrid=vrid, prio=0 if changed and vrid % 2 else prio + changed))
            )
            t += 1.0
        if vrid % 10 == 0:  # and a few get a second router later
            events.append((15.0 + vrid / 100, adv("192.0.2.2", 15.0 + vrid / 100, vrid=vrid, prio=90)))
    events.sort(key=lambda e: e[0])
    skipped = 0
    now = 0.0
    i = 0
    while now < 30.0:
        now += 0.25
        while i < len(events) and events[i][0] <= now:
            table.update(events[i][1])
            i += 1
        steady = sum(1 for until in table._steady.values() if now <= until)
        table.tick(now)
        skipped += steady
        peers, _stats = table.snapshot()
        expected = {v.key: v.summary for v in judge(peers, now, listening=table.listening())}
        assert table._verdicts == expected, now
    assert skipped > 40 * 10  # most VRIDs were steady most of the time: the tick did skip them
    assert any(not v[0] for v in table._verdicts.values())  # and expiry was still seen


def test_the_tick_is_due_only_when_a_steady_routers_hold_time_can_run_out() -> None:
    """One router per VRID advertising steadily: nothing changes before its latest advert's hold time,
    so the capture thread need not tick 4 times a second (PeerTable.due)."""
    table = PeerTable()
    hold = hold_time(1.0, 2)
    a = adv("192.0.2.1", 0.0)
    for t in (0.0, 1.0, 2.0):
        a = adv("192.0.2.1", t)
        table.update(a)
    assert table.due() == float("-inf")  # updated since the last tick: judged at the next one
    table.tick(2.0)
    assert table.due() == 2.0 + hold
    moved = table.moved()
    assert table.repeat(a, 3.0, False) is False  # the same bytes again: only last_seen moves
    assert table.due() == 2.0 + hold  # kept from the last tick: early, never late
    assert table.moved() == moved  # the failover accounts need not look before FAILOVER_IDLE
    assert not table.tick(2.0 + hold + 0.1)  # past the hold time it was judged at, but heard since
    assert table.due() == 3.0 + hold  # the tick then finds the latest advert's
    table.update(adv("192.0.2.2", 3.5, prio=90))  # a second router: judged at every tick
    assert table.due() == float("-inf") and table.moved() > moved
