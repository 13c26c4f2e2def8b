"""The netlink reader of the VIP source, against the kernel in a fresh namespace (compared with `ip`)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from typing import TypeVar

import pytest

from ka_exporter.linux import rtnl
from ka_exporter.sources.vips import VipSource
from ka_exporter.store import Store
from tests.conftest import in_netns, sh, wait_until

pytestmark = pytest.mark.lab

T = TypeVar("T")


@pytest.fixture
def subnet() -> str:
    """10.X.Y: unique to this run (only ever used inside the test's own namespace)."""
    return f"10.{random.randrange(100, 200)}.{(os.getpid() + random.randrange(256)) % 256}"


def ip_view(ns: str) -> list[tuple[str, int, str, str]]:
    """What `ip -j address show` says: (local address, prefix, interface, family), sorted like rtnl."""
    out = []
    for link in json.loads(sh("ip", "-n", ns, "-j", "address", "show").stdout):
        for a in link.get("addr_info", []):
            out.append((a["local"], int(a["prefixlen"]), link["ifname"], a["family"]))
    return sorted(out, key=lambda a: (a[2], a[3], a[0]))


def test_the_dump_lists_what_ip_address_shows(netns: str, subnet: str) -> None:
    sh("ip", "-n", netns, "address", "add", f"{subnet}.1/24", "dev", "eth0")
    sh("ip", "-n", netns, "address", "add", f"{subnet}.100/24", "dev", "eth0", "label", "eth0:vip")
    # point-to-point: IFA_ADDRESS is the peer, the address itself is IFA_LOCAL
    sh("ip", "-n", netns, "address", "add", f"{subnet}.201", "peer", f"{subnet}.202/32", "dev", "peer0")
    sh("ip", "-n", netns, "address", "add", "fd5e:1::7/64", "dev", "eth0", "nodad")
    got = [tuple(a) for a in in_netns(netns, rtnl.addresses)]
    assert got == ip_view(netns)
    assert (f"{subnet}.201", 32, "peer0", "inet") in got  # not the peer's address
    assert (f"{subnet}.202", 32, "peer0", "inet") not in got
    assert ("fd5e:1::7", 64, "eth0", "inet6") in got


def pyroute2_view() -> list[tuple[str, int, str, str]]:
    """The same table read through pyroute2, the reference netlink library (as scapy is the decoder's)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out = []
        for msg in ipr.get_addr():
            fam = "inet6" if msg["family"] == 10 else "inet"
            addr = (msg.get_attr("IFA_LOCAL") if fam == "inet" else None) or msg.get_attr("IFA_ADDRESS")
            out.append((addr, msg["prefixlen"], names[msg["index"]], fam))
    return sorted(out, key=lambda a: (a[2], a[3], a[0]))


def test_the_dump_matches_pyroute2_field_for_field(netns: str, subnet: str) -> None:
    sh("ip", "-n", netns, "address", "add", f"{subnet}.1/24", "dev", "eth0")
    sh("ip", "-n", netns, "address", "add", f"{subnet}.100/24", "dev", "eth0", "label", "eth0:vip")
    sh("ip", "-n", netns, "address", "add", f"{subnet}.201", "peer", f"{subnet}.202/32", "dev", "peer0")
    sh("ip", "-n", netns, "address", "add", "fd5e:1::7/64", "dev", "eth0", "nodad")
    sh("ip", "-n", netns, "address", "add", "fe80::97:81/64", "dev", "peer0", "nodad")
    got = [tuple(a) for a in in_netns(netns, rtnl.addresses)]
    assert got == in_netns(netns, pyroute2_view)
    assert len(got) >= 6


def test_a_namespace_sees_only_its_own_addresses(netns: str, subnet: str) -> None:
    sh("ip", "-n", netns, "address", "add", f"{subnet}.1/24", "dev", "eth0")
    inside = {a.address for a in in_netns(netns, rtnl.addresses)}
    outside = {a.address for a in rtnl.addresses()}
    assert f"{subnet}.1" in inside
    assert f"{subnet}.1" not in outside


def test_many_addresses_span_several_netlink_reads(netns: str, subnet: str) -> None:
    batch = "".join(f"address add {subnet}.{k}/32 dev eth0\n" for k in range(1, 255))
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, text=True, check=True, timeout=30)
    got = in_netns(netns, rtnl.addresses)
    assert len([a for a in got if a.address.startswith(f"{subnet}.")]) == 254
    assert [tuple(a) for a in got] == ip_view(netns)


def test_vip_source_sees_an_address_come_and_go_without_polling(netns: str, subnet: str) -> None:
    store = Store(hostname="t")
    src = VipSource(store, resync=3600.0)  # no periodic re-read: only events can tell it
    in_netns(netns, src.start)
    try:
        assert wait_until(lambda: store.snapshot().addresses is not None, 5)
        vip = f"{subnet}.77"

        def held() -> bool:
            return any(a.address == vip for a in store.snapshot().addresses or ())

        assert not held()
        sh("ip", "-n", netns, "address", "add", f"{vip}/32", "dev", "eth0")
        assert wait_until(held, 2)
        sh("ip", "-n", netns, "address", "del", f"{vip}/32", "dev", "eth0")
        assert wait_until(lambda: not held(), 2)
        assert store.health("vips").up
    finally:
        src.stop()


def test_reading_addresses_imports_no_netlink_library(netns: str) -> None:
    code = (
        "import sys\nfrom ka_exporter.sources.vips import read_addresses\nread_addresses()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'scapy')))"
    )
    r = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert r.stdout.strip() == "[]"


def test_subscription_wakes_on_an_address_event(netns: str, subnet: str) -> None:
    sock = in_netns(netns, lambda: rtnl.subscribe(rtnl.RTMGRP_IPV4_IFADDR))
    try:
        assert rtnl.drain(sock) == 0
        sh("ip", "-n", netns, "address", "add", f"{subnet}.9/32", "dev", "eth0")
        deadline = time.monotonic() + 2
        count = 0
        while count == 0 and time.monotonic() < deadline:
            count = rtnl.drain(sock, linger=0.05)
        assert count >= 1
        assert rtnl.drain(sock) == 0
    finally:
        sock.close()
