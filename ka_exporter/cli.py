"""The `ka-exporter` command: serve (default), --once, and the lab/status/check subcommands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ka_exporter import __version__, logs
from ka_exporter.settings import COLLECTORS, DEFAULT_PORT, Settings, parse_listen_address

ENV_PREFIX = "KA_EXPORTER"


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read the YAML file into click's default_map: flags and environment still win over it."""
    if not value:
        return value
    import yaml  # only when a file is given: --once should not pay for it

    try:
        with open(value, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{value} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value} must be a mapping of flag names to values")
    known = {opt: p.name for p in ctx.command.params for opt in getattr(p, "opts", ()) if p.name}
    defaults: dict[str, Any] = {}
    for key, val in data.items():
        flag = "--" + str(key)
        if flag not in known and ("--collector." + str(key)) in known:
            flag = "--collector." + str(key)
        name = known.get(flag)
        if name is None or key == "config.file":
            raise click.BadParameter(f"{value}: unknown setting {key!r} (use flag names without '--')")
        defaults[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _check_listen(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        parse_listen_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def collector_options(f: Any) -> Any:
    for name in reversed(COLLECTORS):
        f = click.option(
            f"--collector.{name}/--no-collector.{name}",
            f"collector_{name}",
            default=True,
            show_default=True,
            help=f"Enable the {name} source and its metrics.",
        )(f)
    return f


class _Commands(click.Group):
    """Loads the `lab` subcommand only when it is asked for (it imports the lab's code)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "lab"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "lab" and "lab" not in self.commands:
            from ka_exporter.lab.cli import lab

            self.add_command(lab)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands,
    invoke_without_command=True,
    context_settings={"auto_envvar_prefix": ENV_PREFIX, "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config.file",
    "config_file",
    type=click.Path(dir_okay=False),
    callback=_load_config_file,
    is_eager=True,
    expose_value=True,
    help="YAML file of settings, keyed by flag name without '--' (flags and environment win).",
)
@click.option(
    "--web.listen-address",
    "web_listen_address",
    default=f":{DEFAULT_PORT}",
    show_default=True,
    callback=_check_listen,
    help="Address to serve /metrics and the status page on, as [host]:port.",
)
@click.option(
    "--web.telemetry-path",
    "web_telemetry_path",
    default="/metrics",
    show_default=True,
    help="Path under which to expose metrics.",
)
@click.option(
    "--web.config.file",
    "web_config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Exporter-toolkit web config (TLS, basic auth), as node_exporter uses.",
)
@click.option(
    "--web.max-connections",
    "web_max_connections",
    type=click.IntRange(16, 65536),
    default=4096,
    show_default=True,
    help="Client connections held at once (also kept below the descriptor limit); when full, a new "
    "connection evicts the oldest one that has not completed a request.",
)
@click.option(
    "--keepalived.config",
    "keepalived_config",
    type=click.Path(path_type=Path),
    default=Path("/etc/keepalived/keepalived.conf"),
    show_default=True,
    help="keepalived's configuration: which instances and VIPs should exist.",
)
@click.option(
    "--keepalived.pid-file",
    "keepalived_pid_file",
    type=click.Path(path_type=Path),
    default=Path("/run/keepalived.pid"),
    show_default=True,
    help="keepalived's parent pid file (trusted only if that pid is keepalived).",
)
@click.option(
    "--keepalived.dumps-dir",
    "keepalived_dumps_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where keepalived writes keepalived.data/.stats/.json (default: its TMPDIR, else /tmp).",
)
@click.option(
    "--keepalived.signal/--no-keepalived.signal",
    "keepalived_signal",
    default=True,
    show_default=True,
    help="Ask keepalived for fresh dumps (D-Bus or signal); off: read the dumps already there.",
)
@click.option(
    "--keepalived.dump-interval",
    "keepalived_dump_interval",
    type=click.FloatRange(min=1.0),
    default=15.0,
    show_default=True,
    help="Seconds between background dump refreshes (never on the scrape path).",
)
@click.option(
    "--keepalived.dbus-address",
    "keepalived_dbus_address",
    default=None,
    help="D-Bus address of keepalived's bus (default: DBUS_SYSTEM_BUS_ADDRESS or the system bus).",
)
@click.option(
    "--netns",
    "netns_name",
    default=None,
    help="Watch a keepalived inside this named network namespace (ip netns); serve from the host.",
)
@click.option(
    "--discover",
    "discover",
    is_flag=True,
    help="Watch every keepalived on this host, in every network namespace, in one scrape (netns label).",
)
@click.option(
    "--discover.match",
    "discover_match",
    default=None,
    help="With --discover: only namespaces whose name fully matches this regular expression.",
)
@click.option(
    "--discover.max-daemons",
    "discover_max_daemons",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="With --discover: cap on watched keepalived (the rest are counted and logged once).",
)
@click.option(
    "--discover.interval",
    "discover_interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="With --discover: seconds between two scans of the process table.",
)
@click.option(
    "--hostname",
    "hostname",
    default=None,
    help="Value of the hostname label (default: this host's name).",
)
@collector_options
@click.option(
    "--wire.interface",
    "wire_interfaces",
    multiple=True,
    help="Interface to sniff VRRP on (repeatable; default: the interfaces in keepalived.conf).",
)
@click.option(
    "--wire.listen-seconds",
    "wire_listen_seconds",
    type=click.FloatRange(min=0.0),
    default=5.0,
    show_default=True,
    help="With --once: how long to listen for adverts (a VRID is called masterless only after a hold time).",
)
@click.option(
    "--lvs.interval",
    "lvs_interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between reads of IPVS and keepalived's checker dump (the lvs source).",
)
@click.option(
    "--wire.max-peers",
    "wire_max_peers",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Cap on routers tracked from the wire (bounds memory and series under a flood).",
)
@click.option(
    "--l2.probe-interval",
    "l2_probe_interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between two ARP/ND probes of one VIP (the L2 witness; probes never update a cache).",
)
@click.option(
    "--l2.max-probe-rate",
    "l2_max_probe_rate",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Cap on ARP/ND probes per second, all VIPs together (more VIPs: each probed less often).",
)
@click.option(
    "--l2.max-vips",
    "l2_max_vips",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Cap on VIPs the L2 witness watches (the first in keepalived.conf order).",
)
@click.option("--once", "once", is_flag=True, help="Collect once, print (or write) the metrics and exit.")
@click.option(
    "--textfile.directory",
    "textfile_directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="With --once: write DIR/keepalived.prom atomically for node_exporter's textfile collector.",
)
@click.option(
    "--watchdog.exec",
    "watchdog_exec",
    default=None,
    help="Command to run when a condition (split brain, no master, ...) begins or ends.",
)
@click.option(
    "--watchdog.timeout",
    "watchdog_timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a watchdog hook may run before it is killed.",
)
@click.option(
    "--watchdog.debounce",
    "watchdog_debounce",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Seconds a condition must hold (or be gone) before the hook runs.",
)
@click.option(
    "--watchdog.max-concurrent",
    "watchdog_max_concurrent",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    help="Hooks running at once, at most (one at a time per condition; the rest wait in a queue).",
)
@click.option(
    "--watchdog.unconfigured-vrids/--no-watchdog.unconfigured-vrids",
    "watchdog_unconfigured_vrids",
    default=False,
    show_default=True,
    help="Also run the hook for VRIDs only heard on the wire, not in keepalived.conf (an observer).",
)
@click.option(
    "--log.level",
    "log_level",
    type=click.Choice(logs.LEVELS),
    default="info",
    show_default=True,
    help="Only log messages with the given severity or above.",
)
@click.option(
    "--log.format",
    "log_format",
    type=click.Choice(["logfmt", "json"]),
    default="logfmt",
    show_default=True,
    help="Output format of log messages.",
)
@click.version_option(__version__, "--version", prog_name="ka-exporter")
@click.pass_context
def main(ctx: click.Context, /, **kw: Any) -> None:
    """Prometheus exporter and split-brain watchdog for keepalived (VRRP).

    Without a command it serves /metrics; with --once it collects once and exits.
    """
    settings = settings_from(kw)
    ctx.obj = settings
    logs.setup(settings.log_level, settings.log_format)
    if ctx.invoked_subcommand is not None:
        return
    if settings.textfile_directory is not None and not settings.once:
        raise click.UsageError("--textfile.directory needs --once")
    if settings.discover and (settings.once or settings.netns):
        raise click.UsageError("--discover serves every namespace: not with --once or --netns")
    sys.exit(run(settings))


def settings_from(kw: dict[str, Any]) -> Settings:
    collectors = frozenset(n for n in COLLECTORS if kw.get(f"collector_{n}", True))
    return Settings(
        web_listen_address=kw["web_listen_address"],
        web_telemetry_path=kw["web_telemetry_path"],
        web_config_file=kw["web_config_file"],
        web_max_connections=kw.get("web_max_connections", 4096),
        keepalived_config=Path(kw["keepalived_config"]),
        keepalived_pid_file=Path(kw["keepalived_pid_file"]),
        keepalived_dumps_dir=kw["keepalived_dumps_dir"],
        keepalived_signal=kw["keepalived_signal"],
        keepalived_dump_interval=kw["keepalived_dump_interval"],
        keepalived_dbus_address=kw["keepalived_dbus_address"],
        netns=kw["netns_name"],
        discover=kw.get("discover", False),
        discover_match=kw.get("discover_match"),
        discover_max_daemons=kw.get("discover_max_daemons", 512),
        discover_interval=kw.get("discover_interval", 1.0),
        hostname=kw["hostname"],
        collectors=collectors,
        wire_interfaces=tuple(kw["wire_interfaces"]),
        wire_listen_seconds=kw["wire_listen_seconds"],
        wire_max_peers=kw["wire_max_peers"],
        l2_probe_interval=kw["l2_probe_interval"],
        l2_max_probe_rate=kw["l2_max_probe_rate"],
        l2_max_vips=kw["l2_max_vips"],
        lvs_interval=kw["lvs_interval"],
        once=kw["once"],
        textfile_directory=kw["textfile_directory"],
        watchdog_exec=kw["watchdog_exec"],
        watchdog_timeout=kw["watchdog_timeout"],
        watchdog_debounce=kw["watchdog_debounce"],
        watchdog_max_concurrent=kw["watchdog_max_concurrent"],
        watchdog_unconfigured_vrids=kw["watchdog_unconfigured_vrids"],
        log_level=kw["log_level"],
        log_format=kw["log_format"],
    )


def run(settings: Settings) -> int:
    """Serve or run once; a startup problem is one line on stderr and exit status 2 (bad setting) or 1."""
    from ka_exporter import daemon
    from ka_exporter.linux.netns import NetnsError
    from ka_exporter.outputs.http import ServeError

    try:
        if settings.discover:  # multi-namespace mode: its own wiring (ka_exporter/multi.py)
            from ka_exporter import multi

            return multi.serve(settings)
        if settings.once:
            return daemon.run_once(settings)
        return daemon.serve(settings)
    except NetnsError as exc:
        click.echo(f"ka-exporter: {exc}", err=True)
        return 2
    except ServeError as exc:
        click.echo(f"ka-exporter: {exc}", err=True)
        return 1


@main.command()
@click.option(
    "--profile",
    default="fast",
    show_default=True,
    help="Lab profile: fast (VRRPv3, 0.1 s adverts), basic, nginx, mysql, dual-master, unicast.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (default: run until Ctrl-C).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="First port for the demo exporters (one per node, then the observer).",
)
def demo(profile: str, seconds: float | None, port: int) -> None:
    """Run a real keepalived pair in namespaces and show what ka-exporter sees (needs root)."""
    from ka_exporter.lab.demo import run_demo

    sys.exit(run_demo(profile=profile, seconds=seconds, base_port=port))


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Collect once and print a table of VRRP instances, VIPs held, routers on the wire, verdicts."""
    from ka_exporter import daemon

    sys.exit(daemon.run_view(settings, "status"))


@main.command()
@click.pass_obj
def check(settings: Settings) -> None:
    """Nagios/Icinga plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with perfdata."""
    from ka_exporter import daemon

    sys.exit(daemon.run_view(settings, "check"))
