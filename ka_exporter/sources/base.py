"""The contract every source follows: own one input, write records to the store, never raise out."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources")


class Source(ABC):
    """A source owns one input. `start()` runs it in the background; `run_once()` does one pass.

    A source reports every attempt through `store.report(name, error)`; on failure it leaves its
    last good records in the store (stale) and logs one line saying what is wrong, once per distinct
    error rather than once per attempt.
    """

    name: str = "source"

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

    @abstractmethod
    def run_once(self) -> None:
        """One synchronous pass (used by --once and by run()). Must not raise."""

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
