"""LVS cross-checks: keepalived's health-checker view against the kernel's IPVS table.

Pure functions of records. Each problem names the virtual server (and real server) it is about:

- `missing_from_ipvs`: keepalived calls a real server alive but IPVS has no such destination (someone
  ran `ipvsadm -C`/`-d`, or keepalived failed to add it): it gets no traffic although it is healthy.
  Not while the virtual server is below quorum with a sorry server: keepalived then takes the alive
  real servers out of IPVS itself and the sorry server serves.
- `weight_while_down`: keepalived calls a real server down but IPVS still has it with weight > 0:
  IPVS keeps sending new connections to a failed server. (An inhibited server keeps weight 0 in IPVS
  while keepalived reports effective weight 1: that is normal and never called a problem.)
- `below_quorum`: a virtual server whose alive real servers' weights no longer reach its `quorum`
  (keepalived's `quorum_state_up` is 0: the sorry server, if any, takes over).
- `no_alive_real_server`: a virtual server with no alive real server at all.

The first two need both views, both current (neither's last read failed); they are only as fresh as the
older of the two (a failover between the
checker dump and the IPVS read shows a mismatch for up to one lvs interval), so alert with a `for:`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka_exporter.model import IpvsService, LvsView, VirtualServerView

__all__ = ["RS_KINDS", "VS_KINDS", "LvsProblem", "lvs_problems"]

RS_KINDS = ("missing_from_ipvs", "weight_while_down")
VS_KINDS = ("below_quorum", "no_alive_real_server")


@dataclass(frozen=True, slots=True)
class LvsProblem:
    kind: str
    virtual_server: str
    protocol: str
    real_server: str | None = None


def _ipvs_index(services: tuple[IpvsService, ...]) -> dict[tuple[str, str], IpvsService]:
    return {(s.key, s.protocol): s for s in services}


def _protocol(vs: VirtualServerView) -> str:
    return "FWM" if vs.key.startswith("fwmark:") else vs.protocol


def lvs_problems(view: LvsView | None) -> list[LvsProblem]:
    """Every problem the checker view and IPVS show now (empty when either is unknown)."""
    if view is None or view.checker is None:
        return []
    out: list[LvsProblem] = []
    # Cross-checks only between two current views: a stale one (its last read failed) would turn any
    # change since then into a mismatch.
    current = view.checker_error is None and view.ipvs_error is None
    index = _ipvs_index(view.ipvs) if view.ipvs is not None and current else None
    for vs in view.checker:
        proto = _protocol(vs)
        if not vs.quorum_up:
            out.append(LvsProblem("below_quorum", vs.key, vs.protocol))
        if vs.real_servers and not any(rs.alive for rs in vs.real_servers):
            out.append(LvsProblem("no_alive_real_server", vs.key, vs.protocol))
        if index is None or vs.key.startswith("group:"):
            continue  # a group's entries are separate IPVS services: not cross-checked
        service = index.get((vs.key, proto))
        dests = {d.key: d for d in service.dests} if service is not None else {}
        # Below quorum with a sorry server, keepalived takes the alive real servers out of IPVS and the
        # sorry server serves (seen in the UML lab): their absence is keepalived's doing, not a mismatch.
        sorry_serves = not vs.quorum_up and vs.sorry_server is not None
        for rs in vs.real_servers:
            dest = dests.get(rs.key)
            if rs.alive and rs.effective_weight > 0 and dest is None and not sorry_serves:
                out.append(LvsProblem("missing_from_ipvs", vs.key, vs.protocol, rs.key))
            elif not rs.alive and dest is not None and dest.weight > 0:
                out.append(LvsProblem("weight_while_down", vs.key, vs.protocol, rs.key))
    return out
