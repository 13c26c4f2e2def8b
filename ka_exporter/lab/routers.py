"""The "routers" lab: many keepalived on one host, one per network namespace, as OpenStack's L3 HA runs
them (one keepalived per router, each in its own `qrouter-*` namespace).

Router i is a pair of namespaces, P-iA and P-iB (P: the lab's prefix), joined by a veth (eth0 in
each, 192.168.77.1 and .2/24, the same addresses in every pair: the pairs never see each other). Each
namespace runs one keepalived (VRRPv3, one instance, VRID 1 + i % 255, VIP 192.168.77.100): A has
priority 150 and starts MASTER, B priority 100 and starts BACKUP, so half the keepalived are MASTER and
half BACKUP. `split(i)` drops VRRP arriving in P-iB (nft, as `Lab.split(mode="firewall")`): B stops
hearing A and takes the VIP too, a split brain that both namespaces' wire sees (AF_PACKET captures
before netfilter). `add_router()` / `remove_router(i)` change the set while an exporter runs.

`with RoutersLab(pairs=20) as lab:` brings it up and always takes it down (processes SIGKILLed,
namespaces deleted, files removed). Needs root, keepalived, ip and nft.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from ka_exporter.lab.naming import SPLIT_TABLE, STATE_DIR
from ka_exporter.lab.system import LabError, Proc, check_root, find_tool, ip_batch, log_tail, run, spawn
from ka_exporter.linux import netns, rtnl

VIP = "192.168.77.100"
ADDRESSES = {"a": "192.168.77.1", "b": "192.168.77.2"}
PRIORITY = {"a": 150, "b": 100}
# What a router of the lab may have besides VRRP (RoutersLab's `features`, by router index):
# "dbus": each side its own private dbus-daemon (enable_dbus); "fifo": each side a vrrp_notify_fifo;
# "shared-dbus": one dbus-daemon for both sides, A started (and owning org.keepalived.Vrrp1) first.
FEATURES = ("dbus", "fifo", "shared-dbus")


def render_router_config(
    router_id: str, vrid: int, side: str, advert_int: float, *, dbus: bool = False, fifo: Path | None = None
) -> str:
    state = "MASTER" if side == "a" else "BACKUP"
    extra = ("    enable_dbus\n" if dbus else "") + (f"    vrrp_notify_fifo {fifo}\n" if fifo else "")
    return (
        "global_defs {\n"
        f"    router_id {router_id}\n"
        "    vrrp_version 3\n"
        f"{extra}"
        "}\n"
        "vrrp_instance VI_1 {\n"
        f"    state {state}\n"
        "    interface eth0\n"
        f"    virtual_router_id {vrid}\n"
        f"    priority {PRIORITY[side]}\n"
        f"    advert_int {advert_int:g}\n"
        "    virtual_ipaddress {\n"
        f"        {VIP}/24\n"
        "    }\n"
        "}\n"
    )


class Router:
    """One namespace of a pair and its keepalived."""

    def __init__(self, lab_dir: Path, prefix: str, index: int, side: str) -> None:
        self.index = index
        self.side = side
        self.netns = f"{prefix}-{index}{side}"
        self.dir = lab_dir / self.netns
        self.config = self.dir / "keepalived.conf"
        self.pidfile = self.dir / "keepalived.pid"
        self.tmpdir = self.dir / "tmp"
        self.log = self.dir / "keepalived.log"
        self.proc: Proc | None = None
        self.fifo: Path | None = None  # its vrrp_notify_fifo, if it has one
        self.bus: Path | None = None  # the socket of the bus it is told to use ($DBUS_SYSTEM_BUS_ADDRESS)
        self.bus_proc: Proc | None = None  # the private dbus-daemon it started for it, if any

    @property
    def vrid(self) -> int:
        return 1 + self.index % 255


class RoutersLab:
    """`pairs` routers, 2 * `pairs` namespaces and keepalived (see the module docstring)."""

    def __init__(
        self,
        pairs: int = 20,
        *,
        advert_int: float = 1.0,
        prefix: str | None = None,
        features: Mapping[int, str] | None = None,
    ) -> None:
        self.prefix = prefix or f"kr{os.getpid() % 4096:03x}{random.randrange(256):02x}"  # noqa: S311
        self.dir = STATE_DIR / self.prefix
        self.advert_int = advert_int
        self.initial = pairs
        self.features = dict(features or {})  # router index -> one of FEATURES
        self.routers: dict[int, tuple[Router, Router]] = {}
        self.split_routers: set[int] = set()
        self._next = 0
        self._ip = "ip"
        self._keepalived = "keepalived"
        self._dbus_daemon = ""

    # -- context --------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self, timeout: float = 30.0) -> None:
        check_root()
        self._ip = find_tool("ip", "iproute2")
        self._keepalived = find_tool("keepalived", "keepalived")
        if any(f not in FEATURES for f in self.features.values()):
            raise LabError(f"routers lab: unknown feature in {self.features} (known: {FEATURES})")
        self._dbus_daemon = find_tool("dbus-daemon", "dbus") if self.features else ""
        if self.dir.exists():
            raise LabError(f"routers lab {self.prefix} exists already ({self.dir})")
        self.dir.mkdir(parents=True, mode=0o755)
        try:
            for _ in range(self.initial):
                self.add_router(wait=False)
            if not self.wait_for(self.settled, timeout):
                raise LabError(f"routers lab {self.prefix}: not settled in {timeout:g} s: {self.summary()}")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        for index in list(self.routers):
            self.remove_router(index)
        # anything left by a crash between two steps: our namespaces are named after our prefix
        with contextlib.suppress(OSError):
            for entry in os.scandir("/run/netns"):
                if entry.name.startswith(self.prefix + "-"):
                    with contextlib.suppress(LabError):
                        run([self._ip, "netns", "delete", entry.name])
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- routers --------------------------------------------------------------------------------------

    def add_router(self, wait: bool = True, timeout: float = 15.0) -> int:
        """A new pair, both keepalived started; with `wait`, once its VIP has exactly one holder."""
        index = self._next
        self._next += 1
        pair = (Router(self.dir, self.prefix, index, "a"), Router(self.dir, self.prefix, index, "b"))
        self.routers[index] = pair
        ip_batch(self._ip, [f"netns add {r.netns}" for r in pair])
        ip_batch(
            self._ip,
            [f"link add eth0 netns {pair[0].netns} type veth peer name eth0 netns {pair[1].netns}"],
        )
        for r in pair:
            ip_batch(
                self._ip,
                ["link set lo up", f"addr add {ADDRESSES[r.side]}/24 dev eth0", "link set eth0 up"],
                r.netns,
            )
        feature = self.features.get(index, "")
        for r in pair:
            r.tmpdir.mkdir(parents=True, mode=0o755)
            if feature == "fifo":
                r.fifo = r.dir / "notify.fifo"
            if feature in ("dbus", "shared-dbus"):
                r.bus = (r if feature == "dbus" else pair[0]).dir / "bus.sock"
            config = render_router_config(
                r.netns, r.vrid, r.side, self.advert_int, dbus=r.bus is not None, fifo=r.fifo
            )
            r.config.write_text(config)
            r.config.chmod(0o600)
        for r in pair:
            if feature == "dbus" or (feature == "shared-dbus" and r.side == "a"):
                self._start_bus(r)
        for r in pair:
            self._start(r)
            if r.bus is not None and not self.wait_for(functools.partial(self.bus_owned, r), 10.0):
                raise LabError(f"keepalived in {r.netns} did not take its bus name:\n{log_tail(r.log)}")
        if wait and not self.wait_for(lambda: self.holders(index) == 1, timeout):
            raise LabError(f"router {index} did not settle: {self.holders(index)} holders of {VIP}")
        return index

    def _start_bus(self, r: Router) -> None:
        from ka_exporter.lab import dbus as labdbus  # only D-Bus routers need it

        assert r.bus is not None  # noqa: S101 - set by add_router for routers with a bus
        conf = r.dir / "bus.conf"
        conf.write_text(labdbus.bus_config(r.bus))
        r.bus_proc = spawn(
            [self._dbus_daemon, f"--config-file={conf}", "--nofork", "--nopidfile"], r.dir / "bus.log"
        )
        bus = r.bus
        if not self.wait_for(bus.exists, 5.0):
            raise LabError(f"dbus-daemon for {r.netns} did not start:\n{log_tail(r.dir / 'bus.log')}")

    @staticmethod
    def bus_owned(r: Router) -> bool:
        """keepalived's name is owned on the bus `r` uses (for a shared bus: by either side)."""
        from ka_exporter.lab import dbus as labdbus

        return r.bus is not None and labdbus.name_has_owner(f"unix:path={r.bus}")

    def restart(self, index: int, side: str) -> None:
        """SIGKILL one keepalived of router `index` and start it again at once (same namespace, same
        pid file and config): a new process where the old one was."""
        r = self.routers[index][0 if side == "a" else 1]
        if r.proc is not None:
            r.proc.send(signal.SIGKILL, group=True)
            r.proc.finish(3.0)
        for pid_file in ("keepalived.pid", "vrrp.pid"):  # SIGKILL left them: _start waits for a new one
            (r.dir / pid_file).unlink(missing_ok=True)
        self._start(r)

    def _start(self, r: Router) -> None:
        argv = [
            self._ip, "netns", "exec", r.netns, self._keepalived,
            "--dont-fork", "--log-console", "--no-syslog",
            f"--use-file={r.config}", f"--pid={r.pidfile}",
            f"--vrrp_pid={r.dir / 'vrrp.pid'}", f"--checkers_pid={r.dir / 'checkers.pid'}",
            f"--bfd_pid={r.dir / 'bfd.pid'}",
        ]  # fmt: skip
        env = dict(os.environ, TMPDIR=str(r.tmpdir))
        if r.bus is not None:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={r.bus}"
        r.proc = spawn(argv, r.log, env)
        proc = r.proc
        vrrp_pid = r.dir / "vrrp.pid"
        if not self.wait_for(lambda: vrrp_pid.exists() or not proc.alive(), 5.0) or not proc.alive():
            raise LabError(f"keepalived in {r.netns} did not start:\n{log_tail(r.log)}")

    def remove_router(self, index: int) -> None:
        """Stop both keepalived (SIGKILL) and delete both namespaces."""
        pair = self.routers.pop(index, None)
        if pair is None:
            return
        self.split_routers.discard(index)
        for r in pair:
            if r.proc is not None:
                r.proc.send(signal.SIGKILL, group=True)
        for r in pair:
            if r.proc is not None:
                r.proc.finish(3.0)
                r.proc = None
        for r in pair:
            if r.bus_proc is not None:
                r.bus_proc.send(signal.SIGKILL)
                r.bus_proc.finish(3.0)
                r.bus_proc = None
        for r in pair:
            if os.path.exists(f"/run/netns/{r.netns}"):
                run([self._ip, "netns", "delete", r.netns], timeout=60.0)
            shutil.rmtree(r.dir, ignore_errors=True)

    def split(self, index: int) -> None:
        """A split brain on router `index`: VRRP arriving in its B namespace is dropped."""
        nft = find_tool("nft", "nftables")
        b = self.routers[index][1]
        script = [
            f"add table inet {SPLIT_TABLE}",
            f"add chain inet {SPLIT_TABLE} input {{ type filter hook input priority 0; policy accept; }}",
            f"add rule inet {SPLIT_TABLE} input ip protocol 112 drop",
        ]
        run([self._ip, "netns", "exec", b.netns, nft, "-f", "-"], stdin="\n".join(script) + "\n")
        self.split_routers.add(index)

    # -- looking ----------------------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return [r.netns for pair in self.routers.values() for r in pair]

    def holders(self, index: int) -> int:
        """How many of router `index`'s namespaces hold its VIP."""
        held = self.vip_held([r.netns for r in self.routers[index]])
        return sum(held.values())

    def vip_held(self, names: list[str]) -> dict[str, bool]:
        """Namespace -> holds the VIP, read over netlink from a thread that visits each namespace."""
        out: dict[str, bool] = {}
        errors: list[BaseException] = []

        def visit() -> None:
            try:
                for name in names:
                    netns.enter(name)
                    out[name] = any(a.address == VIP for a in rtnl.addresses())
            except BaseException as exc:  # reported to the caller
                errors.append(exc)

        t = threading.Thread(target=visit, name="routers-lab-visit")  # its namespace dies with it
        t.start()
        t.join()
        if errors:
            raise LabError(f"reading the VIPs: {errors[0]}")
        return out

    def settled(self) -> bool:
        held = self.vip_held(self.namespaces())
        for index, (a, b) in self.routers.items():
            want = 2 if index in self.split_routers else 1
            if held[a.netns] + held[b.netns] != want:
                return False
        return True

    def summary(self) -> str:
        held = self.vip_held(self.namespaces())
        counts = [held[a.netns] + held[b.netns] for a, b in self.routers.values()]
        return f"{len(counts)} routers, holders of the VIP per router: {sorted(set(counts))}"

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
