"""The folders are the layers: what a module may import follows from its folder (CONTRIBUTING.md, the map).

sources -> store -> verdicts -> outputs, with linux/ and parse/ underneath and model.py the shared
vocabulary. A new edge against the flow fails here; the few that remain are listed with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ka_exporter"

# layer -> the ka_exporter layers it may import (its own always allowed)
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "linux": {"model"},
    "parse": {"model"},
    "store": {"model"},
    "verdicts": {"model"},
    "sources": {"model", "linux", "parse", "store", "logs", "settings"},
    "collectors": {"model", "verdicts", "store"},
    "outputs": {"model", "linux", "parse", "store", "verdicts", "collectors", "logs", "settings"},
    # the helpers shared by tests, bench/ and the lab: a leaf, so any of them may import it
    "testing": set(),
}

# Edges against the flow that remain, each with its reason. Remove an entry when its edge goes.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("sources/wire.py", "verdicts"): "the sniffer judges hold times and feeds the failover accumulator on "
    "its own thread, so a verdict that only time changes reaches the store within its tick",
    ("sources/l2.py", "verdicts"): "the L2 witness feeds its time accounts (verdicts/l2.py L2Accounts) "
    "at every publish, as the wire feeds its failover accumulator; the accounting stays pure there",
    ("store/peers.py", "verdicts"): "the peer table keeps each VRID's verdict current per advert (the "
    "run rule needs the previous verdict); the rules themselves stay pure in verdicts/wire.py",
    ("store/peers.py", "parse"): "the table bounds its per-reason drop counters by the decoder's closed "
    "list of reasons (INVALID_REASONS)",
    ("collectors/watchdog.py", "outputs"): "the watchdog's own counters (hooks run, failed) are its "
    "state; the collector only reads the frozen WatchdogStats record",
}

# prometheus_client belongs to the outputs: collectors build families, outputs serve them.
PROMETHEUS_OK = {"collectors", "outputs", "devtools", "lab", "testing", "daemon", "cli"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ka_exporter":
                names.update(f"ka_exporter.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def test_every_module_imports_only_layers_below_it() -> None:
    wrong: list[str] = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer not in ALLOWED:
            continue
        checked += 1
        rel = str(path.relative_to(PACKAGE))
        for module in imported_modules(path):
            if not module.startswith("ka_exporter."):
                continue
            target = module.split(".")[1]
            if target == "__version__" or target in (layer, *ALLOWED[layer]) or (rel, target) in EXCEPTIONS:
                continue
            wrong.append(f"{rel} imports {module} ({layer} may import {sorted(ALLOWED[layer])})")
    assert checked > 40, f"only {checked} modules found under {PACKAGE}"
    assert not wrong, "\n".join(wrong)


def test_listed_exceptions_still_exist() -> None:
    """An exception whose edge has gone is removed from the list, so the list stays the truth."""
    for (rel, target), _reason in EXCEPTIONS.items():
        modules = imported_modules(PACKAGE / rel)
        assert any(m.startswith(f"ka_exporter.{target}") for m in modules), (
            f"{rel} no longer imports {target}"
        )


def test_prometheus_client_stays_in_the_outputs() -> None:
    wrong = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if layer_of(path) not in PROMETHEUS_OK
        and any(m.split(".")[0] == "prometheus_client" for m in imported_modules(path))
    ]
    assert not wrong, f"prometheus_client imported outside the outputs: {wrong}"
