"""The watchdog: runs `--watchdog.exec` on verdict transitions (a condition begins or ends).

It is keepalived's notify script for the failures keepalived itself cannot notice. Conditions come
from `conditions.evaluate(snapshot)`; this module only tracks their transitions and runs the hook:

- debounced: a condition must hold (or be gone) for `debounce` seconds before its begin (end) fires,
  so a one-scrape blip never pages anyone;
- never blocking collection: hooks run in a fixed pool of worker threads, with a timeout (then SIGKILL);
- bounded: at most `max_concurrent` hooks at once, however many conditions change (see HookRunner);
- never twice at once for the same condition, and no event lost: a transition waits in the queue
  until its hook ran; one cancelled by the next before it ran (or folded into a storm event) is
  counted as coalesced;
- a VRID only heard on the wire, not in keepalived.conf, pages only if the operator asks (Watchdog);
- every run and its exit status are logged, one line each.

The hook gets the event as environment variables (KA_EVENT, KA_KIND, KA_STATE, KA_VRID, ...) and as
one JSON document on stdin. Its environment is minimal (PATH, LANG and the KA_* variables), so
nothing of the exporter's own environment leaks into it; conditions never carry a password.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from ka_exporter.linux import caps
from ka_exporter.settings import default
from ka_exporter.verdicts.conditions import Condition

# The logger= name operators' log filters know, kept when the module moved to outputs/.
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

    def __init__(self, debounce: float = default("watchdog_debounce")) -> None:
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


@dataclass
class WatchdogStats:
    """What the watchdog did, for its metrics (read by a collector part; plain counters)."""

    transitions: int = 0  # begin/end transitions the watchdog saw (paged or not)
    unpaged: int = 0  # transitions on VRIDs not in keepalived.conf, not given to the hook
    runs: int = 0  # hook runs that started
    failures: int = 0  # runs that could not start, timed out or exited non-zero
    coalesced: int = 0  # transitions folded away before their hook ran (see HookRunner)
    retries: int = 0  # starts retried because the system refused a process or thread
    running: int = 0
    pending: int = 0


_Key = tuple[str, tuple[tuple[str, str], ...]]
STORM_KEY: _Key = ("watchdog_storm", ())


class HookRunner:
    """Runs the hook per event: at most `max_concurrent` at once, one at a time per condition, no event
    lost, storms damped.

    - A fixed pool of `max_concurrent` worker threads (started once) runs the hooks: a storm costs no
      thread and no process beyond that bound.
    - The queue holds at most one event per condition. A transition that arrives while the previous
      one for that condition still waits cancels it (begin then end, or end then begin, before the
      hook ran: the hook's view is unchanged): both are counted as coalesced, never silently dropped.
    - A hook that cannot start because the system refuses a process (EAGAIN, ENOMEM: TasksMax) stays
      queued and is retried with backoff: an event is delivered only once its hook ran.
    - More than `max_pending` waiting conditions is a storm: further new transitions are coalesced
      into one `watchdog_storm` event (KA_EVENT=watchdog_storm_begin, its summary counts them by kind),
      and the end of a condition whose begin was coalesced is coalesced too.
    """

    def __init__(
        self,
        command: str,
        timeout: float = default("watchdog_timeout"),
        *,
        max_concurrent: int = default("watchdog_max_concurrent"),
        max_pending: int = 64,
        stats: WatchdogStats | None = None,
    ) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout
        self.max_concurrent = max(1, max_concurrent)
        self.max_pending = max(1, max_pending)
        self.stats = stats if stats is not None else WatchdogStats()
        self._cv = threading.Condition()
        self._running: set[_Key] = set()
        self._pending: dict[_Key, Event] = {}  # insertion order: oldest first
        self._stormed: set[_Key] = set()  # conditions whose begin went into a storm event
        self._storm_counts: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self.backoff = 0.5

    @property
    def runs(self) -> int:
        return self.stats.runs

    @property
    def failures(self) -> int:
        return self.stats.failures

    def submit(self, event: Event) -> None:
        """Queue one transition; never blocks on a hook."""
        key = event.condition.key
        with self._cv:
            if key in self._stormed:
                self.stats.coalesced += 1
                if event.state == "end":
                    self._stormed.discard(key)
            elif key in self._pending:
                queued = self._pending.pop(key)
                if queued.state != event.state:
                    self.stats.coalesced += 2  # came and went (or went and came back) before its hook
                else:
                    self._pending[key] = event
                    self.stats.coalesced += 1
            elif len(self._pending) >= self.max_pending and event.state == "begin":
                self._storm(event)
            else:
                self._pending[key] = event
            self.stats.pending = len(self._pending)
            self._cv.notify()
        self._ensure_workers()

    def _storm(self, event: Event) -> None:
        """Fold one begin into the storm event (lock held)."""
        self._stormed.add(event.condition.key)
        self.stats.coalesced += 1
        kind = event.condition.kind
        self._storm_counts[kind] = self._storm_counts.get(kind, 0) + 1
        total = sum(self._storm_counts.values())
        by_kind = ", ".join(f"{n} {k}" for k, n in sorted(self._storm_counts.items()))
        cond = Condition(
            "watchdog_storm",
            (),
            f"watchdog storm: {total} more condition(s) began than the hook queue holds "
            f"({self.max_pending}); coalesced: {by_kind}",
            tuple((k, str(n)) for k, n in sorted(self._storm_counts.items())),
        )
        self._pending[STORM_KEY] = Event(cond, "begin", event.time, event.hostname)

    def _ensure_workers(self) -> None:
        with self._cv:
            self._threads = [t for t in self._threads if t.is_alive()]
            missing = self.max_concurrent - len(self._threads)
        for _ in range(missing):
            t = threading.Thread(target=self._worker, name="watchdog-hook", daemon=True)
            try:
                t.start()
            except RuntimeError:  # can't start new thread (TasksMax): the queue keeps the events
                self.stats.retries += 1
                break
            with self._cv:
                self._threads.append(t)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (True), or `timeout` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def _next(self) -> Event:
        with self._cv:
            while True:
                for key, ev in self._pending.items():
                    if key not in self._running:
                        del self._pending[key]
                        self._running.add(key)
                        if key == STORM_KEY:
                            self._storm_counts = {}
                        self.stats.pending = len(self._pending)
                        self.stats.running = len(self._running)
                        return ev
                self._cv.wait()

    def _worker(self) -> None:
        while True:
            event = self._next()
            key = event.condition.key
            delay = self.backoff
            while not self._run(event):  # the system refused a process: retry, the event stays due
                self.stats.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                with self._cv:
                    if key in self._pending:  # a newer transition arrived meanwhile: it decides
                        queued = self._pending.pop(key)
                        if queued.state != event.state:
                            self.stats.coalesced += 2
                            break
                        self.stats.coalesced += 1
                        event = queued
            with self._cv:
                self._running.discard(key)
                self.stats.running = len(self._running)
                self.stats.pending = len(self._pending)
                self._cv.notify_all()

    def _run(self, event: Event) -> bool:
        """Run the hook once. False only when the system refused to start it (to be retried)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
        env.update(event.env())
        payload = json.dumps(event.document(), sort_keys=True).encode() + b"\n"
        name = f"{event.condition.kind}_{event.state}"
        started = time.monotonic()
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
            if exc.errno in (errno.EAGAIN, errno.ENOMEM):
                log.warning("watchdog hook %s for %s could not start (%s): retrying", self.argv[0], name, exc)
                return False
            self.stats.failures += 1
            log.error("watchdog hook %s for %s could not start: %s", self.argv[0], name, exc.strerror or exc)
            return True
        self.stats.runs += 1
        try:
            _, err = proc.communicate(payload, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # The hook runs in its own session: kill the whole group, or a child it forked would keep
            # our pipes open (and itself alive) after the hook is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            self.stats.failures += 1
            log.error(
                "watchdog hook %s for %s timed out after %.1fs and was killed",
                self.argv[0],
                name,
                self.timeout,
            )
            return True
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
            self.stats.failures += 1
            tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
            log.warning(
                "watchdog hook %s for %s exited %d in %.2fs%s",
                self.argv[0],
                name,
                proc.returncode,
                took,
                f": {tail[0][:200]}" if tail else "",
            )
        return True


def _vrid_key(cond: Condition) -> tuple[str, str, int] | None:
    """(interface, family, vrid) of a condition about a VRID heard on the wire, else None."""
    labels = dict(cond.labels)
    vrid, interface, family = labels.get("vrid"), labels.get("interface"), labels.get("family")
    if vrid is None or interface is None or family is None or not vrid.isdigit():
        return None
    return (interface, family, int(vrid))


@dataclass
class Watchdog:
    """Ties it together: evaluate conditions on every store change, fire the hook on transitions.

    A condition about a VRID only ever heard on the wire (not among `configured()`: keepalived.conf, or
    keepalived's own instances) is not given to the hook unless `page_unconfigured` (the operator's
    `--watchdog.unconfigured-vrids`): anyone on the segment can make up 254 VRIDs with one packet each.
    Such transitions are still logged (debug), shown by `status`/`check`/the page, and counted.
    """

    evaluate: Callable[[], tuple[float, str, list[Condition]]]  # -> (now, hostname, conditions)
    runner: HookRunner | None
    debounce: float = default("watchdog_debounce")
    configured: Callable[[], Collection[tuple[str, str, int]]] | None = None
    page_unconfigured: bool = False
    stats: WatchdogStats = field(default_factory=WatchdogStats)
    transitions: Transitions = field(init=False)
    events: list[Event] = field(default_factory=list)
    _unpaged_logged: int = field(default=0, init=False)
    _unpaged_log_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.transitions = Transitions(self.debounce)
        if self.runner is not None:
            self.runner.stats = self.stats

    def _pages(self, cond: Condition, configured: Collection[tuple[str, str, int]] | None) -> bool:
        if self.page_unconfigured or configured is None:
            return True
        key = _vrid_key(cond)
        return key is None or key in configured

    def step(self) -> list[Event]:
        now, hostname, conds = self.evaluate()
        current = {c.key: c for c in conds}
        configured = set(self.configured()) if self.configured is not None else None
        out: list[Event] = []
        unpaged = 0
        for cond, state in self.transitions.update(current, now):
            ev = Event(cond, state, now, hostname)
            self.stats.transitions += 1
            pages = self._pages(cond, configured)
            if pages:
                level = logging.WARNING if state == "begin" else logging.INFO
            else:
                level = logging.DEBUG
                unpaged += 1
            log.log(
                level,
                "condition %s %s: %s",
                cond.kind,
                "began" if state == "begin" else "ended",
                cond.summary,
            )
            out.append(ev)
            if self.runner is not None and pages:
                self.runner.submit(ev)
        if unpaged:
            self.stats.unpaged += unpaged
        if self.stats.unpaged != self._unpaged_logged and time.monotonic() >= self._unpaged_log_at:
            # one line a minute at most, however many spoofed VRIDs come and go
            self._unpaged_log_at = time.monotonic() + 60.0
            self._unpaged_logged = self.stats.unpaged
            log.info(
                "%d transition(s) on VRIDs not in keepalived.conf not paged so far "
                "(--watchdog.unconfigured-vrids pages them)",
                self.stats.unpaged,
            )
        self.events.extend(out)
        del self.events[:-1000]
        return out
