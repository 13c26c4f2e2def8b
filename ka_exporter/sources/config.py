"""The config source: keepalived.conf (with its includes) -> `store.set_config()`.

Polls cheaply: each pass stat()s the files that were read last time and the directories that include
patterns searched, and reads the config again only when one of their (mtime, size, inode) stamps
changed (a new file in an included conf.d/ changes the directory's stamp).

Health: up when the config was read without problems. A config with problems is still published
(the part that could be read is the best view there is) and the source reports, in one line, the
first problem and how many there are: "config /etc/keepalived/keepalived.conf:12: ... (+2 more)".
A missing or unreadable main file reports "keepalived config /x not found" (or the OS error) and
leaves the last good config in the store.
"""

from __future__ import annotations

from pathlib import Path

from ka_exporter.model import KeepalivedConfig
from ka_exporter.parse.kaconf import ConfigError, FileStamp, file_stamp, load_config
from ka_exporter.sources.base import Registration, Source, Wiring
from ka_exporter.store import Store

__all__ = ["ConfigSource", "summarize_problems"]


def _one_line(text: str, limit: int = 400) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize_problems(config: KeepalivedConfig) -> str | None:
    """One line naming the first problem and how many more there are, or None when there are none."""
    if not config.problems:
        return None
    more = len(config.problems) - 1
    tail = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
    return _one_line(f"config {config.problems[0]}{tail}")


class ConfigSource(Source):
    """Reads keepalived.conf when it (or an included file) changed and publishes it to the store."""

    name = "config"
    leads = True  # the others take their interfaces, VRIDs and whether they run from keepalived.conf

    def __init__(
        self, store: Store, path: Path, interval: float = 10.0, *, config_id: str | None = None
    ) -> None:
        super().__init__(store)
        self.path = path
        self.interval = interval
        self.config_id = config_id  # keepalived's -i; None: the node name, as keepalived defaults
        self._watched: tuple[tuple[str, FileStamp | None], ...] | None = None
        self._status: str | None = None  # the outcome of the last read: None (ok) or the error
        self.reads = 0  # how many times the config was actually parsed

    def unexpected(self, exc: Exception) -> str:
        self._watched = None  # read again next pass; the last good config stays
        return _one_line(f"config {self.path}: {type(exc).__name__}: {exc}")

    def poll(self) -> None:
        if self._watched is not None and self._unchanged(self._watched):
            self._report()
            return
        try:
            result = load_config(self.path, config_id=self.config_id)
        except ConfigError as exc:
            self._watched = None  # read again as soon as it is back; keep the last good config
            self.fail(_one_line(str(exc)))
            return
        self.reads += 1
        self.store.set_config(result.config)
        self._watched = result.watched
        self._status = summarize_problems(result.config)
        self._report()

    @staticmethod
    def _unchanged(watched: tuple[tuple[str, FileStamp | None], ...]) -> bool:
        return all(file_stamp(path) == stamp for path, stamp in watched)

    def _report(self) -> None:
        if self._status is None:
            self.ok()
        else:
            self.fail(self._status)


def build(w: Wiring) -> ConfigSource:
    config = ConfigSource(w.store, w.settings.keepalived_config)
    # Read keepalived.conf now: which other sources are worth running depends on it (D-Bus, FIFO, LVS).
    # The daemon's own first pass later finds it unchanged and does not read it again.
    config.run_once()
    return config


REGISTRATION = Registration("config", "keepalived.conf reader", 30, build, parts=("host:collect_config",))
