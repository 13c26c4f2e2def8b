"""The L2 witness's cost and bounds (issue #12): a VIP without a socket does not make its thread spin,
a spoofed advert flood neither grows its tables nor its work, IPv6 neighbour advertisements in a
probe's window are announcements too, the announce join is keyed by the instance's interface, and
the probe rate cap holds between any two probes."""

from __future__ import annotations

import socket
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from itertools import pairwise

import pytest

from ka_exporter.model import ConfInstance, ConfVip, KeepalivedConfig, LocalAddress, VipAnswers
from ka_exporter.sources.l2 import ROUTER_EXPIRY, ROUTERS_PER_VRID, L2Source, decode
from ka_exporter.store import Store
from ka_exporter.testing import wait_until
from ka_exporter.verdicts.failover import FailoverTracker
from ka_exporter.verdicts.fused import l2_witness
from tests.conftest import in_netns
from tests.test_failover import Router

MAC = bytes.fromhex("020000000009")
A_MAC, B_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
VIP6 = "fd00:9:8::100"


def thread_cpu_ms(tid: int) -> float:
    """A thread's CPU time so far (the kernel's schedstat, ns)."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e6


def no_spin(src: L2Source, tid: int, progress: Callable[[], int], what: str) -> None:
    """While `progress` moves by 10, the witness's thread wakes a few times per step and uses far
    less than a core (a spin: thousands of wakeups, ~1 s of CPU per second)."""
    cpu, wakeups, start = thread_cpu_ms(tid), src.wakeups, progress()
    assert wait_until(lambda: progress() >= start + 10, 20.0), f"no {what}"
    steps, done, used = src.wakeups - wakeups, progress() - start, thread_cpu_ms(tid) - cpu
    assert steps <= 3 * done + 10, (what, steps, done)
    assert used < 200.0, f"{used:.0f} ms of CPU for {done} {what} (spinning)"


def config(*instances: tuple[str, int, str]) -> KeepalivedConfig:
    """keepalived.conf with one instance per (interface, vrid, VIP)."""
    return KeepalivedConfig(
        instances=tuple(
            ConfInstance(
                f"VI_{k}", iface, vrid, vips=(ConfVip(vip),), family="inet6" if ":" in vip else "inet"
            )
            for k, (iface, vrid, vip) in enumerate(instances)
        )
    )


def source(store: Store, clock: list[float], *instances: tuple[str, int, str]) -> L2Source:
    store.set_config(config(*instances))
    src = L2Source(store, clock=lambda: clock[0])
    src._sync_watches()
    src._check_store(store.snapshot())
    return src


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A real datagram socket pair: one end stands in for an interface's capture (probes go out on it)."""
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    far.setblocking(False)
    yield near, far
    near.close()
    far.close()


# --------------------------------------------------------------------------------------------------
# 1. no spin: a VIP whose interface is missing, or whose link is down
# --------------------------------------------------------------------------------------------------


def test_a_vip_on_a_missing_interface_or_a_downed_link_does_not_make_the_thread_spin(netns: str) -> None:
    """One VIP on eth0 (probed), one on an interface that does not exist. Before, the missing one's
    probe stayed due, the loop waited 0 s and its thread took a whole core until the next socket
    check, every second. With eth0's link down its socket got ENETDOWN, was closed and opened again,
    got ENETDOWN again at once: ~70 sockets a second; now it is kept and probes fail (and resume)."""
    store = Store()
    src = L2Source(store, [("nosuch0", "10.9.8.100"), ("eth0", "10.9.8.101")], probe_interval=0.2)
    in_netns(netns, src.start)
    try:
        assert wait_until(lambda: src.sent >= 2, 10.0), "the VIP on eth0 was never probed"
        health = store.health("l2")
        assert health is not None and not health.up and "nosuch0" in (health.error or "")
        thread = src._thread
        assert thread is not None and thread.native_id is not None
        tid = thread.native_id
        # a probe, its window's end, a socket retry a second: a few wakeups per probe, not thousands
        no_spin(src, tid, lambda: src.sent, "probes of eth0's VIP")
        subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "down"], check=True)
        failed = src.send_failures
        assert wait_until(lambda: src.send_failures >= failed + 5, 20.0), "no send failed on a downed link"
        no_spin(src, tid, lambda: src.send_failures, "failed sends on the downed link")
        subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "up"], check=True)
        sent = src.sent
        assert wait_until(lambda: src.sent >= sent + 3, 20.0), "probes did not resume when the link came up"
    finally:
        src.stop()


def _advert(vrid: int, source: str, mac: bytes) -> bytes:
    """A VRRPv3 IPv4 advert frame (priority 200, 1 s) for `vrid` from `source` / `mac`."""
    vrrp = bytes([0x31, vrid, 200, 1, 0, 100, 0, 0]) + socket.inet_aton(f"10.9.{vrid}.100")
    ip = bytes([0x45, 0, 0, 20 + len(vrrp), 0, 0, 0, 0, 255, 112, 0, 0])
    ip += socket.inet_aton(source) + socket.inet_aton("224.0.0.18")
    return bytes.fromhex("01005e000012") + mac + b"\x08\x00" + ip + vrrp


def test_adverts_are_read_in_batches_not_one_wakeup_each(netns: str) -> None:
    """A backup with 20 instances hears 20 adverts a second from the master: the witness learns
    every router's MAC (the announce join reads them) without waking for each advert."""
    store = Store()
    store.set_config(config(*[("eth0", 1 + k, f"10.9.{1 + k}.100") for k in range(20)]))
    src = L2Source(store, probe=False)
    mac = bytes.fromhex("02000000aa01")
    frames = [_advert(1 + k, f"10.9.{1 + k}.1", mac) for k in range(20)]
    tx = in_netns(netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    in_netns(netns, lambda: tx.bind(("peer0", 0)))
    in_netns(netns, src.start)
    sent = 0
    try:
        assert wait_until(lambda: src._socks, 10.0), "the witness did not open eth0"
        wakeups = src.wakeups
        deadline = time.monotonic() + 30.0
        while sent < 200 and time.monotonic() < deadline:  # 20 a second, evenly
            tx.send(frames[sent % 20])
            sent += 1
            time.sleep(0.05)
        assert sent == 200
        assert wait_until(lambda: sum(len(r) for r in src._routers.values()) == 20, 5.0), src._routers
        steps = src.wakeups - wakeups
        assert steps <= sent // 3, f"{steps} wakeups for {sent} adverts"
        assert wait_until(lambda: all(r.advert_macs for r in src.published), 10.0)
    finally:
        src.stop()
        tx.close()


# --------------------------------------------------------------------------------------------------
# 2. advert MACs: configured VRIDs only, ROUTERS_PER_VRID each, learnt at a run's start, expiring
# --------------------------------------------------------------------------------------------------


def test_a_spoofed_advert_flood_grows_neither_the_tables_nor_the_work() -> None:
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    src = source(store, clock, ("eth0", 51, "10.9.8.100"), ("eth1", 52, "10.9.9.100"))
    src._publish(100.0, force=True)
    eth0 = src._watches[("eth0", socket.inet_aton("10.9.8.100"))]
    real = [(f"10.9.8.{k}", bytes([2, 0, 0, 0, 0, k])) for k in (1, 2)]
    for ip, mac in real:
        src._advert("eth0", ("inet", 51, ip, mac, 100, 1.0), 100.0)
    src._publish(100.01)
    first = eth0.rec
    assert first is not None and [m[1] for m in first.advert_macs] == ["10.9.8.1", "10.9.8.2"]
    generation, context = store.generation, src._context_gen
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k in range(20_000):
            at = 100.02 + k * 1e-5
            spoof = bytes([2, 0xEE, k >> 16 & 0xFF, k >> 8 & 0xFF, k & 0xFF, 0])
            src._advert(
                "eth0", ("inet", 51, f"10.{k >> 16 & 0xFF}.{k >> 8 & 0xFF}.{k & 0xFF}", spoof, 200, 1.0), at
            )
            src._advert(
                "eth0", ("inet", 100 + k % 150, "10.66.0.1", spoof, 200, 1.0), at
            )  # unconfigured VRIDs
            src._advert("eth1", ("inet", 51, "10.66.0.2", spoof, 200, 1.0), at)  # VRID 51 is eth0's
            src._advert("eth0", ("inet", 51, real[0][0], spoof, 100, 1.0), at)  # a known router's IP, mid-run
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert sorted(src._routers) == [("eth0", "inet", 51)]
    routers = src._routers[("eth0", "inet", 51)]
    assert len(routers) == ROUTERS_PER_VRID
    assert routers[real[0][0]][0] == real[0][1]  # mid-run adverts with another MAC change nothing
    assert real[1][0] in routers  # the routers known before the flood stay
    assert src.adverts_refused == 20_000 - (ROUTERS_PER_VRID - 2)
    assert src.adverts_ignored == 40_000
    assert grown < 64 * 1024, f"{grown} bytes kept after 80,000 adverts"
    # the work: the flood's only record rebuilds are eth0's VIP's, once per router learnt
    assert src._context_gen == context
    assert [w.vip for w in src._dirty.values()] == ["10.9.8.100"]
    src._publish(100.3)
    assert store.generation == generation + 1  # one publication (advert MACs), not one per advert
    rec = eth0.rec
    assert rec is not None and len(rec.advert_macs) == ROUTERS_PER_VRID
    # 60 s later the spoofed sources have gone silent, the real ones have not: a new router fits again
    for ip, mac in real:
        src._advert("eth0", ("inet", 51, ip, mac, 100, 1.0), 100.0 + ROUTER_EXPIRY)
    newcomer = bytes.fromhex("02000000000c")
    src._advert("eth0", ("inet", 51, "10.9.8.12", newcomer, 100, 1.0), 101.0 + ROUTER_EXPIRY)
    assert sorted(routers) == ["10.9.8.1", "10.9.8.12", "10.9.8.2"]


def test_a_steady_routers_adverts_rebuild_nothing_and_a_new_run_learns_its_mac() -> None:
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    src = source(store, clock, ("eth0", 51, "10.9.8.100"))
    src._publish(100.0, force=True)
    src._advert("eth0", ("inet", 51, "10.9.8.1", A_MAC, 100, 1.0), 100.0)
    src._publish(100.0)
    assert not src._dirty
    for t in range(1, 30):  # 29 adverts of one run, one a second
        src._advert("eth0", ("inet", 51, "10.9.8.1", A_MAC, 100, 1.0), 100.0 + t)
    assert not src._dirty
    src._advert("eth0", ("inet", 51, "10.9.8.1", B_MAC, 100, 1.0), 135.0)  # silent 6 s: a new run
    assert list(src._dirty) == [("eth0", socket.inet_aton("10.9.8.100"))]
    assert src._routers[("eth0", "inet", 51)]["10.9.8.1"][0::3] == [B_MAC, 135.0]


# --------------------------------------------------------------------------------------------------
# 3. IPv6: an unsolicited NA in a probe's window is an announcement too
# --------------------------------------------------------------------------------------------------


def _na(mac: bytes, vip: str) -> bytes:
    """An unsolicited NA (override, no solicited flag) for `vip` from `mac`, to all-nodes."""
    from ka_exporter.sources.l2 import ICMPV6, ND_NA

    body = bytes([ND_NA, 0, 0, 0, 0x20, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, vip)
    body += bytes([2, 1]) + mac
    ip6 = bytes([0x60, 0, 0, 0]) + len(body).to_bytes(2, "big") + bytes([ICMPV6, 255])
    ip6 += socket.inet_pton(socket.AF_INET6, vip) + socket.inet_pton(socket.AF_INET6, "ff02::1")
    return b"\x33\x33\x00\x00\x00\x01" + mac + b"\x86\xdd" + ip6 + body


def test_an_unsolicited_na_in_a_probe_window_counts_as_an_announcement() -> None:
    """keepalived's unsolicited NAs after a takeover land in the window of the probe the takeover's
    news set off: before, every NA in a window was only an answer, and the new master's announce
    delay was missed. A probe's own answer (the first NA from a MAC that answered the last probe)
    is not an announcement, so a steady holder answering the probes announces nothing."""
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    src = source(store, clock, ("eth0", 51, VIP6))
    (w,) = src._watches.values()
    for at in (90.0, 91.0):  # a answers: the published result
        w.opened(at, 1.0)
        w.probe_macs.append(A_MAC)
        w.close(at + 0.2, 8)
    assert w.last_probe_macs == (A_MAC,)
    answer, announce = decode(_na(A_MAC, VIP6), MAC), decode(_na(B_MAC, VIP6), MAC)
    assert answer is not None and announce is not None and answer.to_probe and answer.announce
    w.opened(100.0, 1.0)
    src._heard(w, answer, 100.001)  # a answers the probe: an answer, no announcement
    assert list(w.bursts) == []
    src._heard(w, announce, 100.002)  # b takes over and announces, within the window
    src._heard(w, answer, 100.003)  # a's own second NA in one window: an announcement (a burst)
    assert list(w.bursts) == [(100.002, B_MAC), (100.003, A_MAC)]
    assert w.probe_macs == [A_MAC, B_MAC, A_MAC]  # ... and all of them answers to the probe
    src._heard(w, announce, 100.5)  # after the window: an announcement, continuing b's burst
    assert list(w.bursts) == [(100.002, B_MAC), (100.003, A_MAC)]


# --------------------------------------------------------------------------------------------------
# 4. the announce join: keyed by the instance's interface, not only the VIP's VRID
# --------------------------------------------------------------------------------------------------


def test_the_announce_join_is_keyed_by_the_instances_interface() -> None:
    """VRID 51 on eth0 and VRID 51 on eth1 are two instances: a failover on eth0 (the wire's key) is
    joined with eth0's VIP only; before, with every VIP of any VRID 51."""
    mac_a, mac_b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    starts = {"10.0.0.1": -1.0, "10.0.0.2": 10.9}

    def record(vip: str, iface: str, announced: float) -> VipAnswers:
        return VipAnswers(
            vip=vip,
            interface=iface,
            family="inet",
            listening_since=0.0,
            vrids=(51,),
            instances=((iface, "inet", 51),),
            announcements=((announced, mac_b),),
            advert_macs=tuple(
                (51, src, mac, starts[src]) for src, mac in (("10.0.0.1", mac_a), ("10.0.0.2", mac_b))
            ),
        )

    records = (record("10.0.0.100", "eth0", 10.904), record("10.1.0.100", "eth1", 10.95))
    routers = [Router("10.0.0.1").every(0, 10, 150).at(10.3, 0), Router("10.0.0.2").every(10.9, 40, 100)]
    tracker = FailoverTracker()
    tracker.announcements = lambda: records
    t = 0.0
    while t <= 40.0:
        tracker.observe([r for r in (x.record(t) for x in routers) if r is not None], t, 0.0)
        t = round(t + 0.25, 6)
    (timing,) = tracker.timings()
    assert timing.key == ("eth0", "inet", 51)
    assert timing.announce is not None
    shown = {vip: (delays.count, missed) for vip, delays, missed in timing.announce}
    assert shown == {"10.0.0.100": (1, 0)}  # eth1's VIP is not eth0's instance's
    (delay,) = [d for vip, d, _m in timing.announce]
    assert abs(delay.total - 0.004) < 1e-9


# --------------------------------------------------------------------------------------------------
# 5. the rate cap: never two probes closer than 1 / max_probe_rate
# --------------------------------------------------------------------------------------------------


def test_the_probe_gap_is_taken_from_the_end_of_the_previous_send(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    """The clock moves while a send runs: the next probe starts a whole gap after the previous send
    returned, so the frames (stamped and queued by the kernel inside the send) are never closer than
    1 / max_probe_rate. Before, the gap was counted from the read of the clock before the send."""
    near, far = socket_pair
    clock = [100.0]
    store = Store(clock=lambda: clock[0])
    store.set_config(config(*[("eth0", 51, f"10.9.8.{100 + k}") for k in range(20)]))
    ticks = iter(range(10**6))

    def now() -> float:  # each read of the clock 1 ms later: a send takes time
        clock[0] = 100.0 + next(ticks) * 0.001
        return clock[0]

    src = L2Source(store, clock=now, max_probe_rate=20.0)
    src._sync_watches()
    src._attach("eth0", near, MAC)
    sends: list[tuple[float, float]] = []  # (clock before the send, clock after it returned)
    while len(sends) < 12:
        before = src.sent
        src._send_probes(now())
        if src.sent > before:
            w = next(reversed(src._open_probes.values()))
            assert w.probe_at is not None
            sends.append((w.probe_at, src._last_probe_sent))
            assert far.recv(100)[0:6] == b"\xff" * 6  # the probe went out
            w.close(clock[0], 8)
    gaps = [b[0] - a[1] for a, b in pairwise(sends)]
    assert min(gaps) >= src.min_gap - 1e-9, gaps


def test_probes_that_only_confirm_still_move_the_time_accounts_cursor(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    """A probe confirming the published result is not rebuilt into a record at once (the refresh
    does it), but it is the latest evidence of the count: a change found later is split at the
    midpoint from it (5.5 s here), not from the last record built (4.0 s: a second too much)."""
    clock = [0.0]
    store = Store(clock=lambda: clock[0])
    src = source(store, clock, ("eth0", 51, "10.9.8.100"))
    src._attach("eth0", socket_pair[0], MAC)
    (w,) = src._watches.values()

    def probe(at: float, *answers: bytes) -> None:
        clock[0] = at
        w.opened(at, 1.0)
        w.probe_macs.extend(answers)
        clock[0] = at + 0.2
        w.close(at + 0.2, 8)
        src._publish(at + 0.2)

    probe(1.0, A_MAC)
    probe(2.0, A_MAC)  # published: one answerer from 1.0
    built = w.rec
    for at in (3.0, 4.0, 5.0):
        probe(at, A_MAC)  # confirmations only
    assert w.rec is built
    probe(6.0)
    probe(7.0)  # nobody answers, twice: published
    rec = w.rec
    assert rec is not None and rec.last_probe_answers == 0
    assert abs(rec.no_answerer_seconds - 1.5) < 1e-9, rec.no_answerer_seconds
    # one answerer from the first record (1.2 s; unobserved before it) to the midpoint
    assert abs(rec.one_answerer_seconds - (5.5 - 1.2)) < 1e-9, rec.one_answerer_seconds
    assert abs(rec.unobserved_seconds - 1.2) < 1e-9


def test_a_takeover_here_is_news_once_probes_after_it_agree_even_after_lazy_confirmations(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Node b takes the VIP over a second time while a still answers (a split): the pair of probes
    after the change is published at once (the watchdog is woken), although the confirmations
    before it waited for the refresh. Before: "probed after the change" was judged against the
    previous change, already true, so the flip was not news (bench_l2: 1-3 s instead of 0.1)."""
    clock = [0.0]
    store = Store(clock=lambda: clock[0])
    src = source(store, clock, ("eth0", 51, "10.9.8.100"))
    src._attach("eth0", socket_pair[0], MAC)
    (w,) = src._watches.values()
    held = (LocalAddress("10.9.8.100", 24, "eth0", "inet"),)

    def probe(at: float) -> None:
        clock[0] = at
        w.opened(at, 1.0)
        w.probe_macs.append(A_MAC)
        clock[0] = at + 0.01
        src._check_store(store.snapshot())
        w.close(at + 0.01, 8)
        src._publish(at + 0.01)

    def split(at: float) -> bool:
        clock[0] = at
        store.set_addresses(held)
        src._check_store(store.snapshot())
        src._publish(at)
        generation = store.generation
        probe(at + 0.1)
        probe(at + 0.2)
        snap = store.snapshot()
        assert snap.l2 is not None
        return store.generation > generation and l2_witness(
            snap.l2, frozenset({"10.9.8.100"}), snap.addresses_changed
        )

    for at in (1.0, 2.0, 3.0, 4.0):
        probe(at)
    assert split(5.0)  # the first split
    for at in (6.0, 7.0):
        probe(at)
    clock[0] = 8.0
    store.set_addresses(())  # healed
    src._check_store(store.snapshot())
    for at in (8.1, 8.2, 9.0, 10.0, 11.0):
        probe(at)
    src._publish(16.5)  # the refresh: every record current
    assert split(17.0)  # the second split: news at once too
