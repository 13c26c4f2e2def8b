"""Planted dumps are refused: a symlink, a file another user owns, a 500 MB file, a file still being
written. The real exporter (`--once`, reading the directory as a support bundle) says so in one logfmt
line, the other sources go on and its memory stays bounded."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ka_exporter.sources.dumps import DumpSource
from ka_exporter.store import Store
from tests.conftest import EXPORTER, FIXTURES, parse_metrics, sample

FIXTURE = FIXTURES / "keepalived-2.2.7-debian" / "node-a"
STRANGER = 4242

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (files owned by another user)")


def bundle(tmp_path: Path) -> Path:
    d = tmp_path / "dumps"
    d.mkdir()
    for f in FIXTURE.iterdir():
        if f.name in ("keepalived.data", "keepalived.stats", "keepalived.json"):
            shutil.copy(f, d / f.name)
    assert (d / "keepalived.data").exists()
    return d


def once(d: Path) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], list[str], int]:
    """(metrics, stderr lines, max RSS in KiB) of one `--once` run reading the dumps in `d`."""
    args = [
        *EXPORTER,
        "--once",
        "--no-collector.config",
        "--no-collector.wire",
        "--no-collector.l2",
        "--no-collector.dbus",
        "--no-keepalived.signal",
        "--keepalived.dumps-dir",
        str(d),
        "--keepalived.pid-file",
        str(d / "none.pid"),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read())),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read())),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    for t in readers:
        t.join(30)
    lines = [x for x in err[0].decode(errors="replace").splitlines() if x.strip()]
    return parse_metrics(out[0].decode()), lines, usage.ru_maxrss


@pytest.mark.parametrize("attack", ["symlink", "foreign", "huge", "fifo"])
def test_planted_dumps_are_not_read_one_line_each_and_the_rest_goes_on(tmp_path, attack):
    if attack == "foreign" and os.geteuid() != 0:
        pytest.skip("needs root to own a file as another user")
    d = bundle(tmp_path)
    data = d / "keepalived.data"
    secret = tmp_path / "secret"
    if attack == "symlink":
        secret.write_text("Name = ROOT_ONLY_SECRET\n")
        secret.chmod(0o600)
        data.unlink()
        data.symlink_to(secret)
    elif attack == "foreign":
        os.chown(data, STRANGER, STRANGER)
    elif attack == "huge":
        with open(data, "r+b") as f:
            f.truncate(500 * 1024 * 1024)  # sparse: costs no disk, would cost 500 MB of memory to read
    else:
        data.unlink()
        os.mkfifo(data)  # a reader that opened it blocking would hang for ever
        os.utime(data)
    m, lines, maxrss_kib = once(d)
    assert sample(m, "ka_exporter_source_up", source="dumps") == 0.0
    assert sample(m, "ka_exporter_source_up", source="process") == 1.0
    assert sample(m, "ka_exporter_source_up", source="vips") == 1.0
    assert not any(k[0] == "keepalived_vrrp_state" for k in m), "a refused dump's instances were exported"
    assert "ROOT_ONLY_SECRET" not in repr(m)
    for line in lines:
        assert line.startswith("ts="), f"unformatted line on stderr: {line!r}"
    about = [x for x in lines if "keepalived.data" in x]
    assert len(about) == 1, lines
    want = {
        "symlink": "is a symlink: not following it",
        "foreign": f"owned by uid {STRANGER}, not keepalived's user",
        "huge": "over the 67108864-byte cap: not reading it",
        "fifo": "is not a regular file",
    }[attack]
    assert want in about[0]
    assert maxrss_kib < 200 * 1024, f"max RSS {maxrss_kib} KiB"
    print(f"{attack}: refused; max RSS {maxrss_kib / 1024:.0f} MiB")


def test_the_same_bundle_unplanted_is_read(tmp_path):
    """The control: without a planted file the same run exports the instances (so the refusals above
    are the rules at work, not a bundle that never worked)."""
    m, lines, _ = once(bundle(tmp_path))
    assert sample(m, "ka_exporter_source_up", source="dumps") == 1.0, lines
    assert any(k[0] == "keepalived_vrrp_state" for k in m)


def test_a_dump_created_before_it_is_written_is_waited_for(tmp_path):
    """keepalived creates the file, then writes it: the empty file's close (IN_CLOSE_WRITE) is not the
    dump. The writer here stands in for a slow keepalived (open+close empty, content 0.3 s later),
    the timing a loaded host gives; the wait and the read are the source's own."""
    src_dir = bundle(tmp_path)
    d = tmp_path / "live"
    d.mkdir()
    later: list[threading.Thread] = []

    def slow_write(name: str) -> None:
        (d / name).write_bytes(b"")  # created and closed, nothing in it yet
        time.sleep(0.3)
        (d / name).write_bytes((src_dir / name).read_bytes())

    def requester(kind: str) -> bool:
        t = threading.Thread(target=slow_write, args=(f"keepalived.{kind}",))
        t.start()
        later.append(t)
        return True

    store = Store()
    DumpSource(store, d, d / "none.pid", True, 15.0, requester=requester, timeout=10.0).run_once()
    for t in later:
        t.join(10)
    h = store.health("dumps")
    assert h is not None and h.up, h
    assert store.snapshot().instances, "the complete dump was not read"


@needs_root
def test_a_keepalived_of_another_user_named_by_the_pid_file_is_not_signalled(world_dir):
    from tests.test_process_trust import STRANGER as OTHER
    from tests.test_process_trust import _end, fake_keepalived

    fake = fake_keepalived(world_dir / "bin", OTHER)
    try:
        (world_dir / "keepalived.pid").write_text(f"{fake.pid}\n")
        store = Store()
        src = DumpSource(store, world_dir, world_dir / "keepalived.pid", True, 15.0, timeout=0.5)
        src.run_once()
        h = store.health("dumps")
        assert h is not None and not h.up
        assert h.error is not None and f"run by uid {OTHER}, not root: not signalling it" in h.error
        assert src.signals_sent == 0
        time.sleep(0.2)
        assert fake.poll() is None  # SIGUSR1 would have killed the `sleep` it really is
    finally:
        _end(fake)


@needs_root
@pytest.mark.lab
def test_real_keepalived_with_a_symlink_planted_where_it_writes(tmp_path):
    """Signal mode against a real keepalived: a symlink planted at TMPDIR/keepalived.data is neither
    followed nor waited on; once it is removed, keepalived's own dump is read again."""
    from ka_exporter.lab import Lab

    secret = tmp_path / "secret"
    secret.write_text("VRRP Instance = ROOT_ONLY_SECRET\n")
    secret.chmod(0o600)
    with Lab(profile="fast", nodes=2, dbus=False) as lab:
        a = lab.nodes["a"]
        store = Store()
        src = DumpSource(store, None, a.pidfile, True, 15.0, timeout=2.0)
        src.run_once()
        h = store.health("dumps")
        assert h is not None and h.up, h
        planted = a.tmpdir / "keepalived.data"
        planted.unlink()
        planted.symlink_to(secret)
        sent = src.signals_sent
        src.run_once()
        h = store.health("dumps")
        assert h is not None and not h.up
        # (seen through /proc/PID/root: `ip netns exec` gives keepalived its own mount namespace)
        want = f"{planted} is a symlink: not following it (remove it so keepalived can write there)"
        assert h.error is not None and h.error.endswith(want), h.error
        assert src.signals_sent == sent  # refused before asking keepalived for anything
        assert all("ROOT_ONLY_SECRET" not in v.name for v in store.snapshot().instances or ())
        assert secret.read_text() == "VRRP Instance = ROOT_ONLY_SECRET\n"  # keepalived did not write it
        planted.unlink()
        src.run_once()
        h = store.health("dumps")
        assert h is not None and h.up, h
        assert store.snapshot().instances
