"""Conditions: the operator-facing verdicts of one snapshot (split brain, no master, VIP mismatch,
wire conflict, keepalived down), as plain records for the watchdog, `status`, `check` and the page.

Pure: a function of a snapshot, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka_exporter.model import Snapshot

KINDS = ("keepalived_down", "split_brain", "no_master", "vip_mismatch", "wire_conflict")
SEVERITY = {
    "split_brain": 2,
    "no_master": 2,
    "keepalived_down": 2,
    "vip_mismatch": 1,
    "wire_conflict": 1,
}


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    labels: tuple[tuple[str, str], ...]  # e.g. (("interface","eth0"),("family","inet"),("vrid","51"))
    summary: str
    details: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (self.kind, self.labels)

    @property
    def severity(self) -> int:
        """Nagios-style: 2 critical, 1 warning."""
        return SEVERITY.get(self.kind, 1)


def evaluate(snap: Snapshot) -> list[Condition]:
    """Every condition that holds in this snapshot."""
    out: list[Condition] = []
    out.extend(_keepalived_down(snap))
    return sorted(out, key=lambda c: c.key)


def _keepalived_down(snap: Snapshot) -> list[Condition]:
    proc = snap.process
    if proc is None or proc.running:
        return []
    configured = snap.config is not None and bool(snap.config.instances)
    if not configured:
        return []
    return [
        Condition(
            "keepalived_down",
            (("hostname", snap.hostname),),
            f"keepalived is not running on {snap.hostname} but keepalived.conf configures "
            f"{len(snap.config.instances) if snap.config else 0} instance(s)",
        )
    ]
