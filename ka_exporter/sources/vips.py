"""The VIP source: the addresses on local interfaces, from netlink, updated on address events.

Netlink is spoken through :mod:`ka_exporter.linux.rtnl` (a plain socket): pyroute2 cost ~0.4 s and ~23 MiB
at start-up for two dumps and a subscription.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from ka_exporter.linux import fdwait, rtnl
from ka_exporter.model import LocalAddress
from ka_exporter.sources.base import Registration, Source, Wiring
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.vips")

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


def read_addresses(sock: socket.socket | None = None) -> tuple[LocalAddress, ...]:
    """Every address on every interface of the current network namespace."""
    return tuple(
        LocalAddress(address=a.address, prefixlen=a.prefixlen, interface=a.interface, family=a.family)
        for a in rtnl.addresses(sock)
    )


class VipSource(Source):
    """Subscribes to netlink address and link events and re-reads the table when one arrives.

    There is no polling loop: the thread sleeps in poll() on the netlink socket, so an address
    added or removed (keepalived taking or dropping a VIP) is in the store within milliseconds. A
    dump after each burst of events keeps the table exact even if the kernel dropped an event
    (ENOBUFS), and a periodic resync every `resync` seconds covers a missed wake-up.
    """

    name = "vips"

    def __init__(
        self, store: Store, resync: float = 60.0, on_change: Callable[[], None] | None = None
    ) -> None:
        super().__init__(store)
        self.resync = resync
        self.on_change = on_change  # called when the address set changed (not on the first read)
        self._last: tuple[LocalAddress, ...] | None = None
        self._events: socket.socket | None = None

    def unexpected(self, exc: Exception) -> str:
        return f"vips: cannot read addresses over netlink: {exc}"

    def poll(self) -> None:
        self._publish(read_addresses())
        self.ok()

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping:
            try:
                self._watch()
                backoff = 0.5
            except Exception as exc:
                if self.stopping:
                    return
                self.fail(f"vips: netlink: {exc}")
                if not self.sleep(backoff):
                    return
                backoff = min(backoff * 2, 10.0)

    def _watch(self) -> None:
        events = rtnl.subscribe(GROUPS)
        self._events = events
        try:
            with rtnl.open_socket() as dump:
                while not self.stopping:
                    self._publish(read_addresses(dump))
                    self.ok()
                    ready = fdwait.readable([events], self.resync)
                    if self.stopping:
                        return
                    if ready:
                        self._drain(events)
        finally:
            self._events = None
            events.close()

    def _publish(self, addresses: tuple[LocalAddress, ...]) -> None:
        changed = self._last is not None and addresses != self._last
        self._last = addresses
        self.store.set_addresses(addresses)
        if changed and self.on_change is not None:
            self.on_change()

    @staticmethod
    def _drain(events: socket.socket) -> None:
        """Read every pending event; their content does not matter, only that something changed."""
        rtnl.drain(events, linger=0.01)

    def close(self) -> None:
        ev = self._events
        if ev is not None:
            try:
                ev.close()
            except Exception:  # closing from another thread may race; stopping anyway
                log.debug("closing netlink socket", exc_info=True)


def build(w: Wiring) -> VipSource:
    return VipSource(w.store)


REGISTRATION = Registration("vips", "VIP ownership from netlink", 20, build, parts=("host:collect_vips",))
