"""Conditions: the operator-facing verdicts of one snapshot (split brain, no master, VIP mismatch,
wire conflict, keepalived down), as plain records for the watchdog, `status`, `check` and the page.

Pure: a function of a snapshot, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from ka_exporter.model import Snapshot, canonical_ip
from ka_exporter.verdicts import fused
from ka_exporter.verdicts.vips import held_addresses, missing_vips, stale_vips
from ka_exporter.verdicts.wire import VridVerdict, judge_snapshot, vrid_holds

# A normal failover shows a VIP mismatch for a moment: keepalived reports MASTER just before it adds
# its VIPs, and STOP/BACKUP just before it removes them (D-Bus is that fast). Two seconds is far longer
# than that ordering gap and far shorter than anything an operator would call a mismatch.
VIP_MISMATCH_HOLD = 2.0

VIP_UNANSWERED_HOLD = 4.2  # a master down interval at advert_int 1, when the VRID's is not known
VIP_UNANSWERED_PROBE = 2.0  # the next probe (1 s by default) and its answer window, with a margin

KINDS = (
    "keepalived_down",
    "keepalived_frozen",
    "split_brain",
    "no_master",
    "vip_mismatch",
    "wire_conflict",
    "master_silent",
    "foreign_master",
    "vip_unanswered",
)
SEVERITY = {
    "split_brain": 2,
    "master_silent": 2,
    "foreign_master": 2,
    "vip_unanswered": 2,
    "no_master": 2,
    "keepalived_down": 2,
    "keepalived_frozen": 2,
    "vip_mismatch": 1,
    "wire_conflict": 1,
}


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    labels: tuple[tuple[str, str], ...]  # e.g. (("interface","eth0"),("family","inet"),("vrid","51"))
    summary: str
    details: tuple[tuple[str, str], ...] = ()
    hold: float = (
        0.0  # seconds it must last before the watchdog calls it begun (on top of --watchdog.debounce)
    )

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (self.kind, self.labels)

    @property
    def severity(self) -> int:
        """Nagios-style: 2 critical, 1 warning."""
        return SEVERITY.get(self.kind, 1)


def evaluate(snap: Snapshot, memo: fused.Memo | None = None) -> list[Condition]:
    """Every condition that holds in this snapshot.

    `memo`: the caller's `fused.Memo` over its successive snapshots (the watchdog's): the wire and
    fused verdicts are then judged again only for the VRIDs that can have moved (the same conditions)."""
    out: list[Condition] = []
    out.extend(_keepalived_down(snap))
    out.extend(_keepalived_frozen(snap))
    if memo is not None:
        verdicts = memo.judge(snap)
        wire: Sequence[VridVerdict] = memo.wire
    else:
        wire = judge_snapshot(snap)  # once: the fused verdict reads the same wire verdicts
        verdicts = fused.judge(snap, wire_verdicts=wire)
    out.extend(_fused(snap, verdicts))
    out.extend(_wire(snap, wire, verdicts, None if memo is None else memo.kept))
    out.extend(_vip_mismatch(snap))
    return sorted(out, key=lambda c: c.key)


def _wire(
    snap: Snapshot,
    verdicts: Sequence[VridVerdict],
    fused_verdicts: Sequence[fused.FusedVerdict],
    kept: dict[object, tuple[object, ...]] | None = None,
) -> list[Condition]:
    """no_master and wire_conflict. `kept`: a memo's store of what was made of each VRID's verdicts
    (`fused.Memo.kept`): the conditions of a VRID whose verdict objects did not change are reused."""
    if snap.wire_peers is None:
        return []
    out: list[Condition] = []
    # The fused verdicts are of the same VRIDs in the same order (both sorted by key), as a rule.
    aligned = len(fused_verdicts) == len(verdicts)
    by_key: dict[tuple[str, str, int], fused.FusedVerdict] | None = None
    for n, v in enumerate(verdicts):
        if not (v.no_master or v.conflicts):
            continue
        f: fused.FusedVerdict | None = fused_verdicts[n] if aligned else None
        if f is None or f.key != v.key:
            if by_key is None:
                by_key = {f.key: f for f in fused_verdicts}
            f = by_key.get(v.key)
        got = None if kept is None else kept.get(("wire", v.key))
        if got is not None and got[0] is v and got[1] is f:
            out.extend(cast("list[Condition]", got[2]))
            continue
        made = _wire_conditions(v, "; ".join(f.routers) if f is not None else "")
        if kept is not None:
            kept[("wire", v.key)] = (v, f, made)
        out.extend(made)
    return out


def _wire_conditions(v: VridVerdict, routers: str) -> list[Condition]:
    out: list[Condition] = []
    labels = (("family", v.family), ("interface", v.interface), ("vrid", str(v.vrid)))
    where = f"VRID {v.vrid} ({v.family}) on {v.interface}"
    if v.no_master:
        out.append(Condition("no_master", labels, f"no router advertises {where}"))
    for kind in sorted(v.conflicts):
        text = (
            f"adverts from one source address on {where} disagree with each other "
            f"(a second sender using its address?): {routers}"
            if kind == "source"
            else f"routers on {where} disagree on {kind}: {routers}"
        )
        out.append(Condition("wire_conflict", (*labels, ("conflict", kind)), text, (("routers", routers),)))
    return out


def _fused(snap: Snapshot, verdicts: Sequence[fused.FusedVerdict]) -> list[Condition]:
    """split_brain from the fused verdict (any witness), master_silent and foreign_master."""
    out: list[Condition] = []
    holds: dict[tuple[str, str, int], float] | None = None
    for v in verdicts:
        if not (v.split_brain or v.silent_master or v.foreign or v.dead_vips):
            continue
        labels = (("family", v.family), ("interface", v.interface), ("vrid", str(v.vrid)))
        routers = "; ".join(v.routers)
        where = f"VRID {v.vrid} ({v.family}) on {v.interface}"
        if v.split_brain:
            why = ", ".join(w for w in fused.WITNESSES if w in v.witnesses)
            out.append(
                Condition(
                    "split_brain",
                    labels,
                    f"split brain: {v.masters} routers advertise as master for {where} (witness: {why}): "
                    f"{routers or 'no router on the wire'}",
                    (("witnesses", why), ("routers", routers)),
                )
            )
        if v.silent_master:
            out.append(
                Condition(
                    "master_silent",
                    labels,
                    f"keepalived here claims MASTER for {where} but has not been heard advertising it",
                    (("routers", routers),),
                )
            )
        if v.foreign:
            out.append(
                Condition(
                    "foreign_master",
                    labels,
                    f"{', '.join(v.foreign)} advertise {where} but are not among its unicast peers",
                    (("foreign", ",".join(v.foreign)), ("routers", routers)),
                )
            )
        if v.dead_vips:
            out.append(
                Condition(
                    "vip_unanswered",
                    labels,
                    f"nobody answers for {', '.join(v.dead_vips)} although a master advertises {where}",
                    (("vips", ",".join(v.dead_vips)),),
                    # Every failover leaves the VIP unanswered for a moment (a graceful one for the
                    # backup's skew time, a crash for the master down interval), and a probe may land
                    # in it: page only when it outlasts a crash failover and the next probe.
                    hold=(holds := vrid_holds(snap) if holds is None else holds).get(
                        v.key, VIP_UNANSWERED_HOLD
                    )
                    + VIP_UNANSWERED_PROBE,
                )
            )
    return out


def _vip_mismatch(snap: Snapshot) -> list[Condition]:
    if snap.addresses is None:
        return []
    held = held_addresses(snap.addresses)
    out: list[Condition] = []
    if snap.process is not None and not snap.process.running and snap.config is not None:
        # keepalived is gone but its VIPs are still here (a SIGKILL leaves them): nobody will remove
        # them, and the new master answers for them too.
        for inst in snap.config.instances:
            gone = [v.address for v in inst.vips if canonical_ip(v.address) in held]
            if gone:
                out.append(
                    Condition(
                        "vip_mismatch",
                        (("iname", inst.name), ("vrid", str(inst.vrid))),
                        f"{inst.name} (VRID {inst.vrid}): keepalived is not running but "
                        f"{', '.join(gone)} is still on this host",
                        (("stale", ",".join(gone)),),
                        hold=VIP_MISMATCH_HOLD,
                    )
                )
        return out
    fresh = snap.state_fresh_since()
    if fresh is None or (snap.addresses_changed is not None and fresh < snap.addresses_changed):
        # The addresses changed after keepalived's state was last known (dumps only, between two
        # refreshes): comparing them now would call every normal failover a mismatch. The address
        # change triggers a dump refresh, and the verdict is made once the state has caught up.
        return out
    for view in snap.instances or ():
        missing, stale = missing_vips(view, held), stale_vips(view, held)
        if not (missing or stale):
            continue
        state = view.state.name if view.state is not None else "unknown"
        text = f"{view.name} (VRID {view.vrid}) is {state}"
        if missing:
            text += f" without {', '.join(missing)}"
        if stale:
            text += f" but holds {', '.join(stale)}"
        out.append(
            Condition(
                "vip_mismatch",
                (("iname", view.name), ("vrid", str(view.vrid))),
                text,
                (("missing", ",".join(missing)), ("stale", ",".join(stale)), ("state", state)),
                hold=VIP_MISMATCH_HOLD,
            )
        )
    return out


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


def _keepalived_frozen(snap: Snapshot) -> list[Condition]:
    """keepalived runs but is stopped (SIGSTOP, a debugger): it sends no advert and answers nothing."""
    proc = snap.process
    if proc is None or not proc.running or not proc.stopped_pids:
        return []
    pids = ", ".join(str(p) for p in proc.stopped_pids)
    return [
        Condition(
            "keepalived_frozen",
            (("hostname", snap.hostname),),
            f"keepalived on {snap.hostname} is stopped (pid {pids} in state T): it runs but does nothing",
            (("pids", pids),),
        )
    ]
