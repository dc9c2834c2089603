"""Walk a domain's I/O page table in physical memory: every page-table page, bounded.

Pure: memory comes from a ``read_phys(addr, size) -> bytes`` callable like the table walk's
(:mod:`vtdlud.model.walk`).  The series preserves every page-table page of a preserved domain
(``iommupt``'s preserve callback; the test driver of tests/guest does the same, bounded by
``max_pt_pages``), and the next kernel restores them: the audit checks each page the walk finds
is KHO-preserved (VTD017).

Format (VT-d spec second-level tables, x86-64 first-level tables alike for what is walked
here): a table is one 4 KiB page of 512 little-endian u64 entries; an entry is present when bit
0 or bit 1 is set (``dma_pte_present()``: read or write for second level; bit 0 is P for first
level); bits 51:12 address the next table; at levels above 1 bit 7 makes the entry a superpage
leaf; level-1 entries are leaves (data pages, which the IOMMU does not preserve: the memfd's
own preservation does).  The domain record's ``top_level`` is the top table's 0-based level, so
the table has ``top_level + 1`` levels [I: as the mirror reads ``top_level`` = AW + 1].

Bounds: at most :attr:`PageTableLimits.max_pages` pages per domain; a table reached twice is
walked once; a pointer outside RAM or an unreadable page is a problem, never an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import Enum

from vtdlud.errors import ParseError, PhysReadError
from vtdlud.frozen import frozen

ReadPhys = Callable[[int, int], bytes]

PAGE = 4096
ENTRIES = 512
PRESENT = 0b11  # R | W (second level); bit 0 is P in first-level entries
SUPERPAGE = 1 << 7
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12
MAX_LEVELS = 5
MAX_PAGES = 16384  # per domain: 64 MiB of page tables (the test driver's max_pt_pages default)
_ENTRIES = struct.Struct(f"<{ENTRIES}Q")


class PtProblemKind(Enum):
    OUTSIDE_RAM = "outside_ram"
    UNREADABLE = "unreadable"
    LIMIT = "limit"
    LEVEL = "level"  # a top_level no page table has


@frozen
class PtProblem:
    kind: PtProblemKind
    addr: int
    message: str


@frozen
class PageTableLimits:
    max_pages: int = MAX_PAGES


@frozen
class PageTableWalk:
    """The page-table pages of the table at ``top`` with ``levels`` levels."""

    top: int
    levels: int
    pages: frozenset[int]
    problems: tuple[PtProblem, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.problems


def walk_page_table(
    read_phys: ReadPhys, top: int, top_level: int, limits: PageTableLimits | None = None
) -> PageTableWalk:
    """Every page-table page of the domain whose top table is ``top`` (``top_level``: the
    record's 0-based level of the top table)."""
    lim = limits or PageTableLimits()
    levels = top_level + 1
    if not 1 <= levels <= MAX_LEVELS:
        msg = f"top_level {top_level}: no I/O page table has {levels} levels"
        return PageTableWalk(top, levels, frozenset(), (PtProblem(PtProblemKind.LEVEL, top, msg),))
    if top % PAGE:
        msg = f"top table {top:#x} is not 4 KiB aligned"
        return PageTableWalk(top, levels, frozenset(), (PtProblem(PtProblemKind.LEVEL, top, msg),))
    pages: set[int] = set()
    problems: list[PtProblem] = []
    todo: list[tuple[int, int]] = [(top, levels)]
    while todo:
        table, level = todo.pop()
        if table in pages:
            continue
        if len(pages) >= lim.max_pages:
            msg = f"more than {lim.max_pages} page-table pages: the rest are not walked"
            problems.append(PtProblem(PtProblemKind.LIMIT, table, msg))
            break
        pages.add(table)
        try:
            data = read_phys(table, PAGE)
        except PhysReadError as exc:
            kind = PtProblemKind.OUTSIDE_RAM if exc.outside_ram else PtProblemKind.UNREADABLE
            problems.append(PtProblem(kind, table, f"level-{level} table {table:#x}: {exc.reason}"))
            continue
        except (ParseError, OSError) as exc:
            problems.append(PtProblem(PtProblemKind.UNREADABLE, table, f"{table:#x}: {exc}"))
            continue
        if level == 1 or len(data) != PAGE:
            continue
        for entry in _ENTRIES.unpack(data):
            if entry & PRESENT and not entry & SUPERPAGE:
                todo.append((entry & ADDR_MASK, level - 1))
    return PageTableWalk(top, levels, frozenset(pages), tuple(problems))
