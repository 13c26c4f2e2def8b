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
from dataclasses import dataclass

from ka_exporter.model import LocalAddress, Snapshot, VipAnswers, canonical_ip

__all__ = ["L2Verdict", "judge", "judge_snapshot"]


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
