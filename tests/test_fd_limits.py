"""Descriptors above 1023 (FD_SETSIZE): the netlink and D-Bus waits use poll(), not select().

With the unit's LimitNOFILE and many client connections, a socket opened later gets a number past
1023; select() then raised `ValueError: filedescriptor out of range` and the source died.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter.lab.dbus import bus_config
from ka_exporter.linux import fdwait
from ka_exporter.linux.dbusclient import BUS_NAME, BUS_PATH, BusClient, Call
from ka_exporter.sources.vips import VipSource
from ka_exporter.store import Store
from ka_exporter.testing import unix_accepts
from tests.conftest import in_netns, sh, wait_until

HIGH = 1100


@pytest.fixture
def low_fds_taken() -> Iterator[None]:
    """Every descriptor below HIGH is in use, so the next socket this process opens is above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < HIGH + 200:
        pytest.skip(f"the hard descriptor limit ({hard}) is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (HIGH + 200, hard))
    base = os.open(os.devnull, os.O_RDONLY)
    taken = []
    try:
        while True:
            fd = os.dup(base)
            taken.append(fd)
            if fd >= HIGH:
                break
        yield
    finally:
        for fd in (*taken, base):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_fdwait_sees_a_descriptor_above_1023(low_fds_taken: None) -> None:
    r, w = os.pipe()
    try:
        assert r > 1023
        assert fdwait.readable([r], 0.0) == []
        assert fdwait.writable(w, 0.0)
        os.write(w, b"x")
        assert fdwait.readable([r], 1.0) == [r]
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError, match="Bad file descriptor"):
        fdwait.readable([r], 0.0)


@pytest.mark.lab
def test_vip_source_follows_addresses_on_a_netlink_socket_above_1023(netns: str, low_fds_taken: None) -> None:
    store = Store(hostname="fd-test")
    src = VipSource(store, resync=3600.0)  # only events can tell it
    in_netns(netns, src.start)
    try:
        assert wait_until(lambda: store.snapshot().addresses is not None, 10)
        events = src._events
        assert events is not None
        assert events.fileno() > 1023
        vip = "10.233.7.77"

        def held() -> bool:
            return any(a.address == vip for a in store.snapshot().addresses or ())

        sh("ip", "-n", netns, "address", "add", f"{vip}/32", "dev", "eth0")
        assert wait_until(held, 5)
        sh("ip", "-n", netns, "address", "del", f"{vip}/32", "dev", "eth0")
        assert wait_until(lambda: not held(), 5)
        health = store.health("vips")
        assert health is not None
        assert health.up, health.error
    finally:
        src.stop()


@pytest.mark.lab
def test_bus_client_talks_over_a_socket_above_1023(tmp_path: Path, low_fds_taken: None) -> None:
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("needs dbus-daemon")
    sock = tmp_path / "bus"
    conf = tmp_path / "bus.conf"
    conf.write_text(bus_config(sock))
    proc = subprocess.Popen([daemon, f"--config-file={conf}", "--nofork"], stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: unix_accepts(sock), 10)  # the file exists from bind(), before listen()
        with BusClient(f"unix:path={sock}", timeout=5.0) as bus:
            assert bus._sock.fileno() > 1023
            names = bus.call(Call(BUS_NAME, BUS_PATH, BUS_NAME, "ListNames"))[0]
            assert bus.unique_name in names
    finally:
        proc.terminate()
        proc.wait(10)
