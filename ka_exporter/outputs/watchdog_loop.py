"""The watchdog's loop while serving: judge the store when it changed (or a debounce falls due).

`outputs/watchdog.py` tracks the conditions' transitions and runs the hook; this loop feeds it. It
sleeps on the store's generation (idle cost: nothing), judges a burst of changes once it is in, and
logs each VRRP state change keepalived reports.
"""

from __future__ import annotations

import logging
import threading
import time

from ka_exporter.model import Snapshot
from ka_exporter.outputs.watchdog import HookRunner, Watchdog, WatchdogStats
from ka_exporter.settings import Settings
from ka_exporter.store import Store
from ka_exporter.verdicts import conditions, fused
from ka_exporter.verdicts.wire import configured_vrids

log = logging.getLogger("ka_exporter")  # the daemon's logger (operators filter on logger=ka_exporter)

WATCHDOG_GAP = 0.02  # seconds between two evaluations of the watchdog in a burst of changes
IDLE_WAKE = 30.0  # seconds the loop sleeps at most when nothing is due


def log_transitions(snap: Snapshot, states: dict[str, str]) -> None:
    """One info line per VRRP state change keepalived reports (D-Bus: as it happens)."""
    for view in snap.instances or ():
        now = view.state.name if view.state is not None else "unknown"
        before = states.get(view.name)
        if before is not None and before != now:
            log.info(
                "instance %s (VRID %d on %s): %s -> %s", view.name, view.vrid, view.interface, before, now
            )
        states[view.name] = now


class WatchdogLoop:
    """Evaluates conditions on every store change; the Watchdog runs the hook on transitions."""

    def __init__(self, settings: Settings, store: Store, stats: WatchdogStats) -> None:
        runner = (
            HookRunner(
                settings.watchdog_exec,
                settings.watchdog_timeout,
                max_concurrent=settings.watchdog_max_concurrent,
                stats=stats,
            )
            if settings.watchdog_exec
            else None
        )
        self.store = store
        self._states: dict[str, str] = {}
        self._last: Snapshot | None = None
        # The wire and fused verdicts over the loop's snapshots: an evaluation judges again only the
        # VRIDs that can have moved since the last (one instance's change: its VRID, not every VRID).
        self.memo = fused.Memo()
        self.watchdog = Watchdog(
            self._evaluate,
            runner,
            settings.watchdog_debounce,
            configured=self._configured,
            page_unconfigured=settings.watchdog_unconfigured_vrids,
            stats=stats,
        )

    def _evaluate(self) -> tuple[float, str, list[conditions.Condition]]:
        snap = self.store.snapshot()
        last, self._last = self._last, snap
        if last is None or snap.instances is not last.instances:  # the store's same records: no change
            log_transitions(snap, self._states)
        return snap.time, snap.hostname, conditions.evaluate(snap, self.memo)

    def _configured(self) -> tuple[tuple[str, str, int], ...]:
        return configured_vrids(self._last) if self._last is not None else ()

    def run(self, stop: threading.Event) -> None:
        # Evaluate when the store changed, or when a debounce/hold falls due; otherwise sleep (idle
        # cost). Every time-driven verdict (wire expiry, listening gate) already changes the store.
        # A burst of changes (a failover of 100 instances: 100 D-Bus signals within milliseconds) is
        # judged once it is in, not once per signal: each evaluation reads every instance, and 100 of
        # them would hold the GIL the signals and scrapes wait for. The first change after a quiet
        # spell is judged at once; later ones at most every WATCHDOG_GAP seconds.
        store, wd = self.store, self.watchdog
        gen = -1
        last = -WATCHDOG_GAP
        while not stop.is_set():
            deadline = wd.transitions.next_deadline()
            timeout = IDLE_WAKE if deadline is None else max(0.0, deadline - store.clock()) + 0.01
            new = store.wait_for_change(gen, timeout)
            if new == gen and (deadline is None or store.clock() < deadline):
                continue
            wait = last + WATCHDOG_GAP - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return
            gen = store.generation
            last = time.monotonic()
            try:
                wd.step()
            except Exception:
                log.exception("watchdog evaluation failed")

    def start(self, stop: threading.Event) -> Watchdog:
        threading.Thread(target=self.run, args=(stop,), name="watchdog", daemon=True).start()
        return self.watchdog
