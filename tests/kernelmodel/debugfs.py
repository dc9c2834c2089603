"""The model's own intel-iommu debugfs: ``iommu_regset`` and ``dmar_translation_struct``.

Written from the kernel's ``drivers/iommu/intel/debugfs.c`` formats (reference §4.2-§4.3), not
with vtdlud's renderers: the files are what the auditor parses, so they must be the kernel's
bytes by the model's reading.  tests/sim/test_capture_replay.py checks them byte for byte
against the real captures.

- ``iommu_regset``: per unit ``"IOMMU: %s Register Base Address: %llx"``, the header, one
  ``"%-16s\t0x%02x\t\t0x%016llx"`` line per register, a blank line.
- ``dmar_translation_struct``: per unit ``"IOMMU %s: Root Table Address: 0x%llx"``, the header,
  one row per present context entry (legacy: PASID column ``-1``, a zero PASID entry) or per
  present PASID entry (scalable), a blank line; a unit without translation enabled prints
  ``"DMA Remapping is not enabled on %s"``.  The walk stops a bus at the first devfn whose root
  half is absent (``iommu_context_addr()`` returns NULL), as the kernel's does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from tests.kernelmodel.iommu import (
    PAGE_MASK,
    PASID_PDE_SHIFT,
    PASID_TABLE_ENTRIES,
    PRESENT,
    ROOT_ENTRY_NR,
    SM_PDTS_SHIFT,
    SM_UPPER_DEVFN,
    DmarUnit,
)
from tests.kernelmodel.memory import PAGE_SIZE, PhysMemory

REGSET_HEADER = "Name\t\t\tOffset\t\tContents"
TRANSLATION_HEADER = "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry"
NO_PASID = -1

# iommu_regset's lines in Linux 6.12 order: 32-bit registers, then 64-bit ones (reference §4.2).
REGSET_LAYOUT: tuple[tuple[str, int], ...] = (
    ("VER", 0x00), ("GCMD", 0x18), ("GSTS", 0x1C), ("FSTS", 0x34), ("FECTL", 0x38),
    ("FEDATA", 0x3C), ("FEADDR", 0x40), ("FEUADDR", 0x44), ("PMEN", 0x64), ("PLMBASE", 0x68),
    ("PLMLIMIT", 0x6C), ("ICS", 0x9C), ("PRS", 0xDC), ("PECTL", 0xE0), ("PEDATA", 0xE4),
    ("PEADDR", 0xE8), ("PEUADDR", 0xEC), ("CAP", 0x08), ("ECAP", 0x10), ("RTADDR", 0x20),
    ("CCMD", 0x28), ("AFLOG", 0x58), ("PHMBASE", 0x70), ("PHMLIMIT", 0x78), ("IQH", 0x80),
    ("IQT", 0x88), ("IQA", 0x90), ("IRTA", 0xB8), ("PQH", 0xC0), ("PQT", 0xC8), ("PQA", 0xD0),
    ("MTRRCAP", 0x100), ("MTRRDEF", 0x108), ("MTRR_FIX64K_00000", 0x120),
    ("MTRR_FIX16K_80000", 0x128), ("MTRR_FIX16K_A0000", 0x130),
    *((f"MTRR_FIX4K_{0xC0000 + i * 0x8000:05X}", 0x138 + 8 * i) for i in range(8)),
    *(
        (f"MTRR_PHYS{kind}{i}", 0x180 + 0x10 * i + 8 * (kind == "MASK"))
        for i in range(10)
        for kind in ("BASE", "MASK")
    ),
)  # fmt: skip


# One row: bus, devfn, root (lo, hi), context (lo, hi), PASID, PASID entry (val0, val1, val2)
Row = tuple[int, int, tuple[int, int], tuple[int, int], int, tuple[int, int, int]]


def regset_text(units: Iterable[DmarUnit]) -> str:
    out = []
    for unit in units:
        values = unit.register_values()
        out.append(f"IOMMU: {unit.name} Register Base Address: {unit.reg_base:x}\n")
        out.append(REGSET_HEADER + "\n")
        for name, offset in REGSET_LAYOUT:
            out.append(f"{name:<16s}\t0x{offset:02x}\t\t0x{values.get(name, 0):016x}\n")
        out.append("\n")
    return "".join(out)


def _u64s(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(data) // 8}Q", data)


def _pasid_rows(
    mem: PhysMemory, bus: int, devfn: int, root: tuple[int, int], context: tuple[int, int]
) -> list[Row]:
    lo = context[0]
    rows: list[Row] = []
    pdts = (lo >> SM_PDTS_SHIFT) & 7
    directory = _u64s(mem.read(lo & PAGE_MASK, (1 << (pdts + 7)) * 8))
    for dir_idx, pde in enumerate(directory):
        if not pde & PRESENT:
            continue
        table = _u64s(mem.read(pde & PAGE_MASK, PAGE_SIZE))
        for idx in range(PASID_TABLE_ENTRIES):
            val0, val1, val2 = table[idx * 8 : idx * 8 + 3]
            if val0 & PRESENT:
                pasid = (dir_idx << PASID_PDE_SHIFT) + idx
                rows.append((bus, devfn, root, context, pasid, (val0, val1, val2)))
    return rows


def translation_rows(unit: DmarUnit) -> list[Row]:
    """The rows of ``dmar_translation_struct`` for one enabled unit, walked over memory."""
    mem, scalable = unit.mem, unit.scalable
    rows: list[Row] = []
    roots = _u64s(mem.read(unit.root_table, ROOT_ENTRY_NR * 16))
    for bus in range(ROOT_ENTRY_NR):
        root = (roots[2 * bus], roots[2 * bus + 1])
        tables: dict[bool, tuple[int, ...]] = {}
        for devfn in range(256):
            upper = scalable and devfn >= SM_UPPER_DEVFN
            half = root[1] if upper else root[0]
            if not half & PRESENT:
                break  # iommu_context_addr() returned NULL: the rest of the bus is skipped
            if upper not in tables:
                tables[upper] = _u64s(mem.read(half & PAGE_MASK, PAGE_SIZE))
            slot = (devfn & 0x7F) * 4 if scalable else devfn * 2
            lo, hi = tables[upper][slot : slot + 2]
            if not lo & PRESENT:
                continue
            if scalable:
                rows.extend(_pasid_rows(mem, bus, devfn, root, (lo, hi)))
            else:
                rows.append((bus, devfn, root, (lo, hi), NO_PASID, (0, 0, 0)))
    return rows


def render_row(row: Row) -> str:
    bus, devfn, (rlo, rhi), (clo, chi), pasid, (v0, v1, v2) = row
    return (
        f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"
        f"\t0x{rhi:016x}:0x{rlo:016x}\t0x{chi:016x}:0x{clo:016x}"
        f"\t{pasid:<6d}\t0x{v2:016x}:0x{v1:016x}:0x{v0:016x}"
    )


def translation_text(units: Iterable[DmarUnit]) -> str:
    out = []
    for unit in units:
        if not unit.enabled:
            out.append(f"DMA Remapping is not enabled on {unit.name}\n")
            continue
        out.append(f"IOMMU {unit.name}: Root Table Address: 0x{unit.root_table:x}\n")
        out.append(TRANSLATION_HEADER + "\n")
        out.extend(render_row(row) + "\n" for row in translation_rows(unit))
        out.append("\n")
    return "".join(out)
