"""Physical memory through ``/proc/kcore`` (or a core that :mod:`vtdlud.host.corewriter` wrote).

:meth:`PhysMem.open` opens ``proc/kcore`` under a :class:`HostRoot` (root-relative, confined,
``root.faults`` honoured), reads the ELF header and program header table, and builds the RAM
layout (:mod:`vtdlud.parse.kcore`).  The file is never recorded in ``root.contents``: the live
one is a 128 TiB sparse file that must never be packed.

:meth:`PhysMem.read` returns physical bytes: it ``os.pread``s whole 4 KiB pages at
``p_offset + (P - p_paddr)`` and keeps them, so a :class:`PhysMem` is one consistent view for
one snapshot (a page is read once) and :meth:`PhysMem.captured_pages` is exactly what it read
(``collect --memory`` writes those pages into a replay core).  Every read is bounded: at most
:attr:`KcoreLimits.max_read_bytes` per call and :attr:`KcoreLimits.max_total_bytes` read from
the file in all; an address outside RAM, a page not fully inside RAM, an I/O error, a short read
(truncated core) or a spent budget raise :class:`PhysReadError` — never a hang.

Fault injection: a :class:`~vtdlud.host.root.Fault` on ``proc/kcore`` with ``on="any"`` or
``"read"`` fails the open; one with ``on="pread"`` lets the open succeed and fails every page
read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from vtdlud.errors import ParseError, PhysReadError
from vtdlud.frozen import frozen
from vtdlud.host.root import FaultPlan, HostRoot, describe_oserror
from vtdlud.model.registers import VTD_PAGE_MASK, VTD_PAGE_SIZE
from vtdlud.model.snapshot import KCORE_MISSING_LIVE, KCORE_MISSING_ROOT
from vtdlud.model.tiers import TierStatus
from vtdlud.parse.kcore import (
    EHDR_SIZE,
    MAX_HEADER_BYTES,
    U64_LIMIT,
    FileRange,
    KcoreLayout,
    header_span,
    parse_kcore_layout,
)

if TYPE_CHECKING:  # pathlib is imported by the callers that make paths
    from pathlib import Path

__all__ = [
    "PROC_KCORE",
    "KcoreLimits",
    "KcoreOpenError",
    "PhysMem",
    "PhysReadError",
    "kcore_open_reason",
]

PROC_KCORE = "proc/kcore"


@frozen
class KcoreLimits:
    max_read_bytes: int = 1 << 20  # one read() call
    max_total_bytes: int = 64 << 20  # everything one PhysMem reads from the file
    max_probe_bytes: int = 128 << 20  # uncached probes (the signature scan: ~56 B per page)


class KcoreOpenError(Exception):
    """``/proc/kcore`` cannot be opened; ``status`` and ``reason`` are those of the kcore tier."""

    def __init__(self, status: TierStatus, reason: str, err: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.errno = err


def kcore_open_reason(exc: OSError, lockdown: str | None, *, is_live: bool) -> KcoreOpenError:
    """The tier status and reason for an OSError from opening ``/proc/kcore``."""
    match exc.errno:
        case errno.ENOENT:
            reason = KCORE_MISSING_LIVE if is_live else KCORE_MISSING_ROOT
            return KcoreOpenError(TierStatus.UNAVAILABLE, reason, exc.errno)
        case errno.EPERM if lockdown not in (None, "none"):
            reason = f"kernel lockdown ({lockdown}) blocks /proc/kcore"
        case errno.EPERM:
            reason = "operation not permitted: /proc/kcore needs CAP_SYS_RAWIO"
        case errno.EACCES:
            reason = (
                "permission denied: /proc/kcore needs root "
                "(ProtectKernelTunables= hides it in a sandboxed unit)"
            )
        case _:
            reason = f"{describe_oserror(exc)} on /proc/kcore"
    return KcoreOpenError(TierStatus.DENIED, reason, exc.errno)


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``; fewer only at end of file."""
    first = os.pread(fd, size, offset)
    if len(first) == size or not first:
        return first
    parts = [first]
    got = len(first)
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class PhysMem:
    """Bounded, recorded reads of physical memory from an open ELF core (see the module doc)."""

    def __init__(
        self,
        fd: int,
        layout: KcoreLayout,
        *,
        limits: KcoreLimits | None = None,
        faults: FaultPlan | None = None,
        name: str = PROC_KCORE,
    ) -> None:
        self._fd: int | None = fd
        self.layout = layout
        self.limits = limits or KcoreLimits()
        self.name = name
        self._faults = faults or FaultPlan()
        self._pages: dict[int, bytes] = {}
        self.bytes_read = 0  # bytes pread from the file
        self.probe_bytes = 0  # bytes read by peek()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: HostRoot,
        *,
        lockdown: str | None = None,
        limits: KcoreLimits | None = None,
    ) -> PhysMem:
        """Open ``proc/kcore`` under ``root``.

        Raises :class:`KcoreOpenError` when the file cannot be opened (the kcore tier's status
        and reason) and :class:`ParseError` when it is not an x86-64 ELF64 core.
        """
        try:
            root.faults.check(PROC_KCORE, "read")
            real = root.resolve(PROC_KCORE)
            root.faults.check(real, "read")
            # O_NONBLOCK: under a directory root proc/kcore may be a FIFO (_from_fd refuses it)
            fd = os.open(
                os.path.join(root.root_name, real), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
            )
        except OSError as exc:
            raise kcore_open_reason(exc, lockdown, is_live=root.is_live) from exc
        return cls._from_fd(fd, limits, root.faults, f"/{PROC_KCORE}")

    @classmethod
    def open_file(cls, path: str | Path, *, limits: KcoreLimits | None = None) -> PhysMem:
        """Open an ELF core by path (a replayed ``collect --memory`` core, tests).  Raises
        OSError and ParseError."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        return cls._from_fd(fd, limits, None, str(path))

    @classmethod
    def _from_fd(
        cls, fd: int, limits: KcoreLimits | None, faults: FaultPlan | None, name: str
    ) -> PhysMem:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KcoreOpenError(TierStatus.UNAVAILABLE, f"{name} is not a regular file")
            try:
                head = _pread_exact(fd, EHDR_SIZE, 0)
                span = header_span(head)
                if span > MAX_HEADER_BYTES:
                    raise ParseError(
                        f"program header table ends at {span:#x}, past the {MAX_HEADER_BYTES} "
                        "header bytes read",
                        offset=32,
                    )
                data = head + _pread_exact(fd, span - len(head), len(head))
            except OSError as exc:
                raise KcoreOpenError(
                    TierStatus.DENIED, f"{describe_oserror(exc)} reading {name}", exc.errno
                ) from exc
            layout = parse_kcore_layout(data)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, layout, limits=limits, faults=faults, name=name)

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PhysMem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    @property
    def pages_read(self) -> frozenset[int]:
        """Physical addresses of every page read so far."""
        return frozenset(self._pages)

    def captured_pages(self) -> Mapping[int, bytes]:
        """Every page read so far, by physical address (4 KiB each)."""
        return MappingProxyType(self._pages)

    def read(self, addr: int, size: int) -> bytes:
        """Exactly ``size`` bytes of physical memory at ``addr``, or :class:`PhysReadError`."""
        if self._fd is None:
            raise PhysReadError(addr, size, f"{self.name} is closed")
        if size <= 0 or addr < 0 or addr + size > U64_LIMIT:
            raise PhysReadError(addr, size, "not a valid physical range", outside_ram=True)
        if size > self.limits.max_read_bytes:
            raise PhysReadError(
                addr, size, f"more than the {self.limits.max_read_bytes} bytes allowed per read"
            )
        first = addr & VTD_PAGE_MASK
        if addr + size <= first + VTD_PAGE_SIZE:  # inside one page: every table read
            page = self._pages.get(first)
            if page is None:
                page = self._fetch_page(first, addr, size)
            return page if size == VTD_PAGE_SIZE else page[addr - first : addr - first + size]
        end = (addr + size + VTD_PAGE_SIZE - 1) & VTD_PAGE_MASK
        run_start: int | None = None
        for page_addr in range(first, end + VTD_PAGE_SIZE, VTD_PAGE_SIZE):
            if page_addr < end and page_addr not in self._pages:
                if run_start is None:
                    run_start = page_addr
                continue
            if run_start is not None:
                self._fetch(run_start, page_addr - run_start, addr, size)
                run_start = None
        data = b"".join(self._pages[p] for p in range(first, end, VTD_PAGE_SIZE))
        return data[addr - first : addr - first + size]

    def peek(self, addr: int, size: int) -> bytes:
        """A small uncached read inside one page (the signature scan's probe).

        Not recorded in :meth:`captured_pages` and charged to its own budget, so probing a
        million preserved pages neither fills the page store nor spends the read budget."""
        if self._fd is None:
            raise PhysReadError(addr, size, f"{self.name} is closed")
        if size <= 0 or addr < 0 or (addr & VTD_PAGE_MASK) != ((addr + size - 1) & VTD_PAGE_MASK):
            raise PhysReadError(addr, size, "a probe must stay inside one page")
        page = self._pages.get(addr & VTD_PAGE_MASK)
        if page is not None:
            off = addr & (VTD_PAGE_SIZE - 1)
            return page[off : off + size]
        if self.probe_bytes + size > self.limits.max_probe_bytes:
            raise PhysReadError(
                addr, size, f"the probe budget of {self.limits.max_probe_bytes} bytes is spent"
            )
        chunk = self._pread_direct(addr, size, addr, size)
        if chunk is None:
            chunk = self._pread(addr, size, addr, size)
        self.probe_bytes += len(chunk)
        return chunk

    def _pread(self, start: int, length: int, addr: int, size: int) -> bytes:
        """Physical ``[start, start + length)`` from the file; errors name the caller's
        ``addr``/``size``.  PhysReadError(outside_ram) when a byte is in no RAM segment."""
        return self._pread_ranges(self.layout.translate(start, length), addr, size)

    def _pread_ranges(self, ranges: tuple[FileRange, ...], addr: int, size: int) -> bytes:
        assert self._fd is not None
        parts: list[bytes] = []
        for fr in ranges:
            try:
                self._faults.check(PROC_KCORE, "pread")
                chunk = _pread_exact(self._fd, fr.size, fr.offset)
            except OSError as exc:
                raise PhysReadError(addr, size, describe_oserror(exc)) from exc
            if len(chunk) != fr.size:
                raise PhysReadError(
                    addr,
                    size,
                    f"{self.name} ends at offset {fr.offset + len(chunk):#x} inside the "
                    f"segment holding physical {fr.paddr:#x} (truncated core)",
                )
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _pread_direct(self, start: int, length: int, addr: int, size: int) -> bytes | None:
        """Physical ``[start, start + length)`` in one pread, when one segment holds it and no
        fault is planned; None when that does not apply or the read comes back short (then
        the general path reads it again and says why)."""
        assert self._fd is not None
        offset = self.layout.file_offset(start, length)
        if offset is None or self._faults.faults:
            return None
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise PhysReadError(addr, size, describe_oserror(exc)) from exc
        return data if len(data) == length else None

    def _fetch_page(self, page: int, addr: int, size: int) -> bytes:
        """The page at ``page`` into the page store: :meth:`_fetch` of one page, the common
        case in one pread."""
        if self.bytes_read + VTD_PAGE_SIZE <= self.limits.max_total_bytes:
            data = self._pread_direct(page, VTD_PAGE_SIZE, addr, size)
            if data is not None:
                self.bytes_read += VTD_PAGE_SIZE
                self._pages[page] = data
                return data
        self._fetch(page, VTD_PAGE_SIZE, addr, size)
        return self._pages[page]

    def _fetch(self, start: int, length: int, addr: int, size: int) -> None:
        """Read the pages ``[start, start + length)`` into the page store."""
        ranges = self.layout.translate(start, length)  # PhysReadError(outside_ram) first
        if self.bytes_read + length > self.limits.max_total_bytes:
            raise PhysReadError(
                addr,
                size,
                f"the read budget of {self.limits.max_total_bytes} bytes is spent",
            )
        data = self._pread_ranges(ranges, addr, size)
        self.bytes_read += len(data)
        if length == VTD_PAGE_SIZE:
            self._pages[start] = data
            return
        for i in range(0, length, VTD_PAGE_SIZE):
            self._pages[start + i] = data[i : i + VTD_PAGE_SIZE]
