"""Every command and flag has help text and a README entry; the README's commands exist."""

from __future__ import annotations

import re

import click

from ka_exporter.cli import main
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def walk(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):  # as --help lists them (the lab group is loaded lazily)
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            out.extend(walk(sub, (*path, name)))
    return out


def test_the_lab_commands_are_walked():
    names = {" ".join(p) for p, _ in walk(main)}
    assert {"lab up", "lab down", "lab failover", "lab split", "status", "check", "demo"} <= names


def test_every_command_and_option_has_help_text():
    missing = []
    for path, cmd in walk(main):
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path) or "ka-exporter")
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.help and "--help" not in p.opts:
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert missing == []


def test_every_main_flag_is_in_the_readme():
    undocumented = []
    for p in main.params:
        if not isinstance(p, click.Option):
            continue
        for opt in [*p.opts, *p.secondary_opts]:
            if (
                opt.startswith("--")
                and opt != "--help"
                and f"`{opt}" not in README
                and f"/ {opt}" not in README
            ):
                undocumented.append(opt)
    assert undocumented == []


def test_every_subcommand_is_in_the_readme():
    for path, _cmd in walk(main):
        if path:
            assert f"ka-exporter {path[0]}" in README or f"`{path[-1]}" in README, path


def test_readme_default_port_matches_code():
    from ka_exporter.settings import DEFAULT_PORT

    assert f"`:{DEFAULT_PORT}`" in README
    assert DEFAULT_PORT not in (9165, 9650)
    assert re.search(r"make demo", README)
    assert re.search(r"make test", README)
