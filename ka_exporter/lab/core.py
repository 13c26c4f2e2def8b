"""The keepalived lab: real keepalived nodes in network namespaces on one bridge, plus an observer.

Topology (names from the lab's prefix P, e.g. "ka1a2b3"):

    P-sw : bridge br0 (STP and multicast snooping off), ports p-a, p-b[, p-c], p-o
    P-a  : eth0 10.X.Y.1/24 (fdfa:XXYY::1/64 with IPv6)   keepalived, own TMPDIR / pid files / log [/ dbus]
    P-b  : eth0 10.X.Y.2/24
    P-c  : eth0 10.X.Y.3/24 (nodes=3)
    P-o  : eth0 10.X.Y.9/24 observer: sees every advert, also during a bridge split

The lab's hosts (`hosts.LabHost`, `hosts.LabNode`) and how labs are named and found (`naming`: the
prefix, the state file, a free subnet) are their own modules; this one is the `Lab` itself.

Everything a lab makes is recorded (state file /run/ka-exporter-lab/P.json, rewritten after every change),
so `down()` -- in this process or a later one via `Lab.load()` -- stops exactly the processes it started
(pid plus start time) and deletes exactly the namespaces and files it made, even after a half-finished
`up()`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from signal import SIGKILL
from types import TracebackType
from typing import Any, Self

from ka_exporter.lab import dbus as labdbus
from ka_exporter.lab import profiles
from ka_exporter.lab.hosts import LabHost, LabNode
from ka_exporter.lab.naming import (
    DEFAULT_NAME,
    OBSERVER_HOST,
    SPLIT_TABLE,
    STATE_DIR,
    STATE_VERSION,
    _check_prefix,
    _pick_addressing,
    _random_prefix,
    state_path,
)
from ka_exporter.lab.profiles import Addressing, LabInstance, Profile
from ka_exporter.lab.system import (
    LabError,
    Proc,
    check_root,
    find_tool,
    ip_batch,
    live,
    log_tail,
    proc_stat,
    run,
    spawn,
)
from ka_exporter.testing import wait_until


class Lab:
    """A keepalived lab; `with Lab(profile="fast") as lab:` brings it up and always takes it down."""

    def __init__(
        self,
        profile: str = "fast",
        nodes: int = 2,
        *,
        dbus: bool = False,
        prefix: str | None = None,
        workdir: str | Path | None = None,
        ipv6: bool = False,
    ) -> None:
        try:
            self.profile: Profile = profiles.resolve_profile(profile, ipv6)
        except ValueError as exc:
            raise LabError(str(exc)) from None
        if nodes not in (2, 3):
            raise LabError(f"a lab has 2 or 3 nodes, not {nodes}")
        self.node_count = nodes
        self.dbus = dbus
        self.ipv6 = self.profile.ipv6
        self._fixed_prefix = prefix is not None
        self._workdir = Path(workdir) if workdir is not None else None
        self.addressing = _pick_addressing()
        self.splits: list[dict[str, str]] = []
        self.stopped_master: str | None = None
        self._namespaces: list[str] = []  # namespaces this lab created, in creation order
        self._owned = False  # True once this lab reserved its name (directory + state file)
        self._name(_check_prefix(prefix) if prefix is not None else _random_prefix())

    def _name(self, prefix: str) -> None:
        """(Re)derive every name and path from the prefix."""
        self.prefix = prefix
        self.dir = (self._workdir or STATE_DIR) / prefix
        self.state_file = state_path(prefix)
        self.bridge_netns = f"{prefix}-sw"
        addr = self.addressing
        self.nodes: dict[str, LabNode] = {}
        for i, name in enumerate(profiles.NODE_NAMES[: self.node_count]):
            self.nodes[name] = LabNode(
                name,
                f"{prefix}-{name}",
                addr.v4(i + 1),
                addr.v6(i + 1) if self.ipv6 else None,
                directory=self.dir / name,
                dbus=self.dbus,
            )
        self.observer = LabHost(
            "o", f"{prefix}-o", addr.v4(OBSERVER_HOST), addr.v6(OBSERVER_HOST) if self.ipv6 else None
        )
        self.instances: list[LabInstance] = profiles.instances(self.profile, addr)

    # ------------------------------------------------------------------ properties

    @property
    def vips(self) -> list[str]:
        """Every VIP of every instance, in configuration order."""
        return [vip for inst in self.instances for vip in inst.vips]

    @property
    def subnet(self) -> str:
        return self.addressing.subnet

    @property
    def workdir(self) -> Path:
        """The lab's directory: one subdirectory per node (config, log, pid files, TMPDIR, bus)."""
        return self.dir

    def _all_netns(self) -> list[str]:
        return [self.bridge_netns, *(n.netns for n in self.nodes.values()), self.observer.netns]

    def _node(self, name: str) -> LabNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise LabError(
                f"no node {name!r} in lab {self.prefix} (nodes: {', '.join(self.nodes)})"
            ) from None

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # ------------------------------------------------------------------ up / down

    def up(self, wait_master: bool = True, timeout: float = 15.0) -> None:
        """Build the namespaces, start dbus-daemon (if dbus) and keepalived on every node.

        With `wait_master`, return once every instance has exactly one holder of its VIPs (and, with dbus,
        every keepalived owns org.keepalived.Vrrp1 on its bus); otherwise raise LabError with the logs' tails.
        On any failure the half-built lab is taken down before the error propagates.
        """
        check_root()
        tools = {
            "ip": _ip(),
            "keepalived": find_tool("keepalived", "keepalived"),
        }
        if self.dbus:
            tools["dbus-daemon"] = find_tool("dbus-daemon", "dbus")
        if self._owned:
            raise LabError(f"lab {self.prefix} is already up")
        self._reserve()
        try:
            self._build_network(tools["ip"])
            self._write_files()
            if self.dbus:
                self._start_buses(tools["dbus-daemon"])
            for node in self.nodes.values():
                self.start(node.name)
            if wait_master and not self.wait_for(self._settled, timeout):
                raise LabError(
                    f"lab {self.prefix}: keepalived did not settle within {timeout:g} s "
                    f"({self._holders_summary()}{self._dbus_summary()})\n{self._log_tails()}"
                )
        except BaseException as exc:
            try:
                self.down()
            except LabError as cleanup:
                exc.add_note(f"cleaning up also failed: {cleanup}")
            raise

    def _reserve(self) -> None:
        """Claim the lab's name: its directory and its state file, both created exclusively."""
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _attempt in range(20):
            taken = [ns for ns in self._all_netns() if Path("/run/netns", ns).exists()]
            if not taken:
                try:
                    fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    taken = [str(self.state_file)]
                else:
                    os.close(fd)
                    try:
                        self.dir.mkdir(mode=0o755, parents=True)
                    except FileExistsError:
                        self.state_file.unlink()
                        taken = [str(self.dir)]
                    else:
                        self._owned = True
                        self.save_state()
                        return
            if self._fixed_prefix:
                raise LabError(
                    f"a lab named {self.prefix} already exists ({taken[0]}): "
                    f"take it down first (ka-exporter lab down --name {self.prefix})"
                )
            self._name(_random_prefix())
        raise LabError("could not find a free lab name")

    def _build_network(self, ip: str) -> None:
        for ns in self._all_netns():
            # The kernel tears deleted namespaces down in the background, holding the lock a new one
            # needs; right after a big lab went down that has taken more than 10 s here.
            run([ip, "netns", "add", ns], timeout=60.0)
            self._namespaces.append(ns)
            self.save_state()
        addr = self.addressing
        hosts: list[tuple[LabHost, int]] = [(n, i + 1) for i, n in enumerate(self.nodes.values())]
        hosts.append((self.observer, OBSERVER_HOST))
        # Each veth is created with one end in the bridge namespace and one in the host's: nothing in the
        # root namespace, so parallel labs never collide on interface names.
        ip_batch(
            ip,
            [
                f"link add p-{h.name} netns {self.bridge_netns} "
                f"type veth peer name {h.interface} netns {h.netns}"
                for h, _ in hosts
            ],
        )
        ip_batch(
            ip,
            [
                "link set lo up",
                "link add br0 type bridge stp_state 0 mcast_snooping 0",
                *(f"link set p-{h.name} master br0 up" for h, _ in hosts),
                "link set br0 up",
            ],
            self.bridge_netns,
        )
        for host, num in hosts:
            if self.ipv6:
                # No duplicate address detection: addresses (and link-locals) are usable at once.
                run(
                    [
                        ip,
                        "netns",
                        "exec",
                        host.netns,
                        find_tool("sysctl", "procps"),
                        "-qw",
                        "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0",
                        f"net.ipv6.conf.{host.interface}.accept_dad=0",
                    ]
                )
            cmds = [
                "link set lo up",
                f"link set {host.interface} address {addr.mac(num)}",
                f"addr add {host.address}/24 dev {host.interface}",
            ]
            if host.address6:
                cmds.append(f"addr add {host.address6}/64 dev {host.interface} nodad")
            cmds.append(f"link set {host.interface} up")
            ip_batch(ip, cmds, host.netns)
        # The kernel reports a new veth's carrier a few ms after "link set up"; keepalived started before that
        # would begin in FAULT ("interface eth0 down") and show a spurious FAULT -> BACKUP transition.
        if not self.wait_for(lambda: all(self._operstate(h) == "UP" for h, _ in hosts), 5.0):
            raise LabError(f"lab {self.prefix}: the lab interfaces did not come up within 5 s")

    def _operstate(self, host: LabHost) -> str:
        links = _ip_show(host, "link")
        return str(links[0].get("operstate", "UNKNOWN")) if links else "MISSING"

    def _write_files(self) -> None:
        for node in self.nodes.values():
            node.dir.mkdir(mode=0o755, exist_ok=True)
            node.tmpdir.mkdir(mode=0o755, exist_ok=True)
            self._write_config(node, self.profile)
            if self.profile.notify:
                _write_script(node.dir / "notify.sh", profiles.notify_script(node.notify_log))
            if self.profile.check:
                _write_script(node.dir / "check.sh", profiles.check_script(node.check_flag))

    def _write_config(self, node: LabNode, profile: Profile) -> None:
        text = profiles.render_config(
            profile, self.addressing, node.name, nodes=self.node_count, node_dir=node.dir, dbus=self.dbus
        )
        # 0600: the file may hold the VRRP password.
        fd = os.open(node.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    def misconfigure(self, node: str, mismatch: str | None) -> None:
        """Rewrite `node`'s keepalived.conf with one setting that differs from the other nodes' (None:
        back to the lab's profile); takes effect at its next `start()`. `mismatch` is one of
        `profiles.MISMATCHES`: keepalived on the other nodes drops this node's adverts, and it theirs.
        """
        try:
            variant = profiles.mismatched(self.profile, mismatch)
        except ValueError as exc:
            raise LabError(str(exc)) from None
        self._write_config(self._node(node), variant)

    def _start_buses(self, dbus_daemon: str) -> None:
        for node in self.nodes.values():
            if len(str(node.dbus_socket)) > labdbus.MAX_SOCKET_PATH:
                raise LabError(f"D-Bus socket path too long for a unix socket: {node.dbus_socket}")
            node.dbus_socket.parent.mkdir(mode=0o755, exist_ok=True)
            node.dbus_config.write_text(labdbus.bus_config(node.dbus_socket))
            node.dbus_proc = spawn(
                [dbus_daemon, f"--config-file={node.dbus_config}", "--nofork", "--nopidfile"], node.dbus_log
            )
            self.save_state()
        for node in self.nodes.values():
            proc = node.dbus_proc
            if not self.wait_for(node.dbus_socket.exists, 5.0) or proc is None or not proc.alive():
                raise LabError(f"dbus-daemon for node {node.name} did not start:\n{log_tail(node.dbus_log)}")

    def down(self) -> str:
        """Stop every process this lab started, delete its namespaces and files. Safe to call twice.

        Returns a one-line summary of what it removed.
        """
        stopped = 0
        keepalived = [n.proc for n in self.nodes.values() if n.proc is not None]
        buses = [n.dbus_proc for n in self.nodes.values() if n.dbus_proc is not None]
        # keepalived gets SIGKILL (its process group): a graceful stop costs ~1 s per node and the namespaces,
        # VIPs included, are deleted right after anyway.
        for group, sig in ((keepalived, SIGKILL), (buses, signal.SIGTERM)):
            live = [p for p in group if p.alive()]
            for proc in live:
                proc.send(sig, group=sig == SIGKILL)
            for proc in live:
                proc.finish(timeout=3.0)
            stopped += len(live)
        for node in self.nodes.values():
            node.proc = node.dbus_proc = None
        stopped += self._sweep_strays() if self._owned else 0
        # A reserved lab's names are ours (checked free when reserved) even if a crash kept them off the list.
        namespaces = list(self._namespaces)
        if self._owned:
            namespaces += [
                ns for ns in self._all_netns() if ns not in namespaces and Path("/run/netns", ns).exists()
            ]
        removed, errors = 0, []
        for ns in reversed(namespaces):
            try:
                run([_ip(), "netns", "delete", ns])
                removed += 1
            except LabError as exc:
                if Path("/run/netns", ns).exists():
                    errors.append(str(exc))
        self._namespaces = []
        self.splits = []
        if self._owned:
            shutil.rmtree(self.dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
            self._owned = False
        if errors:
            raise LabError(f"lab {self.prefix}: could not delete {'; '.join(errors)}")
        return f"lab {self.prefix} down: stopped {stopped} processes, removed {removed} namespaces"

    def _sweep_strays(self) -> int:
        """Stop keepalived / dbus-daemon processes whose command line names this lab's directory but that the
        state does not know (started just before a crash). Returns how many."""
        marker = f"{self.dir}/".encode()
        programs = {b"keepalived", b"dbus-daemon", b"ip"}
        strays: list[Proc] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            stat = proc_stat(entry.name)
            program = cmdline.split(b"\0", 1)[0].rsplit(b"/", 1)[-1]
            if program in programs and marker in cmdline and stat is not None and live(stat):
                strays.append(Proc(int(entry.name), stat.start_time))
        for proc in strays:
            proc.stop(signal.SIGKILL, timeout=2.0)
        return len(strays)

    # ------------------------------------------------------------------ keepalived processes

    def start(self, node: str) -> None:
        """Start keepalived on `node`; return once its VRRP child runs (LabError with the log tail if not)."""
        n = self._node(node)
        if n.proc is not None and n.proc.signalled:
            n.proc.finish(5.0)  # still shutting down after a stop(wait=False) / failover()
        if n.running():
            raise LabError(f"keepalived on node {node} is already running (pid {n.pid})")
        ip = _ip()
        keepalived = find_tool("keepalived", "keepalived")
        # A pid file left by a SIGKILLed keepalived may name a zombie, which keepalived takes for itself.
        for pidfile in (n.pidfile, n.vrrp_pidfile, n.checkers_pidfile, n.bfd_pidfile):
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
        env = dict(os.environ, TMPDIR=str(n.tmpdir))
        if n.dbus_address:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = n.dbus_address
        argv = [
            ip, "netns", "exec", n.netns, keepalived,
            "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
            f"--use-file={n.config_path}",
            f"--pid={n.pidfile}", f"--vrrp_pid={n.vrrp_pidfile}",
            f"--checkers_pid={n.checkers_pidfile}", f"--bfd_pid={n.bfd_pidfile}",
        ]  # fmt: skip
        n.proc = spawn(argv, n.log_path, env)
        self.save_state()
        proc = n.proc
        if not self.wait_for(lambda: n.vrrp_pidfile.exists() or not proc.alive(), 5.0) or not proc.alive():
            raise LabError(f"keepalived on node {node} did not start:\n{log_tail(n.log_path)}")

    def stop(self, node: str, signal: int = signal.SIGTERM, wait: bool = True) -> None:
        """Stop keepalived on `node`: SIGTERM (graceful: priority-0 advert, VIPs removed) or SIGKILL (the
        whole process group at once, so the VRRP child cannot clean up: the VIP stays behind).

        With `wait` (default) return once the process is gone: after SIGTERM keepalived 2.2.7 removes its
        VIPs at once but exits only ~1 s later. Without `wait`, return after sending the signal.
        """
        n = self._node(node)
        if n.proc is None:
            return
        if wait:
            n.proc.stop(signal, timeout=5.0)
            n.proc = None
        else:
            n.proc.send(signal, group=signal == SIGKILL)
        self.save_state()

    def restart(self, node: str) -> None:
        self.stop(node)
        self.start(node)

    def failover(self) -> str:
        """SIGTERM the current master's keepalived and return its name once its VIPs are gone (its process
        exits ~1 s later; `start()` waits for that). The backup takes over by itself; `start_master()`
        restarts the old master."""
        master = self._require_master()
        node = self.nodes[master]
        vips = {str(ipaddress.ip_address(v)) for v in self.vips}
        self.stop(master, signal.SIGTERM, wait=False)
        self.stopped_master = master
        self.save_state()
        # Return once the VIPs left the old master, not a second later when its keepalived has exited.
        self.wait_for(lambda: not node.running() or not self._addresses(node) & vips, 5.0)
        return master

    def stop_master(self, kill: bool = True) -> str:
        """Stop the current master (SIGKILL by default: its stale VIP stays); `start_master()` restarts it."""
        master = self._require_master()
        self.stop(master, signal.SIGKILL if kill else signal.SIGTERM)
        self.stopped_master = master
        self.save_state()
        return master

    def start_master(self) -> str:
        """Restart the node `stop_master()` or `failover()` stopped; returns its name."""
        if self.stopped_master is None:
            raise LabError(f"lab {self.prefix}: no master was stopped (by stop-master or failover)")
        name = self.stopped_master
        self.start(name)
        self.stopped_master = None
        self.save_state()
        return name

    def _require_master(self) -> str:
        master = self.master()
        if master is None:
            raise LabError(f"lab {self.prefix}: no single master ({self._holders_summary()})")
        return master

    def set_check(self, node: str, healthy: bool) -> None:
        """Make `node`'s check script (nginx, mysql profiles) succeed or fail from its next run on."""
        if self.profile.check is None:
            raise LabError(f"profile {self.profile.name} has no check script")
        flag = self._node(node).check_flag
        if healthy:
            flag.unlink(missing_ok=True)
        else:
            flag.touch()

    # ------------------------------------------------------------------ VIPs and masters

    def _addresses(self, node: LabNode) -> set[str]:
        """Addresses on the node's lab interface (empty if its namespace is gone)."""
        links = _ip_show(node, "addr")
        if self.profile.vmac:  # use_vmac: keepalived puts the VIPs on the macvlan vrrp.VRID
            for inst in self.instances:
                links += _ip_show(LabHost(node.name, node.netns, "", None, f"vrrp.{inst.vrid}"), "addr")
        return {
            str(ipaddress.ip_address(info["local"]))
            for link in links
            for info in link.get("addr_info", [])
            if "local" in info
        }

    def _held(self) -> dict[str, set[str]]:
        return {name: self._addresses(node) for name, node in self.nodes.items()}

    def vip_holders(self, vip: str | None = None) -> list[str]:
        """Names of the nodes whose interface holds `vip` (default: the lab's first VIP)."""
        target = str(ipaddress.ip_address(vip if vip is not None else self.vips[0]))
        return [name for name, addrs in self._held().items() if target in addrs]

    def master(self, vip: str | None = None) -> str | None:
        """The single node holding `vip` (default: the first VIP); None if nobody or more than one does."""
        holders = self.vip_holders(vip)
        return holders[0] if len(holders) == 1 else None

    def _settled(self) -> bool:
        held = self._held()
        for inst in self.instances:
            wanted = {str(ipaddress.ip_address(v)) for v in inst.vips}
            some = [n for n, addrs in held.items() if addrs & wanted]
            if len(some) != 1 or not wanted <= held[some[0]]:
                return False
        return all(
            n.dbus_address is None or labdbus.name_has_owner(n.dbus_address) for n in self.nodes.values()
        )

    def _holders_summary(self) -> str:
        held = self._held()
        parts = []
        for inst in self.instances:
            for vip in inst.vips:
                who = [n for n, addrs in held.items() if str(ipaddress.ip_address(vip)) in addrs]
                parts.append(f"{vip} on {','.join(who) or 'no node'}")
        return "; ".join(parts)

    def _dbus_summary(self) -> str:
        missing = [
            n.name
            for n in self.nodes.values()
            if n.dbus_address is not None and not labdbus.name_has_owner(n.dbus_address)
        ]
        return f"; {labdbus.KEEPALIVED_BUS_NAME} missing on the bus of {','.join(missing)}" if missing else ""

    def _log_tails(self) -> str:
        return "\n".join(
            f"node {n.name} ({n.log_path}):\n{log_tail(n.log_path)}" for n in self.nodes.values()
        )

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
        """Poll `predicate` every `interval` seconds until it is true (True) or `timeout` passes (False)."""
        return wait_until(predicate, timeout, interval)

    # ------------------------------------------------------------------ partitions

    def split(self, mode: str = "bridge", node: str | None = None) -> None:
        """Cut VRRP between the nodes.

        mode "bridge": nft in the bridge namespace drops VRRP forwarded between node ports (between `node` and
        the others if given, else between all nodes); the observer still sees every advert.
        mode "firewall": nft in `node`'s namespace (default "b") drops incoming VRRP (ip proto 112 / ip6
        nexthdr 112).
        """
        nft = find_tool("nft", "nftables")
        if mode == "bridge":
            ports = [f'"p-{n}"' for n in self.nodes]
            if node is not None:
                self._node(node)
                others = [p for p in ports if p != f'"p-{node}"']
                pairs = [(f'"p-{node}"', ", ".join(others)), (", ".join(others), f'"p-{node}"')]
            else:
                pairs = [(", ".join(ports), ", ".join(ports))]
            rules = [
                f"add rule bridge {SPLIT_TABLE} forward iifname {{ {src} }} oifname {{ {dst} }} {match} drop"
                for src, dst in pairs
                for match in ("ip protocol 112", "ip6 nexthdr 112")
            ]
            family, netns = "bridge", self.bridge_netns
            chain = "{ type filter hook forward priority 0; policy accept; }"
            chain_name = "forward"
        elif mode == "firewall":
            target = self._node(node if node is not None else "b")
            rules = [
                f"add rule inet {SPLIT_TABLE} input {match} drop"
                for match in ("ip protocol 112", "ip6 nexthdr 112")
            ]
            family, netns = "inet", target.netns
            chain = "{ type filter hook input priority 0; policy accept; }"
            chain_name = "input"
        else:
            raise LabError(f"unknown split mode {mode!r} (choose bridge or firewall)")
        script = [
            f"add table {family} {SPLIT_TABLE}",
            f"add chain {family} {SPLIT_TABLE} {chain_name} {chain}",
        ]
        run([_ip(), "netns", "exec", netns, nft, "-f", "-"], stdin="\n".join(script + rules) + "\n")
        entry = {"mode": mode, "netns": netns, "family": family}
        if node is not None or mode == "firewall":
            entry["node"] = node if node is not None else "b"
        self.splits.append(entry)
        self.save_state()

    def heal(self) -> int:
        """Remove every split; returns how many there were."""
        nft = find_tool("nft", "nftables") if self.splits else "nft"
        done: set[tuple[str, str]] = set()
        for entry in self.splits:
            key = (entry["netns"], entry["family"])
            if key not in done:
                run([_ip(), "netns", "exec", key[0], nft, "delete", "table", key[1], SPLIT_TABLE])
                done.add(key)
        count = len(self.splits)
        self.splits = []
        self.save_state()
        return count

    # ------------------------------------------------------------------ status and state

    def status(self) -> str:
        """A human table: node, netns, address, keepalived pid/running, VIPs held."""
        head = f"lab {self.prefix}: profile {self.profile.name}, subnet {self.subnet}"
        if self.ipv6:
            head += f" {self.addressing.subnet6}"
        insts = ", ".join(f"{i.name} vrid {i.vrid} VIP {' '.join(i.vips)}" for i in self.instances)
        rows = [("node", "netns", "address", "keepalived", "dbus", "VIPs held")]
        held = self._held()
        vips = {str(ipaddress.ip_address(v)): v for v in self.vips}
        for name, node in self.nodes.items():
            pid = node.pid
            ka = f"pid {pid}" if pid is not None else "stopped"
            bus = "-" if node.dbus_proc is None else ("up" if node.dbus_proc.alive() else "down")
            mine = [orig for norm, orig in vips.items() if norm in held[name]]
            rows.append((name, node.netns, node.address, ka, bus, " ".join(mine) or "-"))
        rows.append((self.observer.name, self.observer.netns, self.observer.address, "(observer)", "", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [head, f"instances: {insts}"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if self.splits:
            lines.append(
                "split: "
                + ", ".join(f"{s['mode']}" + (f" ({s['node']})" if "node" in s else "") for s in self.splits)
            )
        if self.stopped_master:
            lines.append(f"stopped master: {self.stopped_master} (start-master restarts it)")
        return "\n".join(lines)

    def _state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "profile": self.profile.name,
            "nodes": self.node_count,
            "dbus": self.dbus,
            "workdir": str(self._workdir) if self._workdir else None,
            "subnet": [self.addressing.x, self.addressing.y],
            "namespaces": self._namespaces,
            "procs": {
                n.name: {
                    "keepalived": n.proc.to_json() if n.proc else None,
                    "dbus": n.dbus_proc.to_json() if n.dbus_proc else None,
                }
                for n in self.nodes.values()
            },
            "splits": self.splits,
            "stopped_master": self.stopped_master,
        }

    def save_state(self, path: str | Path | None = None) -> Path:
        """Write the lab's state (JSON, atomically); default path /run/ka-exporter-lab/<prefix>.json."""
        target = Path(path) if path is not None else self.state_file
        if path is None and not self._owned:
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._state(), indent=1) + "\n")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path_or_name: str | Path = DEFAULT_NAME) -> Lab:
        """The lab described by a state file, or by the name of a lab that is up (`Lab.load("kalab")`)."""
        text = str(path_or_name)
        path = Path(text) if ("/" in text or text.endswith(".json")) else state_path(text)
        try:
            state = json.loads(path.read_text())
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"state version {state.get('version')!r}")
            lab = cls(
                profile=state["profile"],
                nodes=int(state["nodes"]),
                dbus=bool(state["dbus"]),
                prefix=state["prefix"],
                workdir=state["workdir"],
            )
            lab.addressing = Addressing(*(int(v) for v in state["subnet"]))
            lab._name(lab.prefix)
            lab._namespaces = [str(ns) for ns in state["namespaces"]]
            for name, procs in state["procs"].items():
                node = lab.nodes[name]
                node.proc = Proc.from_json(procs.get("keepalived"))
                node.dbus_proc = Proc.from_json(procs.get("dbus"))
            lab.splits = [dict(s) for s in state["splits"]]
            lab.stopped_master = state.get("stopped_master")
        except FileNotFoundError:
            raise LabError(f"no lab named {path.stem} ({path} does not exist)") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, LabError) as exc:
            raise LabError(f"cannot read lab state {path}: {exc}") from None
        lab._owned = True
        return lab


def _ip() -> str:
    return find_tool("ip", "iproute2")


def _ip_show(host: LabHost, what: str) -> list[dict[str, Any]]:
    """`ip -j link|addr show dev IF` in the host's namespace; [] if the namespace or interface is gone."""
    try:
        out = run([_ip(), "-n", host.netns, "-j", what, "show", "dev", host.interface])
        links: list[dict[str, Any]] = json.loads(out or "[]")
    except (LabError, ValueError):
        return []
    return links


def _write_script(path: Path, text: str) -> None:
    """A script keepalived's enable_script_security accepts: root-owned, 0755, in a root-owned 0755 dir."""
    path.write_text(text)
    path.chmod(0o755)
