"""The watchdog: runs `--watchdog.exec` on verdict transitions (a condition begins or ends).

It is keepalived's notify script for the failures keepalived itself cannot notice. Conditions come
from `conditions.evaluate(snapshot)`; this module only tracks their transitions and runs the hook:

- debounced: a condition must hold (or be gone) for `debounce` seconds before its begin (end) fires,
  so a one-scrape blip never pages anyone;
- never blocking collection: hooks run in their own threads, with a timeout (then SIGKILL);
- never twice at once for the same condition: a transition that arrives while the previous run for
  that condition is still going waits for it, and only the latest pending transition is kept;
- every run and its exit status are logged, one line each.

The hook gets the event as environment variables (KA_EVENT, KA_KIND, KA_STATE, KA_VRID, ...) and as
one JSON document on stdin. Its environment is minimal (PATH, LANG and the KA_* variables), so
nothing of the exporter's own environment leaks into it; conditions never carry a password.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ka_exporter import caps
from ka_exporter.conditions import Condition

log = logging.getLogger("ka_exporter.watchdog")


def hook_argv(argv: list[str]) -> list[str]:
    """The hook's command line. When the exporter runs with ambient capabilities (CAP_NET_RAW from
    the systemd unit), the hook is started through `setpriv` with them cleared, so a hook script never
    inherits the right to sniff the network. (Not done in preexec_fn: unsafe in a threaded process.)
    """
    try:
        ambient = caps.current().ambient
    except OSError:
        ambient = frozenset()
    setpriv = shutil.which("setpriv")
    if ambient and setpriv:
        return [setpriv, "--ambient-caps", "-all", "--inh-caps", "-all", "--", *argv]
    return argv


@dataclass(frozen=True, slots=True)
class Event:
    """A condition beginning ("begin") or ending ("end")."""

    condition: Condition
    state: str  # "begin" / "end"
    time: float
    hostname: str

    def env(self) -> dict[str, str]:
        env = {
            "KA_EVENT": f"{self.condition.kind}_{self.state}",
            "KA_KIND": self.condition.kind,
            "KA_STATE": self.state,
            "KA_TIME": f"{self.time:.3f}",
            "KA_HOSTNAME": self.hostname,
            "KA_SUMMARY": self.condition.summary,
        }
        for k, v in self.condition.labels:
            env[f"KA_{k.upper()}"] = v
        return env

    def document(self) -> dict[str, object]:
        return {
            "event": f"{self.condition.kind}_{self.state}",
            "kind": self.condition.kind,
            "state": self.state,
            "time": self.time,
            "hostname": self.hostname,
            "labels": dict(self.condition.labels),
            "summary": self.condition.summary,
            "details": dict(self.condition.details),
        }


@dataclass
class _Tracked:
    condition: Condition
    since: float  # when it was first seen in the current run of presence / absence
    active: bool = False  # begin fired and end not yet
    last_seen: float = 0.0


class Transitions:
    """Pure bookkeeping: feed it the current conditions and a clock, get the debounced events."""

    def __init__(self, debounce: float = 0.0) -> None:
        self.debounce = debounce
        self._tracked: dict[tuple[str, tuple[tuple[str, str], ...]], _Tracked] = {}
        self._last_update = 0.0

    def update(
        self, current: Mapping[tuple[str, tuple[tuple[str, str], ...]], Condition], now: float
    ) -> list[tuple[Condition, str]]:
        events: list[tuple[Condition, str]] = []
        self._last_update = now
        for key, cond in current.items():
            t = self._tracked.get(key)
            if t is None:
                t = self._tracked[key] = _Tracked(cond, since=now)
            t.condition = cond
            t.last_seen = now
            if not t.active and now - t.since >= max(self.debounce, cond.hold):
                t.active = True
                events.append((cond, "begin"))
        for key in list(self._tracked):
            if key in current:
                continue
            t = self._tracked[key]
            if not t.active:
                del self._tracked[key]
                continue
            if now - t.last_seen >= self.debounce:
                events.append((t.condition, "end"))
                del self._tracked[key]
        return events

    def active(self) -> list[Condition]:
        return [t.condition for t in self._tracked.values() if t.active]

    def next_deadline(self) -> float | None:
        """When a pending begin or end falls due even if nothing else changes (None: nothing pending)."""
        due: list[float] = []
        for t in self._tracked.values():
            if not t.active:
                due.append(t.since + max(self.debounce, t.condition.hold))
            elif t.last_seen < self._last_update:  # active but absent at the last update
                due.append(t.last_seen + self.debounce)
        return min(due) if due else None


class HookRunner:
    """Runs the hook command per event, at most one run at a time per condition key."""

    def __init__(self, command: str, timeout: float = 10.0) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self._pending: dict[tuple[str, tuple[tuple[str, str], ...]], Event] = {}
        self.runs = 0
        self.failures = 0
        self._threads: list[threading.Thread] = []

    def submit(self, event: Event) -> None:
        key = event.condition.key
        with self._lock:
            if key in self._running:
                self._pending[key] = event  # keep only the latest transition
                return
            self._running.add(key)
        t = threading.Thread(target=self._worker, args=(event,), name="watchdog-hook", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _worker(self, event: Event) -> None:
        key = event.condition.key
        while True:
            self._run(event)
            with self._lock:
                nxt = self._pending.pop(key, None)
                if nxt is None:
                    self._running.discard(key)
                    return
            event = nxt

    def _run(self, event: Event) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
        env.update(event.env())
        payload = json.dumps(event.document(), sort_keys=True).encode() + b"\n"
        name = f"{event.condition.kind}_{event.state}"
        started = time.monotonic()
        self.runs += 1
        try:
            proc = subprocess.Popen(
                hook_argv(self.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.failures += 1
            log.error("watchdog hook %s for %s could not start: %s", self.argv[0], name, exc.strerror or exc)
            return
        try:
            _, err = proc.communicate(payload, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # The hook runs in its own session: kill the whole group, or a child it forked would keep
            # our pipes open (and itself alive) after the hook is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            self.failures += 1
            log.error(
                "watchdog hook %s for %s timed out after %.1fs and was killed",
                self.argv[0],
                name,
                self.timeout,
            )
            return
        took = time.monotonic() - started
        if proc.returncode == 0:
            log.info(
                "watchdog hook %s for %s (%s) exited 0 in %.2fs",
                self.argv[0],
                name,
                event.condition.summary,
                took,
            )
        else:
            self.failures += 1
            tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
            log.warning(
                "watchdog hook %s for %s exited %d in %.2fs%s",
                self.argv[0],
                name,
                proc.returncode,
                took,
                f": {tail[0][:200]}" if tail else "",
            )


@dataclass
class Watchdog:
    """Ties it together: evaluate conditions on every store change, fire the hook on transitions."""

    evaluate: Callable[[], tuple[float, str, list[Condition]]]  # -> (now, hostname, conditions)
    runner: HookRunner | None
    debounce: float = 0.0
    transitions: Transitions = field(init=False)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transitions = Transitions(self.debounce)

    def step(self) -> list[Event]:
        now, hostname, conds = self.evaluate()
        current = {c.key: c for c in conds}
        out: list[Event] = []
        for cond, state in self.transitions.update(current, now):
            ev = Event(cond, state, now, hostname)
            level = logging.WARNING if state == "begin" else logging.INFO
            log.log(
                level,
                "condition %s %s: %s",
                cond.kind,
                "began" if state == "begin" else "ended",
                cond.summary,
            )
            out.append(ev)
            if self.runner is not None:
                self.runner.submit(ev)
        self.events.extend(out)
        del self.events[:-1000]
        return out
