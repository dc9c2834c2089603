"""Builders for the kcore tests: simulated physical memory holding VT-d tables.

:class:`Memory` is a sparse set of 4 KiB pages with little-endian u64 pokes; :func:`lay_out`
places the root, context and PASID tables a parsed ``dmar_translation_struct`` unit shows at the
physical addresses its rows name.  debugfs never prints PASID table addresses, so those are
allocated from :data:`PASID_TABLE_POOL`, far from the captured addresses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vtdlud.errors import PhysReadError
from vtdlud.model.debugfs import TranslationUnit

PAGE = 4096
MASK = ~(PAGE - 1) & 0xFFFF_FFFF_FFFF_FFFF
PASID_TABLE_POOL = 0x4000_0000


@dataclass
class Memory:
    pages: dict[int, bytearray] = field(default_factory=dict)
    next_free: int = PASID_TABLE_POOL

    def page(self, addr: int) -> bytearray:
        return self.pages.setdefault(addr & MASK, bytearray(PAGE))

    def touch(self, addr: int, size: int = PAGE) -> None:
        """Make the pages of ``[addr, addr + size)`` exist (zeros)."""
        for p in range(addr & MASK, addr + size, PAGE):
            self.page(p)

    def put_u64(self, addr: int, value: int) -> None:
        struct.pack_into("<Q", self.page(addr), addr % PAGE, value)

    def alloc(self) -> int:
        addr = self.next_free
        self.next_free += PAGE
        self.touch(addr)
        return addr

    def frozen(self) -> dict[int, bytes]:
        return {a: bytes(p) for a, p in self.pages.items()}

    def read(self, addr: int, size: int) -> bytes:
        """A ``read_phys`` over these pages (PhysReadError outside them)."""
        out = bytearray()
        for p in range(addr & MASK, addr + size, PAGE):
            if p not in self.pages:
                raise PhysReadError(addr, size, f"page {p:#x} not in RAM", outside_ram=True)
            out += self.pages[p]
        start = addr - (addr & MASK)
        return bytes(out[start : start + size])


def lay_out(unit: TranslationUnit, scalable: bool, mem: Memory | None = None) -> Memory:
    """Tables in memory that make the kernel print exactly ``unit``'s rows."""
    mem = mem or Memory()
    assert unit.root_table is not None
    root = unit.root_table
    mem.touch(root)
    pasid_tables: dict[tuple[int, int], int] = {}
    for row in unit.rows:
        mem.put_u64(root + row.bus * 16, row.root.lo)
        mem.put_u64(root + row.bus * 16 + 8, row.root.hi)
        lower = row.root.lo & MASK
        mem.touch(lower)
        if not scalable:
            mem.put_u64(lower + row.devfn * 16, row.context_lo)
            mem.put_u64(lower + row.devfn * 16 + 8, row.context_hi)
            continue
        if row.root.hi & 1:
            mem.touch(row.root.hi & MASK)
        table = (row.root.hi if row.devfn >= 0x80 else row.root.lo) & MASK
        slot = table + (row.devfn & 0x7F) * 32
        mem.put_u64(slot, row.context_lo)
        mem.put_u64(slot + 8, row.context_hi)
        pdir = row.context_lo & MASK
        entries = 1 << (((row.context_lo >> 9) & 7) + 7)
        mem.touch(pdir, entries * 8)
        dir_idx, idx = row.pasid >> 6, row.pasid & 63
        key = (pdir, dir_idx)
        if key not in pasid_tables:
            pasid_tables[key] = mem.alloc()
            mem.put_u64(pdir + dir_idx * 8, pasid_tables[key] | 1)
        entry = pasid_tables[key] + idx * 64
        mem.put_u64(entry, row.pasid_entry.val0)
        mem.put_u64(entry + 8, row.pasid_entry.val1)
        mem.put_u64(entry + 16, row.pasid_entry.val2)
    return mem
