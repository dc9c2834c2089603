"""Reading the operator's own files (policy, ledger, cached reports, a DMAR table to decode) and
telling regular files from the rest.

A FIFO opened for reading blocks until a writer comes, a character device never ends: a file
vtdlud reads off the live kernel's own trees is opened ``O_NONBLOCK``, checked with ``fstat``,
and refused unless it is a regular file; then it is read only up to its cap
(:mod:`vtdlud.host.limits`).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from vtdlud.host.limits import InputTooLarge

if TYPE_CHECKING:  # pathlib is imported by the callers that make paths
    from pathlib import Path

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class NotRegularFile(OSError):
    """The file is a FIFO, a device, a socket or a directory (``strerror`` says which)."""

    def __init__(self, mode: int, path: str) -> None:
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        err = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
        super().__init__(err, f"{kind}, not a regular file", path)


def check_regular(fd: int, path: str) -> os.stat_result:
    """``fstat(fd)``; :class:`NotRegularFile` unless it is a regular file."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(st.st_mode, path)
    return st


def read_fd_capped(fd: int, cap: int, path: str) -> bytes:
    """Read ``fd`` to EOF; more than ``cap`` bytes raises :class:`InputTooLarge`."""
    chunks: list[bytes] = []
    got = 0
    while got <= cap:
        chunk = os.read(fd, min(cap + 1 - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got > cap:
        raise InputTooLarge(cap, path)
    return b"".join(chunks)


NULL_DEVICE = os.makedev(1, 3)  # /dev/null


def read_regular(path: str | Path, cap: int, *, allow_null: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (links followed), at most ``cap`` of them.
    ``allow_null``: the null device reads as empty (``--config /dev/null``: no settings).
    Raises OSError: :class:`NotRegularFile`, :class:`InputTooLarge` or the open's own."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if allow_null and stat.S_ISCHR(st.st_mode) and st.st_rdev == NULL_DEVICE:
            return b""
        check_regular(fd, str(path))
        return read_fd_capped(fd, cap, str(path))
    finally:
        os.close(fd)
