"""Waiting on descriptors with poll(2): select() fails on a descriptor above 1023 (FD_SETSIZE).

With a high LimitNOFILE and many client connections, a netlink or D-Bus socket opened later gets a
number past 1023, and `select.select` raises `ValueError: filedescriptor out of range`.
"""

from __future__ import annotations

import errno
import math
import select
from collections.abc import Iterable
from typing import Protocol


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


Fd = int | _HasFileno


def _fd(item: Fd) -> int:
    fd = item if isinstance(item, int) else item.fileno()
    if fd < 0:
        raise ValueError("file descriptor cannot be a negative integer (closed?)")
    return fd


def _ms(timeout: float | None) -> int:
    return -1 if timeout is None else max(0, math.ceil(timeout * 1000))


def readable(items: Iterable[Fd], timeout: float | None) -> list[int]:
    """The descriptors among `items` that are readable (or hung up / in error) within `timeout`.

    OSError(EBADF) for a descriptor that is not open, as select() does; ValueError for a negative one.
    """
    poller = select.poll()
    for item in items:
        poller.register(_fd(item), select.POLLIN | select.POLLPRI)
    ready = []
    for fd, mask in poller.poll(_ms(timeout)):
        if mask & select.POLLNVAL:
            raise OSError(errno.EBADF, "Bad file descriptor")
        ready.append(fd)
    return ready


def writable(item: Fd, timeout: float | None) -> bool:
    """Is `item` writable (or in error, so that the next write says why) within `timeout`?"""
    poller = select.poll()
    poller.register(_fd(item), select.POLLOUT)
    events = poller.poll(_ms(timeout))
    if any(mask & select.POLLNVAL for _, mask in events):
        raise OSError(errno.EBADF, "Bad file descriptor")
    return bool(events)
