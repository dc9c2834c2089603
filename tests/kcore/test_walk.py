"""The root/context/PASID table walk and its comparison with debugfs (VTD015).

Backed by synthetic memory: the tables are laid out from the real captures' ``dmar_translation_
struct`` rows (tests/data/captures a_legacy, b_scalable; Linux 6.12 under QEMU's emulated VT-d)
at the physical addresses those rows name, put in an ELF core written by corewriter and read
back through PhysMem.  PASID table addresses are invented (debugfs never prints them).  The walk
itself was checked against a real /proc/kcore with tests/kcore/harness_check.py (not in CI).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import capture_file
from tests.kcore import MASK, Memory, lay_out
from vtdlud.errors import ParseError, PhysReadError
from vtdlud.host.corewriter import write_core
from vtdlud.host.kcore import PhysMem
from vtdlud.model.crosscheck import DisagreementKind, compare_with_debugfs, debugfs_rows
from vtdlud.model.debugfs import TranslationStruct, TranslationUnit
from vtdlud.model.live import LiveTables, derive_unit_tables
from vtdlud.model.tables import Mode, PasidEntry
from vtdlud.model.walk import ProblemKind, WalkLimits, WalkResult, walk_unit_tables
from vtdlud.parse.regset import parse_iommu_regset
from vtdlud.parse.translation import parse_dmar_translation_struct, render_dmar_translation_struct

CaptureRoot = Callable[[str], Path]
REGSET = "sys/kernel/debug/iommu/intel/iommu_regset"
TRANS = "sys/kernel/debug/iommu/intel/dmar_translation_struct"


def _capture(capture_root: CaptureRoot, name: str) -> tuple[str, TranslationUnit, LiveTables]:
    text = capture_file(capture_root, name, TRANS)
    unit = parse_dmar_translation_struct(text).units[0]
    regset = parse_iommu_regset(capture_file(capture_root, name, REGSET))
    live = derive_unit_tables(regset.units[0], unit)
    return text, unit, live


def _walk_core(tmp_path: Path, mem: Memory, root: int, scalable: bool) -> WalkResult:
    core = tmp_path / "kcore"
    write_core(core, mem.frozen())
    with PhysMem.open_file(core) as pm:
        return walk_unit_tables(pm.read, root, scalable)


@pytest.mark.parametrize(
    ("name", "bits", "devices"),
    [
        ("a_legacy", [0, 2, 4, 6, 8, 10], 18),
        ("b_scalable", [0, 1, 2, 4, 6, 8, 10], 17),
    ],
)
def test_walk_reproduces_capture(
    capture_root: CaptureRoot, tmp_path: Path, name: str, bits: list[int], devices: int
) -> None:
    """Synthetic memory laid out from a real capture: the walk gives back every row."""
    text, unit, live = _capture(capture_root, name)
    scalable = live.mode is Mode.SCALABLE
    assert unit.root_table is not None
    walk = _walk_core(tmp_path, lay_out(unit, scalable), unit.root_table, scalable)
    assert walk.complete, walk.problems
    assert sorted(walk.context_table_bits) == bits
    assert len(walk.devices) == devices
    # Rendered the way debugfs prints, the walk is byte-identical to the capture.
    again = TranslationUnit(unit.name, True, unit.root_table, debugfs_rows(walk))
    assert render_dmar_translation_struct(TranslationStruct((again,))) == text
    assert compare_with_debugfs(walk, live, unit.rows) == []
    assert live.context_table_bits <= walk.context_table_bits
    for key, info in live.devices.items():
        assert walk.devices[key] == info


def test_legacy_dids_and_table_addresses(capture_root: CaptureRoot, tmp_path: Path) -> None:
    _, unit, _ = _capture(capture_root, "a_legacy")
    walk = _walk_core(tmp_path, lay_out(unit, False), 0x1A49000, False)
    # 00:02.0 context hi 0x301 -> DID (hi >> 8) & 0xffff = 3; 05:02.0 hi 0xe01 -> 14.
    assert walk.devices[(0, 0x10)].did == 3
    assert walk.devices[(5, 0x10)].did == 14
    assert walk.context_tables[0] == 0x1A53000  # bus 00 root lo 0x1a53001
    assert walk.context_tables[10] == 0x1C5F000  # bus 05
    assert 0x1A49000 in walk.table_pages and 0x1C5F000 in walk.table_pages


def test_scalable_dids_pasid_dirs_and_upper_table(
    capture_root: CaptureRoot, tmp_path: Path
) -> None:
    _, unit, _ = _capture(capture_root, "b_scalable")
    walk = _walk_core(tmp_path, lay_out(unit, True), 0x1A48000, True)
    dev = walk.devices[(0, 0x10)]  # 00:02.0
    # context lo 0x1a4d401: dir 0x1a4d000, PDTS (0x401 >> 9) & 7 = 2; PASID 0 val1 = 3 -> DID 3
    assert (dev.pasid_dir, dev.pdts, dev.did) == (0x1A4D000, 2, 3)
    assert dev.pasid_entries == {0: PasidEntry(0x1A6E089, 3, 0)}
    assert walk.context_tables[1] == 0x1A58000  # bus 00 root hi 0x1a58001: the empty upper table
    assert list(walk.pasid_tables[(0, 0x10)]) == [0]
    assert walk.sm_context_upper[(0, 0x10)] == (0, 0)


def _sm_device(mem: Memory, root: int, bus: int, devfn: int, *, pdts: int, did: int) -> int:
    """A scalable device with a PASID 0 entry; returns its PASID directory."""
    lower = 0x10_0000 + bus * 0x1000
    upper = 0x20_0000 + bus * 0x1000
    if devfn >= 0x80:
        mem.put_u64(root + bus * 16 + 8, upper | 1)
        mem.touch(upper)
        table = upper
    else:
        table = lower
    mem.put_u64(root + bus * 16, lower | 1)
    mem.touch(lower)
    pdir = mem.alloc()
    mem.touch(pdir, (1 << (pdts + 7)) * 8)
    mem.next_free = max(mem.next_free, pdir + (1 << (pdts + 7)) * 8)
    slot = table + (devfn & 0x7F) * 32
    mem.put_u64(slot, pdir | pdts << 9 | 1)
    ptab = mem.alloc()
    mem.put_u64(pdir, ptab | 1)
    mem.put_u64(ptab, 0x89)
    mem.put_u64(ptab + 8, did)
    return pdir


def test_upper_table_device_on_bus_without_lower_devices() -> None:
    """debugfs hides devfn >= 0x80 when the lower table has no row; the walk does not."""
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    _sm_device(mem, root, 3, 0x88, pdts=0, did=7)
    walk = walk_unit_tables(mem.read, root, True)
    assert walk.complete
    assert sorted(walk.context_table_bits) == [6, 7]
    assert walk.devices[(3, 0x88)].did == 7
    assert debugfs_rows(walk)[0].bdf == "03:11.0"


def test_pointer_outside_ram_is_a_problem() -> None:
    """Synthetic: a root entry pointing at memory that is in no segment."""
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    mem.put_u64(root + 2 * 16, 0x7777_0000 | 1)
    walk = walk_unit_tables(mem.read, root, False)
    assert walk.context_table_bits == {4}
    assert walk.unwalked_tables == {4}
    (p,) = walk.problems
    assert (p.kind, p.addr) == (ProblemKind.OUTSIDE_RAM, 0x7777_0000)
    assert "bus 02" in p.message


def test_root_table_unreadable() -> None:
    walk = walk_unit_tables(Memory().read, 0x5000, True)
    assert walk.root_entries == () and not walk.devices and not walk.context_table_bits
    assert [p.kind for p in walk.problems] == [ProblemKind.OUTSIDE_RAM]


def test_context_pointer_back_at_root_table() -> None:
    """Synthetic: bus 1's context pointer is the root table itself; bus 2 shares bus 0's table."""
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    mem.put_u64(root, 0x3000 | 1)
    mem.put_u64(root + 16, root | 1)
    mem.put_u64(root + 32, 0x3000 | 1)
    mem.put_u64(0x3000, 0x9000 | 1)  # 00:00.0 present
    mem.put_u64(0x3008, 0x201)
    walk = walk_unit_tables(mem.read, root, False)
    assert walk.context_table_bits == {0, 2, 4}
    assert walk.unwalked_tables == {2, 4}
    assert [p.kind for p in walk.problems] == [ProblemKind.ALIAS, ProblemKind.ALIAS]
    assert "root table" in walk.problems[0].message
    assert list(walk.devices) == [(0, 0)]


def test_huge_pdts_is_capped() -> None:
    """Synthetic: PDTS 7 (16384 directory entries) against a limit of 256."""
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    _sm_device(mem, root, 0, 8, pdts=7, did=5)
    walk = walk_unit_tables(mem.read, root, True, limits=WalkLimits(max_pasid_dir_entries=256))
    assert walk.incomplete_devices == {(0, 8)}
    assert walk.devices[(0, 8)].did == 5  # the first 256 directory entries were walked
    assert [p.kind for p in walk.problems] == [ProblemKind.LIMIT]
    full = walk_unit_tables(mem.read, root, True)
    assert full.complete and full.devices[(0, 8)].pdts == 7


def test_pasid_table_and_directory_budgets() -> None:
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    for devfn in range(0, 40, 8):
        _sm_device(mem, root, 0, devfn, pdts=0, did=devfn)
    walk = walk_unit_tables(mem.read, root, True, limits=WalkLimits(max_pasid_tables=2))
    assert len(walk.incomplete_devices) == 3
    assert sum(p.kind is ProblemKind.LIMIT for p in walk.problems) == 1
    walk = walk_unit_tables(mem.read, root, True, limits=WalkLimits(max_pasid_dir_bytes=2048))
    assert len(walk.incomplete_devices) == 3  # 1 KiB per directory (PDTS 0)


def test_problem_list_is_capped() -> None:
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    for bus in range(256):
        mem.put_u64(root + bus * 16, (0x100_0000 + bus * 0x1000) | 1)  # all outside RAM
    walk = walk_unit_tables(mem.read, root, False, limits=WalkLimits(max_problems=10))
    assert len(walk.problems) == 11
    assert walk.problems[-1].message == "246 more problems not listed"


def test_short_read_is_a_problem() -> None:
    walk = walk_unit_tables(lambda a, s: b"\0" * (s - 1), 0x1000, False)
    assert [p.kind for p in walk.problems] == [ProblemKind.UNREADABLE]


# --- compare_with_debugfs ------------------------------------------------------------------


def _legacy_case(capture_root: CaptureRoot) -> tuple[TranslationUnit, LiveTables, Memory]:
    _, unit, live = _capture(capture_root, "a_legacy")
    return unit, live, lay_out(unit, False)


def test_compare_flags_changed_context_entry(capture_root: CaptureRoot) -> None:
    unit, live, mem = _legacy_case(capture_root)
    mem.put_u64(0x1A53000 + 0x10 * 16 + 8, 0x999)  # 00:02.0 context hi
    (d,) = compare_with_debugfs(walk_unit_tables(mem.read, 0x1A49000, False), live, unit.rows)
    assert d.kind is DisagreementKind.CONTEXT_ENTRY and d.bdf == "00:02.0"
    assert d.debugfs == "0x0000000000000301:0x0000000001a56001"
    assert d.kcore == "0x0000000000000999:0x0000000001a56001"


def test_compare_flags_missing_entry_and_root_entry(capture_root: CaptureRoot) -> None:
    unit, live, mem = _legacy_case(capture_root)
    mem.put_u64(0x1A53000 + 0x18 * 16, 0)  # 00:03.0 not present
    mem.put_u64(0x1A49000 + 5 * 16 + 8, 0xABC)  # bus 05 root hi (reserved, printed raw)
    got = compare_with_debugfs(walk_unit_tables(mem.read, 0x1A49000, False), live, unit.rows)
    assert [(d.kind, d.bus) for d in got] == [
        (DisagreementKind.ROOT_ENTRY, 5),
        (DisagreementKind.CONTEXT_MISSING, 0),
    ]


def test_compare_flags_context_table_bit(capture_root: CaptureRoot) -> None:
    unit, live, mem = _legacy_case(capture_root)
    mem.put_u64(0x1A49000 + 4 * 16, 0)  # bus 04's root entry cleared
    got = compare_with_debugfs(walk_unit_tables(mem.read, 0x1A49000, False), live, unit.rows)
    assert [d.kind for d in got] == [
        DisagreementKind.CONTEXT_TABLE,
        DisagreementKind.ROOT_ENTRY,
        DisagreementKind.CONTEXT_MISSING,
    ]


def test_compare_kcore_superset_is_not_a_disagreement(capture_root: CaptureRoot) -> None:
    """A bus and device debugfs does not show (lower bound) are not disagreements."""
    unit, live, mem = _legacy_case(capture_root)
    mem.put_u64(0x1A49000 + 9 * 16, 0x300_0000 | 1)
    mem.touch(0x300_0000)
    mem.put_u64(0x300_0000, 0x301_0001)
    mem.put_u64(0x300_0008, 0x701)
    walk = walk_unit_tables(mem.read, 0x1A49000, False)
    assert 18 in walk.context_table_bits and (9, 0) in walk.devices
    assert compare_with_debugfs(walk, live, unit.rows) == []


def test_compare_root_table_and_mode(capture_root: CaptureRoot) -> None:
    _, live, mem = _legacy_case(capture_root)
    mem.touch(0x2000)
    (d,) = compare_with_debugfs(walk_unit_tables(mem.read, 0x2000, False), live)
    assert d.kind is DisagreementKind.ROOT_TABLE
    (d,) = compare_with_debugfs(walk_unit_tables(mem.read, 0x1A49000, True), live)
    assert d.kind is DisagreementKind.MODE


def test_compare_pasid_entries(capture_root: CaptureRoot) -> None:
    _, unit, live = _capture(capture_root, "b_scalable")
    mem = lay_out(unit, True)
    walk = walk_unit_tables(mem.read, 0x1A48000, True)
    ptab = walk.pasid_tables[(0, 0x10)][0]
    mem.put_u64(ptab + 8, 0x33)  # 00:02.0 PASID 0 DID
    mem.put_u64(ptab + 64 * 5, 0x89)  # 00:02.0 PASID 5 present in kcore only
    got = compare_with_debugfs(walk_unit_tables(mem.read, 0x1A48000, True), live, unit.rows)
    assert [(d.kind, d.pasid) for d in got] == [
        (DisagreementKind.PASID_ENTRY, 0),
        (DisagreementKind.PASID_EXTRA, 5),
    ]
    assert got[0].debugfs == "0x0000000000000000:0x0000000000000003:0x0000000001a6e089"
    mem.put_u64(ptab, 0)  # PASID 0 no longer present
    got = compare_with_debugfs(walk_unit_tables(mem.read, 0x1A48000, True), live, unit.rows)
    assert [(d.kind, d.pasid) for d in got] == [
        (DisagreementKind.PASID_MISSING, 0),
        (DisagreementKind.PASID_EXTRA, 5),
    ]


def test_compare_skips_what_the_walk_could_not_read(capture_root: CaptureRoot) -> None:
    unit, live, mem = _legacy_case(capture_root)
    del mem.pages[0x1A53000]  # bus 00's context table unreadable
    walk = walk_unit_tables(mem.read, 0x1A49000, False)
    assert walk.unwalked_tables == {0}
    assert compare_with_debugfs(walk, live, unit.rows) == []
    assert compare_with_debugfs(walk_unit_tables(Memory().read, 0x1A49000, False), live) == []


# --- hostile bytes -------------------------------------------------------------------------


def _page_reader(blob: bytes, base: int) -> Callable[[int, int], bytes]:
    def read(addr: int, size: int) -> bytes:
        if addr < base or addr + size > base + len(blob):
            raise PhysReadError(addr, size, "outside", outside_ram=True)
        return blob[addr - base : addr - base + size]

    return read


_WORD = st.one_of(
    st.integers(0, 2**64 - 1),
    st.integers(0, 15).map(lambda p: (p << 12) | 1 | (7 << 9)),  # present, PDTS 7, into RAM
    st.integers(0, 15).map(lambda p: (p << 12) | 1),  # present, into RAM
)
_WORDS = 16 * 512  # 16 pages of u64


def _pointerish(rng: random.Random) -> int:
    pick = rng.randrange(4)
    if pick == 0:
        return rng.getrandbits(64)
    return (rng.randrange(20) << 12) | 1 | (rng.randrange(8) << 9 if pick == 1 else 0)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    density=st.sampled_from([0.0, 0.02, 0.3, 1.0]),
    pokes=st.dictionaries(st.integers(0, _WORDS - 1), _WORD, max_size=64),
    scalable=st.booleans(),
)
def test_random_tables_only_declared_outcomes(
    seed: int, density: float, pokes: dict[int, int], scalable: bool
) -> None:
    """Random 64 KiB of 'RAM' (16 pages) full of pointers into and past it: the walk ends
    with data and problems, never another exception."""
    rng = random.Random(seed)
    words = [_pointerish(rng) if rng.random() < density else 0 for _ in range(_WORDS)]
    for i, v in pokes.items():
        words[i] = v
    blob = struct.pack(f"<{_WORDS}Q", *words)
    limits = WalkLimits(max_pasid_tables=64)
    walk = walk_unit_tables(_page_reader(blob, 0), 0, scalable, limits=limits)
    assert len(walk.root_entries) == 256
    assert walk.context_table_bits <= set(range(512))
    assert scalable or all(b % 2 == 0 for b in walk.context_table_bits)
    assert all(isinstance(p.kind, ProblemKind) for p in walk.problems)
    assert len(walk.problems) <= limits.max_problems + 1
    assert all(info.context_lo & 1 for info in walk.devices.values())
    rows = debugfs_rows(walk)
    assert all(r.context.present for r in rows)
    assert all(t & ~MASK == 0 for t in walk.context_tables.values())


@pytest.mark.parametrize(
    "exc", [ParseError("no such page"), OSError(5, "Input/output error"), PhysReadError(0, 1, "x")]
)
def test_reader_errors_become_problems(exc: Exception) -> None:
    def read(addr: int, size: int) -> bytes:
        raise exc

    (p,) = walk_unit_tables(read, 0x1000, True).problems
    assert p.kind is ProblemKind.UNREADABLE and p.what == "root table"
    assert isinstance(PhysReadError(0, 1, "x"), ParseError)
    assert str(PhysReadError(0x1000, 8, "gone")) == "physical 0x1000+0x8: gone"


def test_pasid_pointers_into_table_pages_and_context_limit() -> None:
    """Synthetic: a PASID directory in a later bus's context table, a PASID table in the root
    table; a limit of 2 context tables."""
    mem = Memory()
    root = 0x1000
    mem.touch(root)
    _sm_device(mem, root, 0, 0, pdts=0, did=1)
    _sm_device(mem, root, 0, 8, pdts=0, did=2)
    _sm_device(mem, root, 4, 0, pdts=0, did=3)
    mem.put_u64(0x10_0000 + 0 * 32, 0x10_4000 | 1)  # 00:00.0 dir -> bus 04's context table
    pdir = walk_unit_tables(mem.read, root, True).devices[(0, 8)].pasid_dir
    assert pdir is not None
    mem.put_u64(pdir, root | 1)  # 00:01.0 PASID table 0 -> the root table
    walk = walk_unit_tables(mem.read, root, True)
    assert [(p.kind, p.bus, p.devfn) for p in walk.problems] == [
        (ProblemKind.ALIAS, 0, 0),
        (ProblemKind.ALIAS, 0, 8),
    ]
    assert "context table of bus 04 (lower)" in walk.problems[0].message
    assert walk.incomplete_devices == {(0, 0), (0, 8)}
    assert walk.devices[(4, 0)].did == 3
    walk = walk_unit_tables(mem.read, root, True, limits=WalkLimits(max_context_tables=1))
    assert walk.unwalked_tables == {8} and (4, 0) not in walk.devices
    assert [p.kind for p in walk.problems].count(ProblemKind.LIMIT) == 1
