"""Reading files: the operator's own (policy, ledger, cached reports, a DMAR table to decode),
telling regular files from the rest, and the low-level reads :class:`vtdlud.host.root.HostRoot`
makes (a sysfs attribute in one read(2), a file read where its decoder asks: :class:`PreadFile`).

A FIFO opened for reading blocks until a writer comes, a character device never ends: a file
vtdlud reads off the live kernel's own trees is opened ``O_NONBLOCK``, checked with ``fstat``,
and refused unless it is a regular file; then it is read only up to its cap
(:mod:`vtdlud.host.limits`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
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


def read_fd(fd: int, limit: int | None) -> bytes:
    """Read to EOF (or ``limit`` bytes) with plain read(2) calls: no file object per input."""
    want = 65536 if limit is None else limit
    chunk = os.read(fd, want)
    if not chunk or (limit is not None and len(chunk) >= limit):
        return chunk
    chunks = [chunk]
    got = len(chunk)
    while limit is None or got < limit:
        chunk = os.read(fd, 65536 if limit is None else limit - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_capped(fd: int, cap: int | None, limit: int | None, path: str) -> bytes:
    """Read to EOF, or the first ``limit`` bytes; more than ``cap`` raises InputTooLarge."""
    if cap is None or (limit is not None and limit <= cap):
        return read_fd(fd, limit)
    data = read_fd(fd, cap + 1)
    if len(data) > cap:
        raise InputTooLarge(cap, path)
    return data


def read_attribute(fd: int, cap: int | None, path: str) -> bytes:
    """A sysfs attribute in one read(2) where it fits: a text attribute is a single seq_file
    record of at most PAGE_SIZE (sysfs_kf_seq_show) that the first read returns whole, a binary
    one (``config``) gives min(count, size - pos), and a bundle's regular file reads short only at
    EOF; so a read shorter than asked is the end.  Not for debugfs dumps: a seq_file of many
    records returns one buffer-full per read, short but not at the end."""
    chunk = os.read(fd, 65536)
    if len(chunk) < 65536:
        return chunk
    if cap is None:
        return chunk + read_fd(fd, None)
    data = chunk + read_fd(fd, max(cap + 1 - len(chunk), 1))
    if len(data) > cap:
        raise InputTooLarge(cap, path)
    return data


def pure_path(path: str) -> str:
    """``path`` as ``str(PurePosixPath(path))`` spells it (no pathlib import): empty and "."
    components and a trailing slash dropped, ".." kept, two leading slashes kept."""
    if not path:
        return "."
    lead = "/" if path.startswith("/") else ""
    if path.startswith("//") and not path.startswith("///"):
        lead = "//"
    body = "/".join(p for p in path.split("/") if p and p != ".")
    return lead + body if lead or body else "."


class PreadFile:
    """A file read where its decoder asks, with pread(2) at the offsets, never whole: a PCI
    device's ``config``, where each dword is a configuration cycle to the device (a non-posted
    ECAM read; a VM exit when the host is itself a guest), so 4 KiB read whole is 1,024 of them.

    ``size`` is fstat's: the kernel sizes ``config`` at the device's config space (256 bytes, or
    4,096 for PCIe; ``pci_dev_config_attr_bin_size()``), but an unprivileged reader gets only the
    64-byte header (``pci_read_config()``), so on the live kernel :meth:`holds` also reads the
    last byte it asks about.  Off the live root the file's size is its length."""

    __slots__ = ("bytes_read", "fd", "live", "size")

    def __init__(self, fd: int, size: int, live: bool) -> None:
        self.fd, self.size, self.live = fd, size, live
        self.bytes_read = 0

    def read(self, offset: int, count: int) -> bytes:
        data = os.pread(self.fd, count, offset)
        self.bytes_read += len(data)
        return data

    def holds(self, size: int) -> bool:
        if self.size < size:
            return False
        return not self.live or len(self.read(size - 1, 1)) == 1


PreadDecoder = Callable[[PreadFile], object]
