"""The D-Bus source against real keepalived 2.2.7 in the lab (one private dbus-daemon per node), plus its
pure decoders and the no-bus cases.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka_exporter.lab import LAB_PASSWORD, Lab
from ka_exporter.lab.system import spawn
from ka_exporter.model import InstanceView, SourceHealth, VrrpState
from ka_exporter.sources.dbus import (
    DbusSource,
    decode_name,
    decode_state,
    instance_path_parts,
    parse_introspection,
    path_component,
    resolve_interface,
)
from ka_exporter.store import Store
from tests.conftest import wait_until as conftest_wait_until

KEEPALIVED = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/local/sbin")
DBUS_DAEMON = shutil.which("dbus-daemon")


def wait_until(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    return conftest_wait_until(pred, timeout, 0.01)


# --------------------------------------------------------------------------------------------------
# pure decoding: the shapes keepalived really sends (recorded from 2.2.7) and the older ones
# --------------------------------------------------------------------------------------------------

# Introspect of /org/keepalived/Vrrp1/Instance/v0/71/IPv4 as Debian's keepalived 2.2.7 answered it
# (standard interfaces trimmed): note Name declared "s" although Get returns "(s)".
REAL_INSTANCE_XML = """<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
                      "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- GDBus 2.74.6 -->
<node>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="GetAll"><arg type="s" name="interface_name" direction="in"/></method>
  </interface>
  <interface name="org.keepalived.Vrrp1.Instance">
    <method name="SendGarp"></method>
    <signal name="VrrpStatusChange"><arg type="u" name="status"></arg></signal>
    <property type="s" name="Name" access="read"></property>
    <property type="(us)" name="State" access="read"></property>
  </interface>
</node>
"""
REAL_ROOT_XML = """<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
                      "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- GDBus 2.74.6 -->
<node>
  <node name="Vrrp"/>
  <node name="Instance"/>
</node>
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("(s)", ("VI_WEB",)), "VI_WEB"),  # keepalived 2.2.7 (declared "s", sent "(s)")
        (("s", "VI_WEB"), "VI_WEB"),  # a keepalived that sends what it declares
        (("VI_WEB",), "VI_WEB"),
        ("VI_WEB", "VI_WEB"),
        (("(s)", ("",)), None),
        (("u", 2), None),
        (None, None),
        (("s", "bad\nname"), None),
    ],
)
def test_decode_name_accepts_both_signatures(value: object, expected: str | None) -> None:
    assert decode_name(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("(us)", (2, "Master")), VrrpState.MASTER),  # 2.x property
        (("(u)", (1,)), VrrpState.BACKUP),  # older property
        (("u", 3), VrrpState.FAULT),
        (3, VrrpState.FAULT),  # VrrpStatusChange argument
        (0, VrrpState.INIT),
        (98, VrrpState.STOP),  # sent for every instance when keepalived stops
        (("(us)", (1000, "Backup")), VrrpState.BACKUP),  # unknown number: the text decides
        (("(us)", (1000, "Unknown")), None),
        (("s", "MASTER"), VrrpState.MASTER),
        (True, None),
        ("garbage", None),
        ((), None),
    ],
)
def test_decode_state_accepts_every_shape(value: object, expected: VrrpState | None) -> None:
    assert decode_state(value) == expected


def test_instance_paths_plain_namespaced_and_bad() -> None:
    assert instance_path_parts("/org/keepalived/Vrrp1/Instance/eth0/51/IPv4") == ("eth0", 51, "inet")
    # with `net_namespace` / `instance` set keepalived puts them between Vrrp1 and Instance
    assert instance_path_parts("/org/keepalived/Vrrp1/ns1/inst/Instance/eth0_100/54/IPv6") == (
        "eth0_100",
        54,
        "inet6",
    )
    for bad in (
        "/org/keepalived/Vrrp1/Instance/eth0/51",
        "/org/keepalived/Vrrp1/Instance/eth0/0/IPv4",
        "/org/keepalived/Vrrp1/Instance/eth0/256/IPv4",
        "/org/keepalived/Vrrp1/Instance/eth0/x/IPv4",
        "/org/keepalived/Vrrp1/Instance/eth0/51/None",
        "/org/keepalived/Vrrp1/Vrrp",
        "",
    ):
        assert instance_path_parts(bad) is None, bad


def test_introspection_parsing_and_garbage() -> None:
    assert parse_introspection(REAL_ROOT_XML) == (["Vrrp", "Instance"], set())
    parsed = parse_introspection(REAL_INSTANCE_XML)
    assert parsed is not None
    assert "org.keepalived.Vrrp1.Instance" in parsed[1]
    for garbage in (
        "",
        "<node",
        "\x00\xff",
        "<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><n>&a;</n>",
    ):
        assert parse_introspection(garbage) is None, garbage
    # child names that would walk out of the tree are ignored
    assert parse_introspection("<node><node name='../x'/><node name='a/b'/><node name='ok'/></node>") == (
        ["ok"],
        set(),
    )


def test_interface_names_sanitized_by_keepalived_are_resolved_when_unambiguous() -> None:
    assert path_component("eth0.100") == "eth0_100"
    assert resolve_interface("eth0_100", ["lo", "eth0", "eth0.100"]) == "eth0.100"
    assert resolve_interface("eth0", ["lo"]) == "eth0"
    assert resolve_interface("br_lan", ["br-lan", "br.lan"]) == "br_lan"  # ambiguous: keep the path's
    assert resolve_interface("br_lan", []) == "br_lan"


# --------------------------------------------------------------------------------------------------
# no bus at all (real sockets, nothing listening)
# --------------------------------------------------------------------------------------------------


def test_no_bus_fails_with_one_line_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(hostname="t")
    src = DbusSource(store, address=f"unix:path={tmp_path}/nobus")
    with caplog.at_level(logging.WARNING):
        src.run_once()
        src.run_once()
    health = store.health("dbus")
    assert health is not None
    assert not health.up
    assert health.error == f"dbus: cannot use the bus at unix:path={tmp_path}/nobus: no bus socket"
    assert store.snapshot().instances is None
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert src.request_dump("data") is False


def test_unusable_address_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    store = Store(hostname="t")
    DbusSource(store, address="tcp:host=127.0.0.1,port=1").run_once()
    health = store.health("dbus")
    assert health is not None
    assert health.error is not None
    assert "unusable D-Bus address" in health.error
    assert "\n" not in health.error


def test_background_loop_retries_with_one_log_line_and_stops_promptly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(hostname="t")
    src = DbusSource(store, address=f"unix:path={tmp_path}/nobus")
    src.backoff_initial = 0.01
    src.backoff_max = 0.04
    # The store wakes listeners only when a source's health changes, so count the attempts by the
    # health record's last_attempt time, which every attempt moves.
    attempts: set[float] = set()

    def count() -> int:
        health = store.health("dbus")
        if health is not None and health.last_attempt is not None:
            attempts.add(health.last_attempt)
        return len(attempts)

    with caplog.at_level(logging.WARNING):
        src.start()
        assert wait_until(lambda: count() >= 5, 5.0)
        src.stop(timeout=2.0)
    assert src._thread is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# --------------------------------------------------------------------------------------------------
# the real daemon, in the lab
# --------------------------------------------------------------------------------------------------


def needs_lab() -> None:
    if os.geteuid() != 0 or KEEPALIVED is None or DBUS_DAEMON is None or shutil.which("ip") is None:
        pytest.skip("needs root, keepalived, dbus-daemon and iproute2")


@pytest.fixture
def lab() -> Iterator[Lab]:
    needs_lab()
    with Lab(profile="fast", dbus=True) as running:
        yield running


class Running:
    """DbusSources started on some lab nodes' buses, each with its own store; stopped at the end."""

    def __init__(self, lab: Lab, *nodes: str) -> None:
        self.stores = {n: Store(hostname=n) for n in nodes}
        self.sources = {n: DbusSource(self.stores[n], address=lab.nodes[n].dbus_address) for n in nodes}

    def __enter__(self) -> Running:
        for src in self.sources.values():
            src.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for src in self.sources.values():
            src.stop()

    def states(self, node: str) -> dict[str, VrrpState | None]:
        return {v.name: v.state for v in self.stores[node].snapshot().instances or ()}

    def health(self, node: str) -> SourceHealth:
        health = self.stores[node].health("dbus")
        return health if health is not None else SourceHealth("dbus", up=False, error="no report yet")


@pytest.mark.lab
@pytest.mark.parametrize(("profile", "family"), [("fast", "inet"), ("fast-ipv6", "inet6")])
def test_enumerates_instances_with_names_and_states(profile: str, family: str) -> None:
    needs_lab()
    with Lab(profile=profile, dbus=True) as lab:
        inst = lab.instances[0]
        stores = {name: Store(hostname=name) for name in lab.nodes}
        for name, node in lab.nodes.items():
            DbusSource(stores[name], address=node.dbus_address).run_once()
        a = stores["a"].snapshot()
        assert a.instances == (
            InstanceView(
                name=inst.name, interface="eth0", vrid=inst.vrid, family=family, state=VrrpState.MASTER
            ),
        )
        assert a.instances_source == "dbus"
        b = stores["b"].snapshot().instances
        assert b is not None
        assert [(v.name, v.state) for v in b] == [(inst.name, VrrpState.BACKUP)]
        health = stores["a"].health("dbus")
        assert health is not None
        assert health.up


@pytest.mark.lab
def test_failover_reaches_the_store_through_the_signal(lab: Lab) -> None:
    name = lab.instances[0].name
    with Running(lab, "a", "b") as run:
        arrivals: list[tuple[float, VrrpState | None]] = []
        run.stores["b"].add_listener(lambda: arrivals.append((time.monotonic(), run.states("b").get(name))))
        assert wait_until(lambda: run.states("b").get(name) == VrrpState.BACKUP, 5.0)
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.MASTER, 5.0)
        enumerations = run.sources["b"].enumerations
        sent = time.monotonic()
        assert lab.failover() == "a"
        assert wait_until(lambda: run.states("b").get(name) == VrrpState.MASTER, 5.0)
        arrived = next(t for t, s in arrivals if s == VrrpState.MASTER)
        # The new state came with VrrpStatusChange: no re-enumeration happened (and this source never polls).
        assert run.sources["b"].enumerations == enumerations
        # counted when the State read confirms it, just after the signal's state was shown
        assert wait_until(lambda: dict(run.stores["b"].snapshot().transitions).get(name, 0) >= 1)
        print(f"\nSIGTERM to the master -> MASTER in the backup's store: {1000 * (arrived - sent):.1f} ms")
        # The stopped node: D-Bus vouches for no instances any more, and the source says why.
        assert wait_until(lambda: run.stores["a"].snapshot().instances == (), 5.0)
        assert not run.health("a").up
        assert run.health("a").error == run.sources["a"].left_bus_error
        assert dict(run.stores["a"].snapshot().transitions) == {}  # MASTER -> STOP is a shutdown, not a flap
        # ... until keepalived is back: NameOwnerChanged brings the instances back.
        lab.start("a")
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.MASTER, 5.0)
        assert run.health("a").up


@pytest.mark.lab
def test_sigkilled_keepalived_sends_no_vrrpstopped_but_is_noticed(lab: Lab) -> None:
    name = lab.instances[0].name
    with Running(lab, "a") as run:
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.MASTER, 5.0)
        assert lab.stop_master(kill=True) == "a"
        assert wait_until(lambda: run.stores["a"].snapshot().instances == (), 5.0)
        assert run.health("a").error == run.sources["a"].left_bus_error


@pytest.mark.lab
def test_fault_when_the_interface_goes_down(lab: Lab) -> None:
    name = lab.instances[0].name
    node = lab.nodes["a"]
    with Running(lab, "a") as run:
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.MASTER, 5.0)
        enumerations = run.sources["a"].enumerations
        subprocess.run(["ip", "-n", node.netns, "link", "set", node.interface, "down"], check=True)
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.FAULT, 5.0)
        assert run.sources["a"].enumerations == enumerations
        assert wait_until(lambda: dict(run.stores["a"].snapshot().transitions) == {name: 1})


@pytest.mark.lab
def test_reload_with_a_new_instance_is_followed_and_on_change_called(lab: Lab) -> None:
    inst = lab.instances[0]
    node = lab.nodes["a"]
    changes: list[float] = []
    store = Store(hostname="a")
    src = DbusSource(store, address=node.dbus_address, on_change=lambda: changes.append(time.monotonic()))
    src.start()
    try:
        assert wait_until(lambda: [v.name for v in store.snapshot().instances or ()] == [inst.name], 5.0)
        vrid = inst.vrid % 255 + 1
        vip = inst.vips[0].rsplit(".", 1)[0] + ".201"
        extra = (
            f"vrrp_instance VI_NEW {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n"
            f"  priority 100\n  advert_int 0.1\n  virtual_ipaddress {{\n    {vip}/24\n  }}\n}}\n"
        )
        node.config_path.write_text(node.config_path.read_text() + extra)
        before = len(changes)
        assert node.proc is not None
        assert node.proc.alive()
        os.kill(node.proc.pid, signal.SIGHUP)  # keepalived reloads and emits VrrpReloaded
        assert wait_until(lambda: "VI_NEW" in {v.name for v in store.snapshot().instances or ()}, 5.0)
        new = next(v for v in store.snapshot().instances or () if v.name == "VI_NEW")
        assert (new.interface, new.vrid, new.family) == ("eth0", vrid, "inet")
        assert len(changes) > before  # the dump source is told to refresh
    finally:
        src.stop()


def restart_bus(lab: Lab, node: str) -> Callable[[], None]:
    """Stop node's dbus-daemon; return a function that starts a new one on the same socket."""
    n = lab.nodes[node]
    assert n.dbus_proc is not None
    n.dbus_proc.stop()

    def start() -> None:
        assert DBUS_DAEMON is not None
        n.dbus_socket.unlink(missing_ok=True)
        n.dbus_proc = spawn(
            [DBUS_DAEMON, f"--config-file={n.dbus_config}", "--nofork", "--nopidfile"], n.dbus_log
        )
        lab.save_state()  # so that lab.down() stops the new daemon too
        assert wait_until(n.dbus_socket.exists, 5.0)

    return start


@pytest.mark.lab
def test_bus_restart_reconnects_and_recovers(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    name = lab.instances[0].name
    with Running(lab, "a") as run, caplog.at_level(logging.WARNING):
        src = run.sources["a"]
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.MASTER, 5.0)
        start_bus = restart_bus(lab, "a")
        assert wait_until(lambda: not run.health("a").up, 5.0)
        address = lab.nodes["a"].dbus_address
        assert (
            run.health("a").error == f"dbus: cannot use the bus at {address}: the bus closed the connection"
        )
        assert run.states("a") == {name: VrrpState.MASTER}  # last good data kept; health says it is stale
        start_bus()
        # keepalived 2.2.7 never re-registers on a new bus by itself: the source reconnects and says so
        assert wait_until(lambda: run.health("a").error == src.not_on_bus_error, 15.0)
        lab.restart("a")
        assert wait_until(lambda: run.health("a").up, 5.0)
        assert wait_until(lambda: run.states("a").get(name) == VrrpState.MASTER, 5.0)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # one line per distinct error, however many reconnect attempts it took
    assert lines == [
        f"source dbus: cannot use the bus at {address}: the bus closed the connection",
        f"source {src.not_on_bus_error}",
    ], lines


@pytest.mark.lab
def test_keepalived_without_enable_dbus(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    node = lab.nodes["a"]
    lab.stop("a")
    node.config_path.write_text(node.config_path.read_text().replace("enable_dbus", ""))
    lab.start("a")
    assert wait_until(lambda: lab.master() == "a", 5.0)  # keepalived itself runs fine
    store = Store(hostname="a")
    src = DbusSource(store, address=node.dbus_address)
    with caplog.at_level(logging.WARNING):
        src.run_once()
        first = store.health("dbus")
        assert first is not None
        src.start()  # the background loop finds the same: no second line
        try:
            assert wait_until(
                lambda: (h := store.health("dbus")) is not None and h.last_attempt != first.last_attempt, 5.0
            )
            src.run_once()
            assert src.request_dump("data") is False
        finally:
            src.stop()
    health = store.health("dbus")
    assert health is not None
    assert not health.up
    assert health.error == (
        f"dbus: org.keepalived.Vrrp1 is not on the bus at {node.dbus_address} (is enable_dbus set in global_defs?)"
    )
    assert store.snapshot().instances is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"source {health.error}",
        "dbus: PrintData failed: org.freedesktop.DBus.Error.ServiceUnknown (keepalived is not on the bus)",
    ]


@pytest.mark.lab
def test_request_dump_writes_the_files_without_leaking_the_password(caplog: pytest.LogCaptureFixture) -> None:
    needs_lab()
    with Lab(profile="basic", dbus=True) as lab, Running(lab, "a") as run:
        node = lab.nodes["a"]
        src = run.sources["a"]
        assert wait_until(lambda: run.states("a").get("VI_1") == VrrpState.MASTER, 5.0)
        data, stats = node.tmpdir / "keepalived.data", node.tmpdir / "keepalived.stats"
        assert not data.exists()
        results: list[bool] = []
        with caplog.at_level(logging.DEBUG):
            threads = [
                threading.Thread(target=lambda k=k: results.append(src.request_dump(k)))
                for k in ("data", "stats", "data", "stats")
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert results == [True] * 4
            # PrintData returns once keepalived has written the file: it is complete right away
            text = data.read_text()
            assert "VI_1" in text
            assert LAB_PASSWORD in text  # the dump itself carries the password ...
            assert "VI_1" in stats.read_text()
            assert src.request_dump("json") is False  # no D-Bus method for it
            assert run.health("a").up  # the signal loop's connection was not disturbed
        # ... but nothing the source produced does
        assert LAB_PASSWORD not in repr(run.stores["a"].snapshot())
        assert LAB_PASSWORD not in caplog.text
