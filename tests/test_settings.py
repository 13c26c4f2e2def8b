"""One definition per setting: the CLI, the environment, the YAML file, the README table and the
constructors all follow settings.py; and the sources' registry (a source is one file)."""

from __future__ import annotations

import inspect
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import pytest

from ka_exporter.cli import main, settings_from, yaml_keys
from ka_exporter.devtools import readme_flags
from ka_exporter.settings import (
    CONFIG_FILE,
    Field,
    Settings,
    default,
    env_name,
    settings_fields,
)
from ka_exporter.sources.base import Registration, Source, Wiring, coalesced
from ka_exporter.sources.registry import by_rank, discover, names, ordered, registrations
from ka_exporter.store import Store
from tests.conftest import REPO, wait_until

FIELDS = [f for f in settings_fields() if f is not None]

# A value other than the default for every setting, as typed on the command line / in YAML.
SAMPLES: dict[str, tuple[str, Any]] = {
    "web_listen_address": ("127.0.0.1:9999", "127.0.0.1:9999"),
    "web_telemetry_path": ("/m", "/m"),
    "web_config_file": ("/etc/web.yml", Path("/etc/web.yml")),
    "web_max_connections": ("100", 100),
    "keepalived_config": ("/k.conf", Path("/k.conf")),
    "keepalived_pid_file": ("/k.pid", Path("/k.pid")),
    "keepalived_dumps_dir": ("/dumps", Path("/dumps")),
    "keepalived_signal": ("false", False),
    "keepalived_dump_interval": ("30", 30.0),
    "keepalived_dbus_address": ("unix:path=/b", "unix:path=/b"),
    "netns": ("ns1", "ns1"),
    "discover": ("true", True),
    "discover_match": ("qrouter-.*", "qrouter-.*"),
    "discover_max_daemons": ("20", 20),
    "discover_interval": ("2", 2.0),
    "hostname": ("h1", "h1"),
    "wire_interfaces": ("eth1", ("eth1",)),
    "wire_listen_seconds": ("2.5", 2.5),
    "wire_max_peers": ("7", 7),
    "l2_probe_interval": ("0.5", 0.5),
    "l2_max_probe_rate": ("3", 3.0),
    "l2_max_vips": ("9", 9),
    "lvs_interval": ("2", 2.0),
    "once": ("true", True),
    "textfile_directory": ("/tf", Path("/tf")),
    "watchdog_exec": ("/bin/true", "/bin/true"),
    "watchdog_timeout": ("3", 3.0),
    "watchdog_debounce": ("1.5", 1.5),
    "watchdog_max_concurrent": ("2", 2),
    "watchdog_unconfigured_vrids": ("true", True),
    "log_level": ("debug", "debug"),
    "log_format": ("json", "json"),
}


def parse(*args: str) -> Settings:
    """The Settings the real command line (and environment, and --config.file) gives, not run."""
    with main.make_context("ka-exporter", list(args)) as ctx:
        return settings_from(ctx.params)


@pytest.fixture(autouse=True)
def _no_ka_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KA_EXPORTER_"):
            monkeypatch.delenv(key)


# -- one definition ---------------------------------------------------------------------------------


def test_every_setting_but_the_collectors_has_an_option_and_a_sample() -> None:
    names_ = {f.name for f in fields(Settings)}
    assert {f.name for f in FIELDS} == names_ - {"collectors"}
    assert set(SAMPLES) == {f.name for f in FIELDS}
    flags = [f.option.flag for f in FIELDS] + [CONFIG_FILE.flag]
    assert len(flags) == len(set(flags))


def test_the_command_line_defaults_are_the_settings_defaults() -> None:
    assert parse() == Settings(collectors=frozenset(names()))


def test_every_click_option_default_is_the_field_default() -> None:
    params = {p.name: p for p in main.params}
    for f in FIELDS:
        p = params[f.name]
        if f.multiple:
            assert p.multiple
        else:
            assert p.default == f.default, f.name


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.option.flag)
def test_each_flag_sets_its_setting(field: Field) -> None:
    text, value = SAMPLES[field.name]
    if field.kind is bool:
        args = [f"--{field.option.flag}" if value else f"--no-{field.option.flag}"]
    else:
        args = [f"--{field.option.flag}", text]
    assert getattr(parse(*args), field.name) == value


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.option.flag)
def test_each_environment_variable_sets_its_setting(field: Field, monkeypatch: pytest.MonkeyPatch) -> None:
    text, value = SAMPLES[field.name]
    monkeypatch.setenv(env_name(field.option.flag), text)
    assert getattr(parse(), field.name) == value


def test_environment_names_are_the_flag_names() -> None:
    assert env_name("web.listen-address") == "KA_EXPORTER_WEB_LISTEN_ADDRESS"
    assert env_name("collector.dumps") == "KA_EXPORTER_COLLECTOR_DUMPS"
    params = {p.name: p for p in main.params}
    assert params["netns"].envvar == ["KA_EXPORTER_NETNS", "KA_EXPORTER_NETNS_NAME"]


@pytest.mark.parametrize(
    ("old", "name", "text", "value"),
    [
        ("KA_EXPORTER_NETNS_NAME", "netns", "ns9", "ns9"),
        ("KA_EXPORTER_WIRE_INTERFACES", "wire_interfaces", "eth7 eth8", ("eth7", "eth8")),
    ],
)
def test_the_environment_names_click_derived_before_still_work(
    old: str, name: str, text: str, value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(old, text)
    assert getattr(parse(), name) == value


def test_the_documented_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_EXPORTER_NETNS_NAME", "old")
    monkeypatch.setenv("KA_EXPORTER_NETNS", "new")
    assert parse().netns == "new"


def test_every_setting_is_a_yaml_key(tmp_path: Path) -> None:
    import yaml

    doc = {f.option.flag: yaml.safe_load(SAMPLES[f.name][0]) for f in FIELDS}
    doc["wire.interface"] = ["eth1"]
    doc["collector.wire"] = False
    doc["dumps"] = False  # a collector switch by its bare name
    path = tmp_path / "ka.yml"
    path.write_text(yaml.safe_dump(doc))
    got = parse("--config.file", str(path))
    for f in FIELDS:
        assert getattr(got, f.name) == SAMPLES[f.name][1], f.name
    assert got.collectors == frozenset(names()) - {"wire", "dumps"}


def test_yaml_keys_are_flag_names_and_collector_names() -> None:
    keys = yaml_keys()
    assert keys["web.listen-address"] == "web_listen_address"
    assert keys["collector.fifo"] == keys["fifo"] == "collector_fifo"
    assert CONFIG_FILE.flag not in keys  # a file does not name another file


def test_a_flag_outside_its_range_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="0"):
        parse("--wire.max-peers", "0")
    with pytest.raises(click.BadParameter, match="is not"):
        parse("--web.listen-address", "nonsense")


def test_collector_switches_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = {o for p in main.params for o in getattr(p, "opts", ())}
    assert {f"--collector.{n}" for n in names()} <= opts
    assert parse("--no-collector.l2").collectors == frozenset(names()) - {"l2"}
    monkeypatch.setenv("KA_EXPORTER_COLLECTOR_LVS", "false")
    assert not parse().enabled("lvs")
    assert Settings().enabled("lvs")  # collectors None: every source


# -- defaults in the constructors -------------------------------------------------------------------


def param_default(fn: Any, name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def test_constructors_take_their_defaults_from_settings() -> None:
    from ka_exporter.outputs.http import Limits
    from ka_exporter.outputs.watchdog import HookRunner, Transitions, Watchdog
    from ka_exporter.sources.dumps import DumpSource
    from ka_exporter.sources.l2 import L2Source
    from ka_exporter.sources.lvs import LvsSource
    from ka_exporter.sources.wire import WireSource
    from ka_exporter.store.peers import PeerTable

    pairs = [
        (WireSource, "listen_seconds", "wire_listen_seconds"),
        (WireSource, "cap", "wire_max_peers"),
        (L2Source, "probe_interval", "l2_probe_interval"),
        (L2Source, "max_probe_rate", "l2_max_probe_rate"),
        (L2Source, "max_vips", "l2_max_vips"),
        (LvsSource, "interval", "lvs_interval"),
        (LvsSource, "signal", "keepalived_signal"),
        (DumpSource, "interval", "keepalived_dump_interval"),
        (DumpSource, "signal", "keepalived_signal"),
        (HookRunner, "timeout", "watchdog_timeout"),
        (HookRunner, "max_concurrent", "watchdog_max_concurrent"),
        (Transitions, "debounce", "watchdog_debounce"),
        (Watchdog, "debounce", "watchdog_debounce"),
        (Limits, "max_connections", "web_max_connections"),
        # the store may not import settings: its table's cap is checked here instead
        (PeerTable, "cap", "wire_max_peers"),
    ]
    for cls, param, setting_name in pairs:
        assert param_default(cls, param) == default(setting_name), (cls.__name__, param)


def test_the_wire_listen_window_is_five_seconds_everywhere() -> None:
    """It was 3 s in sources/wire.py and 5 s in the CLI; 5 s (the CLI's, the one operators got) stays:
    it covers the hold time at advert_int 1 (~4.2 s), so --once can judge a VRID masterless."""
    from ka_exporter.sources.wire import WireSource

    assert default("wire_listen_seconds") == 5.0
    assert WireSource(Store(hostname="t"), ["lo"]).listen_seconds == 5.0
    assert parse().wire_listen_seconds == 5.0


def test_default_of_an_unknown_setting_is_an_error() -> None:
    with pytest.raises(KeyError):
        default("no_such_setting")
    assert default("collectors") is None  # every registered source


# -- the README table -------------------------------------------------------------------------------


def test_the_readme_flag_table_is_current() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_flags.render(readme) == readme, "run python -m ka_exporter.devtools.readme_flags"
    assert readme_flags.main(["--check"]) == 0


def test_the_readme_table_has_a_row_per_flag() -> None:
    table = readme_flags.table()
    for f in FIELDS:
        assert f"`--{f.option.flag}" in table
    for n in names():
        assert f"`--collector.{n} / --no-collector.{n}` | on |" in table
    assert "| `--wire.listen-seconds SECONDS` | 5 |" in table
    assert "| `--keepalived.dumps-dir DIR` | keepalived's `TMPDIR`, else `/tmp` |" in table


def test_the_readme_names_the_old_environment_names() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for f in FIELDS:
        for alias in f.option.env_aliases:
            assert f"`{alias}`" in readme


def test_render_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="no line"):
        readme_flags.render("# no table here\n")


# -- the registry -----------------------------------------------------------------------------------


def test_the_registry_holds_every_source_once() -> None:
    assert sorted(names()) == ["config", "dbus", "dumps", "fifo", "l2", "lvs", "process", "vips", "wire"]
    ranks = [r.rank for r in registrations()]
    assert len(set(ranks)) == len(ranks)
    built = [r.name for r in registrations()]
    for reg in registrations():
        for used in reg.uses:
            assert built.index(used) < built.index(reg.name), (used, reg.name)


def test_every_declared_part_is_a_collector_function() -> None:
    from ka_exporter.daemon import resolve_part

    for reg in registrations():
        for ref in reg.parts:
            part = resolve_part(ref)
            assert callable(part)
            assert part.__module__.startswith("ka_exporter.collectors."), ref


def test_parts_keep_the_exposition_order_and_a_shared_part_renders_once() -> None:
    from ka_exporter.daemon import build_parts

    every = [p.__name__ for p in build_parts(Settings())]
    assert every == [
        "collect_process",
        "collect_vips",
        "collect_config",
        "collect_keepalived",
        "collect_wire",
        "collect_failover",
        "collect_l2",
        "collect_lvs",
        "collect_fused",
        "collect_exporter",
    ]
    some = [p.__name__ for p in build_parts(Settings(collectors=frozenset({"dumps", "fifo"})))]
    assert some == ["collect_keepalived", "collect_fused", "collect_exporter"]


def write_module(pkg: Path, name: str, body: str) -> None:
    (pkg / f"{name}.py").write_text(
        "from ka_exporter.sources.base import Registration\n\ndef build(w):\n    return None\n\n" + body
    )


def test_a_new_source_is_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "kt_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write_module(pkg, "alpha", 'REGISTRATION = Registration("alpha", "a", 20, build, uses=("beta",))\n')
    write_module(pkg, "beta", 'REGISTRATION = Registration("beta", "b", 30, build)\n')
    (pkg / "helper.py").write_text("X = 1\n")  # a module without a registration is not a source
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("kt_plugins")
    assert [r.name for r in found] == ["beta", "alpha"]  # alpha uses beta: built after it


def reg(name: str, rank: int, uses: tuple[str, ...] = ()) -> Registration:
    return Registration(name, name, rank, lambda _w: None, uses=uses)


def test_ordering_refuses_cycles_unknown_names_and_twins() -> None:
    with pytest.raises(ValueError, match="cycle"):
        ordered([reg("a", 1, ("b",)), reg("b", 2, ("a",))])
    with pytest.raises(ValueError, match="unknown"):
        ordered([reg("a", 1, ("zz",))])
    with pytest.raises(ValueError, match="two sources"):
        ordered([reg("a", 1), reg("a", 2)])
    assert [r.name for r in ordered([reg("b", 2), reg("a", 1)])] == ["a", "b"]


def test_wiring_only_reaches_sources_by_their_kind() -> None:
    from ka_exporter.sources.vips import VipSource

    store = Store(hostname="t")
    vips = VipSource(store)
    w = Wiring(Settings(), store, {"vips": vips})
    assert w.get("vips", VipSource) is vips
    assert w.get("dbus", VipSource) is None
    with pytest.raises(TypeError):
        w.get("vips", Registration)  # type: ignore[type-var]


def config_file(tmp_path: Path, global_defs: str) -> Path:
    path = tmp_path / "keepalived.conf"
    path.write_text(
        f"global_defs {{\n{global_defs}\n}}\n"
        "vrrp_instance VI_1 {\n interface lo\n virtual_router_id 9\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n"
    )
    return path


def test_sources_are_wired_through_their_declared_uses(tmp_path: Path) -> None:
    from ka_exporter.daemon import build_sources
    from ka_exporter.sources.dbus import DbusSource
    from ka_exporter.sources.dumps import DumpSource
    from ka_exporter.sources.fifo import FifoSource
    from ka_exporter.sources.vips import VipSource

    conf = config_file(tmp_path, " enable_dbus\n vrrp_notify_fifo /run/kt.fifo")
    on = frozenset({"config", "vips", "dbus", "dumps", "fifo"})
    settings = Settings(keepalived_config=conf, collectors=on, keepalived_dumps_dir=tmp_path)
    sources = {s.name: s for s in build_sources(settings, Store(hostname="t"))}
    assert list(sources) == ["vips", "config", "dbus", "dumps", "fifo"]
    dbus, dumps, fifo, vips = sources["dbus"], sources["dumps"], sources["fifo"], sources["vips"]
    assert isinstance(dbus, DbusSource)
    assert isinstance(dumps, DumpSource)
    assert isinstance(fifo, FifoSource)
    assert isinstance(vips, VipSource)
    assert dumps.requester == dbus.request_dump
    assert dbus.on_change is not None  # a dump source to hand over to
    assert fifo.on_change == dumps.request_refresh
    assert fifo.counting()  # D-Bus has not read keepalived's name yet: the FIFO counts
    # A VIP change refreshes the dumps at once while D-Bus cannot vouch for the states...
    assert vips.on_change is not None
    vips.on_change()
    assert dumps._wake.is_set()
    dumps._wake.clear()
    dbus._owner = ":1.7"  # as after D-Bus's first full read
    assert not fifo.counting()  # D-Bus counts them
    # ...and once the burst is over while it does (as D-Bus's own state changes ask for it)
    vips.on_change()
    assert not dumps._wake.is_set()
    assert wait_until(dumps._wake.is_set, timeout=5.0)


def test_without_dbus_the_fifo_counts_and_the_dumps_signal(tmp_path: Path) -> None:
    from ka_exporter.daemon import build_sources
    from ka_exporter.sources.dumps import DumpSource
    from ka_exporter.sources.fifo import FifoSource

    conf = config_file(tmp_path, " vrrp_notify_fifo /run/kt.fifo")  # no enable_dbus: D-Bus not wanted
    settings = Settings(keepalived_config=conf, keepalived_dumps_dir=tmp_path)
    sources = {s.name: s for s in build_sources(settings, Store(hostname="t"))}
    assert "dbus" not in sources
    assert "lvs" not in sources  # no virtual_server
    dumps, fifo = sources["dumps"], sources["fifo"]
    assert isinstance(dumps, DumpSource)
    assert isinstance(fifo, FifoSource)
    assert dumps.requester is None
    assert fifo.count_transitions is True and fifo.counting()


# -- the guard around a pass ------------------------------------------------------------------------


class Broken(Source):
    name = "broken"

    def __init__(self, store: Store, exc: Exception) -> None:
        super().__init__(store)
        self.exc = exc
        self.polls = 0

    def poll(self) -> None:
        self.polls += 1
        raise self.exc


class Named(Broken):
    def unexpected(self, exc: Exception) -> str:
        return f"broken: cannot read the thing: {exc}"


def test_a_pass_that_raises_reports_the_source_down_and_never_raises() -> None:
    store = Store(hostname="t")
    src = Broken(store, RuntimeError("boom"))
    src.run_once()
    health = store.health("broken")
    assert src.polls == 1
    assert health is not None
    assert not health.up
    assert health.error == "broken: RuntimeError: boom"
    named = Named(store, OSError("gone"))
    named.run_once()
    named_health = store.health("broken")
    assert named_health is not None
    assert named_health.error == "broken: cannot read the thing: gone"


def test_coalesced_runs_once_after_a_burst() -> None:
    fired = threading.Event()
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        fired.set()

    call = coalesced(action, 0.05)
    for _ in range(50):
        call()
    assert fired.wait(5.0)
    fired.clear()
    assert not fired.wait(0.2)  # nothing more was asked for: nothing more ran
    assert calls == [1]
    call()
    assert fired.wait(5.0)
    assert calls == [1, 1]


def test_every_registration_names_a_source_with_its_name() -> None:
    for r in by_rank():
        assert r.help == f"Enable the {r.name} source and its metrics."
        assert r.doc


def test_no_module_outside_sources_imports_a_source() -> None:
    """The registry is the one place that names the sources (the lab reuses lvs' IPVS reader)."""
    import ast

    package = REPO / "ka_exporter"
    # fleet: --discover's per-daemon wiring (ka_exporter/multi.py serves it), one source set per keepalived
    shared = {"ka_exporter.sources.base", "ka_exporter.sources.registry", "ka_exporter.sources.fleet"}
    wrong = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in ("sources", "lab"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            else:
                continue
            wrong.extend(
                f"{rel} imports {m}" for m in mods if m.startswith("ka_exporter.sources.") and m not in shared
            )
    assert wrong == []


class Recorder(Source):
    """A source that records when its pass ran (the order the daemon's first pass gives)."""

    def __init__(self, store: Store, name: str, log: list[str], *, leads: bool = False, first: bool = True):
        super().__init__(store)
        self.name = name
        self.leads = leads
        self.first_pass = first
        self.log = log
        self.lock = threading.Lock()

    def poll(self) -> None:
        with self.lock:
            self.log.append(self.name)
        self.ok()


@pytest.mark.parametrize("serving", [True, False])
def test_the_first_pass_runs_the_leader_first_and_skips_listeners_while_serving(serving: bool) -> None:
    from ka_exporter.daemon import first_pass

    store = Store(hostname="t")
    ran: list[str] = []
    sources: list[Source] = [
        Recorder(store, "a", ran),
        Recorder(store, "conf", ran, leads=True),
        Recorder(store, "listener", ran, first=False),
        Recorder(store, "b", ran),
    ]
    first_pass(sources, serving=serving)
    assert ran[0] == "conf"
    expected = {"a", "b"} if serving else {"a", "b", "listener"}
    assert set(ran[1:]) == expected
    assert len(ran) == 1 + len(expected)
