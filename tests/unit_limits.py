"""The shipped unit's resource limits (deploy/ka-exporter.service), emulated for a test process.

TasksMax and MemoryMax become a cgroup (v2 if its pids and memory controllers are available, else the
v1 pids and memory hierarchies), LimitNOFILE becomes an rlimit; the values are read from the unit
file, so the tests follow the unit.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO, unique

UNIT = REPO / "deploy" / "ka-exporter.service"
CGROUP = Path("/sys/fs/cgroup")
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def unit_limits(unit: Path = UNIT) -> dict[str, int]:
    """TasksMax, MemoryMax (bytes) and LimitNOFILE as the unit sets them (1024 when it does not)."""
    found: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("TasksMax", "MemoryMax", "LimitNOFILE"):
            found[key.strip()] = value.strip()
    memory = found["MemoryMax"]
    size = int(memory[:-1]) * UNITS[memory[-1]] if memory[-1] in UNITS else int(memory)
    nofile = found.get("LimitNOFILE", "1024").split(":")[-1]
    return {"TasksMax": int(found["TasksMax"]), "MemoryMax": size, "LimitNOFILE": int(nofile)}


class UnitCgroup:
    """A cgroup with the unit's pids and memory limits; `preexec` puts a child process in it."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self.dirs: list[Path] = []
        self.procs: list[Path] = []
        name = unique("ka-unit")
        controllers = CGROUP / "cgroup.controllers"
        if controllers.exists() and {"pids", "memory"} <= set(controllers.read_text().split()):
            d = CGROUP / name
            d.mkdir()
            self.dirs.append(d)
            (d / "pids.max").write_text(str(limits["TasksMax"]))
            (d / "memory.max").write_text(str(limits["MemoryMax"]))
            self.pids_current = d / "pids.current"
            self.memory_peak = d / "memory.peak"
            self.procs.append(d / "cgroup.procs")
            return
        pids = CGROUP / "pids" / name
        memory = CGROUP / "memory" / _own_v1_path("memory").lstrip("/") / name
        for d in (pids, memory):
            d.mkdir()
            self.dirs.append(d)
            self.procs.append(d / "cgroup.procs")
        (pids / "pids.max").write_text(str(limits["TasksMax"]))
        (memory / "memory.limit_in_bytes").write_text(str(limits["MemoryMax"]))
        self.pids_current = pids / "pids.current"
        self.memory_peak = memory / "memory.max_usage_in_bytes"

    def preexec(self) -> Callable[[], None]:
        procs = [str(p) for p in self.procs]
        nofile = self.limits["LimitNOFILE"]

        def enter() -> None:
            for path in procs:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        return enter

    def peak_memory(self) -> int:
        return int(self.memory_peak.read_text())

    def remove(self) -> None:
        for d in reversed(self.dirs):
            with contextlib.suppress(OSError):
                d.rmdir()


def _own_v1_path(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def cgroups_available() -> bool:
    if os.geteuid() != 0:
        return False
    controllers = CGROUP / "cgroup.controllers"
    if controllers.exists():
        return {"pids", "memory"} <= set(controllers.read_text().split())
    return (CGROUP / "pids").is_dir() and (CGROUP / "memory").is_dir()
