"""The daemon's threads carry their Python names in the kernel (/proc/PID/task/TID/comm)."""

from __future__ import annotations

import threading
from pathlib import Path

from ka_exporter.linux.threadname import COMM_LEN, name_threads, set_native_name


def comm(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().rstrip("\n")


def test_threads_started_after_name_threads_carry_their_names() -> None:
    name_threads()
    try:
        seen: dict[str, str] = {}
        started = threading.Event()

        def body() -> None:
            seen["comm"] = comm(threading.get_native_id())
            started.set()

        t = threading.Thread(target=body, name="src-wire")
        t.start()
        t.join(5)
        assert started.is_set()
        assert seen["comm"] == "src-wire"
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]


def test_long_names_are_cut_to_the_kernels_length() -> None:
    seen: dict[str, str] = {}

    def body() -> None:
        assert set_native_name("watchdog-hook-and-more")
        seen["comm"] = comm(threading.get_native_id())

    t = threading.Thread(target=body)
    t.start()
    t.join(5)
    assert seen["comm"] == "watchdog-hook-and-more"[:COMM_LEN]
