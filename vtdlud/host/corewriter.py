"""Write a minimal ELF64 core holding given physical pages, readable like ``/proc/kcore``.

The core is what :mod:`vtdlud.parse.kcore` and pyelftools read: ``ET_CORE``, ``EM_X86_64``,
little-endian ELF64, no sections, ``PT_LOAD`` segments with ``p_paddr`` = their physical start
and ``p_vaddr`` = their address in the x86-64 direct map (:data:`DIRECT_MAP_BASE` + paddr, like
KCORE_RAM), ``p_filesz == p_memsz``, data page-aligned in the file after the headers.

Two shapes:

- compact (default): one segment per run of physically contiguous pages given; any other
  address is outside RAM.  This is what ``collect --memory`` should put at ``proc/kcore`` in a
  bundle (small, and a bundle is size-capped when unpacked), so the kcore tier replays offline
  exactly on the pages the snapshot read.
- ``ram=`` ranges: one segment per RAM range, zeros where no page is given — what ``/proc/kcore``
  shows for RAM nobody wrote — written sparse by :func:`write_core`.  For simulated hosts whose
  memory model distinguishes "unused RAM" from "outside RAM".

:class:`ExtraSegment` adds hand-made segments (a kernel-text segment overlapping RAM, a non-RAM
segment with ``p_paddr = -1``) for tests of the reader.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from vtdlud.frozen import frozen
from vtdlud.host.atomic import atomic_file
from vtdlud.model.registers import VTD_PAGE_SIZE
from vtdlud.parse.kcore import EHDR_SIZE, EM_X86_64, ET_CORE, NO_PADDR, PHDR_SIZE

DIRECT_MAP_BASE = 0xFFFF_8880_0000_0000  # x86-64 page_offset_base without KASLR (4-level)
PT_LOAD = 1
PF_R, PF_W, PF_X = 4, 2, 1
EV_CURRENT = 1
U64_MASK = (1 << 64) - 1


@frozen
class ExtraSegment:
    """A hand-made ``PT_LOAD``: ``paddr`` None writes ``p_paddr = -1`` (not RAM)."""

    vaddr: int
    data: bytes
    paddr: int | None = None


@frozen
class _Load:
    paddr: int
    vaddr: int
    size: int
    chunks: tuple[tuple[int, bytes], ...]  # (offset inside the segment, bytes)


def page_runs(pages: Mapping[int, bytes]) -> list[tuple[int, bytes]]:
    """Physically contiguous runs ``(start, bytes)`` of 4 KiB pages.  ValueError on a page
    address that is not 4 KiB aligned or a page that is not 4 KiB long."""
    runs: list[tuple[int, list[bytes]]] = []
    for addr in sorted(pages):
        data = pages[addr]
        if addr % VTD_PAGE_SIZE or not 0 <= addr <= U64_MASK - VTD_PAGE_SIZE + 1:
            raise ValueError(f"page address {addr:#x} is not a 4 KiB-aligned physical address")
        if len(data) != VTD_PAGE_SIZE:
            raise ValueError(f"page {addr:#x} holds {len(data)} bytes, not {VTD_PAGE_SIZE}")
        if runs and runs[-1][0] + len(runs[-1][1]) * VTD_PAGE_SIZE == addr:
            runs[-1][1].append(data)
        else:
            runs.append((addr, [data]))
    return [(start, b"".join(chunks)) for start, chunks in runs]


def _ram_loads(pages: Mapping[int, bytes], ram: Sequence[tuple[int, int]]) -> list[_Load]:
    """One segment per RAM range, holding the given pages (the rest reads as zeros)."""
    loads: list[_Load] = []
    runs = page_runs(pages)
    placed = 0
    prev_end = 0
    for start, size in sorted(ram):
        if start % VTD_PAGE_SIZE or size % VTD_PAGE_SIZE or size <= 0 or start < prev_end:
            raise ValueError(f"RAM range {start:#x}+{size:#x} is not page aligned or overlaps")
        prev_end = start + size
        chunks = []
        for addr, data in runs:
            if start <= addr and addr + len(data) <= start + size:
                chunks.append((addr - start, data))
                placed += 1
        loads.append(_Load(start, DIRECT_MAP_BASE + start, size, tuple(chunks)))
    if placed != len(runs):
        raise ValueError("a page lies outside the RAM ranges (or a run of pages straddles two)")
    return loads


def _plan(
    pages: Mapping[int, bytes],
    ram: Sequence[tuple[int, int]] | None,
    extra: Sequence[ExtraSegment],
) -> tuple[bytes, list[tuple[int, bytes]], int]:
    """(ELF + program headers, [(file offset, bytes)], file size)."""
    if ram is None:
        loads = [_Load(a, DIRECT_MAP_BASE + a, len(d), ((0, d),)) for a, d in page_runs(pages)]
    else:
        loads = _ram_loads(pages, ram)
    loads += [
        _Load(NO_PADDR if e.paddr is None else e.paddr, e.vaddr, len(e.data), ((0, e.data),))
        for e in extra
    ]
    head = EHDR_SIZE + PHDR_SIZE * len(loads)
    offset = -(-head // VTD_PAGE_SIZE) * VTD_PAGE_SIZE
    phdrs: list[bytes] = []
    writes: list[tuple[int, bytes]] = []
    for load in loads:
        phdrs.append(_phdr(offset, load))
        writes += [(offset + rel, data) for rel, data in load.chunks]
        offset += -(-load.size // VTD_PAGE_SIZE) * VTD_PAGE_SIZE
    return _ehdr(len(loads)) + b"".join(phdrs), writes, offset


def _ehdr(phnum: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, EV_CURRENT, 0]) + bytes(8)  # ELF64, LSB, SysV
    return ident + struct.pack(
        "<HHIQQQIHHHHHH",
        ET_CORE,
        EM_X86_64,
        EV_CURRENT,
        0,  # e_entry
        EHDR_SIZE if phnum else 0,  # e_phoff
        0,  # e_shoff
        0,  # e_flags
        EHDR_SIZE,
        PHDR_SIZE,
        phnum,
        0,  # e_shentsize
        0,  # e_shnum
        0,  # e_shstrndx
    )


def _phdr(offset: int, load: _Load) -> bytes:
    return struct.pack(
        "<IIQQQQQQ",
        PT_LOAD,
        PF_R | PF_W | PF_X,
        offset,
        load.vaddr & U64_MASK,
        load.paddr & U64_MASK,
        load.size,
        load.size,
        VTD_PAGE_SIZE,
    )


def build_core(
    pages: Mapping[int, bytes],
    *,
    ram: Sequence[tuple[int, int]] | None = None,
    extra: Sequence[ExtraSegment] = (),
) -> bytes:
    """The core file's bytes.  Without ``ram``: one RAM segment per run of ``pages`` (4 KiB
    each), so every other address is outside RAM.  With ``ram`` ((start, size) ranges): one
    segment per range, zeros where no page is given (as kcore reads unused RAM); the bytes
    then hold the whole ranges, so prefer :func:`write_core` (sparse) for big ones.  ``extra``
    segments follow."""
    head, writes, size = _plan(pages, ram, extra)
    out = bytearray(size)
    out[: len(head)] = head
    for off, data in writes:
        out[off : off + len(data)] = data
    return bytes(out)


def write_core(
    path: str | Path,
    pages: Mapping[int, bytes],
    *,
    ram: Sequence[tuple[int, int]] | None = None,
    extra: Sequence[ExtraSegment] = (),
) -> int:
    """Write :func:`build_core`'s file to ``path`` atomically (temp file, fsync, rename), mode
    0400 like ``/proc/kcore``; holes in ``ram`` ranges stay sparse.  Returns the file size."""
    head, writes, size = _plan(pages, ram, extra)
    with atomic_file(Path(path), mode=0o400) as f:
        f.write(head)
        for off, data in writes:
            f.seek(off)
            f.write(data)
        f.truncate(size)
    return size
