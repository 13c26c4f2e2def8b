"""Native thread names: what /proc/PID/task/TID/comm, top -H and ps -L show for each thread.

Python 3.11 keeps `threading.Thread.name` to itself; every thread the kernel sees is called after the
process ("python3"), so per-thread CPU from /proc cannot say which thread is which. prctl(PR_SET_NAME)
names the calling thread (at most 15 bytes, the kernel's TASK_COMM_LEN less the NUL).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from types import FrameType
from typing import Any

PR_SET_NAME = 15
COMM_LEN = 15

_libc: Any = None


def set_native_name(name: str) -> bool:
    """Name the calling thread for the kernel; False where prctl is not there (not Linux)."""
    global _libc
    if _libc is None:
        path = ctypes.util.find_library("c")
        if path is None:
            return False
        _libc = ctypes.CDLL(path, use_errno=True)
    raw = name.encode("ascii", "replace")[:COMM_LEN]
    return int(_libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)) == 0


def _name_once(_frame: FrameType, _event: str, _arg: Any) -> None:
    # threading.setprofile's hook runs in each new thread before its run(): name it, then step aside
    # so the thread runs without a profile function.
    sys.setprofile(None)
    set_native_name(threading.current_thread().name)


def name_threads() -> None:
    """From now on, every thread started with `threading` carries its Python name in the kernel."""
    threading.setprofile(_name_once)
