"""Linux capabilities of this process, and the one-line explanation a source logs when one is missing.

The exporter runs as an unprivileged user and needs at most:

- CAP_NET_RAW          wire: AF_PACKET sockets to see VRRP adverts;
- CAP_KILL             dumps: signal keepalived (root) for fresh dumps, unless D-Bus is used;
- CAP_DAC_READ_SEARCH  dumps: read keepalived's 0600 dump files, unless D-Bus is used.

A source checks at start what it needs (`missing`), and if something is missing marks itself failed
with `explain(...)` as its error: which capability, why, how to grant it, and that the other sources
keep running. A capability being present does not promise success (a seccomp filter, an LSM or a
user namespace may still say no); a source that then gets EPERM can use the same line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# From linux/capability.h; stable numbering.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBER = {name: i for i, name in enumerate(CAPABILITIES)}

# What else works instead of the capability, per capability (said after the grant hint).
ALTERNATIVES = {
    "CAP_KILL": "or run as keepalived's user, or let D-Bus (--collector.dbus) ask for the dumps",
    "CAP_DAC_READ_SEARCH": "or let D-Bus (--collector.dbus) deliver the dumps instead",
}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The capability sets of one process, as names (CAP_NET_RAW, ...)."""

    effective: frozenset[str]
    permitted: frozenset[str]
    inheritable: frozenset[str]
    ambient: frozenset[str]
    bounding: frozenset[str]

    def has(self, cap: str) -> bool:
        return normalize(cap) in self.effective


def normalize(cap: str) -> str:
    """`net_raw`, `cap_net_raw`, `CAP_NET_RAW` -> `CAP_NET_RAW`; ValueError if no such capability."""
    name = cap.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in _NUMBER:
        raise ValueError(f"unknown capability {cap!r}")
    return name


def decode(mask: int) -> frozenset[str]:
    """A capability bit mask (as in /proc/PID/status) -> names; unknown high bits are named CAP_<n>."""
    names = set()
    bit = 0
    while mask >> bit:
        if (mask >> bit) & 1:
            names.add(CAPABILITIES[bit] if bit < len(CAPABILITIES) else f"CAP_{bit}")
        bit += 1
    return frozenset(names)


def parse_status(text: str) -> Capabilities:
    """The Cap* lines of a /proc/PID/status text; a missing or garbled line reads as an empty set."""
    masks = {"CapEff": 0, "CapPrm": 0, "CapInh": 0, "CapAmb": 0, "CapBnd": 0}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in masks:
            try:
                masks[key] = int(value.strip(), 16)
            except ValueError:
                masks[key] = 0
    return Capabilities(
        effective=decode(masks["CapEff"]),
        permitted=decode(masks["CapPrm"]),
        inheritable=decode(masks["CapInh"]),
        ambient=decode(masks["CapAmb"]),
        bounding=decode(masks["CapBnd"]),
    )


def current(status: Path = Path("/proc/self/status")) -> Capabilities:
    """This process's capabilities (read fresh each call: they can change, e.g. after setuid)."""
    try:
        return parse_status(status.read_text(encoding="ascii", errors="replace"))
    except OSError:
        empty: frozenset[str] = frozenset()
        return Capabilities(empty, empty, empty, empty, empty)


def missing(cap: str, caps: Capabilities | None = None) -> bool:
    """True if `cap` is not in the effective set of this process (or of `caps`)."""
    return not (caps or current()).has(cap)


def interpreter() -> str:
    """The real file of the running Python (setcap needs the file, not a venv's symlink)."""
    return os.path.realpath(sys.executable)


def explain(
    cap: str, why: str, source: str, caps: Capabilities | None = None, *, instead: str | None = None
) -> str:
    """One line: which source needs which capability, why, how to grant it, and that the rest goes on.

    >>> explain("CAP_NET_RAW", "open AF_PACKET sockets", "wire")  # doctest: +ELLIPSIS
    'wire: needs CAP_NET_RAW to open AF_PACKET sockets (grant it with AmbientCapabilities=CAP_NET_RAW ...
    """
    name = normalize(cap)
    caps = caps or current()
    grant = (
        f"grant it with AmbientCapabilities={name} in the systemd unit, "
        f"or setcap {name.lower()}+ep {interpreter()} (then every script it runs has it)"
    )
    if name not in caps.bounding:
        grant += f"; it is not in this process's bounding set, so CapabilityBoundingSet must include {name}"
    alternative = instead if instead is not None else ALTERNATIVES.get(name)
    if alternative:
        grant += f", {alternative}"
    return f"{source}: needs {name} to {why} ({grant}); the other sources keep running"


def require(cap: str, why: str, source: str, *, instead: str | None = None) -> str | None:
    """None if this process has `cap`, else the `explain` line (what a source marks itself failed with)."""
    caps = current()
    if caps.has(cap):
        return None
    return explain(cap, why, source, caps, instead=instead)
