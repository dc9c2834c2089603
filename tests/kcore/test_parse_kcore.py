"""ELF core program headers -> RAM layout (parse/kcore.py), on cores corewriter writes.

Synthetic cores only: the header facts they mimic (ET_CORE, EM_X86_64, RAM segments with
p_paddr, an overlapping kernel-text segment, p_paddr -1 for vmalloc/modules/vmemmap) were
measured on a real /proc/kcore (reference §12, and tests/kcore/harness_check.py).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from vtdlud.errors import ParseError, PhysReadError
from vtdlud.host.corewriter import DIRECT_MAP_BASE, ExtraSegment, build_core, page_runs
from vtdlud.parse.kcore import (
    EHDR_SIZE,
    KERNEL_TEXT_VADDR,
    FileRange,
    KcoreLayout,
    Segment,
    header_span,
    parse_kcore_layout,
)

PAGE = 4096


def _pages(*addrs: int) -> dict[int, bytes]:
    return {a: bytes([a >> 12 & 0xFF]) * PAGE for a in addrs}


def test_corewriter_runs_and_pyelftools_reads_it() -> None:
    core = build_core(_pages(0x1000, 0x2000, 0x5000))
    elf = ELFFile(io.BytesIO(core))
    assert (elf["e_type"], elf["e_machine"], elf.elfclass, elf.little_endian) == (
        "ET_CORE",
        "EM_X86_64",
        64,
        True,
    )
    segs = list(elf.iter_segments())
    assert [s["p_type"] for s in segs] == ["PT_LOAD", "PT_LOAD"]
    assert [(s["p_paddr"], s["p_memsz"], s["p_filesz"]) for s in segs] == [
        (0x1000, 0x2000, 0x2000),
        (0x5000, 0x1000, 0x1000),
    ]
    assert segs[0]["p_vaddr"] == DIRECT_MAP_BASE + 0x1000
    assert segs[1].data() == bytes([5]) * PAGE
    layout = parse_kcore_layout(core)
    assert [(s.paddr, s.memsz) for s in layout.segments] == [(0x1000, 0x2000), (0x5000, 0x1000)]
    assert all(s.offset % PAGE == 0 for s in layout.segments)


def test_page_runs_rejects_bad_pages() -> None:
    with pytest.raises(ValueError, match="aligned"):
        page_runs({0x1001: bytes(PAGE)})
    with pytest.raises(ValueError, match="holds 5 bytes"):
        page_runs({0x1000: bytes(5)})
    assert page_runs({}) == []
    empty = parse_kcore_layout(build_core({}))
    assert empty.segments == () and empty.ram_bytes == 0


def test_non_ram_segments_are_ignored() -> None:
    core = build_core(
        _pages(0x1000),
        extra=[ExtraSegment(vaddr=0xFFFF_C900_0000_0000, data=bytes(PAGE))],  # vmalloc, paddr -1
    )
    layout = parse_kcore_layout(core)
    assert [(s.paddr, s.memsz) for s in layout.segments] == [(0x1000, PAGE)]


def test_kernel_text_overlap_prefers_direct_map() -> None:
    """A KCORE_TEXT segment over [0x2000, 0x6000) overlaps RAM [0x1000, 0x4000): RAM wins, text
    keeps only [0x4000, 0x6000)."""
    text = b"T" * (4 * PAGE)
    core = build_core(
        _pages(0x1000, 0x2000, 0x3000),
        extra=[ExtraSegment(vaddr=KERNEL_TEXT_VADDR + 0x100_0000, data=text, paddr=0x2000)],
    )
    layout = parse_kcore_layout(core)
    assert [(s.paddr, s.memsz, s.direct_map) for s in layout.segments] == [
        (0x1000, 0x3000, True),
        (0x4000, 0x2000, False),
    ]
    assert layout.find(0x2500) == layout.segments[0]
    assert layout.segments[1].vaddr == KERNEL_TEXT_VADDR + 0x100_0000 + 0x2000
    (fr,) = layout.translate(0x4000, 16)
    assert core[fr.offset : fr.offset + 16] == b"T" * 16
    (fr,) = layout.translate(0x2000, 16)
    assert core[fr.offset : fr.offset + 16] == bytes([2]) * 16


def test_translate_splits_adjacent_and_refuses_gaps() -> None:
    layout = KcoreLayout(
        (
            Segment(0x1000, 0x10000, 0x1000, DIRECT_MAP_BASE),
            Segment(0x2000, 0x50000, 0x1000, KERNEL_TEXT_VADDR),
            Segment(0x4000, 0x90000, 0x1000, DIRECT_MAP_BASE),
        )
    )
    assert layout.translate(0x1FF0, 0x20) == (
        FileRange(0x1FF0, 0x10FF0, 0x10),
        FileRange(0x2000, 0x50000, 0x10),
    )
    for addr, size in [(0x2FF0, 0x20), (0x3000, 1), (0, 1), (0x5000, 1), (0x1000, 0)]:
        with pytest.raises(PhysReadError) as exc:
            layout.translate(addr, size)
        assert exc.value.outside_ram
    assert layout.covers(0x4000, 0x1000) and not layout.covers(0x4000, 0x1001)
    assert layout.find(0x3000) is None and layout.find(0x4FFF) == layout.segments[2]


def _hdr(core: bytes, off: int, fmt: str, value: int) -> bytes:
    b = bytearray(core)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


@pytest.mark.parametrize(
    ("off", "fmt", "value", "match"),
    [
        (0, "<B", 0x7E, "ELF magic"),
        (4, "<B", 1, "ELFCLASS64"),
        (5, "<B", 2, "little-endian"),
        (16, "<H", 2, "ET_CORE"),
        (18, "<H", 183, "EM_X86_64"),
        (54, "<H", 32, "e_phentsize"),
        (56, "<H", 0xFFFF, "PN_XNUM"),
        (56, "<H", 9000, "program headers"),
        (32, "<Q", 8, "overlaps"),
        (32, "<Q", 1 << 63, "beyond"),
    ],
)
def test_bad_header_fields(off: int, fmt: str, value: int, match: str) -> None:
    core = _hdr(build_core(_pages(0x1000)), off, fmt, value)
    with pytest.raises(ParseError, match=match):
        parse_kcore_layout(core)


def test_truncated_headers() -> None:
    core = build_core(_pages(0x1000, 0x3000))
    with pytest.raises(ParseError, match="ELF header truncated"):
        parse_kcore_layout(core[:40])
    span = header_span(core)
    assert span == EHDR_SIZE + 2 * 56
    with pytest.raises(ParseError, match="program header table truncated"):
        parse_kcore_layout(core[: span - 1])
    assert len(parse_kcore_layout(core[:span]).segments) == 2


def test_segment_ranges_beyond_limits() -> None:
    core = build_core(_pages(0x1000))
    phdr = EHDR_SIZE
    with pytest.raises(ParseError, match="passes 2\\*\\*64"):
        parse_kcore_layout(_hdr(core, phdr + 24, "<Q", 2**64 - 0x800))  # p_paddr
    with pytest.raises(ParseError, match="beyond any file"):
        parse_kcore_layout(_hdr(core, phdr + 8, "<Q", 2**63 - 0x800))  # p_offset
    smaller = _hdr(core, phdr + 32, "<Q", 0x800)  # p_filesz < p_memsz: only filesz is usable
    assert parse_kcore_layout(smaller).segments[0].memsz == 0x800
    zero = _hdr(core, phdr + 40, "<Q", 0)
    assert parse_kcore_layout(zero).segments == ()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=12),
    st.booleans(),
)
def test_mutated_headers_raise_only_parseerror(flips: list[tuple[int, int]], text: bool) -> None:
    extra = [ExtraSegment(KERNEL_TEXT_VADDR, bytes(2 * PAGE), 0x2000)] if text else []
    core = bytearray(build_core(_pages(0x1000, 0x2000, 0x8000), extra=extra))
    for pos, val in flips:
        core[pos] = val
    try:
        layout = parse_kcore_layout(bytes(core))
    except ParseError:
        return
    segs = layout.segments
    assert all(a.end <= b.paddr for a, b in itertools.pairwise(segs))
    assert all(s.memsz > 0 and s.end <= 2**64 for s in segs)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_parseerror(data: bytes) -> None:
    for blob in (data, b"\x7fELF\x02\x01\x01" + data, build_core({})[:16] + data):
        with contextlib.suppress(ParseError):
            parse_kcore_layout(blob)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6),
    st.binary(min_size=56 * 6, max_size=56 * 6),
    st.sampled_from([1, 2, 4, 3, 6, 7]),  # PT_LOAD, PT_DYNAMIC, PT_NOTE, PT_INTERP, ...
    st.integers(0, 0xFFFF),
    st.integers(0, 2**64 - 1),
)
def test_random_program_headers(n: int, table: bytes, p_type: int, shnum: int, shoff: int) -> None:
    """A valid ELF header over random program headers (types pyelftools treats specially,
    random section-header fields): a layout or ParseError, nothing else."""
    head = bytearray(build_core({})[:EHDR_SIZE])
    struct.pack_into("<QQ", head, 32, EHDR_SIZE, shoff)
    struct.pack_into("<HHHH", head, 54, 56, n, 64, shnum)
    phdrs = bytearray(table[: 56 * n])
    struct.pack_into("<I", phdrs, 0, p_type)
    try:
        layout = parse_kcore_layout(bytes(head + phdrs))
    except ParseError:
        return
    assert len(layout.segments) <= 2 * n
