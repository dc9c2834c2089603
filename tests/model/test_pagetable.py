"""The page-table walker (vtdlud.model.pagetable) on synthetic memory (issue #14 item 4)."""

from __future__ import annotations

import struct

from vtdlud.errors import PhysReadError
from vtdlud.model.pagetable import PageTableLimits, PtProblemKind, walk_page_table


class _Mem:
    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def table(self, addr: int, entries: dict[int, int]) -> None:
        page = self.pages.setdefault(addr, bytearray(4096))
        for i, v in entries.items():
            struct.pack_into("<Q", page, i * 8, v)

    def __call__(self, addr: int, size: int) -> bytes:
        if addr not in self.pages:
            raise PhysReadError(addr, size, "not in RAM", outside_ram=True)
        return bytes(self.pages[addr][:size])


def test_walker_superpages_limits_and_bad_pointers() -> None:
    mem = _Mem()
    mem.table(0x1000, {0: 0x2000 | 3, 1: 0x3000 | 1 | 1 << 7, 2: 0x9000 | 2})  # 2 MiB SP at 1
    mem.table(0x2000, {0: 0x4000 | 3})
    mem.table(0x4000, {7: 0x5000 | 3})  # a leaf: not a table
    walk = walk_page_table(mem, 0x1000, top_level=2)
    assert walk.pages == {0x1000, 0x2000, 0x4000, 0x9000}
    assert [(p.kind, p.addr) for p in walk.problems] == [(PtProblemKind.OUTSIDE_RAM, 0x9000)]
    small = walk_page_table(mem, 0x1000, top_level=2, limits=PageTableLimits(max_pages=2))
    assert len(small.pages) == 2 and small.problems[-1].kind is PtProblemKind.LIMIT
    assert walk_page_table(mem, 0x1000, top_level=7).problems[0].kind is PtProblemKind.LEVEL
