"""The bounded peer table: caps, eviction order, expiry, resignation, change signalling, threads."""

from __future__ import annotations

import random
import threading
import tracemalloc

from ka_exporter.model import Advert
from ka_exporter.peers import PeerTable
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
    assert table.update(adv("10.0.0.1", 1.0, prio=150)) is False
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
