"""ACPI DMAR table decoder (vtdlud.parse.dmar into vtdlud.model.dmar) and its rendering
(vtdlud.output.dmar); malformed tables are in test_dmar_errors.py.

The independent oracle for the real captures is ACPICA's own disassembly of the same table
(tests/data/captures/<name>/DMAR.iasl.dsl), read here by a small helper.  Synthetic tables are
packed with ``struct`` (tests/model/dmar_tables.py); their expected values are written by hand from the bytes.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import CAPTURE_NAMES, CAPTURES
from tests.model.dmar_tables import (
    CaptureRoot,
    every_type_table,
    pack_structure,
    pack_table,
    real_dmar,
)
from vtdlud.model.dmar import (
    ACPI_DMAR_SCOPE_TYPE_BRIDGE,
    ACPI_DMAR_SCOPE_TYPE_ENDPOINT,
    Andd,
    Atsr,
    DmarTable,
    Drhd,
    Rhsa,
    Satc,
    ScopePciDevice,
    Sidp,
    UnknownStructure,
)
from vtdlud.output.dmar import dmar_to_json, format_dmar_text
from vtdlud.parse.dmar import parse_dmar

# --- ACPICA disassembly (iasl -d) oracle --------------------------------------------------------

_DSL_FIELD = re.compile(r"^\[([0-9A-F]+)h (\d+)\s+(\d+)\]\s+(.+?) : (.*)$")
_DSL_RAW = re.compile(r"^\s+([0-9A-F]{4}): ((?:[0-9A-F]{2} )+)")


@dataclass
class DslField:
    offset: int
    size: int
    name: str
    value: str

    def hex(self) -> int:
        """Numeric value: the first token, which iasl prints in hex."""
        return int(self.value.split()[0], 16)

    def string(self) -> str:
        m = re.fullmatch(r'"(.*)"(?:\s+\[.*\])?', self.value)
        assert m, f"not a quoted string: {self.value!r}"
        return m.group(1)


@dataclass
class DslSubtable:
    fields: list[DslField] = field(default_factory=list)
    scopes: list[list[DslField]] = field(default_factory=list)


@dataclass
class DslTable:
    header: list[DslField]
    subtables: list[DslSubtable]
    raw: bytes


def read_dsl(text: str) -> DslTable:
    """Split the ``[off len] Field : Value`` lines into header / subtables / device scopes."""
    header: list[DslField] = []
    subtables: list[DslSubtable] = []
    raw = bytearray()
    for line in text.splitlines():
        if m := _DSL_RAW.match(line):
            assert int(m.group(1), 16) == len(raw)
            raw += bytes.fromhex(m.group(2))
            continue
        m = _DSL_FIELD.match(line)
        if not m:
            continue
        f = DslField(int(m.group(1), 16), int(m.group(3)), m.group(4).strip(), m.group(5).strip())
        assert f.offset == int(m.group(2)), line  # hex and decimal offsets agree
        if f.name == "Subtable Type":
            subtables.append(DslSubtable())
        if f.name == "Device Scope Type":
            subtables[-1].scopes.append([])
        if not subtables:
            header.append(f)
        elif subtables[-1].scopes:
            subtables[-1].scopes[-1].append(f)
        else:
            subtables[-1].fields.append(f)
    return DslTable(header, subtables, bytes(raw))


def compare_with_dsl(table: DmarTable, dsl: DslTable) -> list[str]:
    """Every field iasl printed vs the parser's value; returns the mismatches."""
    bad: list[str] = []

    def check(what: str, ours: object, theirs: object) -> None:
        if ours != theirs:
            bad.append(f"{what}: parser {ours!r} != iasl {theirs!r}")

    h = table.header
    header_fields: dict[str, Callable[[DslField], None]] = {
        "Signature": lambda f: check("Signature", h.signature, f.string()),
        "Table Length": lambda f: check("Table Length", h.length, f.hex()),
        "Revision": lambda f: check("Revision", h.revision, f.hex()),
        "Checksum": lambda f: check("Checksum", h.checksum, f.hex()),
        "Oem ID": lambda f: check("Oem ID", h.oem_id, f.string()),
        "Oem Table ID": lambda f: check("Oem Table ID", h.oem_table_id, f.string()),
        "Oem Revision": lambda f: check("Oem Revision", h.oem_revision, f.hex()),
        "Asl Compiler ID": lambda f: check("Asl Compiler ID", h.asl_compiler_id, f.string()),
        "Asl Compiler Revision": lambda f: check("Asl Rev", h.asl_compiler_revision, f.hex()),
        "Host Address Width": lambda f: check("Host Address Width", h.width, f.hex()),
        "Flags": lambda f: check("Flags", h.flags, f.hex()),
        "Reserved": lambda f: None,  # acpi_table_dmar.reserved[10]: not modelled
    }
    for f in dsl.header:
        header_fields[f.name](f)  # KeyError = a field the oracle does not compare yet

    check("number of structures", len(table.structures), len(dsl.subtables))
    for s, sub in zip(table.structures, dsl.subtables, strict=False):
        assert isinstance(s, Drhd), "the captures hold DRHDs only; extend the oracle for more"
        # DRHD layout: +0 type, +2 length, +4 flags, +5 size (older iasl: Reserved), +6 segment,
        # +8 register base address.
        drhd_fields: dict[tuple[int, str], int] = {
            (0, "Subtable Type"): s.type,
            (2, "Length"): s.length,
            (4, "Flags"): s.flags,
            (5, "Reserved"): s.size,
            (5, "Size (decoded below)"): s.size,
            (6, "PCI Segment Number"): s.segment,
            (8, "Register Base Address"): s.address,
        }
        for f in sub.fields:
            ours = drhd_fields[(f.offset - s.offset, f.name)]
            check(f"DRHD @{s.offset:#x} {f.name}", ours, f.hex())
        check(f"DRHD @{s.offset:#x} scopes", len(s.scopes), len(sub.scopes))
        for sc, dsl_scope in zip(s.scopes, sub.scopes, strict=False):
            path: list[tuple[int, int]] = []
            for f in dsl_scope:
                rel = f.offset - sc.offset
                what = f"scope @{sc.offset:#x} {f.name}"
                if f.name == "PCI Path":
                    check(f"{what} offset", rel, 6 + 2 * len(path))
                    dev, fn = f.value.split(",")
                    path.append((int(dev, 16), int(fn, 16)))
                    continue
                scope_fields: dict[tuple[int, str], int] = {
                    (0, "Device Scope Type"): sc.entry_type,
                    (1, "Entry Length"): sc.length,
                    # older iasl: u16 Reserved over bytes 2-3, byte 2 is now ``flags``
                    (2, "Reserved"): sc.flags,
                    (2, "Flags"): sc.flags,
                    (4, "Enumeration ID"): sc.enumeration_id,
                    (5, "PCI Bus Number"): sc.bus,
                }
                value = f.hex() & 0xFF if f.name == "Reserved" else f.hex()
                check(what, scope_fields[(rel, f.name)], value)
            check(f"scope @{sc.offset:#x} PCI Path", sc.path, tuple(path))
    return bad


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_real_capture_matches_acpica_disassembly(capture_root: CaptureRoot, name: str) -> None:
    raw = real_dmar(capture_root, name)
    dsl = read_dsl((CAPTURES / name / "DMAR.iasl.dsl").read_text())
    assert dsl.raw == raw  # iasl disassembled these very bytes
    assert len(dsl.subtables) == 1 and len(dsl.subtables[0].scopes) == 12  # non-vacuous
    table = parse_dmar(raw)
    assert compare_with_dsl(table, dsl) == []
    assert table.checksum_ok


def test_oracle_catches_a_wrong_value(capture_root: CaptureRoot) -> None:
    raw = bytearray(real_dmar(capture_root, "a_legacy"))
    dsl = read_dsl((CAPTURES / "a_legacy" / "DMAR.iasl.dsl").read_text())
    raw[0x3A] = 0xD8  # register base 0xfed90000 -> 0xfed80000 (byte 2 of the u64 at 0x38)
    raw[0x55] = 0x07  # bus of the scope at 0x50 (+5) 0x00 -> 0x07
    bad = compare_with_dsl(parse_dmar(bytes(raw)), dsl)
    assert any("Register Base Address" in b for b in bad)
    assert any("scope @0x50 PCI Bus Number" in b for b in bad)


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_real_capture_helpers(capture_root: CaptureRoot, name: str) -> None:
    table = parse_dmar(real_dmar(capture_root, name))
    # QEMU's intel-iommu: one DRHD at 0xfed90000, header flags 0x01 = INTR_REMAP
    assert [d.address for d in table.drhds] == [0xFED90000]
    assert table.drhd_at(0xFED90000) is table.drhds[0]
    assert table.drhd_at(0xFED91000) is None
    assert table.header.flag_fields() == {
        "ACPI_DMAR_INTR_REMAP": True,
        "ACPI_DMAR_X2APIC_OPT_OUT": False,
        "ACPI_DMAR_X2APIC_MODE": False,
    }
    # HAW = width + 1: 0x26 + 1 = 39 bits (legacy captures), 0x2f + 1 = 48 (scalable ones)
    assert table.header.host_address_width == {0x26: 39, 0x2F: 48}[table.header.width]
    devices = table.drhds[0].pci_devices()  # the IOAPIC scope (bus 0xff) is left out
    assert [d.bdf for d in devices] == [
        "0000:00:00.0",
        "0000:00:02.0",
        "0000:00:03.0",
        "0000:00:04.0",
        "0000:00:04.1",
        "0000:00:04.2",
        "0000:00:04.3",
        "0000:00:05.0",
        "0000:00:1f.0",
        "0000:00:1f.2",
        "0000:00:1f.3",
    ]
    assert [d.entry_type for d in devices].count(ACPI_DMAR_SCOPE_TYPE_BRIDGE) == 4


def test_every_structure_type() -> None:
    raw = every_type_table()
    # 48 header + DRHD 16 + DRHD (16 + 8+8+10+8+8+8 = 66) + RMRR (24 + 8 = 32) + ATSR 8
    # + RHSA 20 + ANDD (8 + 14 name chars + NUL = 23) + SATC (8 + 8) + type 9 (4 + 4) + SIDP 16
    assert len(raw) == 48 + 16 + 66 + 32 + 8 + 20 + 23 + 16 + 8 + 16 == 0xFD
    t = parse_dmar(raw)
    h = t.header
    assert (h.signature, h.length, h.revision) == ("DMAR", 0xFD, 1)
    assert (h.oem_id, h.oem_table_id, h.oem_revision) == ("VTDLUD", "SYNTH   ", 7)
    assert (h.asl_compiler_id, h.asl_compiler_revision) == ("PYTS", 0x20250101)
    assert (h.width, h.host_address_width, h.flags) == (0x2E, 47, 0x01)
    assert t.checksum_ok
    assert [type(s).__name__ for s in t.structures] == [
        "Drhd", "Drhd", "Rmrr", "Atsr", "Rhsa", "Andd", "Satc", "UnknownStructure", "Sidp",
    ]  # fmt: skip
    # offsets: 0x30, +16 = 0x40, +66 = 0x82, +32 = 0xa2, +8 = 0xaa, +20 = 0xbe, +23 = 0xd5,
    # +16 = 0xe5, +8 = 0xed
    assert [s.offset for s in t.structures] == [
        0x30,
        0x40,
        0x82,
        0xA2,
        0xAA,
        0xBE,
        0xD5,
        0xE5,
        0xED,
    ]

    d0, d1 = t.drhds
    assert (d0.length, d0.flags, d0.include_all, d0.segment, d0.address) == (
        16, 1, True, 0, 0xFED91000,
    )  # fmt: skip
    assert d0.scopes == () and d0.pci_devices() == ()
    assert d0.register_set_size == 0x1000  # size 0: 2^0 pages of 4 KiB
    assert (d1.length, d1.include_all, d1.size, d1.segment, d1.address) == (
        66, False, 2, 1, 0xFED90000,
    )  # fmt: skip
    assert d1.register_set_size == 0x4000  # size 2: 2^2 pages of 4 KiB
    # scopes start at 0x40 + 16 = 0x50: 0x50, +8 = 0x58, +8 = 0x60, +10 = 0x6a, +8 = 0x72, +8 = 0x7a
    sc = d1.scopes
    assert [s.offset for s in sc] == [0x50, 0x58, 0x60, 0x6A, 0x72, 0x7A]
    assert [s.entry_type for s in sc] == [1, 2, 1, 3, 4, 5]
    assert [s.type_name for s in sc] == [
        "PCI endpoint", "PCI bridge", "PCI endpoint", "IOAPIC", "HPET", "ACPI namespace device",
    ]  # fmt: skip
    assert [s.length for s in sc] == [8, 8, 10, 8, 8, 8]
    assert [s.enumeration_id for s in sc] == [0, 0, 0, 8, 0, 1]
    assert [s.bus for s in sc] == [0x00, 0x00, 0x00, 0xF0, 0x00, 0x00]
    assert sc[2].path == ((0x1C, 0), (0x00, 0))
    # single-element paths give the exact BDF in the structure's segment (1); longer ones none
    assert [s.bdf(1) for s in sc] == [
        "0001:00:02.0", "0001:00:1c.4", None, "0001:f0:1f.0", "0001:00:1f.7", "0001:00:15.0",
    ]  # fmt: skip
    assert d1.pci_devices() == (
        ScopePciDevice(ACPI_DMAR_SCOPE_TYPE_ENDPOINT, 1, 0x00, ((0x02, 0),)),
        ScopePciDevice(ACPI_DMAR_SCOPE_TYPE_BRIDGE, 1, 0x00, ((0x1C, 4),)),
        ScopePciDevice(ACPI_DMAR_SCOPE_TYPE_ENDPOINT, 1, 0x00, ((0x1C, 0), (0x00, 0))),
    )
    assert [p.bdf for p in d1.pci_devices()] == ["0001:00:02.0", "0001:00:1c.4", None]

    (rmrr,) = t.rmrrs
    assert (rmrr.length, rmrr.segment, rmrr.base_address, rmrr.end_address) == (
        32, 0, 0x7B800000, 0x7FFFFFFF,
    )  # fmt: skip
    assert [(s.offset, s.path) for s in rmrr.scopes] == [(0x82 + 24, ((0x14, 0),))]
    (atsr,) = t.of_type(Atsr)
    assert (atsr.length, atsr.flags, atsr.all_ports, atsr.segment, atsr.scopes) == (
        8, 1, True, 0, (),
    )  # fmt: skip
    (rhsa,) = t.of_type(Rhsa)
    assert (rhsa.length, rhsa.base_address, rhsa.proximity_domain) == (20, 0xFED90000, 1)
    (andd,) = t.of_type(Andd)
    assert (andd.length, andd.device_number, andd.device_name) == (23, 1, "\\_SB.PCI0.I2C1")
    assert andd.name_terminated
    (satc,) = t.of_type(Satc)
    assert (satc.length, satc.flags, satc.atc_required, satc.segment) == (16, 1, True, 0)
    assert [s.offset for s in satc.scopes] == [0xD5 + 8]
    (unknown,) = t.of_type(UnknownStructure)
    assert (unknown.type, unknown.length, unknown.raw) == (
        9,
        8,
        b"\x09\x00\x08\x00\xde\xad\xbe\xef",
    )
    (sidp,) = t.of_type(Sidp)
    assert (sidp.length, sidp.segment) == (16, 0)
    assert [(s.offset, s.flags, s.bdf(0)) for s in sidp.scopes] == [
        (0xED + 8, 0x10, "0000:00:0b.0")
    ]


def test_json_document() -> None:
    doc = dmar_to_json(parse_dmar(every_type_table()))
    json.dumps(doc)  # JSON-able
    assert doc["checksum_ok"] is True
    assert doc["host_address_width"] == 47
    assert doc["flags"] == {
        "raw": "0x1",
        "ACPI_DMAR_INTR_REMAP": True,
        "ACPI_DMAR_X2APIC_OPT_OUT": False,
        "ACPI_DMAR_X2APIC_MODE": False,
    }
    structures = doc["structures"]
    assert isinstance(structures, list)
    drhd = structures[1]
    assert drhd["type_name"] == "ACPI_DMAR_TYPE_HARDWARE_UNIT"
    assert drhd["address"] == "0xfed90000"
    assert drhd["flags"] == {"raw": "0x0", "ACPI_DMAR_INCLUDE_ALL": False}
    assert drhd["scopes"][2] == {
        "offset": 0x60,
        "entry_type": 1,
        "type_name": "ACPI_DMAR_SCOPE_TYPE_ENDPOINT",
        "length": 10,
        "flags": "0x0",
        "enumeration_id": 0,
        "bus": 0,
        "path": [[0x1C, 0], [0, 0]],
        "bdf": None,
    }
    assert structures[0]["flags"]["ACPI_DMAR_INCLUDE_ALL"] is True
    assert structures[2]["end_address"] == "0x7fffffff"
    assert structures[4] == {
        "offset": 0xAA,
        "type": 3,
        "type_name": "ACPI_DMAR_TYPE_HARDWARE_AFFINITY",
        "name": "RHSA",
        "length": 20,
        "base_address": "0xfed90000",
        "proximity_domain": 1,
    }
    assert structures[5]["device_name"] == "\\_SB.PCI0.I2C1"
    assert structures[7]["raw"] == "09000800deadbeef"
    assert structures[7]["type_name"] == "ACPI_DMAR_TYPE_RESERVED"


def test_text_rendering() -> None:
    text = format_dmar_text(parse_dmar(every_type_table()))
    assert text.startswith("DMAR  length 0xfd  revision 1  checksum ")
    assert "(ok)" in text.splitlines()[0]
    assert "width 0x2e (host address width 47 bits)  flags 0x01 (INTR_REMAP)" in text
    assert "@0x030 DRHD (ACPI_DMAR_TYPE_HARDWARE_UNIT)  length 0x10" in text
    assert "flags 0x01 (INCLUDE_ALL)  segment 0x0000  address 0xfed91000" in text
    assert "path 1c.0/00.0" in text  # multi-element path, no BDF
    assert "path 1f.0  -> 0001:f0:1f.0" in text
    assert 'device_name "\\_SB.PCI0.I2C1"' in text
    assert 'oem_id "VTDLUD"  oem_table_id "SYNTH   "  oem_revision 0x7' in text
    assert "@0x0e5 type 9 (ACPI_DMAR_TYPE_RESERVED)  length 0x8" in text
    assert "09 00 08 00 de ad be ef" in text
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 1 + 9  # header + one block per structure


def test_checksum_mismatch_is_not_an_error() -> None:
    raw = bytearray(every_type_table())
    raw[9] ^= 0xFF
    table = parse_dmar(bytes(raw))
    assert not table.checksum_ok
    assert len(table.structures) == 9
    assert "MISMATCH" in format_dmar_text(table).splitlines()[0]


def test_trailing_bytes_are_ignored(capture_root: CaptureRoot) -> None:
    raw = real_dmar(capture_root, "a_legacy")
    padded = parse_dmar(raw + b"\xff" * 13)
    assert padded == parse_dmar(raw)
    assert padded.checksum_ok  # the checksum covers header.length bytes only


def test_unknown_types_are_skipped_by_length() -> None:
    body = (
        pack_structure(7, b"")  # first reserved type, bare header
        + pack_structure(0xFFFF, bytes(range(20)))
        + pack_structure(0, struct.pack("<BBHQ", 1, 0, 0, 0xFED90000))
    )
    t = parse_dmar(pack_table(body))
    assert [(s.type, s.offset, s.length) for s in t.structures] == [
        (7, 0x30, 4),
        (0xFFFF, 0x34, 24),  # 0x30 + 4
        (0, 0x4C, 16),  # 0x34 + 24
    ]
    assert t.drhds[0].include_all


def test_andd_without_nul() -> None:
    t = parse_dmar(pack_table(pack_structure(4, b"\0\0\0\x02ABC")))
    (andd,) = t.of_type(Andd)
    assert (andd.device_number, andd.device_name, andd.name_terminated) == (2, "ABC", False)
