"""How labs are named and found: the prefix every namespace and interface name starts with, the state
file each lab keeps under STATE_DIR (so a later process can bring it down), and the choice of a subnet
no other lab on this machine uses.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from ka_exporter.lab.profiles import Addressing
from ka_exporter.lab.system import LabError

STATE_DIR = Path("/run/ka-exporter-lab")
DEFAULT_NAME = "kalab"
STATE_VERSION = 1
SPLIT_TABLE = "ka_lab_split"
OBSERVER_HOST = 9
_PREFIX_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_MAX_PREFIX = 10  # keeps "PREFIX-sw" well inside the 15 characters of an interface name


def _random_prefix() -> str:
    return f"ka{os.getpid() % 4096:03x}{random.randrange(256):02x}"  # noqa: S311 - a name, not a secret


def _check_prefix(prefix: str) -> str:
    if not (
        0 < len(prefix) <= _MAX_PREFIX
        and prefix[0].isalpha()
        and prefix.islower()
        and all(ch in _PREFIX_CHARS for ch in prefix)
    ):
        raise LabError(
            f"bad lab name {prefix!r}: use 1-{_MAX_PREFIX} lower-case letters, digits or '-', "
            "starting with a letter"
        )
    return prefix


def state_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def known_labs() -> list[str]:
    """Names of the labs with a state file (up, or left behind by a crash)."""
    return sorted(p.stem for p in STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []


def _used_subnets() -> set[tuple[int, int]]:
    used: set[tuple[int, int]] = set()
    for name in known_labs():
        try:
            x, y = json.loads(state_path(name).read_text())["subnet"]
            used.add((int(x), int(y)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return used


def _pick_addressing() -> Addressing:
    used = _used_subnets()
    while True:
        pick = (random.randint(200, 254), random.randrange(256))  # noqa: S311
        if pick not in used:
            return Addressing(*pick)
