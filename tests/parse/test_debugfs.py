"""intel-iommu debugfs parsers (``iommu_regset``, ``dmar_translation_struct``) and the derived
live state of a unit; truncation, render-back and fuzzing are in test_debugfs_render.py.

Real data: the captures in tests/data/captures (Linux 6.12 under QEMU's emulated VT-d).  Expected
values are written by hand from the capture text, with the bit arithmetic in a comment.

Decisions pinned here: empty text is zero units; a text must end with a newline; every unit ends
with its blank line (a ``DMA Remapping is not enabled`` line is a unit by itself), so a truncated
text either raises ParseError with a line number or, cut exactly at a unit boundary, parses as the
first units of the full text.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.conftest import CAPTURE_NAMES
from tests.parse.debugfs_texts import (
    HDR,
    LEG_00_02,
    LEG_00_03,
    PRE_5_2,
    SM_P0,
    SM_P1,
    THREE_UNITS,
    TWO_REGSET_UNITS,
    CaptureRoot,
    texts,
    unit_text,
)
from vtdlud.errors import ParseError, UnsupportedFormat
from vtdlud.model.debugfs import Register, Regset, RegsetUnit, TranslationStruct, TranslationUnit
from vtdlud.model.live import derive_unit_tables
from vtdlud.model.tables import Mode, PasidEntry, RootEntry
from vtdlud.parse.regset import parse_iommu_regset, render_iommu_regset
from vtdlud.parse.translation import parse_dmar_translation_struct, render_dmar_translation_struct

# --- the real captures ---------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_capture_regset_every_line_and_round_trip(capture_root: CaptureRoot, name: str) -> None:
    text, _ = texts(capture_root, name)
    regset = parse_iommu_regset(text)
    assert not regset.invalid_base_address
    (unit,) = regset.units
    assert (unit.name, unit.reg_base_addr) == ("dmar0", 0xFED90000)
    # 67 lines: the unit line, the header, 64 registers, the blank line.
    assert text.count("\n") == 67 and len(unit.registers) == 64
    assert unit.registers[0] == Register("VER", 0x00, 0x10)
    assert unit.registers[-1] == Register("MTRR_PHYSMASK9", 0x218, 0)
    assert unit.get("VCCAP") is None  # 6.12 prints no VCCAP/VCMD/VCRSP
    assert unit.get("GSTS") == 0xC7000000
    assert regset.unit("dmar0") is unit and regset.unit("dmar1") is None
    assert render_iommu_regset(regset) == text


@pytest.mark.parametrize(
    ("name", "nrows"),
    [
        ("a_legacy", 18),
        ("b_scalable", 17),
        ("d_legacy_passthrough", 18),
        ("g_scalable_alias_fault", 17),
    ],
)
def test_capture_translation_every_line_and_round_trip(
    capture_root: CaptureRoot, name: str, nrows: int
) -> None:
    _, text = texts(capture_root, name)
    ts = parse_dmar_translation_struct(text)
    (unit,) = ts.units
    assert unit.enabled and unit.name == "dmar0" and len(unit.rows) == nrows
    # root line + header + rows + blank line: every line consumed
    assert text.count("\n") == 3 + nrows
    assert ts.unit("dmar0") is unit
    assert render_dmar_translation_struct(ts) == text


def test_a_legacy_derived(capture_root: CaptureRoot) -> None:
    rtext, ttext = texts(capture_root, "a_legacy")
    rs, ts = parse_iommu_regset(rtext), parse_dmar_translation_struct(ttext)
    lt = derive_unit_tables(rs.units[0], ts.units[0])
    assert (lt.name, lt.reg_base_addr) == ("dmar0", 0xFED90000)
    # RTADDR 0x0000000001a49000 & ~0xfff = 0x1a49000 = the "Root Table Address: 0x1a49000" line
    assert lt.root_table == 0x1A49000 and lt.root_table_debugfs == 0x1A49000
    assert not lt.root_table_mismatch
    # RTADDR bit 10: 0x1a49000 >> 10 & 1 = 0 -> legacy; rows have PASID -1 -> legacy too
    assert lt.mode is Mode.LEGACY and lt.mode_from_rows is Mode.LEGACY
    # GSTS 0xc7000000 >> 31 & 1 = 1 -> TES
    assert lt.translation_enabled is True
    # rows on buses 00-05, every root lo ends in 001 -> even bits only: bus << 1
    assert lt.context_table_bits == frozenset({0, 2, 4, 6, 8, 10})
    assert lt.buses_shown == frozenset(range(6))
    assert sorted(lt.devices) == [
        (0x00, 0x00), (0x00, 0x10), (0x00, 0x18), (0x00, 0x20), (0x00, 0x21), (0x00, 0x22),
        (0x00, 0x23), (0x00, 0x28), (0x00, 0xF8), (0x00, 0xFA), (0x00, 0xFB), (0x01, 0x00),
        (0x02, 0x00), (0x03, 0x00), (0x04, 0x00), (0x05, 0x00), (0x05, 0x08), (0x05, 0x10),
    ]  # fmt: skip
    vfio = lt.devices[(0x00, 0x05 << 3)]  # 00:05.0, devfn 0x28
    assert vfio.bdf == "00:05.0" and vfio.mode is Mode.LEGACY
    # context 0x0000000000000901:0x0000000002933001: DID = 0x901 >> 8 & 0xffff = 9,
    # TT = 0x001 >> 2 & 3 = 0 (multi-level)
    assert (vfio.context_hi, vfio.context_lo) == (0x901, 0x2933001)
    assert vfio.did == 9 and vfio.tt == 0
    assert vfio.pasid_dir is None and vfio.pdts is None and vfio.pre is None
    assert dict(vfio.pasid_entries) == {}
    # the bridge alias 05:00.0 has its own entry: hi 0xe01 >> 8 = 0xe, the bridge 04:00.0's DID
    assert lt.devices[(0x05, 0x00)].did == 0xE and lt.devices[(0x04, 0x00)].did == 0xE
    # 00:1f.0/.2/.3 (devfn 0xf8/0xfa/0xfb): hi 0xa01 >> 8 = 0xa
    assert [lt.devices[(0, d)].did for d in (0xF8, 0xFA, 0xFB)] == [0xA, 0xA, 0xA]


def test_b_scalable_derived(capture_root: CaptureRoot) -> None:
    rtext, ttext = texts(capture_root, "b_scalable")
    rs, ts = parse_iommu_regset(rtext), parse_dmar_translation_struct(ttext)
    lt = derive_unit_tables(rs.unit("dmar0"), ts.unit("dmar0"))
    # RTADDR 0x0000000001a48400: & ~0xfff = 0x1a48000; 0x400 = bit 10 (SMT) -> scalable
    assert lt.root_table == 0x1A48000 == lt.root_table_debugfs
    assert lt.mode is Mode.SCALABLE and lt.mode_from_rows is Mode.SCALABLE
    assert lt.translation_enabled is True  # GSTS 0xc7000000, bit 31 set
    # bus 00 root 0x0000000001a58001:0x0000000001a4c001: lo bit0 -> bit 0, hi bit0 -> bit 1
    # buses 01-05: hi 0, lo ...001 -> bits 2, 4, 6, 8, 10
    assert lt.context_table_bits == frozenset({0, 1, 2, 4, 6, 8, 10})
    assert len(lt.devices) == 17 and (0x05, 0x00) not in lt.devices  # no alias entry in SM
    dev = lt.devices[(0x00, 0x28)]  # 00:05.0
    assert dev.mode is Mode.SCALABLE and dev.tt is None
    # context lo 0x0000000001a56401: PASID dir = 0x1a56401 & ~0xfff = 0x1a56000,
    # PDTS = 0x401 >> 9 & 7 = 2, PRE = 0x401 >> 4 & 1 = 0
    assert dev.pasid_dir == 0x1A56000 and dev.pdts == 2 and dev.pre is False
    # PASID 0: 0x0000000000000000:0x0000000000000009:0x0000000002982089 -> DID = 9 & 0xffff = 9,
    # PGTT = 0x089 >> 6 & 7 = 2 (second-level)
    assert dict(dev.pasid_entries) == {0: PasidEntry(val0=0x2982089, val1=0x9, val2=0)}
    assert dev.did == 9 and dev.pasid_entries[0].pgtt == 2
    # 00:1f.3 lives in the upper table (devfn 0xfb >= 0x80): val1 0xa -> DID 10
    assert lt.devices[(0x00, 0xFB)].did == 0xA


def test_d_passthrough_and_g_alias_derived(capture_root: CaptureRoot) -> None:
    rtext, ttext = texts(capture_root, "d_legacy_passthrough")
    lt = derive_unit_tables(
        parse_iommu_regset(rtext).units[0], parse_dmar_translation_struct(ttext).units[0]
    )
    # 00:00.0 context 0x0000000000000101:0x0000000000000009: TT = 0x9 >> 2 & 3 = 2 (pass-through),
    # DID = 0x101 >> 8 = 1
    assert (lt.devices[(0, 0)].tt, lt.devices[(0, 0)].did) == (2, 1)
    # 00:05.0 (vfio) 0x0000000000000201:0x0000000001f1f001: TT 0, DID 2
    assert (lt.devices[(0, 0x28)].tt, lt.devices[(0, 0x28)].did) == (0, 2)
    rtext, ttext = texts(capture_root, "g_scalable_alias_fault")
    lt = derive_unit_tables(
        parse_iommu_regset(rtext).units[0], parse_dmar_translation_struct(ttext).units[0]
    )
    assert (0x05, 0x00) not in lt.devices  # the alias the faults come from
    assert {(0x05, 0x08), (0x05, 0x10)} <= set(lt.devices)  # 05:01.0, 05:02.0
    assert lt.context_table_bits == frozenset({0, 1, 2, 4, 6, 8, 10})


# --- synthetic texts ---------------------------------------------------------------------------


def test_not_enabled_between_two_units() -> None:
    ts = parse_dmar_translation_struct(THREE_UNITS)
    assert [u.name for u in ts.units] == ["dmar0", "dmar1", "dmar2"]
    off = ts.units[1]
    assert off == TranslationUnit("dmar1", False, None, ())
    lt = derive_unit_tables(None, off)
    assert lt.translation_enabled is False and lt.mode is Mode.UNKNOWN
    assert lt.root_table is None and lt.context_table_bits == frozenset() and not lt.devices
    sm = ts.units[2]
    assert sm.root_table == 0x2000000 and [r.pasid for r in sm.rows] == [0, 1]
    assert sm.rows[0].root == RootEntry(lo=0x1A00001, hi=0x1B00001)
    assert (sm.rows[0].context_hi, sm.rows[0].context_lo) == (0, 0x1C00401)
    lt = derive_unit_tables(None, sm)
    # no regset: rows with PASID != -1 prove scalable mode
    assert lt.mode is Mode.SCALABLE and lt.translation_enabled is True
    assert lt.root_table == 0x2000000 and lt.reg_base_addr is None
    # bus 0: lo 0x1a00001 bit 0 -> bit 0; hi 0x1b00001 bit 0 -> bit 1
    assert lt.context_table_bits == frozenset({0, 1})
    dev = lt.devices[(0, 0xF8)]
    # two PASID rows for one device; DID of PASID 0 = val1 0x5
    assert sorted(dev.pasid_entries) == [0, 1] and dev.did == 5
    assert dev.pasid_entries[1] == PasidEntry(val0=0x1E00089, val1=6, val2=0)
    legacy = derive_unit_tables(None, ts.units[0])
    assert legacy.mode is Mode.LEGACY  # PASID -1 rows are printed only when RTADDR.SMT is clear
    assert legacy.devices[(0, 0x10)].did == 3  # hi 0x301 >> 8 = 3
    assert render_dmar_translation_struct(ts) == THREE_UNITS


def test_two_regset_units() -> None:
    rs = parse_iommu_regset(TWO_REGSET_UNITS)
    assert [(u.name, u.reg_base_addr) for u in rs.units] == [
        ("dmar0", 0xFED90000),
        ("dmar1", 0xFED91000),
    ]
    assert rs.units[0].get("MTRR_FIX64K_00000") == 0  # 17 characters: no padding, then the tab
    assert rs.units[1].get("VCCAP") == 0 and rs.units[1].get("VER") is None
    assert rs.units[1].registers[2] == Register("VCCAP", 0xE30, 0)
    assert render_iommu_regset(rs) == TWO_REGSET_UNITS
    lt = derive_unit_tables(rs.units[1], None)
    # GSTS 0 -> TES clear; RTADDR 0 -> root 0, bit 10 clear -> legacy
    assert lt.translation_enabled is False and lt.root_table == 0 and lt.mode is Mode.LEGACY
    assert lt.root_table_debugfs is None and lt.mode_from_rows is Mode.UNKNOWN


def test_derive_keeps_disagreements_visible() -> None:
    rs = parse_iommu_regset(TWO_REGSET_UNITS)
    # regset dmar0 says scalable (RTADDR 0x1a48400) and root 0x1a48000; the text says otherwise
    ts = parse_dmar_translation_struct(unit_text([LEG_00_02], root="0x2000000"))
    lt = derive_unit_tables(rs.units[0], ts.units[0])
    assert lt.root_table == 0x1A48000 and lt.root_table_debugfs == 0x2000000
    assert lt.root_table_mismatch
    assert lt.mode is Mode.SCALABLE and lt.mode_from_rows is Mode.LEGACY
    # regset legacy, rows scalable: the odd bit is not counted (root hi is reserved in legacy)
    legacy_regs = RegsetUnit("dmar2", 0xFED92000, (Register("RTADDR", 0x20, 0x2000000),))
    ts2 = parse_dmar_translation_struct(unit_text([SM_P0], name="dmar2", root="0x2000000"))
    lt2 = derive_unit_tables(legacy_regs, ts2.units[0])
    assert lt2.mode is Mode.LEGACY and lt2.mode_from_rows is Mode.SCALABLE
    assert lt2.context_table_bits == frozenset({0}) and not lt2.root_table_mismatch
    # no GSTS line: the translation text decides
    assert lt2.translation_enabled is True
    # GSTS (TES set) wins over a "not enabled" line read at another moment
    off = TranslationUnit("dmar0", False, None, ())
    assert derive_unit_tables(rs.units[0], off).translation_enabled is True
    with pytest.raises(ValueError, match="names differ"):
        derive_unit_tables(rs.units[0], ts2.units[0])
    none = derive_unit_tables(None, None)
    assert none.name is None and none.mode is Mode.UNKNOWN and none.translation_enabled is None


def test_empty_text_is_zero_units() -> None:
    assert parse_iommu_regset("") == Regset(())
    assert parse_dmar_translation_struct("") == TranslationStruct(())
    assert (
        render_iommu_regset(Regset(())) == ""
        and render_dmar_translation_struct(TranslationStruct(())) == ""
    )


def test_invalid_base_address() -> None:
    rs = parse_iommu_regset("IOMMU: Invalid base address\n")
    assert rs == Regset((), invalid_base_address=True)
    text = TWO_REGSET_UNITS + "IOMMU: Invalid base address\n"
    rs = parse_iommu_regset(text)
    assert len(rs.units) == 2 and rs.invalid_base_address
    assert render_iommu_regset(rs) == text
    with pytest.raises(ParseError) as err:
        parse_iommu_regset("IOMMU: Invalid base address\n" + TWO_REGSET_UNITS)
    assert err.value.line == 2


PRE_5_2_TEXTS = [
    pytest.param(  # 5.0 / 5.1
        "IOMMU dmar2: Root Table Address:4362cc000\n"
        "Root Table Entries:\n"
        " Bus: 0 H: 0 L: 4362f0001\n"
        " Context Table Entries for Bus: 0\n"
        "  Entry\tB:D.F\tHigh\tLow\n"
        "  160  \t00:14.0\t102   \t4362ef001\n"
        "\n",
        1,
        id="5.1",
    ),
    pytest.param(  # 4.20 extended root table
        "IOMMU dmar0: Extended Root Table Address:1234801\n"
        "Extended Root Table Entries:\n"
        "Bus 0 L: 1235001 H: 0\n"
        "Lower Context Table Entries for Bus: 0\n"
        "[entry]\tDevice B:D.F\tLow\t\tHigh\n",
        1,
        id="extended",
    ),
    pytest.param("\nIOMMU dmar0:   Root Table Addr:1234000\n", 2, id="leading-blank"),
    pytest.param(
        "IOMMU dmar0: Root Table Address: 0x1000\n" + HDR + " Bus: 0 H: 0 L: 2001\n",
        3,
        id="old-line-later",
    ),
]


@pytest.mark.parametrize(("text", "line"), PRE_5_2_TEXTS)
def test_pre_5_2_format_is_unsupported(text: str, line: int) -> None:
    with pytest.raises(UnsupportedFormat) as err:
        parse_dmar_translation_struct(text)
    assert err.value.reason == PRE_5_2 and err.value.line == line
    assert isinstance(err.value, ParseError)


def test_format_without_pasid_columns_is_unsupported() -> None:
    text = (
        "IOMMU dmar2: Root Table Address: 0x436f7d000\n"
        "B.D.F\tRoot_entry\t\t\t\tContext_entry\n"
        "00:14.0\t0x0000000000000000:0x0000000436fbd001\t0x0000000000000102:0x0000000436fbc001\n"
        "\n"
    )
    with pytest.raises(UnsupportedFormat, match="without PASID columns") as err:
        parse_dmar_translation_struct(text)
    assert err.value.line == 2


BAD_ROWS = [
    pytest.param([LEG_00_03, LEG_00_02], 4, "walk order", id="order"),
    pytest.param([LEG_00_02, LEG_00_02], 4, "walk order", id="duplicate"),
    pytest.param([LEG_00_02.replace("1a56001", "1a56000")], 3, "not present", id="ctx-absent"),
    pytest.param([LEG_00_02.replace("1a53001", "1a53000")], 3, "root lo bit 0", id="root-absent"),
    pytest.param([LEG_00_02, LEG_00_03.replace("1a53001", "1a54001")], 4, "root entry differs", id="root-differs"),
    pytest.param([LEG_00_02[:-1] + "1"], 3, "non-zero PASID entry", id="legacy-pasid-entry"),
    pytest.param([SM_P0.replace("1d00089", "1d00088")], 3, "not present", id="pasid-absent"),
    pytest.param([SM_P0.replace("1b00001", "1b00000")], 3, "upper table", id="upper-absent"),
    pytest.param([LEG_00_02, SM_P0], 4, "mixed", id="mixed"),
    # context lo 0x1c00001: PDTS = 0 -> 1 << 7 = 128 directory entries * 64 = PASIDs 0..8191
    pytest.param([SM_P0.replace("1c00401\t0     ", "1c00001\t8192  ")], 3, "directory size", id="pasid-range"),
    pytest.param([SM_P0.replace("\t0     \t", "\t-2    \t")], 3, "negative", id="pasid-negative"),
    pytest.param([SM_P0, SM_P1.replace("1c00401", "1c01401")], 4, "context entry differs", id="ctx-differs"),
    pytest.param([SM_P0, SM_P0], 4, "walk order", id="pasid-twice"),
    pytest.param([LEG_00_02.replace("00:02.0", "00:20.0")], 3, "device number", id="dev-0x20"),
    pytest.param([LEG_00_02.replace("00:02.0", "00:02.8")], 3, "expected a row", id="fn-8"),
    pytest.param([LEG_00_02.replace("1a56001", "1A56001")], 3, "expected a row", id="uppercase"),
    pytest.param([LEG_00_02.replace("1a56001", "1a5g001")], 3, "expected a row", id="non-hex"),
    pytest.param([LEG_00_02.replace("-1    ", "-1")], 3, "printf format", id="pasid-unpadded"),
    pytest.param([SM_P0.replace("\t0     \t", "\t00    \t")], 3, "printf format", id="pasid-zero-padded"),
    pytest.param([LEG_00_02.replace("\t", " ", 1)], 3, "expected a row", id="space-for-tab"),
    pytest.param([LEG_00_02 + " "], 3, "expected a row", id="trailing-space"),
]  # fmt: skip


@pytest.mark.parametrize(("rows", "line", "why"), BAD_ROWS)
def test_bad_rows(rows: list[str], line: int, why: str) -> None:
    with pytest.raises(ParseError, match=why) as err:
        parse_dmar_translation_struct(unit_text(rows))
    assert err.value.line == line and not isinstance(err.value, UnsupportedFormat)


BAD_TRANSLATION = [
    pytest.param("IOMMU dmar0: Root Table Address: 0x01a49000\n" + HDR + "\n", 1, "%llx", id="root-leading-0"),
    pytest.param("IOMMU dmar0: Root Table Address: 0xZZ\n" + HDR + "\n", 1, "expected 'IOMMU", id="root-non-hex"),
    pytest.param("IOMMU dmar0: Root Table Address: 0x1000\nB.D.F\n\n", 2, "header", id="header"),
    pytest.param("IOMMU dmar0: Root Table Address: 0x1000\n", 1, "ends after", id="no-header"),
    pytest.param(unit_text([]) + "\n", 4, "expected 'IOMMU", id="extra-blank"),
    pytest.param("DMA Remapping is not enabled on dmar1\n\n", 2, "expected 'IOMMU", id="blank-after-off"),
    pytest.param(unit_text([]) + unit_text([]), 4, "listed twice", id="unit-twice"),
    pytest.param("IOMMU: dmar0 Register Base Address: fed90000\n", 1, "expected 'IOMMU", id="regset-file"),
    pytest.param(THREE_UNITS.replace("\n", "\r\n"), 1, "expected 'IOMMU", id="crlf"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "why"), BAD_TRANSLATION)
def test_bad_translation_text(text: str, line: int, why: str) -> None:
    with pytest.raises(ParseError, match=why) as err:
        parse_dmar_translation_struct(text)
    assert err.value.line == line


REG_UNIT = "IOMMU: dmar0 Register Base Address: fed90000\nName\t\t\tOffset\t\tContents\n"
BAD_REGSET = [
    pytest.param(REG_UNIT + "GSTS            \t0x1c\t\t0x00000000c70000zz\n\n", 3, "expected a register", id="non-hex"),
    pytest.param(REG_UNIT + "GSTS            \t0x1c\t\t0x00000000C7000000\n\n", 3, "expected a register", id="uppercase"),
    pytest.param(REG_UNIT + "GSTS            \t0x1c\t\t0x0000000c7000000\n\n", 3, "format", id="15-digits"),
    pytest.param(REG_UNIT + "GSTS    \t0x1c\t\t0x00000000c7000000\n\n", 3, "format", id="padding"),
    pytest.param(REG_UNIT + "GSTS            \t0xc\t\t0x00000000c7000000\n\n", 3, "format", id="offset-1-digit"),
    pytest.param(REG_UNIT + "gsts            \t0x1c\t\t0x00000000c7000000\n\n", 3, "expected a register", id="lowercase"),
    pytest.param(REG_UNIT + "GSTS            \t0x10000\t\t0x0000000000000000\n\n", 3, "format", id="offset-range"),
    pytest.param(REG_UNIT + "VER             \t0x00\t\t0x0000000000000010\n" * 2 + "\n", 4, "twice", id="reg-twice"),
    pytest.param(REG_UNIT + "\n", 3, "no registers", id="no-registers"),
    pytest.param(REG_UNIT.replace("Name\t\t\t", "Name\t"), 2, "header", id="header"),
    pytest.param(REG_UNIT.replace("fed90000", "0fed90000") + "\n", 1, "%llx", id="base-leading-0"),
    pytest.param(REG_UNIT.replace("fed90000", "FED90000") + "\n", 1, "expected 'IOMMU", id="base-upper"),
    pytest.param(REG_UNIT.replace("fed90000", "0"), 1, "base address 0", id="base-0"),
    pytest.param(TWO_REGSET_UNITS + TWO_REGSET_UNITS, 14, "listed twice", id="unit-twice"),
    pytest.param("IOMMU dmar0: Root Table Address: 0x1000\n", 1, "expected 'IOMMU:", id="translation-file"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "why"), BAD_REGSET)
def test_bad_regset_text(text: str, line: int, why: str) -> None:
    with pytest.raises(ParseError, match=why) as err:
        parse_iommu_regset(text)
    assert err.value.line == line


@pytest.mark.parametrize("parse", [parse_iommu_regset, parse_dmar_translation_struct])
def test_binary_garbage(parse: Callable[[str], object]) -> None:
    rng = random.Random(1234)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        with pytest.raises(ParseError) as err:
            parse(blob.decode("latin-1"))
        assert err.value.line is not None
    with pytest.raises(ParseError) as err:
        parse("\x00" * 16 + "\n")
    assert err.value.line == 1
