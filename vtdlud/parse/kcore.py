"""``/proc/kcore`` ELF headers -> the physical RAM a reader may ``pread`` (pure: bytes in).

``/proc/kcore`` (fs/proc/kcore.c) is an ELF64 core: one ``PT_NOTE`` and one ``PT_LOAD`` per
kernel memory region.  Direct-map RAM segments (KCORE_RAM) carry their physical start in
``p_paddr``; the kernel-image segment (KCORE_TEXT) carries ``__pa_symbol(_text)`` and overlaps a
RAM segment; vmalloc, modules and vmemmap carry ``p_paddr = -1`` (reference §12, measured on
6.12).  The file offset of physical address P is ``p_offset + (P - p_paddr)``.

:func:`parse_kcore_layout` keeps only ``PT_LOAD`` segments with a physical address and makes
them non-overlapping: where two segments cover the same bytes, the direct-map one (vaddr below
:data:`KERNEL_TEXT_VADDR`) wins, then the lower ``p_paddr``; the loser keeps only the pieces
nobody else covers.  A segment's usable size is ``min(p_memsz, p_filesz)``: bytes past
``p_filesz`` are not in the file.

:meth:`KcoreLayout.translate` maps a physical range to file ranges.  A range that crosses from
one segment into a physically adjacent one is **split** (one :class:`FileRange` per segment); a
range with any byte outside every segment is **refused** with :class:`PhysReadError`
(``outside_ram``), never partially translated.

Every error in the bytes raises :class:`ParseError`; pyelftools does the ELF decoding, and
whatever it raises on hostile bytes is turned into a ParseError too.
"""

from __future__ import annotations

import bisect
import io
import struct
from dataclasses import dataclass
from functools import cached_property

from vtdlud.errors import ParseError, PhysReadError

EHDR_SIZE = 64  # sizeof(Elf64_Ehdr)
PHDR_SIZE = 56  # sizeof(Elf64_Phdr)
ET_CORE = 4
EM_X86_64 = 62
PN_XNUM = 0xFFFF
NO_PADDR = 0xFFFF_FFFF_FFFF_FFFF  # p_paddr of segments that are not physical RAM
KERNEL_TEXT_VADDR = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map: at or above = kernel image
U64_LIMIT = 1 << 64
OFF_T_LIMIT = 1 << 63  # pread's off_t is signed 64-bit
MAX_PHNUM = 8192  # kcore has one phdr per RAM range; far fewer than this on real hosts
MAX_HEADER_BYTES = EHDR_SIZE + MAX_PHNUM * PHDR_SIZE

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1


@dataclass(frozen=True)
class Segment:
    """Physical bytes ``[paddr, paddr + memsz)`` live at file offset ``offset``."""

    paddr: int
    offset: int
    memsz: int
    vaddr: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz

    @property
    def direct_map(self) -> bool:
        """A KCORE_RAM segment (direct map) rather than the kernel image (KCORE_TEXT)."""
        return self.vaddr < KERNEL_TEXT_VADDR

    def piece(self, start: int, end: int) -> Segment:
        """The part of this segment covering physical ``[start, end)`` (inside it)."""
        delta = start - self.paddr
        return Segment(start, self.offset + delta, end - start, (self.vaddr + delta) % U64_LIMIT)


@dataclass(frozen=True)
class FileRange:
    """``size`` bytes of physical memory at ``paddr`` are at file offset ``offset``."""

    paddr: int
    offset: int
    size: int


@dataclass(frozen=True)
class KcoreLayout:
    """Non-overlapping RAM segments sorted by ``paddr``."""

    segments: tuple[Segment, ...]

    @cached_property
    def _starts(self) -> list[int]:
        return [s.paddr for s in self.segments]

    @property
    def ram_bytes(self) -> int:
        return sum(s.memsz for s in self.segments)

    def find(self, paddr: int) -> Segment | None:
        """The segment holding physical byte ``paddr``, or None."""
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0 and paddr < self.segments[i].end:
            return self.segments[i]
        return None

    def covers(self, paddr: int, size: int) -> bool:
        try:
            self.translate(paddr, size)
        except PhysReadError:
            return False
        return True

    def translate(self, paddr: int, size: int) -> tuple[FileRange, ...]:
        """File ranges holding physical ``[paddr, paddr + size)``, split at segment boundaries.

        Raises :class:`PhysReadError` (``outside_ram=True``) when any byte of the range is in no
        segment, or the range is empty, negative or beyond 64 bits.
        """
        if size <= 0 or paddr < 0 or paddr + size > U64_LIMIT:
            raise PhysReadError(paddr, size, "not a valid physical range", outside_ram=True)
        out: list[FileRange] = []
        cur, end = paddr, paddr + size
        i = bisect.bisect_right(self._starts, cur) - 1
        while cur < end:
            if (
                i < 0
                or i >= len(self.segments)
                or not (self.segments[i].paddr <= cur < self.segments[i].end)
            ):
                raise PhysReadError(
                    paddr, size, f"physical address {cur:#x} is not in RAM", outside_ram=True
                )
            seg = self.segments[i]
            stop = min(end, seg.end)
            out.append(FileRange(cur, seg.offset + (cur - seg.paddr), stop - cur))
            cur = stop
            i += 1
        return tuple(out)


def _u16(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", data, off)[0])


def _u64(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", data, off)[0])


def check_ident(head: bytes) -> None:
    """Check the ELF identification and the header fields vtdlud relies on (first 64 bytes)."""
    if len(head) < EHDR_SIZE:
        raise ParseError(
            f"ELF header truncated: {len(head)} of {EHDR_SIZE} bytes", offset=len(head)
        )
    if head[:4] != _ELF_MAGIC:
        raise ParseError(f"expected the ELF magic 7f 45 4c 46, got {head[:4].hex(' ')}", offset=0)
    if head[4] != _ELFCLASS64:
        raise ParseError(f"expected ELFCLASS64 (2), got EI_CLASS {head[4]}", offset=4)
    if head[5] != _ELFDATA2LSB:
        raise ParseError(f"expected little-endian ELFDATA2LSB (1), got EI_DATA {head[5]}", offset=5)
    e_type, e_machine = _u16(head, 16), _u16(head, 18)
    if e_type != ET_CORE:
        raise ParseError(f"expected e_type ET_CORE (4), got {e_type}", offset=16)
    if e_machine != EM_X86_64:
        raise ParseError(f"expected e_machine EM_X86_64 (62), got {e_machine}", offset=18)
    phentsize, phnum = _u16(head, 54), _u16(head, 56)
    if phnum == PN_XNUM:
        raise ParseError("extended program header numbering (PN_XNUM) is not supported", offset=56)
    if phnum > MAX_PHNUM:
        raise ParseError(f"{phnum} program headers, more than the {MAX_PHNUM} accepted", offset=56)
    if phnum and phentsize != PHDR_SIZE:
        raise ParseError(f"expected e_phentsize {PHDR_SIZE}, got {phentsize}", offset=54)


def header_span(head: bytes) -> int:
    """How many bytes from offset 0 hold the ELF header and the program header table.

    ``head`` is at least the 64-byte ELF header; raises ParseError when it is not an x86-64
    ELF64 core or the table lies beyond :data:`OFF_T_LIMIT`.
    """
    check_ident(head)
    phoff, phnum = _u64(head, 32), _u16(head, 56)
    if phnum == 0:
        return EHDR_SIZE
    if phoff < EHDR_SIZE:
        raise ParseError(f"program header table at {phoff:#x} overlaps the ELF header", offset=32)
    end = phoff + phnum * PHDR_SIZE
    if end >= OFF_T_LIMIT:
        raise ParseError(f"program header table at {phoff:#x} is beyond any file", offset=32)
    return end


def _ranges_minus(start: int, end: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` minus the sorted, disjoint ``taken`` ranges."""
    out: list[tuple[int, int]] = []
    cur = start
    first = max(bisect.bisect_right(taken, (start, U64_LIMIT)) - 1, 0)
    for t0, t1 in taken[first:]:
        if t1 <= cur:
            continue
        if t0 >= end:
            break
        if t0 > cur:
            out.append((cur, t0))
        cur = max(cur, t1)
        if cur >= end:
            break
    if cur < end:
        out.append((cur, end))
    return out


def _normalise(raw: list[Segment]) -> tuple[Segment, ...]:
    """Drop overlaps: direct-map segments first, then by paddr (see the module docstring)."""
    kept: list[Segment] = []
    taken: list[tuple[int, int]] = []
    for seg in sorted(raw, key=lambda s: (not s.direct_map, s.paddr, s.offset)):
        for a, b in _ranges_minus(seg.paddr, seg.end, taken):
            kept.append(seg.piece(a, b))
            bisect.insort(taken, (a, b))  # disjoint, so _ranges_minus can bisect into it
    return tuple(sorted(kept, key=lambda s: s.paddr))


def _load_segments(data: bytes) -> list[Segment]:
    """Every PT_LOAD with a physical address, through pyelftools."""
    from elftools.elf.elffile import ELFFile  # noqa: PLC0415 - only when a kcore is there

    try:
        elf = ELFFile(io.BytesIO(data))
        count = elf.num_segments()
        headers = [elf.get_segment(i).header for i in range(count)]
        rows = [
            (
                h["p_type"],
                int(h["p_offset"]),
                int(h["p_vaddr"]),
                int(h["p_paddr"]),
                int(h["p_filesz"]),
                int(h["p_memsz"]),
            )
            for h in headers
        ]
    except Exception as exc:  # pyelftools raises many types on hostile bytes
        raise ParseError(f"pyelftools cannot read the ELF headers: {exc}") from exc
    out: list[Segment] = []
    phoff = _u64(data, 32)
    for n, (p_type, offset, vaddr, paddr, filesz, memsz) in enumerate(rows):
        if p_type != "PT_LOAD" or paddr == NO_PADDR:
            continue
        size = min(filesz, memsz)
        where = phoff + n * PHDR_SIZE
        if size == 0:
            continue
        if paddr + size > U64_LIMIT:
            raise ParseError(
                f"program header {n}: physical range {paddr:#x}+{size:#x} passes 2**64",
                offset=where,
            )
        if offset + size > OFF_T_LIMIT:
            raise ParseError(
                f"program header {n}: file range {offset:#x}+{size:#x} is beyond any file",
                offset=where,
            )
        out.append(Segment(paddr, offset, size, vaddr))
    return out


def parse_kcore_layout(data: bytes) -> KcoreLayout:
    """The RAM layout from the first :func:`header_span` bytes of a kcore (more is ignored)."""
    span = header_span(data)
    if len(data) < span:
        raise ParseError(
            f"program header table truncated: {len(data)} of {span} bytes", offset=len(data)
        )
    return KcoreLayout(_normalise(_load_segments(bytes(data[:span]))))
