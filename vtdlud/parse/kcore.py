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

Every error in the bytes raises :class:`ParseError`.  The headers are decoded with
:mod:`struct` (``Elf64_Ehdr``/``Elf64_Phdr`` of include/uapi/linux/elf.h, little-endian), all
program headers in one :meth:`struct.Struct.iter_unpack`: a 4,000-segment kcore parses in about
a millisecond.  Only ``PT_LOAD`` is looked at; other types (``PT_NOTE``) and the section header
fields (kcore has none) are not decoded.  The tests check the result against pyelftools on every
core they build.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import struct
import sys
from array import array
from collections.abc import Iterable
from typing import NamedTuple

from vtdlud.errors import ParseError, PhysReadError

EHDR_SIZE = 64  # sizeof(Elf64_Ehdr)
PHDR_SIZE = 56  # sizeof(Elf64_Phdr)
ET_CORE = 4
EM_X86_64 = 62
PN_XNUM = 0xFFFF
PT_LOAD = 1
NO_PADDR = 0xFFFF_FFFF_FFFF_FFFF  # p_paddr of segments that are not physical RAM
KERNEL_TEXT_VADDR = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map: at or above = kernel image
U64_LIMIT = 1 << 64
OFF_T_LIMIT = 1 << 63  # pread's off_t is signed 64-bit
MAX_PHNUM = 8192  # kcore has one phdr per RAM range; far fewer than this on real hosts
MAX_HEADER_BYTES = EHDR_SIZE + MAX_PHNUM * PHDR_SIZE

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1

# Elf64_Ehdr fields are read by offset: e_type@16, e_machine@18, e_phoff@32, e_phentsize@54,
# e_phnum@56.  Elf64_Phdr is p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
# p_align; p_flags and p_align are skipped.
_PHDR = struct.Struct("<I4xQQQQQ8x")
assert _PHDR.size == PHDR_SIZE


class Segment(NamedTuple):
    """Physical bytes ``[paddr, paddr + memsz)`` live at file offset ``offset``.

    A named tuple, not a dataclass: a kcore has thousands of segments and a tuple is built in
    half the time."""

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


class FileRange(NamedTuple):
    """``size`` bytes of physical memory at ``paddr`` are at file offset ``offset``."""

    paddr: int
    offset: int
    size: int


class KcoreLayout:
    """Non-overlapping RAM segments sorted by ``paddr``.

    Held as columns (start, end, file offset and vaddr lists): a kcore has thousands of
    segments, and neither the parse nor a lookup needs an object per segment.
    :attr:`segments` builds them when asked."""

    __slots__ = ("_ends", "_offsets", "_segments", "_starts", "_vaddrs")

    def __init__(self, segments: Iterable[Segment]) -> None:
        segs = tuple(segments)
        self._segments: tuple[Segment, ...] | None = segs
        self._starts = [s.paddr for s in segs]
        self._ends = [s.end for s in segs]
        self._offsets = [s.offset for s in segs]
        self._vaddrs = [s.vaddr for s in segs]

    @classmethod
    def from_columns(
        cls, starts: list[int], ends: list[int], offsets: list[int], vaddrs: list[int]
    ) -> KcoreLayout:
        """The layout of segments ``i``: ``[starts[i], ends[i])`` at ``offsets[i]``, sorted and
        disjoint (the caller's promise)."""
        layout = cls(())
        layout._segments = None
        layout._starts, layout._ends, layout._offsets, layout._vaddrs = (
            starts,
            ends,
            offsets,
            vaddrs,
        )
        return layout

    @property
    def segments(self) -> tuple[Segment, ...]:
        if self._segments is None:
            sizes = map(operator.sub, self._ends, self._starts)
            self._segments = tuple(map(Segment, self._starts, self._offsets, sizes, self._vaddrs))
        return self._segments

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KcoreLayout):
            return NotImplemented
        return self.segments == other.segments

    def __hash__(self) -> int:
        return hash(self.segments)

    def __repr__(self) -> str:
        return f"KcoreLayout({len(self._starts)} segments, {self.ram_bytes:#x} bytes)"

    @property
    def ram_bytes(self) -> int:
        return sum(self._ends) - sum(self._starts)

    def find(self, paddr: int) -> Segment | None:
        """The segment holding physical byte ``paddr``, or None."""
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0 and paddr < self._ends[i]:
            start = self._starts[i]
            return Segment(start, self._offsets[i], self._ends[i] - start, self._vaddrs[i])
        return None

    def file_offset(self, paddr: int, size: int) -> int | None:
        """The file offset of physical ``[paddr, paddr + size)`` when one segment holds it all
        (``size`` > 0), else None (:meth:`translate` says why or splits it)."""
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0 and paddr + size <= self._ends[i] and size > 0:
            return self._offsets[i] + (paddr - self._starts[i])
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
        starts, ends = self._starts, self._ends
        end = paddr + size
        i = bisect.bisect_right(starts, paddr) - 1
        out: list[FileRange] = []
        cur = paddr
        while cur < end:
            if i < 0 or i >= len(starts) or not (starts[i] <= cur < ends[i]):
                raise PhysReadError(
                    paddr, size, f"physical address {cur:#x} is not in RAM", outside_ram=True
                )
            stop = min(end, ends[i])
            out.append(FileRange(cur, self._offsets[i] + (cur - starts[i]), stop - cur))
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


_Columns = tuple[list[int], list[int], list[int], list[int]]  # start, end, offset, vaddr


def _phdr_columns(table: memoryview) -> list[list[int]]:
    """The program header table as the lists p_type, p_offset, p_vaddr, p_paddr, p_filesz and
    p_memsz: one C-level strided copy per field of the table read as u64 words."""
    words = array("Q")
    words.frombytes(table)
    if words.itemsize != 8:  # pragma: no cover - every CPython platform has an 8-byte "Q"
        return list(map(list, zip(*_PHDR.iter_unpack(table), strict=True)))
    if sys.byteorder == "big":  # pragma: no cover - the ELF is little-endian
        words.byteswap()
    step = PHDR_SIZE // 8
    p_type = list(map(operator.and_, words[0::step], itertools.repeat(0xFFFF_FFFF)))
    return [p_type, *(words[i::step].tolist() for i in range(1, 6))]


def _ram_columns(data: bytes) -> _Columns:
    """Start, end, file offset and vaddr of every PT_LOAD with a physical address and a
    non-empty file part, in table order (the loops are those of map and compress, in C)."""
    phoff, phnum = _u64(data, 32), _u16(data, 56)
    if phnum == 0:
        return [], [], [], []
    table = memoryview(data)[phoff : phoff + phnum * PHDR_SIZE]
    p_type, offset, vaddr, paddr, filesz, memsz = _phdr_columns(table)
    size = list(map(min, filesz, memsz))
    if p_type.count(PT_LOAD) != phnum or NO_PADDR in paddr or 0 in size:
        ram = list(
            map(
                operator.and_,
                map(operator.and_, map(PT_LOAD.__eq__, p_type), map(NO_PADDR.__ne__, paddr)),
                map(bool, size),
            )
        )
        paddr, size, offset, vaddr = (
            list(itertools.compress(col, ram)) for col in (paddr, size, offset, vaddr)
        )
    end = list(map(operator.add, paddr, size))
    if paddr and (max(end) > U64_LIMIT or max(map(operator.add, offset, size)) > OFF_T_LIMIT):
        _raise_out_of_range(data, phoff, phnum)
    return paddr, end, offset, vaddr


def _raise_out_of_range(data: bytes, phoff: int, phnum: int) -> None:
    """The ParseError for the first program header whose range passes 2**64 or any file."""
    for n in range(phnum):
        where = phoff + n * PHDR_SIZE
        p_type, offset, _vaddr, paddr, filesz, memsz = _PHDR.unpack_from(data, where)
        size = min(filesz, memsz)
        if p_type != PT_LOAD or paddr == NO_PADDR or size == 0:
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
    raise AssertionError("a segment is out of range but no program header is")  # pragma: no cover


def ram_segments(data: bytes) -> list[Segment]:
    """Every PT_LOAD with a physical address and a non-empty file part, in table order, as
    :func:`parse_kcore_layout` reads them before :func:`normalise` (``data`` holds at least
    the first :func:`header_span` bytes)."""
    start, end, offset, vaddr = _ram_columns(data)
    return list(map(Segment, start, offset, map(operator.sub, end, start), vaddr))


def normalise(raw: list[Segment]) -> KcoreLayout:
    """Drop overlaps: direct-map segments first, then by paddr (see the module docstring)."""
    kept: list[Segment] = []
    taken: list[tuple[int, int]] = []
    for seg in sorted(raw, key=lambda s: (not s.direct_map, s.paddr, s.offset)):
        for a, b in _ranges_minus(seg.paddr, seg.end, taken):
            kept.append(seg.piece(a, b))
            bisect.insort(taken, (a, b))  # disjoint, so _ranges_minus can bisect into it
    return KcoreLayout(sorted(kept, key=lambda s: s.paddr))


def parse_kcore_layout(data: bytes) -> KcoreLayout:
    """The RAM layout from the first :func:`header_span` bytes of a kcore (more is ignored)."""
    span = header_span(data)
    if len(data) < span:
        raise ParseError(
            f"program header table truncated: {len(data)} of {span} bytes", offset=len(data)
        )
    start, end, offset, vaddr = _ram_columns(data)
    # Each segment ending where (or before) the next one starts: ascending and disjoint, as the
    # RAM segments of a kcore without a kernel-text segment are.  Nothing to drop or sort.
    if all(map(operator.le, end, itertools.islice(start, 1, None))):
        return KcoreLayout.from_columns(start, end, offset, vaddr)
    return normalise(list(map(Segment, start, offset, map(operator.sub, end, start), vaddr)))
