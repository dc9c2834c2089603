"""The model's I/O page tables: second-level tables built by mapping pages, and their pages.

The model's own reading of the VT-d second-level format (VT-d spec §9.8; the kernel's
``iommupt`` vtdss format in Linux 7.2.13 builds the same): a table is one 4 KiB page of 512
u64 entries, an entry maps or points when Read or Write (bits 0, 1) is set, bits 51:12 hold the
next table or the page, a domain with ``levels`` levels resolves IOVA bits ``12 + 9 * level``
down to 12.  The model maps only 4 KiB pages (no superpages).

:func:`table_pages` lists every page-table page of a domain, which the series preserves
(``iommupt`` preserve callback) and the model does too (:mod:`tests.kernelmodel.records`).
"""

from __future__ import annotations

import struct

from tests.kernelmodel.memory import PAGE_SIZE, PhysMemory

ENTRIES = 512
READ, WRITE = 1 << 0, 1 << 1
ADDRESS = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)
IOVA_BASE = 1 << 32  # where the iommufd selftest maps its memfd (4 GiB)
MEMFD_PAGES = 4  # the model's memfd: 16 KiB, mapped at IOVA_BASE


def _index(iova: int, level: int) -> int:
    return (iova >> (12 + 9 * (level - 1))) & (ENTRIES - 1)


def map_page(mem: PhysMemory, top: int, levels: int, iova: int, page: int) -> None:
    """Map the 4 KiB ``page`` at ``iova`` read/write, allocating the tables on the way."""
    table = top
    for level in range(levels, 1, -1):
        slot = table + 8 * _index(iova, level)
        entry = mem.u64(slot)
        if not entry & (READ | WRITE):
            entry = mem.alloc() | READ | WRITE
            mem.set_u64(slot, entry)
        table = entry & ADDRESS
    mem.set_u64(table + 8 * _index(iova, 1), page | READ | WRITE)


def table_pages(mem: PhysMemory, top: int, levels: int) -> list[int]:
    """Every page-table page of the domain whose top table is ``top``, top first."""
    if not top:
        return []
    out = [top]
    if levels > 1:
        for entry in struct.unpack(f"<{ENTRIES}Q", mem.read(top, PAGE_SIZE)):
            if entry & (READ | WRITE):
                out += table_pages(mem, entry & ADDRESS, levels - 1)
    return out
