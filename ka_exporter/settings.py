"""Every setting, defined once: its default, its flag, its environment variable and its README row.

`Settings` is one frozen record. Each field is declared with `setting(default, Option(...))`, and the
rest is derived from that one line: the click option (`cli.py`), the environment variable
(`KA_EXPORTER_` + the flag name upper-cased, dots and dashes as underscores, plus any older name kept
as an alias), the YAML key (the flag name without `--`), the README's flag table
(`python -m ka_exporter.devtools.readme_flags`) and the constructors' defaults (`default(name)`).
The collector switches (`--collector.NAME`) come from the sources' registrations
(`sources/registry.py`), so a new source brings its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from ka_exporter.logs import LEVELS

DEFAULT_PORT = 9774
ENV_PREFIX = "KA_EXPORTER"

T = TypeVar("T")


def parse_listen_address(address: str) -> tuple[str, int]:
    """`[host]:port` (`:9774`, `127.0.0.1:9774`, `[::1]:9774`) -> (host, port); ValueError if bad."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {address!r} is not [host]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Option:
    """How one setting appears to the operator: flag, help, README row, accepted values."""

    flag: str  # without "--": "web.listen-address"; also the YAML key
    help: str  # the --help text
    doc: str  # the README's "meaning" column
    metavar: str = ""  # the README's value placeholder: "[HOST]:PORT", "SECONDS"
    kind: type = str  # the value's type when the default does not say it (None, ())
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    path: Literal["file", "dir", "any"] = "any"  # for Path values: what may be named
    negatable: bool = True  # booleans: --x/--no-x (False: a plain --x flag)
    shown_default: str | None = None  # the README's default column, when the value does not say it
    env_aliases: tuple[str, ...] = ()  # older environment names that keep working
    check: Callable[[Any], object] | None = None  # raises ValueError for a bad value

    @property
    def env(self) -> tuple[str, ...]:
        return (env_name(self.flag), *self.env_aliases)


def env_name(flag: str) -> str:
    """`web.listen-address` -> `KA_EXPORTER_WEB_LISTEN_ADDRESS`."""
    return f"{ENV_PREFIX}_{flag.upper().replace('.', '_').replace('-', '_')}"


def setting(default: T, option: Option) -> T:
    """A Settings field: its default and how the operator sets it."""
    return field(default=default, metadata={"option": option})


@dataclass(frozen=True, slots=True)
class Settings:
    web_listen_address: str = setting(
        f":{DEFAULT_PORT}",
        Option(
            "web.listen-address",
            "Address to serve /metrics and the status page on, as [host]:port.",
            "where to serve `/metrics`, the status page `/` and `/-/healthy`",
            metavar="[HOST]:PORT",
            check=parse_listen_address,
        ),
    )
    web_telemetry_path: str = setting(
        "/metrics",
        Option("web.telemetry-path", "Path under which to expose metrics.", "path of the metrics", "PATH"),
    )
    web_config_file: Path | None = setting(
        None,
        Option(
            "web.config.file",
            "Exporter-toolkit web config (TLS, basic auth), as node_exporter uses.",
            "TLS and basic auth, in the exporter-toolkit format node_exporter uses; re-read when it or its "
            "certificates change",
            "FILE",
            kind=Path,
            path="file",
        ),
    )
    web_max_connections: int = setting(
        4096,
        Option(
            "web.max-connections",
            "Client connections held at once (also kept below the descriptor limit); when full, a new "
            "connection evicts the oldest one that has not completed a request.",
            "client connections held at once (kept below the descriptor limit); when full, the oldest that "
            "has not completed a request is dropped",
            "N",
            min=16,
            max=65536,
        ),
    )
    keepalived_config: Path = setting(
        Path("/etc/keepalived/keepalived.conf"),
        Option(
            "keepalived.config",
            "keepalived's configuration: which instances and VIPs should exist.",
            "which instances and VIPs should exist (zeros are exported for them while keepalived is down)",
            "PATH",
        ),
    )
    keepalived_pid_file: Path = setting(
        Path("/run/keepalived.pid"),
        Option(
            "keepalived.pid-file",
            "keepalived's parent pid file (trusted only if that pid is keepalived).",
            "keepalived's parent pid file; trusted only if it is a root-owned regular file written after "
            "that pid started, and the pid is keepalived running as root (see [Security](#security))",
            "PATH",
        ),
    )
    keepalived_dumps_dir: Path | None = setting(
        None,
        Option(
            "keepalived.dumps-dir",
            "Where keepalived writes keepalived.data/.stats/.json (default: its TMPDIR, else /tmp).",
            "where keepalived writes `keepalived.data/.stats/.json`",
            "DIR",
            kind=Path,
            path="dir",
            shown_default="keepalived's `TMPDIR`, else `/tmp`",
        ),
    )
    keepalived_signal: bool = setting(
        True,
        Option(
            "keepalived.signal",
            "Ask keepalived for fresh dumps (D-Bus or signal); off: read the dumps already there.",
            "ask keepalived for fresh dumps; off: only read the dumps already there (support bundles)",
        ),
    )
    keepalived_dump_interval: float = setting(
        15.0,
        Option(
            "keepalived.dump-interval",
            "Seconds between background dump refreshes (never on the scrape path).",
            "background dump refresh interval (never on the scrape path)",
            "SECONDS",
            min=1.0,
        ),
    )
    keepalived_dbus_address: str | None = setting(
        None,
        Option(
            "keepalived.dbus-address",
            "D-Bus address of keepalived's bus (default: DBUS_SYSTEM_BUS_ADDRESS or the system bus).",
            "keepalived's D-Bus",
            "ADDRESS",
            shown_default="`DBUS_SYSTEM_BUS_ADDRESS` or the system bus",
        ),
    )
    netns: str | None = setting(
        None,
        Option(
            "netns",
            "Watch a keepalived inside this named network namespace (ip netns); serve from the host.",
            "watch a keepalived in network namespace NAME (as `ip netns` names it) while serving from the "
            "host's network",
            "NAME",
            env_aliases=("KA_EXPORTER_NETNS_NAME",),  # what click derived before: kept working
        ),
    )
    hostname: str | None = setting(
        None,
        Option(
            "hostname",
            "Value of the hostname label (default: this host's name).",
            "value of the `hostname` label",
            "NAME",
            shown_default="this host's name",
        ),
    )
    # The sources to run: --collector.NAME / --no-collector.NAME, one pair per registered source, are
    # listed here in the flag table. None: every registered source.
    collectors: frozenset[str] | None = None
    wire_interfaces: tuple[str, ...] = setting(
        (),
        Option(
            "wire.interface",
            "Interface to sniff VRRP on (repeatable; default: the interfaces in keepalived.conf).",
            "interface to sniff on (repeatable)",
            "IFACE",
            shown_default="interfaces in keepalived.conf",
            env_aliases=("KA_EXPORTER_WIRE_INTERFACES",),  # what click derived before: kept working
        ),
    )
    # The CLI's 5 s is the default: sources/wire.py said 3 s until the defaults had one home.
    wire_listen_seconds: float = setting(
        5.0,
        Option(
            "wire.listen-seconds",
            "With --once: how long to listen for adverts (a VRID is called masterless only after a hold "
            "time).",
            "with `--once`: how long to listen to the wire (no VRID is called masterless before its hold "
            "time, ~4.2 s at `advert_int 1`, has been listened to)",
            "SECONDS",
            min=0.0,
        ),
    )
    wire_max_peers: int = setting(
        4096,
        Option(
            "wire.max-peers",
            "Cap on routers tracked from the wire (bounds memory and series under a flood).",
            "cap on routers tracked from the wire",
            "N",
            min=1,
        ),
    )
    l2_probe_interval: float = setting(
        1.0,
        Option(
            "l2.probe-interval",
            "Seconds between two ARP/ND probes of one VIP (the L2 witness; probes never update a cache).",
            "seconds between two probes of one VIP",
            "SECONDS",
            min=0.05,
        ),
    )
    l2_max_probe_rate: float = setting(
        10.0,
        Option(
            "l2.max-probe-rate",
            "Cap on ARP/ND probes per second, all VIPs together (more VIPs: each probed less often).",
            "probes per second, all VIPs together (never two closer than 1/N s; more VIPs: each is probed "
            "less often)",
            "N",
            min=0.1,
        ),
    )
    l2_max_vips: int = setting(
        256,
        Option(
            "l2.max-vips",
            "Cap on VIPs the L2 witness watches (the first in keepalived.conf order).",
            "cap on VIPs the L2 witness watches (the first in keepalived.conf order)",
            "N",
            min=1,
        ),
    )
    lvs_interval: float = setting(
        5.0,
        Option(
            "lvs.interval",
            "Seconds between reads of IPVS and keepalived's checker dump (the lvs source).",
            "how often the lvs source reads IPVS and asks keepalived's checker for its dump",
            "SECONDS",
            min=0.1,
        ),
    )
    once: bool = setting(
        False,
        Option(
            "once",
            "Collect once, print (or write) the metrics and exit.",
            "collect once, print the metrics (or write the textfile) and exit",
            negatable=False,
        ),
    )
    textfile_directory: Path | None = setting(
        None,
        Option(
            "textfile.directory",
            "With --once: write DIR/keepalived.prom atomically for node_exporter's textfile collector.",
            "with `--once`: write `DIR/keepalived.prom` atomically",
            "DIR",
            kind=Path,
            path="dir",
        ),
    )
    watchdog_exec: str | None = setting(
        None,
        Option(
            "watchdog.exec",
            "Command to run when a condition (split brain, no master, ...) begins or ends.",
            "run COMMAND when a condition begins or ends, see [Watchdog](#watchdog)",
            "COMMAND",
        ),
    )
    watchdog_timeout: float = setting(
        10.0,
        Option(
            "watchdog.timeout",
            "Seconds a watchdog hook may run before it is killed.",
            "a hook running longer is killed (with its children)",
            "SECONDS",
            min=0.1,
        ),
    )
    watchdog_debounce: float = setting(
        0.0,
        Option(
            "watchdog.debounce",
            "Seconds a condition must hold (or be gone) before the hook runs.",
            "a condition must hold (or be gone) this long before the hook runs",
            "SECONDS",
            min=0.0,
        ),
    )
    watchdog_max_concurrent: int = setting(
        4,
        Option(
            "watchdog.max-concurrent",
            "Hooks running at once, at most (one at a time per condition; the rest wait in a queue).",
            "hooks running at once, at most; the rest wait in the queue",
            "N",
            min=1,
            max=64,
        ),
    )
    watchdog_unconfigured_vrids: bool = setting(
        False,
        Option(
            "watchdog.unconfigured-vrids",
            "Also run the hook for VRIDs only heard on the wire, not in keepalived.conf (an observer).",
            "also run the hook for VRIDs only heard on the wire, not in keepalived.conf (an observer host)",
        ),
    )
    log_level: str = setting(
        "info",
        Option(
            "log.level",
            "Only log messages with the given severity or above.",
            ", ".join(f"`{level}`" for level in LEVELS),
            "LEVEL",
            choices=LEVELS,
        ),
    )
    log_format: str = setting(
        "logfmt",
        Option(
            "log.format",
            "Output format of log messages.",
            "`logfmt` or `json`; one line per event",
            "FORMAT",
            choices=("logfmt", "json"),
        ),
    )

    def enabled(self, collector: str) -> bool:
        return self.collectors is None or collector in self.collectors


# Read by the CLI before the others (it fills their defaults); not a Settings field.
CONFIG_FILE = Option(
    "config.file",
    "YAML file of settings, keyed by flag name without '--' (flags and environment win).",
    "YAML file of settings keyed by flag name",
    "FILE",
    path="file",
)


@dataclass(frozen=True, slots=True)
class Field:
    """One Settings field with its option: what the CLI, the YAML reader and the README iterate."""

    name: str
    default: Any
    option: Option

    @property
    def kind(self) -> type:
        if self.default is None or isinstance(self.default, tuple):
            return self.option.kind
        if isinstance(self.default, Path):
            return Path  # not PosixPath
        return type(self.default)

    @property
    def multiple(self) -> bool:
        return isinstance(self.default, tuple)


def settings_fields() -> Iterator[Field | None]:
    """Every option-bearing field in declaration order; None marks where the collector switches go."""
    for f in fields(Settings):
        if f.name == "collectors":
            yield None
            continue
        yield Field(f.name, f.default, f.metadata["option"])


def default(name: str) -> Any:
    """The default of setting `name` (for constructors: `interval: float = default("lvs_interval")`)."""
    for f in fields(Settings):
        if f.name == name:
            if f.default is MISSING:
                raise KeyError(name)
            return f.default
    raise KeyError(name)
