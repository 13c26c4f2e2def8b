"""Failover timing from the wire: every change of master, its gap or overlap, and time accounts.

The wire's peer table keeps, per router, the start of its current advertising run (`first_seen`: the
first advert after a silence or a priority-0 advert), its last advert (`last_seen`) and its last
priority-0 advert. Those are packet timestamps, so timing derived from them is as exact as the
capture, whatever the moment this tracker looks (`observe`, a few times a second).

What counts (per interface, family, VRID):

* A router *covers* its advertising run, from its first advert to its last one (a run survives a lost
  advert or two: the table starts a new run only after RUN_GAP intervals of silence), or to its
  priority-0 advert (it resigned then). A run that ended is extended to the first advert of a router
  that would win against it (priority at least its own) arriving within one advert interval of its
  last advert: that is a handover (a preemption: keepalived's master yields the moment it hears the
  better advert), not a gap. Covered by exactly one router: one master. By none: **masterless**. By
  two or more: **more than one master** (a preemption's race of a few milliseconds, or a split
  brain). `masterless_seconds` and `multi_master_seconds` add those up and `observed_seconds` is all
  the time accounted, so `1 - (masterless + multi) / observed` over any window (`rate()` of the
  counters) is the VRID's availability as the wire shows it.
* Whether a run has ended is known one advert interval later, so time is accounted up to
  1.5 intervals (plus `SETTLE`, for packets stamped just before a look) behind now.
* A **master change** is counted when a router other than the last master becomes the only one
  covering the accounted present. Its **gap** is from the old master's last advert (or its priority-0
  advert) to the new master's first advert, the masterless time clients of the VIP live through: a
  graceful stop's skew time, a crash's master-down interval (3 x advert_int + skew). A handover has
  no gap: its **overlap** (the old master still advertising after the new one's first advert, usually
  0) is observed instead.
* Time before the first advert heard on a VRID, and time the sniffer was not listening (exporter
  restarts, capture failures, and the 1.5 intervals not yet accounted when a capture stopped), is
  unknown, never downtime: `unobserved_seconds` reports the latter.

* With the L2 witness (`sources/l2.py` feeds `FailoverTracker.announcements`), each master change
  also gets, per VIP of the VRID, its **announce delay**: from the new master's first advert to the
  first gratuitous ARP / unsolicited NA it sent for the VIP (`first_announcement`). That is when
  clients and the switch really move to the new master: until then their ARP / neighbour caches still
  point at the old one. Within ANNOUNCE_BOUND or it counts as *not announced* (a counter, never a
  huge delay). See `first_announcement` for which frames count.

What it cannot see: a master that is silent yet still MASTER (keepalived re-arms a master's timer on
every advert it hears, even dropped ones) reads as masterless here; the fused split-brain verdict uses
the other witnesses for that. This accounting is what the adverts prove, nothing more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ka_exporter.model import FailoverEvent, Histogram, StateSpan, VipAnswers, VridTiming, WirePeer

__all__ = [
    "ANNOUNCE_BOUND",
    "SETTLE",
    "FailoverTracker",
    "first_announcement",
    "last_word",
    "measure",
    "spans",
    "successor",
]

VridKey = tuple[str, str, int]  # (interface, family, vrid), as verdicts.wire.VridKey

SETTLE = 0.05  # seconds: packets stamped just before a look may not be in the table yet
MAX_VRIDS = 256  # bounded: VRIDs are keyed by what the network sends (a spoofer's count as well)
HISTORY_SPANS = 256  # per VRID: the latest stretches of one state (the status page draws the last hour)
ANNOUNCE_BOUND = 30.0  # seconds: a new master that sent no gratuitous ARP / NA by then "did not announce"
# Both the wire and the L2 witness stamp frames in the kernel, on different sockets (the wire's
# advert may sit up to its batch window, sources.wire.BATCH_WINDOW, before it is published, but keeps its
# kernel stamp): the two stamps of one advert can still differ slightly. So the delay is taken from
# the witness's own stamp of that advert when it has one within ANNOUNCE_SLACK of the wire's, and
# frames from ANNOUNCE_SLACK before it are considered.
ANNOUNCE_SLACK = 0.05
MAX_PENDING = 256  # master changes waiting for their announcements (bounded like the VRIDs)


@dataclass(slots=True)
class _Vrid:
    cursor: float  # accounted up to here
    interval: float = 1.0  # the VRID's advert interval, as last heard
    master: str | None = None
    master_end: float | None = None  # the current master's last advert (or its priority-0 advert)
    master_changes: int = 0
    masterless: float = 0.0
    multi: float = 0.0
    observed: float = 0.0
    unobserved: float = 0.0
    gaps: Histogram = field(default_factory=Histogram)
    overlaps: Histogram = field(default_factory=Histogram)
    history: deque[StateSpan] = field(default_factory=lambda: deque(maxlen=HISTORY_SPANS))
    announce: dict[str, tuple[Histogram, int]] = field(default_factory=dict)  # VIP -> (delays, not announced)

    def record(self, start: float, end: float, masters: int, master: str | None = None) -> None:
        """Add [start, end] in one state; a stretch continuing the last one in the same state extends it."""
        if end <= start:
            return
        if self.history:
            last = self.history[-1]
            if last.masters == masters and last.master == master and abs(last.end - start) < 1e-6:
                self.history[-1] = StateSpan(last.start, end, masters, master)
                return
        self.history.append(StateSpan(start, end, masters, master))


def last_word(p: WirePeer) -> float:
    """The router's last advert as master: its priority-0 advert if it resigned, else its last advert."""
    if p.priority == 0 and p.last_priority_zero is not None:
        return p.last_priority_zero
    return p.last_seen


def successor(p: WirePeer, group: list[WirePeer]) -> WirePeer | None:
    """The router that took over from `p` in a handover: it would win against `p` and its run began
    within one interval after `p`'s last advert (before `p` was due to advertise again)."""
    if p.priority == 0:
        return None  # p resigned: whoever follows, there was a gap
    best: WirePeer | None = None
    for q in group:
        if q is p or q.priority < p.priority:
            continue
        if p.last_seen < q.first_seen <= p.last_seen + p.interval and (
            best is None or q.first_seen < best.first_seen
        ):
            best = q
    return best


def spans(group: list[WirePeer], horizon: float) -> list[tuple[float, float]]:
    """Each router's covered span (see the module docstring), clipped to `horizon`."""
    out = []
    for p in group:
        end = last_word(p)
        after = successor(p, group)
        if after is not None:
            end = after.first_seen
        out.append((p.first_seen, min(end, horizon)))
    return out


def measure(covered: list[tuple[float, float]], lo: float, hi: float) -> tuple[float, float]:
    """Of [lo, hi]: (time covered by no span, time covered by two or more)."""
    if hi <= lo:
        return 0.0, 0.0
    edges: list[tuple[float, int]] = []
    for start, end in covered:
        a, b = max(start, lo), min(end, hi)
        if b > a:
            edges += [(a, 1), (b, -1)]
    edges.sort()
    none = multi = 0.0
    depth, at = 0, lo
    for t, d in edges:
        if depth == 0:
            none += t - at
        elif depth >= 2:
            multi += t - at
        depth += d
        at = t
    none += hi - at  # depth is 0 again after the last edge
    return none, multi


def first_announcement(rec: VipAnswers, event: FailoverEvent) -> float | None:
    """How long after its first advert the new master of `event` first announced `rec`'s VIP: the
    first gratuitous ARP / unsolicited NA for the VIP at or after that advert (less ANNOUNCE_SLACK)
    sent from the MAC its adverts come from; None if none was heard (yet).

    keepalived, on becoming master, sends its first advert, adds the VIPs, then `garp_master_repeat`
    gratuitous ARPs (unsolicited NAs for IPv6), and the same again `garp_master_delay` (5 s) later:
    only the first counts (`rec.announcements` keeps the first frame of each burst, oldest first). An
    old master still alive re-announces when it hears lower-priority adverts (keepalived's "forcing a
    new election"), from its own MAC: it never counts. The MAC is what the witness heard the new
    master's adverts come from: its interface's, or the virtual MAC 00:00:5e:00:0{1,2}:VRID with
    use_vmac; with use_vmac both routers announce from the same MAC, so there an old master's
    re-announcement after the change cannot be told apart (it happens only when a split brain heals).
    Adverts not heard from the new master (yet): any MAC but the old master's counts."""
    vrid = event.key[2]
    macs = {src: (mac, start) for v, src, mac, start in rec.advert_macs if v == vrid}
    want, start = macs.get(event.new, (None, None))
    shun = macs.get(event.old, (None, None))[0] if event.old is not None else None
    first = start if start is not None and abs(start - event.at) <= ANNOUNCE_SLACK else event.at
    for at, mac in rec.announcements:
        if at < first - ANNOUNCE_SLACK:
            continue
        if mac == want if want is not None else mac != shun:
            return max(0.0, at - first)
    return None


@dataclass(slots=True)
class _Pending:
    """A master change waiting for its new master's announcements, per VIP."""

    event: FailoverEvent
    done: set[str] = field(default_factory=set)  # VIPs already accounted


class FailoverTracker:
    """Fed the wire's routers a few times a second; keeps each VRID's accounts and recent changes."""

    def __init__(self, history: int = 64, max_vrids: int = MAX_VRIDS) -> None:
        self._vrids: dict[VridKey, _Vrid] = {}
        self.events: deque[FailoverEvent] = deque(maxlen=history)
        self.max_vrids = max_vrids
        self.dropped_vrids = 0
        # Set by the L2 witness when it runs (its latest VipAnswers records): announce delays are
        # measured only then. A change to a master on this host is not: the witness does not hear this
        # host's own frames.
        self.announcements: Callable[[], Iterable[VipAnswers]] | None = None
        self._pending: deque[_Pending] = deque(maxlen=MAX_PENDING)
        self._joined: object = None  # the records last joined

    def observe(self, peers: Iterable[WirePeer], now: float, listening_since: float | None) -> None:
        """Account the time up to the horizon from the routers' runs; `listening_since` None: the
        sniffer is not listening (that time is unobserved)."""
        groups: dict[VridKey, list[WirePeer]] = {}
        for p in peers:
            groups.setdefault((p.interface, p.family, p.vrid), []).append(p)
        for key, group in groups.items():
            v = self._vrids.get(key)
            if v is None:
                if len(self._vrids) >= self.max_vrids:
                    self.dropped_vrids += 1
                    continue
                # Known from its first advert on: before that, nothing was heard (unknown, not down).
                v = self._vrids[key] = _Vrid(cursor=min(p.first_seen for p in group))
            self._account(key, v, group, now, listening_since)
        for key, v in self._vrids.items():
            if key not in groups:  # its routers left the table (linger): nobody covers it any more
                self._account(key, v, [], now, listening_since)
        if self.announcements is not None:
            self.join(self.announcements(), now)

    def join(self, records: Iterable[VipAnswers], now: float) -> None:
        """Account the announce delays of the pending master changes that the L2 witness's `records`
        now decide: announced (a delay), or not within ANNOUNCE_BOUND (not announced). A VIP's series
        exist from the first look on (0 before any change), for every VRID its instance configures."""
        fresh = records is not self._joined  # the witness publishes a new tuple when anything moved
        if not fresh and not self._pending:
            return  # the common case, on every tick
        self._joined = records
        # Keyed by the instance's (interface, family, vrid), as the wire's: one VRID on two interfaces
        # is two instances, and a failover on one says nothing of the other's VIPs.
        by_vrid: dict[VridKey, list[VipAnswers]] = {}
        for r in records:
            for key in r.instances or tuple((r.interface, r.family, vrid) for vrid in r.vrids):
                by_vrid.setdefault(key, []).append(r)
        if fresh:
            for key, v in self._vrids.items():
                for r in by_vrid.get(key, ()):
                    v.announce.setdefault(r.vip, (Histogram(), 0))
        for p in list(self._pending):
            key = p.event.key
            v = self._vrids[key]
            late = now - p.event.at > ANNOUNCE_BOUND
            for r in by_vrid.get(key, ()):
                if r.vip in p.done:
                    continue
                if r.listening_since is None or r.listening_since > p.event.at:
                    p.done.add(r.vip)  # the witness was not listening then: unknown, not late
                    continue
                delay = first_announcement(r, p.event)
                delays, missed = v.announce.get(r.vip, (Histogram(), 0))
                if delay is not None:
                    v.announce[r.vip] = (delays.observe(delay), missed)
                elif late:
                    v.announce[r.vip] = (delays, missed + 1)
                else:
                    continue
                p.done.add(r.vip)
            vips = {r.vip for r in by_vrid.get(key, ())}
            if late or (vips and vips <= p.done):
                self._pending.remove(p)

    def _account(
        self, key: VridKey, v: _Vrid, group: list[WirePeer], now: float, listening_since: float | None
    ) -> None:
        # A run's end is known one interval after its last advert: account up to 1.5 intervals back.
        interval = max((p.interval for p in group), default=v.interval)
        v.interval = interval
        horizon = now - SETTLE - 1.5 * interval
        if listening_since is None:
            if horizon > v.cursor:
                v.unobserved += horizon - v.cursor
                v.record(v.cursor, horizon, -1)
                v.cursor = horizon
            return
        if listening_since > v.cursor:  # the sniffer restarted: the time in between is unknown
            v.unobserved += min(listening_since, horizon) - v.cursor
            v.record(v.cursor, min(listening_since, horizon), -1)
            v.cursor = min(listening_since, horizon)
        if horizon <= v.cursor:
            return
        covered = spans(group, horizon)
        none, multi = measure(covered, v.cursor, horizon)
        v.masterless += none
        v.multi += multi
        v.observed += horizon - v.cursor
        # Who is master at the horizon?
        covering = [p for p, (a, b) in zip(group, covered, strict=True) if a <= horizon <= b]
        # The history: this step's state (several masters at any moment wins, then mostly none).
        step = horizon - v.cursor
        state = 2 if multi > 0 else 0 if none > step / 2 else 1
        v.record(v.cursor, horizon, state, covering[0].source if state == 1 and len(covering) == 1 else None)
        v.cursor = horizon
        old = next((p for p in group if p.source == v.master), None)
        if old is not None:
            v.master_end = last_word(old)
        if len(covering) != 1:
            return  # nobody (a gap in progress) or several (an overlap or split brain in progress)
        (new,) = covering
        if new.source == v.master:
            return
        if v.master is None or v.master_end is None:
            v.master, v.master_end = new.source, last_word(new)  # the first master heard: no change
            return
        if old is not None and successor(old, group) is new:
            overlap = max(0.0, old.last_seen - new.first_seen)
            v.overlaps = v.overlaps.observe(overlap)
            event = FailoverEvent(key, new.first_seen, v.master, new.source, overlap=overlap)
        elif new.first_seen >= v.master_end:
            gap = new.first_seen - v.master_end
            v.gaps = v.gaps.observe(gap)
            event = FailoverEvent(key, new.first_seen, v.master, new.source, gap=gap)
        else:  # the old master went on advertising after the new one's first advert, then stopped
            overlap = v.master_end - new.first_seen
            v.overlaps = v.overlaps.observe(overlap)
            event = FailoverEvent(key, new.first_seen, v.master, new.source, overlap=overlap)
        v.master_changes += 1
        v.master, v.master_end = new.source, last_word(new)
        self.events.append(event)
        if self.announcements is not None and not new.local:
            self._pending.append(_Pending(event))

    def timings(self) -> tuple[VridTiming, ...]:
        return tuple(
            VridTiming(
                key=k,
                master=v.master,
                master_changes=v.master_changes,
                masterless_seconds=v.masterless,
                multi_master_seconds=v.multi,
                observed_seconds=v.observed,
                unobserved_seconds=v.unobserved,
                gaps=v.gaps,
                overlaps=v.overlaps,
                history=tuple(v.history),
                announce=None
                if self.announcements is None
                else tuple((vip, *v.announce[vip]) for vip in sorted(v.announce)),
            )
            for k, v in sorted(self._vrids.items())
        )

    def recent(self) -> tuple[FailoverEvent, ...]:
        return tuple(self.events)
