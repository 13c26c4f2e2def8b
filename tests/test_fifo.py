"""keepalived's notify FIFO: the line parser, keepalived.conf's FIFO keys, the merge, and the source on a
real FIFO (the lab test with a real keepalived writing it is in test_fifo_lab.py)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ka_exporter.model import ConfInstance, InstanceView, KeepalivedConfig, VrrpState
from ka_exporter.parse.fifo import FifoEvent, parse_line
from ka_exporter.parse.kaconf import read_config
from ka_exporter.settings import Settings
from ka_exporter.sources.fifo import BACKLOG_TRUSTED, FifoSource, check_fifo, fifo_wanted
from ka_exporter.store import Store, merge_views
from tests.conftest import wait_until

M, B, F = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT

# -- the lines keepalived writes (vrrp_notify.c: "%s \"%s\" %s %d\n") -------------------------------


def test_keepalived_lines_parse() -> None:
    assert parse_line(b'INSTANCE "VI_1" MASTER 150\n') == FifoEvent("INSTANCE", "VI_1", "MASTER", 150, M)
    assert parse_line(b'INSTANCE "VI_1" FAULT 0\n') == FifoEvent("INSTANCE", "VI_1", "FAULT", 0, F)
    assert parse_line(b'GROUP "SG_APP" BACKUP 0') == FifoEvent("GROUP", "SG_APP", "BACKUP", 0, B)
    stop = parse_line(b'INSTANCE "VI_1" STOP 150\n')
    assert stop is not None and stop.state is VrrpState.STOP
    prio = parse_line(b'INSTANCE "VI_1" MASTER_PRIORITY 90\n')
    assert prio == FifoEvent("INSTANCE", "VI_1", "MASTER_PRIORITY", 90, None)


@pytest.mark.parametrize(
    "line",
    [
        b'INSTANCE "VI_1" {UNKNOWN} 100',  # keepalived's word for a state it has no name for
        b'RS "10.0.0.1:80" UP "10.0.0.100:80"',  # the checker's lines on the global FIFO
        b'INSTANCE "VI_1" MASTER 256',
        b'INSTANCE "VI_1" MASTER',
        b'INSTANCE "VI\x1b[2J" MASTER 100',  # a control character is not keepalived's
        b"",
        b"\xff\xfe",
    ],
)
def test_other_lines_are_not_events(line: bytes) -> None:
    assert parse_line(line) is None


@given(st.binary(max_size=300))
def test_parser_never_raises(data: bytes) -> None:
    event = parse_line(data)
    assert event is None or 0 <= event.priority <= 255


# -- keepalived.conf: which FIFO ---------------------------------------------------------------------


def conf(tmp_path: Path, global_defs: str) -> KeepalivedConfig:
    path = tmp_path / "keepalived.conf"
    path.write_text(
        f"global_defs {{\n{global_defs}\n}}\n"
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n virtual_ipaddress { 10.0.0.1 }\n}\n"
    )
    return read_config(path)


def test_config_names_the_fifos_and_their_scripts(tmp_path: Path) -> None:
    cfg = conf(tmp_path, "notify_fifo /run/all.fifo root\nvrrp_notify_fifo /run/vrrp.fifo\n")
    assert cfg.problems == ()
    assert [(f.kind, f.path, f.has_script) for f in cfg.notify_fifos] == [
        ("notify_fifo", "/run/all.fifo", False),
        ("vrrp_notify_fifo", "/run/vrrp.fifo", False),
    ]
    # the VRRP FIFO is preferred: it carries only VRRP lines
    assert fifo_wanted(Settings(), cfg) == Path("/run/vrrp.fifo")


def test_a_fifo_read_by_the_operators_script_is_left_alone(tmp_path: Path) -> None:
    cfg = conf(tmp_path, "vrrp_notify_fifo /run/vrrp.fifo\nvrrp_notify_fifo_script /usr/local/bin/handler\n")
    assert [(f.kind, f.has_script) for f in cfg.notify_fifos] == [("vrrp_notify_fifo", True)]
    assert fifo_wanted(Settings(), cfg) is None
    both = conf(
        tmp_path,
        "notify_fifo /run/all.fifo\nvrrp_notify_fifo /run/vrrp.fifo\nvrrp_notify_fifo_script /bin/handler\n",
    )
    assert fifo_wanted(Settings(), both) == Path("/run/all.fifo")
    assert fifo_wanted(Settings(collectors=frozenset({"config"})), both) is None


# -- the merge: which view's state wins -----------------------------------------------------------------


def view(state: VrrpState | None, prio: int | None = None, **kw: object) -> InstanceView:
    return InstanceView(name="VI_1", interface="eth0", vrid=51, state=state, effective_priority=prio, **kw)  # type: ignore[arg-type]


def test_fifo_state_beats_a_dump_and_yields_to_a_live_dbus() -> None:
    dump = view(B, 100, priority=100, advert_int=1.0)
    fifo = view(M, 150)
    (merged,) = merge_views({"dumps": (dump,), "fifo": (fifo,)}) or ()
    assert (merged.state, merged.effective_priority, merged.advert_int) == (M, 150, 1.0)  # the dump's detail
    (merged,) = merge_views({"dumps": (dump,), "fifo": (fifo,)}, fifo_current=False) or ()
    assert merged.state is B  # a FIFO that is down is history
    (merged,) = merge_views({"dumps": (dump,), "dbus": (view(F),), "fifo": (fifo,)}) or ()
    assert merged.state is F  # D-Bus up: it vouches for the instance list and the state
    (merged,) = merge_views({"dumps": (dump,), "dbus": (view(F),), "fifo": (fifo,)}, dbus_current=False) or ()
    assert merged.state is M
    (alone,) = merge_views({"fifo": (fifo,)}) or ()
    assert alone == fifo


# -- the source on a real FIFO ---------------------------------------------------------------------------


CONFIG = KeepalivedConfig(
    instances=(
        ConfInstance(name="VI_1", interface="eth0", vrid=51),
        ConfInstance(name="VI_2", interface="eth0", vrid=52),
    )
)


def states(store: Store) -> dict[str, VrrpState | None]:
    return {v.name: v.state for v in store.snapshot().instances or ()}


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "notify.fifo"
    os.mkfifo(path, 0o644)
    return path


def writer(path: Path) -> int:
    """keepalived's way: O_RDWR | O_NONBLOCK, so it never blocks and is itself a (silent) reader."""
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def test_events_reach_the_store_as_they_are_written(fifo: Path) -> None:
    store = Store(hostname="n")
    store.set_config(CONFIG)
    changes: list[float] = []
    src = FifoSource(store, fifo, on_change=lambda: changes.append(time.monotonic()))
    w = writer(fifo)
    src.start()
    try:
        assert wait_until(lambda: (h := store.health("fifo")) is not None and h.up, 5)
        os.write(w, b'INSTANCE "VI_1" BACKUP 100\nINSTANCE "VI_2" MASTER 150\n')
        assert wait_until(lambda: states(store) == {"VI_1": B, "VI_2": M}, 5)
        t0 = time.monotonic()
        os.write(w, b'INSTANCE "VI_1" MASTER 100\n')
        assert wait_until(lambda: states(store)["VI_1"] is M, 5, step=0.001)
        print(f"FIFO line -> store: {(time.monotonic() - t0) * 1000:.2f} ms")
        assert dict(store.snapshot().transitions) == {"VI_1": 1}  # BACKUP -> MASTER counted once
        os.write(w, b'INSTANCE "VI_2" MASTER_PRIORITY 90\nINSTANCE "NOT_CONFIGURED" MASTER 1\n')
        assert wait_until(
            lambda: {v.name: v.effective_priority for v in store.snapshot().instances or ()}["VI_2"] == 90, 5
        )
        assert states(store) == {"VI_1": M, "VI_2": M}  # a priority event is no transition
        assert changes, "the dumps refresh hook was never called"
        # a line split across two writes is one line
        os.write(w, b'INSTANCE "VI_2" FA')
        time.sleep(0.05)
        os.write(w, b"ULT 90\n")
        assert wait_until(lambda: states(store)["VI_2"] is F, 5)
    finally:
        src.stop()
        os.close(w)


def test_a_short_backlog_is_used_and_a_full_one_is_not(fifo: Path) -> None:
    w = writer(fifo)
    try:
        os.write(w, b'INSTANCE "VI_1" BACKUP 100\nINSTANCE "VI_1" MASTER 100\n')
        store = Store(hostname="n")
        store.set_config(CONFIG)
        FifoSource(store, fifo).run_once()  # --once: what the pipe holds now
        assert states(store) == {"VI_1": M}
        assert store.snapshot().instances[0].last_transition is None  # type: ignore[index]
        line = b'INSTANCE "VI_2" MASTER 150\n'
        written = 0
        while written < BACKLOG_TRUSTED:
            written += os.write(w, line)
        store2 = Store(hostname="n")
        store2.set_config(CONFIG)
        src = FifoSource(store2, fifo)
        src.run_once()
        assert src.discarded >= BACKLOG_TRUSTED
        assert states(store2) == {}  # not trusted: lines may have been dropped after it
    finally:
        os.close(w)


def test_a_fifo_others_can_write_or_a_link_is_refused(tmp_path: Path, fifo: Path) -> None:
    os.chmod(fifo, 0o666)  # noqa: S103 - the attack under test
    store = Store(hostname="n")
    FifoSource(store, fifo).run_once()
    health = store.health("fifo")
    assert health is not None and not health.up
    assert "writable by group or others" in (health.error or "")
    os.chmod(fifo, 0o644)
    link = tmp_path / "link.fifo"
    link.symlink_to(fifo)
    FifoSource(store, link).run_once()
    health = store.health("fifo")
    assert health is not None and "not a FIFO" in (health.error or "")
    regular = tmp_path / "plain"
    regular.write_text('INSTANCE "VI_1" MASTER 1\n')
    assert check_fifo(os.lstat(regular), str(regular)) == f"{regular} is not a FIFO"
    st_fifo = os.lstat(fifo)
    assert stat.S_ISFIFO(st_fifo.st_mode)
    os.chown(fifo, 12345, -1)
    assert (
        check_fifo(os.lstat(fifo), str(fifo), own_uid=0)
        == f"{fifo} is owned by uid 12345, not root: not read"
    )


def test_keepalived_recreating_the_fifo_is_followed(fifo: Path) -> None:
    """keepalived unlinks a FIFO it created when it stops and makes a new one when it starts."""
    store = Store(hostname="n")
    store.set_config(CONFIG)
    src = FifoSource(store, fifo, interval=0.05)
    w = writer(fifo)
    src.start()
    try:
        os.write(w, b'INSTANCE "VI_1" MASTER 100\n')
        assert wait_until(lambda: states(store).get("VI_1") is M, 5)
        os.close(w)  # keepalived exits: the last writer goes (POLLHUP), then the FIFO goes
        fifo.unlink()
        assert wait_until(lambda: (h := store.health("fifo")) is not None and not h.up, 5)
        os.mkfifo(fifo, 0o644)
        w = writer(fifo)
        assert wait_until(lambda: (h := store.health("fifo")) is not None and h.up, 5)
        os.write(w, b'INSTANCE "VI_1" BACKUP 100\n')
        assert wait_until(lambda: states(store).get("VI_1") is B, 5)
    finally:
        src.stop()
        os.close(w)
