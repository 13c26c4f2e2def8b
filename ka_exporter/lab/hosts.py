"""The lab's hosts: a namespace on the lab bridge (`LabHost`: the observer) and a keepalived node
(`LabNode`: its addresses, files and, while it runs, its keepalived process).
"""

from __future__ import annotations

from pathlib import Path

from ka_exporter.lab.system import Proc


class LabHost:
    """A namespace on the lab bridge: the observer, and the base of every node."""

    def __init__(self, name: str, netns: str, address: str, address6: str | None, interface: str = "eth0"):
        self.name = name
        self.netns = netns
        self.address = address
        self.address6 = address6
        self.interface = interface

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, netns={self.netns!r}, address={self.address!r})"


class LabNode(LabHost):
    """One keepalived node: its namespace, addresses, files and (while it runs) its keepalived process."""

    def __init__(
        self, name: str, netns: str, address: str, address6: str | None, *, directory: Path, dbus: bool
    ) -> None:
        super().__init__(name, netns, address, address6)
        self.dir = directory
        self.config_path = directory / "keepalived.conf"
        self.tmpdir = directory / "tmp"  # keepalived's TMPDIR: keepalived.data/.stats/.json land here
        self.pidfile = directory / "keepalived.pid"
        self.vrrp_pidfile = directory / "vrrp.pid"
        self.checkers_pidfile = directory / "checkers.pid"
        self.bfd_pidfile = directory / "bfd.pid"
        self.log_path = directory / "keepalived.log"
        self.notify_log = directory / "notify.log"  # written by the "basic" profile's notify script
        self.check_flag = directory / "service-down"  # check scripts fail while it exists
        self.dbus_socket = directory / "dbus" / "bus"
        self.dbus_config = directory / "dbus" / "bus.conf"
        self.dbus_log = directory / "dbus" / "dbus.log"
        self.dbus_address: str | None = f"unix:path={self.dbus_socket}" if dbus else None
        self.proc: Proc | None = None
        self.dbus_proc: Proc | None = None

    @property
    def pid(self) -> int | None:
        """The keepalived parent's pid while it runs, else None."""
        return self.proc.pid if self.proc is not None and self.proc.alive() else None

    def running(self) -> bool:
        return self.pid is not None
