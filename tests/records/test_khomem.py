"""walk_preserved_memory: kho-v2 radix trees and kho-v1 chunk lists in a fake memory.

The trees and lists are built here from the layouts read in include/linux/kho/abi/
kexec_handover.h and kernel/{,liveupdate/}kexec_handover.c (see vtdlud/model/khomem.py), and
checked once against the simulator's own tree writer; no real capture of a map exists.
"""

from __future__ import annotations

import struct

import pytest

from tests.records import PageMemory, radix_key, write_chunks, write_radix
from vtdlud.model.khomem import (
    KHO_V1,
    KHO_V2,
    MapState,
    MemMapLimits,
    MemMapProblemKind,
    PreservedRange,
    walk_preserved_memory,
)
from vtdlud.sim.kho import build_radix
from vtdlud.sim.memory import PhysMemory

MIB = 1 << 20
RANGES = [
    (0x0010_0000, 0),
    (0x0010_1000, 0),
    (0x0010_3000, 0),
    (0x7FFF_F000, 0),  # last page below 2 GiB
    (0x1_2345_6000, 0),  # above 4 GiB
    (0x3F_FFFF_F000, 0),  # near 256 GiB
    (0x0020_0000, 9),  # 2 MiB folios
    (0x4000_0000, 9),
    (0x0080_0000, 1),
    (0x0100_0000, 10),  # 4 MiB
    (0x4_0000_0000, 18),  # a 1 GiB folio at 16 GiB
]


def _expected(ranges: list[tuple[int, int]]) -> list[PreservedRange]:
    return sorted((PreservedRange(p, o) for p, o in ranges), key=lambda r: (r.order, r.phys))


def test_radix_tree_round_trip() -> None:
    mem = PageMemory()
    root = write_radix(mem, RANGES)
    pm = walk_preserved_memory(mem, KHO_V2, root)
    assert pm.state is MapState.COMPLETE and pm.problems == ()
    assert list(pm.ranges()) == _expected(RANGES)
    assert list(pm.order0_pages()) == sorted(p for p, o in RANGES if o == 0)
    assert pm.range_count == len(RANGES)
    assert pm.page_count == 6 + 2 * 512 + 2 + 1024 + (1 << 18)
    assert pm.pages_read == len(mem.pages) - 0  # every node and leaf read once


@pytest.mark.parametrize("compatible", ["kho-v3", "kho-v4"])
def test_radix_tree_of_kho_v3_and_v4(compatible: str) -> None:
    """Linux 7.2.13 (kho-v4) keeps kho-v2's radix tracker byte for byte."""
    mem = PageMemory()
    root = write_radix(mem, RANGES)
    pm = walk_preserved_memory(mem, compatible, root)
    assert pm.state is MapState.COMPLETE and pm.compatible == compatible
    assert list(pm.ranges()) == _expected(RANGES)


def test_radix_key_encoding_matches_the_header_table() -> None:
    # kexec_handover.h: order 0 -> order bit 52, order 1 -> 51, order 2 -> 50
    assert radix_key(0x1000, 0) == 1 << 52 | 1
    assert radix_key(0x2000, 1) == 1 << 51 | 1
    assert radix_key(0x4000, 2) == 1 << 50 | 1


def test_find_and_contains() -> None:
    mem = PageMemory()
    pm = walk_preserved_memory(mem, KHO_V2, write_radix(mem, RANGES))
    assert pm.find(0x0020_0000 + 5 * 4096 + 3) == PreservedRange(0x0020_0000, 9)
    assert pm.contains(0x0020_0000 + 511 * 4096)
    assert not pm.contains(0x0040_0000)  # just past the 2 MiB folio
    assert not pm.contains(0x0020_0000 + 511 * 4096 + 8, 4096)  # straddles the end
    assert pm.contains(0x0010_1000) and not pm.contains(0x0010_2000)
    assert pm.find(0x4_0000_0000 + 700 * MIB) == PreservedRange(0x4_0000_0000, 18)
    assert pm.find(0x5000) is None


def test_radix_tree_written_by_the_simulator() -> None:
    mem = PhysMemory(seed=3)
    pages = {mem.alloc() for _ in range(200)}
    root, nodes = build_radix(mem, pages)
    pm = walk_preserved_memory(mem.read_phys, KHO_V2, root)
    assert pm.state is MapState.COMPLETE
    assert set(pm.order0_pages()) == pages and pm.pages_read == len(nodes)


def test_dense_leaf_uses_every_bit() -> None:
    mem = PageMemory()
    ranges = [(0x1000_0000 + i * 4096, 0) for i in range(32768)]  # one full leaf (128 MiB)
    pm = walk_preserved_memory(mem, KHO_V2, write_radix(mem, ranges[:100] + ranges[100:]))
    assert pm.range_count == 32768 and pm.order0_pages()[-1] == 0x1000_0000 + 32767 * 4096


# --- corrupt trees -------------------------------------------------------------------------


def _leaf_parent(mem: PageMemory, root: int, phys: int, order: int = 0) -> tuple[int, int]:
    """(level-1 node, entry offset) on the path of (phys, order)."""
    key, node = radix_key(phys, order), root
    for level in range(5, 1, -1):
        node = mem.u64(node + ((key >> (15 + 9 * (level - 1))) & 511) * 8)
    return node, ((key >> 15) & 511) * 8


def test_radix_child_outside_ram_loses_only_that_subtree() -> None:
    mem = PageMemory()
    root = write_radix(mem, RANGES)
    node, off = _leaf_parent(mem, root, 0x1_2345_6000)
    mem.set_u64(node + off, 0x77_0000_0000)
    pm = walk_preserved_memory(mem, KHO_V2, root)
    assert pm.state is MapState.INCOMPLETE
    (problem,) = pm.problems
    assert problem.kind is MemMapProblemKind.UNREADABLE and problem.phys == 0x77_0000_0000
    assert pm.range_count == len(RANGES) - 1


@pytest.mark.parametrize(
    ("target", "kind"),
    [("root", MemMapProblemKind.REVISITED), ("misaligned", MemMapProblemKind.MISALIGNED)],
)
def test_radix_loop_and_misaligned_child(target: str, kind: MemMapProblemKind) -> None:
    mem = PageMemory()
    root = write_radix(mem, RANGES)
    node, off = _leaf_parent(mem, root, 0x0010_0000)
    mem.set_u64(node + off + 8, root if target == "root" else root + 0x10)
    pm = walk_preserved_memory(mem, KHO_V2, root)
    assert [p.kind for p in pm.problems] == [kind]
    assert pm.range_count == len(RANGES)


def test_radix_keys_without_a_valid_order() -> None:
    mem = PageMemory()
    root = write_radix(mem, [(0x1000, 0)])
    leaf = mem.alloc()
    mem.write(leaf, b"\xff")
    mem.set_u64(root + 8 * 8, leaf)  # level-5 index 8: keys >= 2**54, no order bit <= 52
    pm = walk_preserved_memory(mem, KHO_V2, root)
    (problem,) = pm.problems
    assert problem.kind is MemMapProblemKind.BAD_ORDER and pm.range_count == 1
    # order 20 is above MemMapLimits.max_order (18); order 18 is accepted
    mem2 = PageMemory()
    root2 = write_radix(mem2, [(0x40_0000_0000, 20), (0x4000_0000, 18)])
    pm2 = walk_preserved_memory(mem2, KHO_V2, root2)
    assert [p.kind for p in pm2.problems] == [MemMapProblemKind.BAD_ORDER]
    assert list(pm2.ranges()) == [PreservedRange(0x4000_0000, 18)]


def test_radix_null_root_and_unknown_compatible() -> None:
    mem = PageMemory()
    for value in (None, 0):
        pm = walk_preserved_memory(mem, KHO_V2, value)
        assert pm.state is MapState.INCOMPLETE
        assert [p.kind for p in pm.problems] == [MemMapProblemKind.NULL]
    mem.calls = 0
    pm = walk_preserved_memory(mem, "kho-v5", 0x1000)
    assert pm.state is MapState.UNKNOWN and pm.note is not None and "kho-v5" in pm.note
    assert mem.calls == 0


def test_radix_read_budget_bounds_the_walk() -> None:
    mem = PageMemory()
    root = write_radix(mem, [(0x1000_0000 + i * (128 * MIB), 0) for i in range(20)])
    mem.calls = 0
    pm = walk_preserved_memory(mem, KHO_V2, root, limits=MemMapLimits(max_pages_read=8))
    assert pm.state is MapState.INCOMPLETE and pm.pages_read == 8
    assert pm.problems[-1].kind is MemMapProblemKind.LIMIT and mem.calls == 8


def test_range_budget_cuts_the_map() -> None:
    mem = PageMemory()
    root = write_radix(mem, [(0x1000_0000 + i * 4096, 0) for i in range(1000)])
    pm = walk_preserved_memory(mem, KHO_V2, root, limits=MemMapLimits(max_ranges=100))
    assert pm.state is MapState.INCOMPLETE
    assert pm.problems[-1].kind is MemMapProblemKind.LIMIT


# --- kho-v1 chunk lists --------------------------------------------------------------------


def test_chunk_list_round_trip() -> None:
    mem = PageMemory()
    pm = walk_preserved_memory(mem, KHO_V1, write_chunks(mem, RANGES))
    assert pm.state is MapState.COMPLETE and pm.problems == ()
    assert list(pm.ranges()) == _expected(RANGES)


def test_chunk_list_spills_past_255_bitmaps() -> None:
    mem = PageMemory()
    ranges = [(i * 128 * MIB, 0) for i in range(1, 300)]  # one order-0 bitmap per 128 MiB
    head = write_chunks(mem, ranges)
    assert mem.u64(head) != 0  # a second chunk is linked
    assert struct.unpack("<II", mem(head + 8, 8)) == (0, 255)
    pm = walk_preserved_memory(mem, KHO_V1, head)
    assert pm.state is MapState.COMPLETE and list(pm.order0_pages()) == [p for p, _ in ranges]


@pytest.mark.parametrize("value", [None, 0])
def test_chunk_list_before_finalize_is_empty_not_corrupt(value: int | None) -> None:
    pm = walk_preserved_memory(PageMemory(), KHO_V1, value)
    assert pm.state is MapState.NOT_FINALIZED and pm.problems == () and pm.range_count == 0
    assert pm.note is not None and "finalize" in pm.note


def test_chunk_list_corruption() -> None:
    mem = PageMemory()
    head = write_chunks(mem, [(0x10_0000, 0), (0x20_0000, 9)])
    second = mem.u64(head)
    # the order-0 chunk: misaligned phys_start in its only element
    mem.set_u64(head + 16, 0x1000)
    pm = walk_preserved_memory(mem, KHO_V1, head)
    assert [p.kind for p in pm.problems] == [MemMapProblemKind.BAD_START]
    assert list(pm.ranges()) == [PreservedRange(0x20_0000, 9)]
    # num_elms over 255, then a loop back to the first chunk
    mem.write(second + 8, struct.pack("<II", 9, 300))
    mem.set_u64(second, head)
    pm = walk_preserved_memory(mem, KHO_V1, head)
    kinds = [p.kind for p in pm.problems]
    assert kinds == [
        MemMapProblemKind.BAD_START,
        MemMapProblemKind.BAD_COUNT,
        MemMapProblemKind.REVISITED,
    ]
    # an order no folio has, and a null bitmap pointer
    mem.write(second + 8, struct.pack("<II", 40, 1))
    mem.set_u64(second, 0)
    mem.set_u64(head + 16, 0)
    mem.set_u64(head + 24, 0)
    pm = walk_preserved_memory(mem, KHO_V1, head)
    assert [p.kind for p in pm.problems] == [MemMapProblemKind.NULL, MemMapProblemKind.BAD_ORDER]
    assert pm.state is MapState.INCOMPLETE and pm.range_count == 0
