"""One frozen Settings object, built from flags, environment and an optional YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 9774
COLLECTORS = ("process", "vips", "config", "wire", "dbus", "dumps", "fifo", "l2", "lvs")


@dataclass(frozen=True, slots=True)
class Settings:
    web_listen_address: str = f":{DEFAULT_PORT}"
    web_telemetry_path: str = "/metrics"
    web_config_file: Path | None = None
    web_max_connections: int = 4096
    keepalived_config: Path = Path("/etc/keepalived/keepalived.conf")
    keepalived_pid_file: Path = Path("/run/keepalived.pid")
    keepalived_dumps_dir: Path | None = None
    keepalived_signal: bool = True
    keepalived_dump_interval: float = 15.0
    keepalived_dbus_address: str | None = None
    netns: str | None = None
    discover: bool = False  # --discover: every keepalived on the host (ka_exporter/multi.py)
    discover_match: str | None = None
    discover_max_daemons: int = 512
    discover_interval: float = 1.0
    hostname: str | None = None
    collectors: frozenset[str] = field(default_factory=lambda: frozenset(COLLECTORS))
    wire_interfaces: tuple[str, ...] = ()
    wire_listen_seconds: float = 5.0
    wire_max_peers: int = 4096
    l2_probe_interval: float = 1.0
    l2_max_probe_rate: float = 10.0
    l2_max_vips: int = 256
    lvs_interval: float = 5.0
    once: bool = False
    textfile_directory: Path | None = None
    watchdog_exec: str | None = None
    watchdog_timeout: float = 10.0
    watchdog_debounce: float = 0.0
    watchdog_max_concurrent: int = 4
    watchdog_unconfigured_vrids: bool = False
    log_level: str = "info"
    log_format: str = "logfmt"

    def enabled(self, collector: str) -> bool:
        return collector in self.collectors


def parse_listen_address(address: str) -> tuple[str, int]:
    """`[host]:port` (`:9774`, `127.0.0.1:9774`, `[::1]:9774`) -> (host, port); ValueError if bad."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {address!r} is not [host]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
