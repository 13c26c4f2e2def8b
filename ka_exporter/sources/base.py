"""The contract every source follows: own one input, write records to the store, never raise out.

A source file also declares how the daemon runs it: `REGISTRATION = Registration(...)` at its end names
the source (and so its `--collector.NAME` switch), says how it is built from the settings and the store,
which sources it is wired to, and which collector parts render its records. `sources/registry.py` finds
every registration; nothing else lists the sources.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from ka_exporter.model import KeepalivedConfig
from ka_exporter.settings import Settings
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources")
wiring_log = logging.getLogger("ka_exporter")  # the daemon's logger: which sources run, and why not


class Source(ABC):
    """A source owns one input. `start()` runs it in the background; `run_once()` does one pass.

    A source reports every attempt through `store.report(name, error)`; on failure it leaves its
    last good records in the store (stale) and logs one line saying what is wrong, once per distinct
    error rather than once per attempt.
    """

    name: str = "source"
    # The daemon's first pass: `leads` runs alone before the others (they read what it publishes);
    # `first_pass` False: serving skips it (the source listens continuously from its start).
    leads: bool = False
    first_pass: bool = True

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Run `run()` in a daemon thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._guarded_run, name=f"src-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.request_stop()
        self.join(timeout)

    def request_stop(self) -> None:
        """Tell the source to stop and release its handles; `join` waits for its thread."""
        self._stop.set()
        self.close()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; return True if the source should keep going."""
        return not self._stop.wait(seconds)

    def run_once(self) -> None:
        """One synchronous pass (used by --once and by run()). Never raises: see `guarded`."""
        with self.guarded():
            self.poll()

    @abstractmethod
    def poll(self) -> None:
        """One pass: read the input, write the store, `ok()` or `fail()`. May raise; run_once guards it."""

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Run a pass; an exception it did not expect becomes `fail(self.unexpected(exc))`, never a raise."""
        try:
            yield
        except Exception as exc:  # a source never raises out of a pass
            self.fail(self.unexpected(exc))

    def unexpected(self, exc: Exception) -> str:
        """The one line reported for an exception a pass did not expect; override to name the input
        (and to drop what the failed pass left half done)."""
        return f"{self.name}: {type(exc).__name__}: {exc}"

    def run(self) -> None:
        """Background loop; the default polls run_once every `interval` seconds."""
        while not self.stopping:
            self.run_once()
            if not self.sleep(self.interval):
                break

    interval: float = 5.0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets/handles; called from stop()."""

    # -- reporting --------------------------------------------------------------------------------

    def ok(self) -> None:
        if self._last_error is not None:
            log.info("source %s recovered", self.name)
        self._last_error = None
        self.store.report(self.name, None)

    def fail(self, error: str) -> None:
        """Record a failure: one log line per distinct error, health says down, data kept (stale)."""
        if error != self._last_error:
            if error.startswith(f"{self.name}:") or error.startswith(f"{self.name} "):
                log.warning("source %s", error)
            else:
                log.warning("source %s: %s", self.name, error)
        self._last_error = error
        self.store.report(self.name, error)

    def _guarded_run(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a source must never take the daemon down
            log.exception("source %s stopped", self.name)
            self.fail(f"stopped: {type(exc).__name__}: {exc}")


# -- registration ---------------------------------------------------------------------------------


def coalesced(action: Callable[[], None], delay: float) -> Callable[[], None]:
    """A call that runs `action` once, `delay` seconds after the first of a burst of calls."""
    lock = threading.Lock()
    pending: list[threading.Timer] = []

    def fire() -> None:
        with lock:
            pending.clear()
        action()

    def call() -> None:
        with lock:
            if pending:
                return
            timer = threading.Timer(delay, fire)
            timer.daemon = True
            pending.append(timer)
        timer.start()

    return call


S = TypeVar("S", bound=Source)


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a source's `build` gets: the settings, the store, and the sources it declared it `uses`
    that are running (built before it)."""

    settings: Settings
    store: Store
    sources: Mapping[str, Source]

    @property
    def config(self) -> KeepalivedConfig | None:
        """keepalived.conf as read so far (the config source, when enabled, is built and read first)."""
        return self.store.config()

    def get(self, name: str, kind: type[S]) -> S | None:
        """The running source `name` (one this source `uses`), or None when it is off or not wanted."""
        src = self.sources.get(name)
        if src is None:
            return None
        if not isinstance(src, kind):
            raise TypeError(f"source {name} is a {type(src).__name__}, not a {kind.__name__}")
        return src


@dataclass(frozen=True, slots=True)
class Registration:
    """How the daemon runs one source; declared once, at the end of the source's own file."""

    name: str  # the source's name: `--collector.NAME`, its health label, its YAML key
    doc: str  # the README's line for --collector.NAME
    rank: int  # order among the sources: start order, --help and README order, exposition order
    build: Callable[[Wiring], Source | None]  # None: not worth running with this keepalived.conf
    # Collector parts rendering its records, as "module:function" under ka_exporter.collectors (a name,
    # not an import: sources never import collectors). A part shared by several sources is rendered once.
    parts: tuple[str, ...] = ()
    # Sources built before this one when enabled, and the only ones `build` may reach through Wiring.
    uses: tuple[str, ...] = ()

    @property
    def help(self) -> str:
        return f"Enable the {self.name} source and its metrics."
