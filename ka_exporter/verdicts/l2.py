"""The L2 witness's verdicts: who answers for each VIP now, two answerers, nobody answering.

Pure functions of `VipAnswers` records (and the local address table): no I/O, the time is an argument.

- `answerers`: how many distinct hosts answer for the VIP now, this node included when it holds the VIP
  (netlink; a host does not hear its own replies, so the records never name it).
- `two_answerers`: two or more hosts answer, or one probe got two or more answers (use_vmac: both
  masters answer with one virtual MAC). From any vantage point that hears both (a node of the pair,
  an observer, either side of a bridge that only drops VRRP) that is split brain.
- `silent`: the witness probed the VIP, listened long enough, and nobody answered the latest probe,
  and this node does not hold it. Alone that is "the VIP is down"; with a master advertising for it on
  the wire it is the dead-VIP case (a foreign master made every keepalived BACKUP).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ka_exporter.model import LocalAddress, Snapshot, VipAnswers, canonical_ip

__all__ = ["L2Account", "L2Accounts", "L2Look", "L2Verdict", "change_instant", "judge", "judge_snapshot"]


@dataclass(frozen=True, slots=True)
class L2Verdict:
    vip: str
    interface: str
    family: str
    others: int  # distinct other hosts answering now
    held_here: bool  # this node holds the VIP (netlink)
    probe_answers: int | None  # answers to the latest completed probe (None: none yet)
    two_answerers: bool
    silent: bool

    @property
    def answerers(self) -> int:
        return self.others + (1 if self.held_here else 0)


def judge(
    rec: VipAnswers, held: Iterable[str] = (), known_held: bool = True, held_since: float | None = None
) -> L2Verdict:
    """The verdict on one record. `held`: canonical addresses this node holds; `known_held`: whether
    that address table was read at all (if not, this node is assumed not to hold the VIP);
    `held_since`: when the local address set last changed (`Snapshot.addresses_changed`).

    "This node holds it and another host answers" needs a probe sent after the local addresses last
    changed: right after a failover the new holder's address is live at once, while the latest probe
    may still carry the old holder's answer (given before it let the VIP go). Until such a probe, the
    other answerers of this node's VIP are not counted."""
    here = known_held and rec.vip in set(held)
    others = len(rec.answerers)
    if here and held_since is not None and (rec.last_probe is None or rec.last_probe < held_since):
        others = 0
    probe = rec.last_probe_answers
    two = others + (1 if here else 0) >= 2 or (probe is not None and probe >= 2)
    silent = rec.probing and probe == 0 and others == 0 and not here
    return L2Verdict(rec.vip, rec.interface, rec.family, others, here, probe, two, silent)


def held_set(addresses: Iterable[LocalAddress] | None) -> frozenset[str]:
    return frozenset(canonical_ip(a.address) for a in addresses or ())


def judge_snapshot(snap: Snapshot) -> tuple[L2Verdict, ...]:
    """One verdict per watched VIP; empty when the L2 witness is not running."""
    if snap.l2 is None:
        return ()
    held = held_set(snap.addresses)
    known = snap.addresses is not None
    return tuple(judge(r, held, known, snap.addresses_changed) for r in snap.l2)


# --------------------------------------------------------------------------------------------------
# Time accounts: seconds with no answerer, exactly one, two or more (the L2 SLI as counters)
# --------------------------------------------------------------------------------------------------
#
# A gauge sampled every scrape cannot carry the L2 SLI: a crash failover's 3.6 s gap under one 15 s
# scrape is one bad sample in 240 an hour, a burn rate of 41.7. The witness accounts the time itself,
# like the wire's failover accounts (verdicts/failover.py), and `rate()` of the counters is exact.
#
# What the witness knows, and when:
# * The answer count (the verdict above: other hosts answering the published probe result, plus this
#   node while netlink says it holds the VIP) holds from the first probe of the agreeing pair that
#   established it (`last_probe`) to the latest probe that agreed with it (`confirmed`); this node's
#   own part is exact from netlink (the address came or went at `held_changed`).
# * So the accounts trail the present: time is accounted up to the latest evidence, never guessed
#   forward, and a change found later is split where it happened, not where it was noticed.
# * Where the change happened (`change_instant`), between the last evidence of the old count and the
#   first of the new one:
#   1. the new answerer announced itself: keepalived sends gratuitous ARPs / unsolicited NAs the moment
#      it takes a VIP over (vrrp_send_link_update on entering MASTER), and they carry the kernel's
#      receive time: the count went up at that announcement;
#   2. else this node's own netlink saw the VIP added or removed (a handover on this node): the
#      address table changes at the instant keepalived adds or deletes the address, so at that event;
#   3. else nothing marks it (a crashed holder says nothing; an address removed elsewhere is silent):
#      the midpoint of the last probe that saw the old count and the first that saw the new, off by
#      at most half the probe spacing (quick probes follow news, so that is short after a failover).
# * Unknown time is not downtime: before the first agreeing probe (exporter start), while the witness
#   is not probing (capture closed or re-opened: evidence from before `listening_since` is not used),
#   and when probes stop completing (no evidence newer than `stale`) the time is unobserved. The
#   no-answerer seconds grow only from probes that completed and heard nobody.


@dataclass(frozen=True, slots=True)
class L2Look:
    """What the witness knows of one VIP at one look (plain values from `VipAnswers` and netlink)."""

    answerers: int | None  # the verdict's count now; None: unknown (not probing, no result yet)
    first_probe: float | None  # the published result's first probe (of its agreeing pair)
    confirmed: float | None  # the latest probe agreeing with the published result
    announced: float | None = None  # the latest gratuitous ARP / unsolicited NA heard
    held: bool = False  # this node holds the VIP (netlink)
    held_changed: float | None = None  # when netlink last saw it added or removed here
    listening_since: float | None = None  # the capture's start: evidence before it is not used


@dataclass(frozen=True, slots=True)
class L2Account:
    """Running totals for one VIP (seconds)."""

    no_answerer: float = 0.0
    one_answerer: float = 0.0
    multi_answerer: float = 0.0
    unobserved: float = 0.0

    @property
    def observed(self) -> float:
        return self.no_answerer + self.one_answerer + self.multi_answerer


@dataclass(slots=True)
class _Acc:
    cursor: float  # accounted up to here
    state: int | None = None  # 0, 1, 2 (two or more); None: unknown at the cursor
    held: bool | None = None
    times: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # by state
    unobserved: float = 0.0

    def add(self, state: int, start: float, end: float) -> None:
        if end > start:
            self.times[state] += end - start


def change_instant(
    old: int, new: int, last_old: float, first_new: float, *, announced: float | None, netlink: float | None
) -> float:
    """When the count changed from `old` to `new`, known to lie in [last_old, first_new] (the rules in
    the comment above): an announcement in that stretch if the count went up, else a netlink change of
    this node's address in it, else the midpoint."""
    if new > old and announced is not None and last_old <= announced <= first_new:
        return announced
    if netlink is not None and last_old <= netlink <= first_new:
        return netlink
    return (last_old + first_new) / 2


class L2Accounts:
    """Per VIP: seconds with no, one and several answerers, and unobserved seconds (see above)."""

    def __init__(self) -> None:
        self._accs: dict[tuple[str, str], _Acc] = {}

    def observe(self, key: tuple[str, str], look: L2Look, now: float, stale: float) -> L2Account:
        """Account one VIP (`key`: interface, VIP) up to its latest evidence; `stale`: evidence older
        than this many seconds is no evidence (probes stopped completing)."""
        acc = self._accs.get(key)
        if acc is None:
            acc = self._accs[key] = _Acc(cursor=now if look.listening_since is None else look.listening_since)
        known = look.answerers is not None and look.confirmed is not None and look.first_probe is not None
        since = look.listening_since
        if known and since is not None and look.first_probe is not None and look.first_probe < since:
            known = False  # a result from before the capture (re-)opened
        evidence = max(look.confirmed or 0.0, look.held_changed or 0.0) if known else 0.0
        if known and now - evidence > stale:
            known = False
        if not known or look.answerers is None or look.first_probe is None:
            if now > acc.cursor:
                acc.unobserved += now - acc.cursor
                acc.cursor = now
            acc.state, acc.held = None, look.held
            return self._account(acc)
        count = min(look.answerers, 2)
        evidence = min(evidence, now)
        if acc.state is None:  # known again (or for the first time): from the first evidence of it
            start = min(max(look.first_probe, look.held_changed or look.first_probe), evidence)
            if start > acc.cursor:
                acc.unobserved += start - acc.cursor
                acc.cursor = start
            acc.state, acc.held = count, look.held
        elif count != acc.state:
            # First evidence of the new count: this node's own address changing (exact), else the
            # first probe of the pair that established the new result.
            moved = look.held != acc.held and look.held_changed is not None
            first_new = look.held_changed if moved and look.held_changed is not None else look.first_probe
            first_new = max(acc.cursor, min(first_new, now))
            at = change_instant(
                acc.state, count, acc.cursor, first_new, announced=look.announced, netlink=look.held_changed
            )
            acc.add(acc.state, acc.cursor, at)
            acc.add(count, at, first_new)
            acc.cursor, acc.state = first_new, count
        acc.held = look.held
        if evidence > acc.cursor:
            acc.add(count, acc.cursor, evidence)
            acc.cursor = evidence
        return self._account(acc)

    def advance(self, key: tuple[str, str], evidence: float) -> None:
        """New evidence of `key`'s known count, unchanged (a probe confirmed the published result):
        account up to it, as `observe` would with the same count (the witness skips building the
        look for such probes; a change found later is then split from this evidence on)."""
        acc = self._accs.get(key)
        if acc is not None and acc.state is not None and evidence > acc.cursor:
            acc.add(acc.state, acc.cursor, evidence)
            acc.cursor = evidence

    def steady(self, key: tuple[str, str]) -> bool:
        """Whether `key`'s account is known (not growing unobserved time with the clock): looked at
        again with the same evidence, it would not move."""
        acc = self._accs.get(key)
        return acc is not None and acc.state is not None

    @staticmethod
    def _account(acc: _Acc) -> L2Account:
        return L2Account(acc.times[0], acc.times[1], acc.times[2], acc.unobserved)

    def forget(self, keep: Iterable[tuple[str, str]]) -> None:
        """Drop the accounts of VIPs no longer watched."""
        wanted = set(keep)
        for key in [k for k in self._accs if k not in wanted]:
            del self._accs[key]
