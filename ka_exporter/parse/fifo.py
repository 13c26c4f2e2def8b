"""keepalived's notify FIFO lines -> events. Pure: bytes in, records out, nothing raised.

keepalived writes one line per VRRP event to `notify_fifo` / `vrrp_notify_fifo` (vrrp_notify.c,
`notify_fifo()`): ``INSTANCE "VI_1" MASTER 100`` or ``GROUP "SG" BACKUP 0``, the number being the
instance's effective priority (0 for a group). Besides the states MASTER, BACKUP, FAULT and STOP it
writes three events that are not transitions: MASTER_RX_LOWER_PRI (a master heard a lower priority
master), MASTER_PRIORITY and BACKUP_PRIORITY (the effective priority changed in that state). The checker
writes ``VS``/``RS`` lines to the global FIFO; they are not VRRP and are left to the LVS source.

A line is written with one write(2) of well under PIPE_BUF bytes, so lines never interleave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ka_exporter.model import VrrpState

__all__ = ["MAX_LINE", "FifoEvent", "parse_line"]

MAX_LINE = 4096  # keepalived's lines are type + quoted name (<= a few hundred bytes) + state + priority

STATES = {
    "MASTER": VrrpState.MASTER,
    "BACKUP": VrrpState.BACKUP,
    "FAULT": VrrpState.FAULT,
    "STOP": VrrpState.STOP,
}
PRIORITY_EVENTS = frozenset({"MASTER_PRIORITY", "BACKUP_PRIORITY", "MASTER_RX_LOWER_PRI"})

_LINE = re.compile(rb'(INSTANCE|GROUP) "([^"\x00-\x1f]{1,256})" ([A-Z_{}]{1,32}) (-?[0-9]{1,3})')


@dataclass(frozen=True, slots=True)
class FifoEvent:
    """One line of the FIFO. `state` is set for a transition, None for a priority event."""

    kind: str  # "INSTANCE" / "GROUP"
    name: str
    event: str  # what keepalived wrote: MASTER, BACKUP, FAULT, STOP, MASTER_PRIORITY, ...
    priority: int
    state: VrrpState | None = None


def parse_line(line: bytes) -> FifoEvent | None:
    """One FIFO line (without or with its newline) -> event; None for anything else (VS/RS, garbage)."""
    m = _LINE.fullmatch(line.rstrip(b"\r\n"))
    if m is None:
        return None
    kind, name, event, prio = (g.decode("utf-8", "replace") for g in m.groups())
    state = STATES.get(event)
    if state is None and event not in PRIORITY_EVENTS:
        return None  # "{UNKNOWN}" or a state this exporter does not know: not evidence of anything
    priority = int(prio)
    if not 0 <= priority <= 255:
        return None
    return FifoEvent(kind=kind, name=name, event=event, priority=priority, state=state)
