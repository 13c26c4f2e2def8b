"""The sources there are: every module of this package that ends with `REGISTRATION = Registration(...)`.

A new source is a new file here; the CLI (its --collector switch), the daemon (building, wiring and
starting it, its collector parts) and the README's flag table all iterate `registrations()`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from ka_exporter.sources.base import Registration

PACKAGE = "ka_exporter.sources"


def discover(package: str) -> tuple[Registration, ...]:
    """The registrations of `package`'s modules, in build order (see `ordered`)."""
    pkg = importlib.import_module(package)
    found: list[Registration] = []
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        reg = getattr(module, "REGISTRATION", None)
        if isinstance(reg, Registration):
            found.append(reg)
    return ordered(found)


def ordered(regs: list[Registration]) -> tuple[Registration, ...]:
    """By rank, except that a source comes after every source it `uses` (ValueError on a cycle, an
    unknown name or two sources of one name)."""
    by_name: dict[str, Registration] = {}
    for reg in regs:
        if reg.name in by_name:
            raise ValueError(f"two sources are named {reg.name!r}")
        by_name[reg.name] = reg
    for reg in regs:
        unknown = [u for u in reg.uses if u not in by_name]
        if unknown:
            raise ValueError(f"source {reg.name!r} uses unknown sources {unknown}")
    out: list[Registration] = []
    done: set[str] = set()
    left = sorted(regs, key=lambda r: (r.rank, r.name))
    while left:
        ready = next((r for r in left if all(u in done for u in r.uses)), None)
        if ready is None:
            raise ValueError(f"sources use each other in a cycle: {sorted(r.name for r in left)}")
        out.append(ready)
        done.add(ready.name)
        left.remove(ready)
    return tuple(out)


@functools.cache
def registrations() -> tuple[Registration, ...]:
    """Every source of ka-exporter, in build order."""
    return discover(PACKAGE)


def by_rank() -> tuple[Registration, ...]:
    """Every source in rank order: --help, the README table, the exposition."""
    return tuple(sorted(registrations(), key=lambda r: (r.rank, r.name)))


def names() -> tuple[str, ...]:
    return tuple(r.name for r in by_rank())
