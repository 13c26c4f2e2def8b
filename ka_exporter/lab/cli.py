"""`ka-exporter lab ...`: the click group the main CLI attaches with `main.add_command(lab)`.

Every command prints one line (or the status table); a failure is one line on stderr and exit status 1.
A lab brought up by one call is found again by name (its state file in /run/ka-exporter-lab/) by the next.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from ka_exporter.lab.core import Lab
from ka_exporter.lab.naming import DEFAULT_NAME, known_labs
from ka_exporter.lab.profiles import PROFILES
from ka_exporter.lab.system import LabError, check_root

P = ParamSpec("P")
R = TypeVar("R")


def _one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a LabError into click's one-line "Error: ..." and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LabError as exc:
            raise click.ClickException(str(exc).splitlines()[0]) from None

    return wrapper


_name_option = click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    envvar="KA_LAB_NAME",
    help="Lab name: prefix of its namespaces (NAME-a, NAME-b, NAME-sw, NAME-o). Env: KA_LAB_NAME.",
)


def _load(name: str) -> Lab:
    check_root()
    try:
        return Lab.load(name)
    except LabError as exc:
        others = [n for n in known_labs() if n != name]
        hint = f" (labs that are up: {', '.join(others)}; choose with --name)" if others else ""
        raise LabError(f"{str(exc).splitlines()[0]}{hint}") from None


def _vip_line(lab: Lab) -> str:
    return "; ".join(f"{vip} on {','.join(lab.vip_holders(vip)) or 'no node'}" for vip in lab.vips)


@click.group("lab")
def lab() -> None:
    """A real keepalived pair (or trio) in network namespaces, to demo, test and rehearse failovers."""


@lab.command("up")
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default="fast",
    show_default=True,
    help="keepalived configuration: " + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values()),
)
@click.option(
    "--nodes", type=click.IntRange(2, 3), default=2, show_default=True, help="Number of keepalived nodes."
)
@click.option(
    "--dbus/--no-dbus", default=False, show_default=True, help="Give each node a private D-Bus bus."
)
@click.option("--ipv6", is_flag=True, help="Use the IPv6 variant of the profile (fast only).")
@click.option(
    "--timeout",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds to wait for a master per instance.",
)
@click.option("--verbose", "-v", is_flag=True, help="On failure, also print the tail of each node's log.")
@_name_option
@_one_line_errors
def up(*, profile: str, nodes: int, dbus: bool, ipv6: bool, timeout: float, verbose: bool, name: str) -> None:
    """Create the namespaces and start keepalived on every node; waits for a master."""
    check_root()
    the_lab = Lab(profile=profile, nodes=nodes, dbus=dbus, prefix=name, ipv6=ipv6)
    try:
        the_lab.up(timeout=timeout)
    except LabError as exc:
        if verbose:
            click.echo(str(exc), err=True)
        raise
    click.echo(
        f"lab {name} up: profile {the_lab.profile.name}, nodes {','.join(the_lab.nodes)}, "
        f"subnet {the_lab.subnet}, {_vip_line(the_lab)} (ka-exporter lab down --name {name})"
    )


@lab.command("down")
@_name_option
@_one_line_errors
def down(name: str) -> None:
    """Stop the lab's processes and delete its namespaces and files."""
    click.echo(_load(name).down())


@lab.command("status")
@_name_option
@_one_line_errors
def status(name: str) -> None:
    """Show each node: namespace, address, keepalived pid, VIPs held."""
    click.echo(_load(name).status())


@lab.command("split")
@click.option(
    "--mode",
    type=click.Choice(["bridge", "firewall"]),
    default="bridge",
    show_default=True,
    help="bridge: drop VRRP between node ports on the bridge (the observer still sees it all); "
    "firewall: drop incoming VRRP in one node's namespace.",
)
@click.option(
    "--node", default=None, help="Node to cut off (firewall: default b; bridge: default all nodes)."
)
@_name_option
@_one_line_errors
def split(mode: str, node: str | None, name: str) -> None:
    """Partition the nodes so that each becomes MASTER (split brain)."""
    the_lab = _load(name)
    the_lab.split(mode=mode, node=node)
    target = node or ("b" if mode == "firewall" else "all nodes")
    click.echo(
        f"lab {the_lab.prefix} split ({mode}, {target}): VRRP dropped; "
        f"heal with: ka-exporter lab heal --name {the_lab.prefix}"
    )


@lab.command("heal")
@_name_option
@_one_line_errors
def heal(name: str) -> None:
    """Remove every split."""
    the_lab = _load(name)
    count = the_lab.heal()
    click.echo(f"lab {the_lab.prefix} healed: removed {count} split(s)")


@lab.command("failover")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the new master."
)
@_name_option
@_one_line_errors
def failover(timeout: float, name: str) -> None:
    """Stop the master's keepalived gracefully (SIGTERM) and wait for a backup to take over."""
    the_lab = _load(name)
    old = the_lab.failover()
    if not the_lab.wait_for(lambda: the_lab.master() not in (None, old), timeout):
        raise LabError(f"failover: stopped keepalived on {old}, but no new master within {timeout:g} s")
    click.echo(f"failover: stopped keepalived on {old} (SIGTERM); {the_lab.master()} is master now")


@lab.command("stop-master")
@click.option(
    "--kill/--term",
    default=True,
    show_default=True,
    help="SIGKILL (the stale VIP stays on the killed node) or SIGTERM (graceful).",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for a takeover."
)
@_name_option
@_one_line_errors
def stop_master(kill: bool, timeout: float, name: str) -> None:
    """Stop the master's keepalived; start-master restarts it."""
    the_lab = _load(name)
    old = the_lab.stop_master(kill=kill)
    if any(node.running() for node in the_lab.nodes.values()):
        the_lab.wait_for(lambda: any(n != old for n in the_lab.vip_holders()), timeout)
    click.echo(f"stop-master: {'killed' if kill else 'stopped'} keepalived on {old}; {_vip_line(the_lab)}")


@lab.command("start-master")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for a master.")
@_name_option
@_one_line_errors
def start_master(timeout: float, name: str) -> None:
    """Restart the keepalived that stop-master (or failover) stopped."""
    the_lab = _load(name)
    started = the_lab.start_master()
    the_lab.wait_for(lambda: the_lab.master() is not None, timeout)
    click.echo(f"start-master: started keepalived on {started}; {_vip_line(the_lab)}")


@lab.command("drill")
@click.option(
    "--profile",
    "profiles",
    type=click.Choice(["nginx", "mysql", "fast"]),
    multiple=True,
    help="Profile(s) to rehearse on (repeatable; default: nginx, mysql and fast).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON instead of a table.")
@_one_line_errors
def drill(profiles: tuple[str, ...], as_json: bool) -> None:
    """Rehearse the guides' failover tests on fresh labs and report what ka-exporter measured.

    Per profile: stop keepalived on the master, start it again, fail and restore the tracked service,
    block VRRP with a firewall rule and remove it, crash the master. Exit status 1 if anything did not
    happen as expected.
    """
    from ka_exporter.lab.drill import DRILL_PROFILES, report, run_drill, to_json

    check_root()
    outcomes = run_drill(profiles or DRILL_PROFILES)
    click.echo(to_json(outcomes) if as_json else report(outcomes), nl=False)
    if not all(o.ok for o in outcomes):
        raise SystemExit(1)


@lab.command("lvs")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for the UML guest."
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Copy the guest's logs, scrapes and result.json into this directory.",
)
def lvs(timeout: float, keep: Path | None) -> None:
    """keepalived LVS on a real IPVS kernel: boot a User-Mode Linux guest, run the scenarios, print them."""
    from ka_exporter.lab.uml import UmlError, run_lvs_lab

    try:
        result = run_lvs_lab(timeout=timeout, progress=click.echo, keep=keep)
    except UmlError as exc:
        raise click.ClickException(str(exc)) from None
    if not result.result.get("ok"):
        raise click.ClickException(f"lab lvs failed: {result.result.get('error')}")
    click.echo(f"lab lvs: every scenario passed in {result.seconds:.0f} s; the guest is gone")
