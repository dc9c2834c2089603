"""Hypothesis: random and mutated pages through every walker of this suite.

Whatever the memory holds, the record walker, the preserved-map walker and the signature scan
return results (problems are declared kinds, never exceptions) after bounded work.  The seeds
are built from the layouts the modules document: no real capture of these structures exists.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.records import UNIT_A, UNIT_B, Layout, PageMemory, write_radix
from vtdlud.model.abi import PAGE_SIZE, V1, V2
from vtdlud.model.khomem import (
    KHO_V1,
    KHO_V2,
    MemMapLimits,
    MemMapProblemKind,
    walk_preserved_memory,
)
from vtdlud.model.records import Chain, ChainProblem, ProblemKind, RecordLimits, walk_records
from vtdlud.model.signature import PROBE_SIZE, ScanLimits, find_hw_records

BASE = 0x10_0000
NPAGES = 8
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _words() -> st.SearchStrategy[int]:
    """u64 values that often mean something: small counts, page addresses of this memory (and
    just off them), the units' bases, the order bits of radix keys, anything."""
    page = st.integers(0, NPAGES - 1).map(lambda i: BASE + i * PAGE_SIZE)
    return st.one_of(
        st.just(0),
        st.integers(0, 120),
        page,
        page.map(lambda a: a + 16),
        page.map(lambda a: a + 16 + 112),
        st.sampled_from([UNIT_A, UNIT_B, 1, 0xFFFF_FFFF_FFFF_FFFF, 1 << 52, 1 << 63]),
        st.integers(0, (1 << 64) - 1),
    )


@st.composite
def memories(draw: st.DrawFn) -> PageMemory:
    mem = PageMemory(BASE)
    for _ in range(NPAGES):
        page = mem.alloc()
        words = draw(st.lists(_words(), min_size=0, max_size=24))
        mem.write(page, struct.pack(f"<{len(words)}Q", *words))
        if draw(st.booleans()):  # and a stretch of arbitrary bytes further in
            mem.write(page + draw(st.integers(0, 3000)), draw(st.binary(max_size=512)))
    return mem


@st.composite
def mutated_layouts(draw: st.DrawFn) -> tuple[PageMemory, Layout]:
    mem = PageMemory(BASE)
    layout = Layout(mem, devices=draw(st.integers(0, 5)), v2_flb=draw(st.booleans()))
    pages = layout.record_pages
    for _ in range(draw(st.integers(1, 12))):
        page = draw(st.sampled_from(pages))
        offset = draw(st.integers(0, 200)) // 8 * 8
        mem.write(page + offset, struct.pack("<Q", draw(_words())))
    return mem, layout


def _check_records(mem: PageMemory, flb: int, v2: bool) -> None:
    limits = RecordLimits(max_pages_per_chain=4)
    mem.calls = 0
    state = walk_records(mem, flb, V2 if v2 else V1, limits=limits)
    assert mem.calls <= 3 * limits.max_pages_per_chain + 2
    assert all(isinstance(p, ChainProblem) and p.kind in ProblemKind for p in state.problems)
    for chain in (Chain.HW, Chain.DOMAIN, Chain.DEVICE):
        pages = state.pages.get(chain, ())
        assert len(pages) <= limits.max_pages_per_chain and len(set(pages)) == len(pages)
    walked = {p for pages in state.pages.values() for p in pages}
    for rec in (*state.hw, *state.domains, *state.devices):
        assert rec.page in walked and rec.page < rec.phys < rec.page + PAGE_SIZE
    for dev in state.devices:
        state.iommu_ref(dev)
        state.domain_ref(dev)


@FUZZ
@given(memories(), st.integers(0, NPAGES - 1), st.booleans())
def test_record_walk_of_random_memory(mem: PageMemory, flb_index: int, v2: bool) -> None:
    _check_records(mem, BASE + flb_index * PAGE_SIZE, v2)


@FUZZ
@given(mutated_layouts())
def test_record_walk_of_mutated_chains(case: tuple[PageMemory, Layout]) -> None:
    mem, layout = case
    flb_words = struct.unpack("<Q", mem(layout.flb, 8))
    _check_records(mem, layout.flb, v2=flb_words[0] == 1)


@FUZZ
@given(memories(), st.integers(0, NPAGES - 1), st.sampled_from([KHO_V1, KHO_V2]))
def test_preserved_map_of_random_memory(mem: PageMemory, root: int, compatible: str) -> None:
    limits = MemMapLimits(max_pages_read=6, max_ranges=5000, max_preserved_pages=1 << 40)
    mem.calls = 0
    pm = walk_preserved_memory(mem, compatible, BASE + root * PAGE_SIZE, limits=limits)
    assert pm.pages_read <= limits.max_pages_read and mem.calls <= limits.max_pages_read
    assert all(p.kind in MemMapProblemKind for p in pm.problems)
    assert pm.range_count <= limits.max_ranges + 32768  # the leaf that crossed the bound
    for rng in pm.ranges():
        assert 0 <= rng.order <= limits.max_order
        assert rng.phys % rng.size == 0 and rng.phys < 1 << 64


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, (1 << 40) - 1), st.integers(0, 18)), max_size=30),
    st.integers(0, 5),
    st.integers(0, 255),
)
def test_mutated_radix_tree(ranges: list[tuple[int, int]], target: int, value: int) -> None:
    mem = PageMemory(BASE)
    aligned = [(p >> (12 + o) << (12 + o), o) for p, o in ranges]
    root = write_radix(mem, aligned)
    pm = walk_preserved_memory(mem, KHO_V2, root)
    assert set(pm.ranges()) == set(aligned)  # unmutated: exact
    page = sorted(mem.pages)[target % len(mem.pages)]
    mem.write(page + (value * 16) % PAGE_SIZE, struct.pack("<Q", value * 0x0101_0101_0101_0101))
    pm = walk_preserved_memory(mem, KHO_V2, root, limits=MemMapLimits(max_pages_read=64))
    assert pm.pages_read <= 64
    for rng in pm.ranges():
        assert rng.phys % rng.size == 0


@FUZZ
@given(memories(), mutated_layouts())
def test_signature_scan_never_fails(noise: PageMemory, case: tuple[PageMemory, Layout]) -> None:
    mem, _layout = case
    for addr, data in noise.pages.items():  # the noise pages sit above the layout
        mem.pages[addr + 0x100_0000] = data
    pages = sorted(mem.pages)
    probe = PageMemory()
    probe.pages = mem.pages
    limits = ScanLimits(max_candidates=8, max_full_reads=8)
    scan = find_hw_records(mem, pages, {UNIT_A, UNIT_B}, probe=probe, limits=limits)
    assert probe.calls == scan.pages_scanned <= len(pages)
    assert probe.bytes == scan.pages_scanned * PROBE_SIZE
    assert scan.full_reads <= limits.max_full_reads
    assert set(scan.hw_pages) <= set(pages)
    if scan.state is not None:
        assert scan.state.located_by == "signature"
