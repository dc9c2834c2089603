"""Simulated physical memory: a page allocator over a few RAM ranges, pages as bytearrays.

Only pages the model allocated hold bytes; reading any other RAM page gives zeros, as reading an
unused page through ``/proc/kcore`` would, and reading outside every RAM range raises
:class:`OutsideRam`.  The allocator is deterministic for a given seed: it starts at a seeded page
of the first range and hands out the next free page, leaving small seeded gaps, which is roughly
what the kernel's page allocator shows in the real captures (tables a few pages apart).

``preserved`` is the set of pages KHO was asked to preserve (``kho_preserve_folio``); at kexec
everything else is lost (:meth:`PhysMemory.keep_only`).  ``reserved`` pages are never handed out
by :meth:`alloc` but can be taken with :meth:`claim`: a caller that places tables at known
addresses (the capture replay) reserves them first so that no other allocation lands there.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Mapping, Sequence

from vtdlud.errors import ParseError

PAGE_SIZE = 4096
PAGE_MASK = ~(PAGE_SIZE - 1)
MAX_GAP_PAGES = 3

# A 1 GiB guest: RAM from 1 MiB up (the low 1 MiB is firmware and legacy holes).
DEFAULT_RAM: tuple[tuple[int, int], ...] = ((0x0010_0000, 0x3FF0_0000),)


class OutsideRam(ValueError):
    """A physical access that falls outside every RAM range."""


class OutOfMemory(RuntimeError):
    """No free page left in any RAM range."""


def page_of(addr: int) -> int:
    return addr & PAGE_MASK


class PhysMemory:
    """Physical memory of one simulated machine (it survives kexec, see :meth:`keep_only`)."""

    def __init__(self, ranges: Sequence[tuple[int, int]] = DEFAULT_RAM, *, seed: int = 0) -> None:
        if not ranges:
            raise ValueError("at least one RAM range is needed")
        for start, size in ranges:
            if start % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
                raise ValueError(f"RAM range {start:#x}+{size:#x} is not page aligned")
        self.ranges = tuple(sorted(ranges))
        self._rng = random.Random(seed)
        self._pages: dict[int, bytearray] = {}
        self.reserved: set[int] = set()
        self.preserved: set[int] = set()
        first_start, first_size = self.ranges[0]
        span = max(1, first_size // PAGE_SIZE // 4)
        self._cursor = first_start + self._rng.randrange(span) * PAGE_SIZE

    # -- layout ------------------------------------------------------------------------------
    def in_ram(self, addr: int, size: int = 1) -> bool:
        """Whether ``[addr, addr + size)`` lies inside one RAM range."""
        return any(start <= addr and addr + size <= start + length for start, length in self.ranges)

    @property
    def ram_end(self) -> int:
        start, size = self.ranges[-1]
        return start + size

    # -- allocation --------------------------------------------------------------------------
    def _free(self, addr: int) -> bool:
        return addr not in self._pages and addr not in self.reserved and self.in_ram(addr)

    def alloc(self) -> int:
        """A fresh zeroed page (the next free one after the cursor, after a seeded gap)."""
        addr = self._cursor + self._rng.randrange(MAX_GAP_PAGES) * PAGE_SIZE
        for _ in range(2):
            for start, size in self.ranges:
                addr = max(addr, start)
                while addr < start + size:
                    if self._free(addr):
                        self._pages[addr] = bytearray(PAGE_SIZE)
                        self._cursor = addr + PAGE_SIZE
                        return addr
                    addr += PAGE_SIZE
            addr = 0  # wrap around once
        raise OutOfMemory("no free page left in the simulated RAM")

    def claim(self, addr: int) -> int:
        """Take the page at ``addr`` (reserved or free); ValueError if it is in use."""
        if addr % PAGE_SIZE:
            raise ValueError(f"{addr:#x} is not page aligned")
        if not self.in_ram(addr, PAGE_SIZE):
            raise OutsideRam(f"page {addr:#x} is outside RAM")
        if addr in self._pages:
            raise ValueError(f"page {addr:#x} is already in use")
        self.reserved.discard(addr)
        self._pages[addr] = bytearray(PAGE_SIZE)
        return addr

    def reserve(self, addrs: Iterable[int]) -> None:
        """Keep :meth:`alloc` away from these pages (they stay claimable)."""
        self.reserved.update(page_of(a) for a in addrs)

    def free(self, addr: int) -> None:
        self._pages.pop(page_of(addr), None)
        self.preserved.discard(page_of(addr))

    def allocated(self, addr: int) -> bool:
        return page_of(addr) in self._pages

    @property
    def pages(self) -> Mapping[int, bytearray]:
        """Every allocated page, by address."""
        return self._pages

    # -- KHO preservation --------------------------------------------------------------------
    def preserve(self, addr: int) -> None:
        if page_of(addr) not in self._pages:
            raise ValueError(f"cannot preserve page {addr:#x}: not allocated")
        self.preserved.add(page_of(addr))

    def unpreserve(self, addr: int) -> None:
        self.preserved.discard(page_of(addr))

    def keep_only(self, keep: Iterable[int]) -> None:
        """Kexec: every page not in ``keep`` is gone (free and zero in the new kernel)."""
        wanted = {page_of(a) for a in keep}
        for addr in list(self._pages):
            if addr not in wanted:
                del self._pages[addr]
        self.preserved &= set(self._pages)
        self.reserved.clear()

    # -- access ------------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        """``size`` bytes at ``addr``: zeros for RAM the model never used; OutsideRam outside."""
        if size < 0 or not self.in_ram(addr, max(size, 1)):
            raise OutsideRam(f"physical {addr:#x}+{size:#x} is outside RAM")
        out = bytearray()
        pos = addr
        while pos < addr + size:
            page = page_of(pos)
            take = min(page + PAGE_SIZE, addr + size) - pos
            data = self._pages.get(page)
            out += data[pos - page : pos - page + take] if data is not None else bytes(take)
            pos += take
        return bytes(out)

    def read_phys(self, addr: int, size: int) -> bytes:
        """:meth:`read` with the ``ReadPhys`` contract of vtdlud's parsers (ParseError when the
        range is not RAM)."""
        try:
            return self.read(addr, size)
        except OutsideRam as exc:
            raise ParseError(str(exc)) from exc

    def write(self, addr: int, data: bytes) -> None:
        """Write into allocated pages only (a write elsewhere is a model bug)."""
        pos = 0
        while pos < len(data):
            page = page_of(addr + pos)
            buf = self._pages.get(page)
            if buf is None:
                raise ValueError(f"write to unallocated page {page:#x}")
            off = addr + pos - page
            take = min(PAGE_SIZE - off, len(data) - pos)
            buf[off : off + take] = data[pos : pos + take]
            pos += take

    def u64(self, addr: int) -> int:
        value: int = struct.unpack("<Q", self.read(addr, 8))[0]
        return value

    def set_u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value & 0xFFFF_FFFF_FFFF_FFFF))

    def zero_page(self, addr: int) -> None:
        self.write(page_of(addr), bytes(PAGE_SIZE))

    def snapshot(self) -> dict[int, bytes]:
        """Every allocated page as immutable bytes (what the kcore image holds)."""
        return {addr: bytes(data) for addr, data in sorted(self._pages.items())}
