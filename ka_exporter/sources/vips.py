"""The VIP source: the addresses on local interfaces, from netlink, updated on address events."""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute

from ka_exporter.model import LocalAddress
from ka_exporter.sources.base import Source
from ka_exporter.store import Store

log = logging.getLogger("ka_exporter.sources.vips")

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


def read_addresses(ipr: Any) -> tuple[LocalAddress, ...]:
    """Every address on every interface of the current network namespace."""
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    out: list[LocalAddress] = []
    for msg in ipr.get_addr():
        family = "inet6" if msg["family"] == socket.AF_INET6 else "inet"
        addr = msg.get_attr("IFA_LOCAL") if family == "inet" else None
        addr = addr or msg.get_attr("IFA_ADDRESS")
        if not addr:
            continue
        ifname = names.get(msg["index"], str(msg["index"]))
        out.append(LocalAddress(address=addr, prefixlen=msg["prefixlen"], interface=ifname, family=family))
    return tuple(sorted(out, key=lambda a: (a.interface, a.family, a.address)))


class VipSource(Source):
    """Subscribes to netlink address and link events and re-reads the table when one arrives.

    There is no polling loop: the thread sleeps in select() on the netlink socket, so an address
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
        self._events: Any = None

    def run_once(self) -> None:
        try:
            with IPRoute() as ipr:
                self._publish(read_addresses(ipr))
        except Exception as exc:
            self.fail(f"vips: cannot read addresses over netlink: {exc}")
            return
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
        events = IPRoute()
        self._events = events
        try:
            events.bind(groups=GROUPS)
            dump = IPRoute()
            try:
                while not self.stopping:
                    self._publish(read_addresses(dump))
                    self.ok()
                    ready, _, _ = select.select([events], [], [], self.resync)
                    if self.stopping:
                        return
                    if ready:
                        self._drain(events)
            finally:
                dump.close()
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
    def _drain(events: Any) -> None:
        """Read every pending event; their content does not matter, only that something changed."""
        while True:
            events.get()
            ready, _, _ = select.select([events], [], [], 0.01)
            if not ready:
                return

    def close(self) -> None:
        ev = self._events
        if ev is not None:
            try:
                ev.close()
            except Exception:  # closing from another thread may race; stopping anyway
                log.debug("closing netlink socket", exc_info=True)
