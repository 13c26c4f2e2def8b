"""Control characters from keepalived.conf, keepalived or the wire never reach a terminal or the page raw."""

from __future__ import annotations

import subprocess

import pytest

from ka_exporter.outputs.views import printable
from tests.conftest import EXPORTER, scrape

EVIL = "VI_\x1b[2J\x1b]0;pwned\x07X\u202eY\u200b"
CONF = (
    f"vrrp_instance {EVIL} {{\n  interface lo\n  virtual_router_id 51\n  priority 100\n"
    "  virtual_ipaddress {\n    192.0.2.51/32 dev lo\n  }\n}\n"
)


def conf_args(tmp_path) -> list[str]:
    """The evil keepalived.conf, and no source that needs keepalived."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text(CONF)
    return [
        *("--keepalived.config", str(conf), "--keepalived.pid-file", str(tmp_path / "none.pid")),
        *("--no-collector.wire", "--no-collector.l2", "--no-collector.dbus", "--no-collector.dumps"),
    ]


def test_printable_escapes_controls_and_invisible_format_characters():
    assert printable("VI_1 eth0.10 fe80::1") == "VI_1 eth0.10 fe80::1"  # the usual untouched
    assert printable(EVIL) == "VI_\\x1b[2J\\x1b]0;pwned\\x07X\\u202eY\\u200b"
    assert printable("a\nb\rc\td\x7f\x9b") == "a\\x0ab\\x0dc\\x09d\\x7f\\x9b"
    assert printable("café ✓") == "café ✓"  # printable non-ASCII stays


@pytest.mark.parametrize("command", ["status", "check"])
def test_status_and_check_print_no_escape_sequence(tmp_path, command):
    r = subprocess.run(
        [*EXPORTER, *conf_args(tmp_path), command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout
    for ch in ("\x1b", "\x07", "\u202e", "\u200b"):
        assert ch not in out, (command, out)
        assert ch not in r.stderr
    if command == "status":
        assert "VI_\\x1b[2J\\x1b]0;pwned\\x07X\\u202eY\\u200b" in out  # named, visibly
    else:
        assert len(out.splitlines()) == 1 and out.startswith("KEEPALIVED CRITICAL - ")


def test_the_page_shows_the_name_escaped(tmp_path, exporter_factory):
    exp = exporter_factory(*conf_args(tmp_path))
    page = scrape(f"http://127.0.0.1:{exp.port}/")
    for ch in ("\x1b", "\x07", "\u202e", "\u200b"):
        assert ch not in page
    assert "VI_\\x1b[2J\\x1b]0;pwned\\x07X\\u202eY\\u200b" in page


def test_a_stopped_keepalived_is_said_in_status_and_check():
    from ka_exporter.model import ProcessInfo, Snapshot
    from ka_exporter.outputs.views import check_result, status_table
    from ka_exporter.verdicts.conditions import evaluate

    frozen = Snapshot(1.0, "node-a", process=ProcessInfo(running=True, pid=42, stopped_pids=(42, 43)))
    conds = evaluate(frozen)
    assert [c.kind for c in conds] == ["keepalived_frozen"]
    assert (
        status_table(frozen, conds).splitlines()[0]
        == "node-a: keepalived running (pid 42) but STOPPED (pid 42, 43)"
    )
    code, line = check_result(frozen, conds)
    assert code == 2 and "is stopped (pid 42, 43 in state T)" in line
    running = Snapshot(1.0, "node-a", process=ProcessInfo(running=True, pid=42))
    assert evaluate(running) == []  # the verdict stays 0 for a keepalived that runs
