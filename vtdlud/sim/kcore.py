"""A small ``/proc/kcore`` look-alike holding only the pages the model uses.

ELF64 little-endian ``ET_CORE`` for ``EM_X86_64``, no sections, one ``PT_LOAD`` per run of
physically contiguous pages: ``p_paddr`` = the run's physical start, ``p_vaddr`` = its address in
the x86-64 direct map (like KCORE_RAM segments, reference §12), ``p_filesz == p_memsz``, data
page-aligned after the headers.  A real kcore covers all of RAM and reads unused pages as zeros;
this one is compact, so an address outside the model's pages is outside every segment.

Written here because ``vtdlud/host/corewriter.py`` had not landed when the model was written;
move onto it once it has.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from vtdlud.sim.memory import PAGE_SIZE

DIRECT_MAP_BASE = 0xFFFF_8880_0000_0000
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PF_R_W_X = 7
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


def page_runs(pages: Mapping[int, bytes]) -> list[tuple[int, bytes]]:
    runs: list[tuple[int, bytearray]] = []
    for addr in sorted(pages):
        if runs and runs[-1][0] + len(runs[-1][1]) == addr:
            runs[-1][1].extend(pages[addr])
        else:
            runs.append((addr, bytearray(pages[addr])))
    return [(a, bytes(d)) for a, d in runs]


def build_core(pages: Mapping[int, bytes]) -> bytes:
    """The ELF core image of ``pages`` (4 KiB-aligned address -> 4 KiB of bytes)."""
    runs = page_runs(pages)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # ELFCLASS64, ELFDATA2LSB, EV_CURRENT
    headers = EHDR.size + PHDR.size * len(runs)
    offset = -(-headers // PAGE_SIZE) * PAGE_SIZE
    ehdr = EHDR.pack(
        ident, ET_CORE, EM_X86_64, 1, 0, EHDR.size, 0, 0, EHDR.size, PHDR.size, len(runs), 0, 0, 0
    )
    phdrs = bytearray()
    for paddr, data in runs:
        phdrs += PHDR.pack(
            PT_LOAD,
            PF_R_W_X,
            offset,
            DIRECT_MAP_BASE + paddr,
            paddr,
            len(data),
            len(data),
            PAGE_SIZE,
        )
        offset += len(data)
    out = bytearray(ehdr + phdrs)
    out += bytes(-len(out) % PAGE_SIZE)
    for _, data in runs:
        out += data
    return bytes(out)
