"""Small /proc readers shared by the sources: is a pid keepalived, its comm, its environment."""

from __future__ import annotations

import os
from pathlib import Path


def is_keepalived(pid: int) -> bool:
    """True if PID is a live (not zombie) keepalived process, judged by /proc/PID/exe or comm."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            head = f.read(512)
    except OSError:
        return False
    if "\nState:\tZ" in head or "\nState:\tX" in head:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    if exe:
        return os.path.basename(exe.removesuffix(" (deleted)")) == "keepalived"
    return head.startswith("Name:\tkeepalived\n")


def comm(pid: int) -> str:
    """The process's command name, "gone" when there is no such process."""
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip() or "?"
    except OSError:
        return "gone"


def environ(pid: int, name: str) -> str | None:
    """One variable of a process's environment (needs the same uid or CAP_SYS_PTRACE)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None
