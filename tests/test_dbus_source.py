"""The D-Bus source against real keepalived 2.2.7 on private dbus-daemons, plus its pure decoders.

Throwaway harness below (until ka_exporter.lab exists): per test, network namespaces with unique names,
a veth between them, one private dbus-daemon per node (Debian's system-bus policy plus keepalived's own
policy file) and keepalived started with DBUS_SYSTEM_BUS_ADDRESS, its own TMPDIR and pid files.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka_exporter.model import InstanceView, VrrpState
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

PASSWORD = "kaT3st01"
KEEPALIVED = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/local/sbin")
DBUS_DAEMON = shutil.which("dbus-daemon")


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
    for garbage in ("", "<node", "\x00\xff", "<a><node name='../x'/><node name='ok'/></a>"):
        result = parse_introspection(garbage)
        assert result is None or result[0] in ([], ["ok"])


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
    attempts: list[float] = []
    store.add_listener(lambda: attempts.append(time.monotonic()))
    with caplog.at_level(logging.WARNING):
        src.start()
        assert wait_until(lambda: len(attempts) >= 5, 5.0)
        src.stop(timeout=2.0)
    assert src._thread is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# --------------------------------------------------------------------------------------------------
# harness: namespaces, private buses, keepalived
# --------------------------------------------------------------------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.keepalived.Vrrp1" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.keepalived.Vrrp1" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow own="org.keepalived.Vrrp1"/>
    <allow send_destination="org.keepalived.Vrrp1"/>
  </policy>
</busconfig>
"""


def wait_until(pred: Callable[[], object], timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20)


class Bus:
    """A private dbus-daemon (system-bus policy) on a socket in `directory`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "bus"
        self.config = directory / "bus.conf"
        self.config.write_text(BUS_CONFIG.format(socket=self.socket))
        self.address = f"unix:path={self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert DBUS_DAEMON is not None
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [DBUS_DAEMON, f"--config-file={self.config}", "--nofork", "--nopidfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(self.socket.exists, 5.0), "dbus-daemon did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class Node:
    """keepalived in its own namespace, talking to its own bus."""

    def __init__(self, netns: str, directory: Path, bus: Bus, config: str) -> None:
        self.netns = netns
        self.dir = directory
        self.bus = bus
        self.tmp = directory / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "keepalived.conf"
        self.conf.write_text(config)
        self.log = directory / "keepalived.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dbus_address(self) -> str:
        return self.bus.address

    def start(self) -> None:
        assert KEEPALIVED is not None
        d = self.dir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
            "TMPDIR": str(self.tmp),
        }
        argv = ["ip", "netns", "exec", self.netns, KEEPALIVED, "-D", "-l", "-n", "-f", str(self.conf)]
        argv += ["-p", str(d / "k.pid"), "-r", str(d / "v.pid"), "-c", str(d / "c.pid")]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Signal keepalived (our child, `ip netns exec` execs it); return the monotonic send time."""
        sent = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        return sent


def keepalived_conf(
    router: str, priority: int, v4: str, v6: str, *, dbus: bool = True, with_pass: bool = False
) -> str:
    lines = ["global_defs {", f"  router_id {router}", "  vrrp_version 3"]
    if dbus:
        lines.append("  enable_dbus")
    lines.append("}")
    for name, vrid, vip in (("VI_4", 71, f"{v4}.100/24"), ("VI_6", 72, f"{v6}::100/64")):
        lines += [
            f"vrrp_instance {name} {{",
            "  state BACKUP",
            "  interface eth0",
            f"  virtual_router_id {vrid}",
            f"  priority {priority}",
            "  advert_int 0.1",
            f"  virtual_ipaddress {{\n    {vip}\n  }}",
            "}",
        ]
    if with_pass:
        lines += [
            "vrrp_instance VI_PASS {",
            "  version 2",
            "  state BACKUP",
            "  interface eth0",
            "  virtual_router_id 73",
            f"  priority {priority}",
            "  advert_int 1",
            f"  authentication {{\n    auth_type PASS\n    auth_pass {PASSWORD}\n  }}",
            f"  virtual_ipaddress {{\n    {v4}.73/24\n  }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


class Pair:
    """Nodes "a" (priority 150) and "b" (100) on one veth, each with its own bus."""

    def __init__(self, base: Path, nodes: int = 2, dbus: bool = True, with_pass: bool = False) -> None:
        tag = f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}"
        self.v4 = f"10.{secrets.randbelow(64) + 128}.{secrets.randbelow(256)}"
        self.v6 = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}"
        self.netns = [f"kdb{tag}{n}" for n in "ab"[:nodes]]
        self.nodes: dict[str, Node] = {}
        self._made: list[str] = []
        try:
            for ns in self.netns:
                sh("ip", "netns", "add", ns)
                self._made.append(ns)
                sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
                sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            if nodes == 2:
                sh("ip", "-n", self.netns[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                   "netns", self.netns[1])  # fmt: skip
            else:
                sh("ip", "-n", self.netns[0], "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
                sh("ip", "-n", self.netns[0], "link", "set", "peer0", "up")
            for i, (name, ns) in enumerate(zip("ab", self.netns, strict=False)):
                sh("ip", "-n", ns, "addr", "add", f"{self.v4}.{i + 1}/24", "dev", "eth0")
                sh("ip", "-n", ns, "addr", "add", f"{self.v6}::{i + 1}/64", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                bus = Bus(base / name / "dbus")
                bus.start()
                conf = keepalived_conf(
                    f"kd-{name}", 150 - 50 * i, self.v4, self.v6, dbus=dbus, with_pass=with_pass
                )
                self.nodes[name] = Node(ns, base / name, bus, conf)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
            node.bus.stop()
        for ns in self._made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def needs_lab() -> None:
    if os.geteuid() != 0 or KEEPALIVED is None or DBUS_DAEMON is None or shutil.which("ip") is None:
        pytest.skip("needs root, keepalived, dbus-daemon and iproute2")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    needs_lab()
    p = Pair(tmp_path)
    try:
        p.start()
        yield p
    finally:
        p.close()


@pytest.fixture
def single(tmp_path: Path) -> Iterator[Pair]:
    needs_lab()
    p = Pair(tmp_path, nodes=1, with_pass=True)
    try:
        p.start()
        yield p
    finally:
        p.close()


def states(store: Store) -> dict[str, VrrpState | None]:
    return {v.name: v.state for v in store.snapshot().instances or ()}


def views(store: Store) -> dict[str, InstanceView]:
    return {v.name: v for v in store.snapshot().instances or ()}


def started(src: DbusSource) -> DbusSource:
    src.start()
    return src


# --------------------------------------------------------------------------------------------------
# the real daemon
# --------------------------------------------------------------------------------------------------


@pytest.mark.lab
def test_enumerates_instances_with_names_and_states(pair: Pair) -> None:
    stores = {name: Store(hostname=name) for name in pair.nodes}
    srcs = {name: DbusSource(stores[name], address=node.dbus_address) for name, node in pair.nodes.items()}

    def settled() -> bool:
        for s in srcs.values():
            s.run_once()
        return states(stores["a"]) == {"VI_4": VrrpState.MASTER, "VI_6": VrrpState.MASTER} and states(
            stores["b"]
        ) == {"VI_4": VrrpState.BACKUP, "VI_6": VrrpState.BACKUP}

    assert wait_until(settled, 10.0, 0.1), (states(stores["a"]), states(stores["b"]))
    a = views(stores["a"])
    assert (a["VI_4"].interface, a["VI_4"].vrid, a["VI_4"].family) == ("eth0", 71, "inet")
    assert (a["VI_6"].interface, a["VI_6"].vrid, a["VI_6"].family) == ("eth0", 72, "inet6")
    health = stores["a"].health("dbus")
    assert health is not None
    assert health.up
    assert stores["a"].snapshot().instances_source == "dbus"


@pytest.mark.lab
def test_failover_reaches_the_store_through_the_signal(pair: Pair) -> None:
    store_a, store_b = Store(hostname="a"), Store(hostname="b")
    src_a = started(DbusSource(store_a, address=pair.nodes["a"].dbus_address))
    src_b = started(DbusSource(store_b, address=pair.nodes["b"].dbus_address))
    seen: list[tuple[float, VrrpState | None]] = []
    store_b.add_listener(lambda: seen.append((time.monotonic(), states(store_b).get("VI_4"))))
    try:
        assert wait_until(lambda: states(store_b).get("VI_4") == VrrpState.BACKUP, 10.0)
        assert wait_until(lambda: states(store_a).get("VI_4") == VrrpState.MASTER, 10.0)
        enumerations = src_b.enumerations
        sent = pair.nodes["a"].stop(signal.SIGTERM)
        assert wait_until(lambda: states(store_b).get("VI_4") == VrrpState.MASTER, 5.0)
        arrived = next(t for t, s in seen if s == VrrpState.MASTER)
        # The new state came with VrrpStatusChange: no re-enumeration (and this source never polls).
        assert src_b.enumerations == enumerations
        assert dict(store_b.snapshot().transitions).get("VI_4", 0) >= 1
        print(f"\nSIGTERM to master -> MASTER in backup's store: {1000 * (arrived - sent):.1f} ms")
        # The stopped node: its instances are gone from D-Bus and the source says why.
        assert wait_until(lambda: store_a.snapshot().instances == (), 5.0)
        health = store_a.health("dbus")
        assert health is not None
        assert not health.up
        assert health.error == src_a.left_bus_error
    finally:
        src_a.stop()
        src_b.stop()


@pytest.mark.lab
def test_fault_when_the_interface_goes_down(pair: Pair) -> None:
    store = Store(hostname="a")
    src = started(DbusSource(store, address=pair.nodes["a"].dbus_address))
    try:
        assert wait_until(lambda: states(store).get("VI_4") == VrrpState.MASTER, 10.0)
        enumerations = src.enumerations
        sh("ip", "-n", pair.nodes["a"].netns, "link", "set", "eth0", "down")
        assert wait_until(lambda: states(store) == {"VI_4": VrrpState.FAULT, "VI_6": VrrpState.FAULT}, 5.0)
        assert src.enumerations == enumerations
    finally:
        src.stop()


@pytest.mark.lab
def test_bus_restart_reconnects_and_recovers(single: Pair, caplog: pytest.LogCaptureFixture) -> None:
    node = single.nodes["a"]
    store = Store(hostname="a")
    src = started(DbusSource(store, address=node.dbus_address))
    try:
        assert wait_until(lambda: "VI_4" in states(store), 10.0)
        with caplog.at_level(logging.WARNING):
            node.bus.stop()
            assert wait_until(lambda: not store.health("dbus").up, 5.0)  # type: ignore[union-attr]
            assert "cannot use the bus" in (store.health("dbus").error or "")  # type: ignore[union-attr]
            # last good data stays (stale), the health record says it is stale
            assert "VI_4" in states(store)
            node.bus.start()
            # keepalived 2.2.7 does not re-register on a new bus: the source reconnects and says so
            assert wait_until(lambda: store.health("dbus").error == src.not_on_bus_error, 15.0)  # type: ignore[union-attr]
            node.stop()
            node.start()
            assert wait_until(lambda: store.health("dbus").up, 10.0)  # type: ignore[union-attr]
            assert wait_until(lambda: states(store).get("VI_4") == VrrpState.MASTER, 10.0)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        # one line per distinct error, however many reconnect attempts it took
        assert lines[-2:] == [
            f"source dbus: dbus: cannot use the bus at {node.dbus_address}: the bus closed the connection",
            f"source dbus: {src.not_on_bus_error}",
        ], lines
        assert all(x != y for x, y in itertools.pairwise(lines)), lines
    finally:
        src.stop()


@pytest.mark.lab
def test_keepalived_without_enable_dbus(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    needs_lab()
    p = Pair(tmp_path, nodes=1, dbus=False)
    try:
        p.start()
        node = p.nodes["a"]
        store = Store(hostname="a")
        src = DbusSource(store, address=node.dbus_address)
        reports: list[int] = []
        with caplog.at_level(logging.WARNING):
            src.run_once()
            store.add_listener(lambda: reports.append(1))
            src.start()  # the background loop finds the same: no second line
            assert wait_until(lambda: len(reports) >= 1, 5.0)
            src.run_once()
            assert src.request_dump("data") is False
            src.stop()
        health = store.health("dbus")
        assert health is not None
        assert not health.up
        assert health.error == (
            f"dbus: org.keepalived.Vrrp1 is not on the bus at {node.dbus_address} "
            "(is enable_dbus set in global_defs?)"
        )
        assert store.snapshot().instances is None
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert messages == [
            f"source dbus: {health.error}",
            "dbus: PrintData failed: org.freedesktop.DBus.Error.ServiceUnknown (keepalived is not on the bus)",
        ]
    finally:
        p.close()


@pytest.mark.lab
def test_request_dump_writes_the_files_without_leaking_the_password(
    single: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    node = single.nodes["a"]
    store = Store(hostname="a")
    src = started(DbusSource(store, address=node.dbus_address))
    try:
        assert wait_until(lambda: {"VI_4", "VI_6", "VI_PASS"} <= set(states(store)), 10.0)
        data, stats = node.tmp / "keepalived.data", node.tmp / "keepalived.stats"
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
            assert "VI_PASS" in text
            assert PASSWORD in text  # the dump itself carries the password ...
            assert "VI_PASS" in stats.read_text()
            assert src.request_dump("json") is False  # no D-Bus method for it
            assert wait_until(lambda: store.health("dbus").up, 1.0)  # type: ignore[union-attr]
        # ... but nothing the source produced does
        assert PASSWORD not in repr(store.snapshot())
        assert PASSWORD not in caplog.text
    finally:
        src.stop()
