"""Atomic textfile output for node_exporter's textfile collector (`--once --textfile.directory`)."""

from __future__ import annotations

import contextlib
import os
import secrets

FILENAME = "keepalived.prom"


class TextfileError(Exception):
    """Writing the textfile failed; the message is one line and names the directory."""


def write_atomic(directory: str, content: bytes, filename: str = FILENAME) -> str:
    """Write `content` to DIRECTORY/FILENAME so a reader never sees a partial file.

    A temporary file is created in the same directory (O_EXCL|O_NOFOLLOW, relative to a directory
    fd; the directory itself may be a symlink to one), written, fsynced and renamed over the target;
    the directory is then fsynced. rename(2) replaces a symlink planted at the target name instead
    of following it, and
    the temporary name is random and created exclusively, so nothing is written through a link.
    node_exporter ignores files not ending in .prom, so the temporary file is never read.
    """
    try:
        # The directory may be a symlink to a directory (the operator chose the path); the files in it
        # are never opened through a link.
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TextfileError(f"textfile directory {directory}: {exc.strerror}") from None
    tmp = f".{filename}.{secrets.token_hex(6)}.tmp"
    try:
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=dfd,
            )
        except OSError as exc:
            raise TextfileError(f"cannot create a file in {directory}: {exc.strerror}") from None
        try:
            view = memoryview(content)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise TextfileError(f"cannot write {directory}/{filename}: {exc.strerror}") from None
        os.close(fd)
        try:
            os.rename(tmp, filename, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise TextfileError(f"cannot rename into {directory}/{filename}: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return os.path.join(directory, filename)
