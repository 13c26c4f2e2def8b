"""Entering a named network namespace (`--netns NAME`) for the threads started after it."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


class NetnsError(Exception):
    """A namespace that cannot be entered; the message is one line for the operator."""


def current_inode() -> int:
    """The inode of the calling thread's network namespace (compare with /proc/PID/ns/net)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def netns_inode(name: str) -> int:
    return os.stat(_path(name)).st_ino


def enter(name: str) -> None:
    """Move the calling thread into network namespace NAME (as `ip netns exec` names it).

    setns(2) acts on the calling thread; threads it starts afterwards inherit the namespace, sockets
    already open keep theirs. The daemon binds its listening socket first and then calls this, so it
    serves on the host's network while every source reads the watched namespace.
    """
    path = _path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(
            f"network namespace {name!r} does not exist (no {path}; see `ip netns list`)"
        ) from None
    except PermissionError:
        raise NetnsError(f"cannot open network namespace {name!r}: needs root or CAP_SYS_ADMIN") from None
    try:
        enter_fd(fd, repr(name))
    finally:
        os.close(fd)


def enter_fd(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace open at `fd` (/proc/PID/ns/net, or a
    /run/netns file); `what` names it in the error. Used by `--discover`'s one I/O thread, which opens
    each namespace's sockets inside it and comes back."""
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"cannot enter network namespace {what}: {os.strerror(err)} (needs CAP_SYS_ADMIN)")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)  # find_library runs ldconfig: once


def _path(name: str) -> str:
    if not name or "/" in name or name in {".", ".."}:
        raise NetnsError(f"invalid network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)
