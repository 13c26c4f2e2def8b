"""The `ka-exporter` command: serve (default), --once, and the lab/status/check subcommands."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from ka_exporter import __version__, logs
from ka_exporter.settings import (
    CONFIG_FILE,
    DEFAULT_PORT,
    ENV_PREFIX,
    Field,
    Option,
    Settings,
    env_name,
    settings_fields,
)
from ka_exporter.sources.registry import by_rank


def yaml_keys() -> dict[str, str]:
    """YAML key -> the option's parameter name: every flag name without '--' (a collector switch also
    by its bare source name: `dumps: false`)."""
    keys: dict[str, str] = {}
    for f in settings_fields():
        if f is not None:
            keys[f.option.flag] = f.name
    for reg in by_rank():
        keys[f"collector.{reg.name}"] = f"collector_{reg.name}"
        keys.setdefault(reg.name, f"collector_{reg.name}")
    return keys


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
    known = yaml_keys()
    defaults: dict[str, Any] = {}
    for key, val in data.items():
        name = known.get(str(key))
        if name is None:
            raise click.BadParameter(f"{value}: unknown setting {key!r} (use flag names without '--')")
        defaults[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _checked(option: Option) -> Any:
    check = option.check
    if check is None:
        return None

    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        try:
            check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return callback


def click_type(f: Field) -> Any:
    o = f.option
    kind = f.kind
    if o.choices:
        return click.Choice(list(o.choices))
    if kind is Path:
        return click.Path(path_type=Path, dir_okay=o.path != "file", file_okay=o.path != "dir")
    if kind in (int, float) and (o.min is not None or o.max is not None):
        if kind is int:
            lo = None if o.min is None else int(o.min)
            hi = None if o.max is None else int(o.max)
            return click.IntRange(lo, hi)
        return click.FloatRange(o.min, o.max)
    return None if kind in (str, bool) else kind


def setting_option(f: Field) -> Any:
    """The click option of one Settings field: flag, type, default, environment, help."""
    o = f.option
    decls = [f"--{o.flag}/--no-{o.flag}" if f.kind is bool and o.negatable else f"--{o.flag}", f.name]
    kw: dict[str, Any] = {"envvar": list(o.env), "help": o.help, "callback": _checked(o)}
    if f.kind is bool and not o.negatable:
        kw["is_flag"] = True
        kw["default"] = f.default
    elif f.multiple:
        kw["multiple"] = True
    else:
        kw["default"] = f.default
        kw["show_default"] = f.default is not None
    kind = click_type(f)
    if kind is not None:
        kw["type"] = kind
    return click.option(*decls, **kw)


def collector_option(name: str, help_text: str) -> Any:
    return click.option(
        f"--collector.{name}/--no-collector.{name}",
        f"collector_{name}",
        default=True,
        show_default=True,
        envvar=env_name(f"collector.{name}"),
        help=help_text,
    )


def setting_options(f: Any) -> Any:
    """Every option of the main command, derived from settings.py and the sources' registrations."""
    options: list[Any] = []
    for field_ in settings_fields():
        if field_ is None:
            options.extend(collector_option(reg.name, reg.help) for reg in by_rank())
        else:
            options.append(setting_option(field_))
    for option in reversed(options):
        f = option(f)
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
    f"--{CONFIG_FILE.flag}",
    "config_file",
    type=click.Path(dir_okay=False),
    callback=_load_config_file,
    is_eager=True,
    expose_value=True,
    envvar=list(CONFIG_FILE.env),
    help=CONFIG_FILE.help,
)
@setting_options
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
    sys.exit(run(settings))


def settings_from(kw: dict[str, Any]) -> Settings:
    """The Settings record from the main command's parameters (named as the fields are)."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name in kw:
            value = kw[f.name]
            values[f.name] = tuple(value) if isinstance(f.default, tuple) else value
    values["collectors"] = frozenset(r.name for r in by_rank() if kw.get(f"collector_{r.name}", True))
    return Settings(**values)


def run(settings: Settings) -> int:
    """Serve or run once; a startup problem is one line on stderr and exit status 2 (bad setting) or 1."""
    from ka_exporter import daemon
    from ka_exporter.linux.netns import NetnsError
    from ka_exporter.outputs.http import ServeError

    try:
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
