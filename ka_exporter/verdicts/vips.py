"""VIP mismatch: keepalived's word about an instance against the addresses this host really holds.

Pure functions of records: no I/O, no clock needed (both inputs are "now" as the snapshot sees them).

An instance is mismatched when

- it is MASTER but one of its VIPs is not on any local interface (keepalived believes it serves an
  address that nobody can reach here), or
- it is not MASTER (BACKUP, FAULT, INIT, STOP) but holds one of its VIPs: the stale VIP a SIGKILLed
  keepalived leaves behind, or an address someone added by hand. Two hosts answering ARP for one VIP is a
  split brain on the wire even when VRRP itself looks healthy.

Excluded VIPs (`virtual_ipaddress_excluded`) count like the others: keepalived installs and removes them
with the VIPs, it only leaves them out of its adverts.

An instance whose state is unknown is never called mismatched (there is nothing to compare against).
Addresses are compared in canonical form (``FD97:0::120`` equals ``fd97::120``), on any interface: a VIP
configured with ``dev other0`` still counts as held.

Freshness: the verdict is only as fresh as its inputs. With dumps alone the state can be up to one refresh
interval old while netlink addresses are live, so a failover can show a mismatch for that long; alert on it
with a ``for:`` longer than the dump interval (D-Bus state changes arrive within milliseconds).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ka_exporter.model import InstanceView, LocalAddress, VrrpState, canonical_ip

__all__ = [
    "canonical_ip",
    "held_addresses",
    "missing_vips",
    "stale_vips",
    "vip_mismatch",
    "vip_mismatch_held",
]


@functools.lru_cache(maxsize=4096)
def held_addresses(local: Iterable[LocalAddress]) -> frozenset[str]:
    """The canonical text of every address on a local interface."""
    return frozenset(canonical_ip(a.address) for a in local)


def missing_vips(instance: InstanceView, held: frozenset[str]) -> tuple[str, ...]:
    """A MASTER's VIPs that are not on this host (empty when not MASTER)."""
    if instance.state != VrrpState.MASTER:
        return ()
    return tuple(v for v in (*instance.vips, *instance.vips_excluded) if canonical_ip(v) not in held)


def stale_vips(instance: InstanceView, held: frozenset[str]) -> tuple[str, ...]:
    """VIPs this host holds although the instance is not MASTER (empty when MASTER or state unknown)."""
    if instance.state is None or instance.state == VrrpState.MASTER:
        return ()
    return tuple(v for v in (*instance.vips, *instance.vips_excluded) if canonical_ip(v) in held)


def vip_mismatch_held(instance: InstanceView, held: frozenset[str]) -> bool:
    """:func:`vip_mismatch` against a precomputed :func:`held_addresses` set (for many instances)."""
    return bool(missing_vips(instance, held) or stale_vips(instance, held))


def vip_mismatch(instance: InstanceView, local: tuple[LocalAddress, ...]) -> bool:
    """True when a MASTER lacks one of its VIPs, or a non-MASTER holds one (see the module docstring)."""
    return vip_mismatch_held(instance, held_addresses(local))
