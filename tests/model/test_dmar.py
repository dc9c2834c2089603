"""ACPI DMAR table decoder (vtdlud.parse.dmar into vtdlud.model.dmar) and its rendering (vtdlud.output.dmar).

The independent oracle for the real captures is ACPICA's own disassembly of the same table
(tests/data/captures/<name>/DMAR.iasl.dsl), read here by a small helper.  Synthetic tables are
packed with ``struct`` in this file; their expected values are written by hand from the bytes.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import CAPTURE_NAMES, CAPTURES
from vtdlud.errors import ParseError
from vtdlud.model.dmar import (
    ACPI_DMAR_SCOPE_TYPE_BRIDGE,
    ACPI_DMAR_SCOPE_TYPE_ENDPOINT,
    Andd,
    Atsr,
    DmarTable,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    ScopePciDevice,
    Sidp,
    UnknownStructure,
)
from vtdlud.output.dmar import dmar_to_json, format_dmar_text
from vtdlud.parse.dmar import parse_dmar

DMAR_REL = "sys/firmware/acpi/tables/DMAR"
CaptureRoot = Callable[[str], Path]


def real_dmar(capture_root: CaptureRoot, name: str) -> bytes:
    return (capture_root(name) / DMAR_REL).read_bytes()


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


# --- synthetic tables --------------------------------------------------------------------------


def pack_scope(
    entry_type: int, enumeration_id: int, bus: int, path: list[tuple[int, int]], flags: int = 0
) -> bytes:
    """acpi_dmar_device_scope: type, length, flags, reserved, enumeration id, bus; then path."""
    body = b"".join(struct.pack("<BB", dev, fn) for dev, fn in path)
    return struct.pack("<BBBBBB", entry_type, 6 + len(body), flags, 0, enumeration_id, bus) + body


def pack_structure(type_: int, body: bytes, length: int | None = None) -> bytes:
    """acpi_dmar_header (u16 type, u16 length) + body; length defaults to the true one."""
    return struct.pack("<HH", type_, 4 + len(body) if length is None else length) + body


def pack_table(structures: bytes, *, length: int | None = None, flags: int = 0x01) -> bytes:
    """acpi_table_dmar (48 bytes) + structures, with a correct checksum."""
    total = 48 + len(structures) if length is None else length
    header = struct.pack(
        "<4sIBB6s8sI4sIBB10x",
        b"DMAR",
        total,
        1,  # revision
        0,  # checksum, fixed below
        b"VTDLUD",
        b"SYNTH   ",
        0x7,  # oem revision
        b"PYTS",
        0x20250101,  # asl compiler revision
        0x2E,  # width: HAW 47 bits
        flags,
    )
    raw = header + structures
    checksum = -sum(raw[:total]) & 0xFF
    return raw[:9] + bytes([checksum]) + raw[10:]


def every_type_table() -> bytes:
    drhd_all = pack_structure(0, struct.pack("<BBHQ", 0x01, 0, 0, 0xFED91000))  # 16 bytes
    drhd = pack_structure(
        0,
        struct.pack("<BBHQ", 0x00, 2, 1, 0xFED90000)
        + pack_scope(1, 0, 0x00, [(0x02, 0)])  # endpoint 8 bytes
        + pack_scope(2, 0, 0x00, [(0x1C, 4)])  # bridge 8 bytes
        + pack_scope(1, 0, 0x00, [(0x1C, 0), (0x00, 0)])  # endpoint behind a bridge: 10 bytes
        + pack_scope(3, 8, 0xF0, [(0x1F, 0)])  # IOAPIC id 8: 8 bytes
        + pack_scope(4, 0, 0x00, [(0x1F, 7)])  # HPET 0: 8 bytes
        + pack_scope(5, 1, 0x00, [(0x15, 0)]),  # ACPI namespace device 1: 8 bytes
    )
    rmrr = pack_structure(
        1, struct.pack("<HHQQ", 0, 0, 0x7B800000, 0x7FFFFFFF) + pack_scope(1, 0, 0, [(0x14, 0)])
    )
    atsr = pack_structure(2, struct.pack("<BBH", 0x01, 0, 0))
    rhsa = pack_structure(3, struct.pack("<IQI", 0, 0xFED90000, 1))
    andd = pack_structure(4, b"\0\0\0" + bytes([1]) + b"\\_SB.PCI0.I2C1\0")
    satc = pack_structure(5, struct.pack("<BBH", 0x01, 0, 0) + pack_scope(1, 0, 0, [(0x02, 0)]))
    unknown = pack_structure(9, b"\xde\xad\xbe\xef")
    sidp = pack_structure(6, struct.pack("<HH", 0, 0) + pack_scope(1, 0, 0, [(0x0B, 0)], 0x10))
    return pack_table(drhd_all + drhd + rmrr + atsr + rhsa + andd + satc + unknown + sidp)


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


# --- validation ----------------------------------------------------------------------------------


def parse_error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_dmar(data)
    err = info.value
    assert err.offset is not None
    assert f"offset {err.offset:#x}" in str(err)
    return err


def test_empty_input() -> None:
    err = parse_error(b"")
    assert err.offset == 0
    assert "48-byte DMAR header" in err.reason


def test_shorter_than_header(capture_root: CaptureRoot) -> None:
    err = parse_error(real_dmar(capture_root, "a_legacy")[:47])
    assert err.offset == 47
    assert "table is 0x2f bytes, shorter than the 48-byte DMAR header" in err.reason


def test_not_dmar_signature(capture_root: CaptureRoot) -> None:
    err = parse_error(b"APIC" + real_dmar(capture_root, "a_legacy")[4:])
    assert (err.offset, err.reason) == (0, "signature 'APIC' is not 'DMAR': not a DMAR table")
    err = parse_error(b"DMA")  # too short to hold a signature: only the length is judged
    assert (err.offset, err.reason) == (
        3,
        "table is 0x3 bytes, shorter than the 48-byte DMAR header (acpi_table_dmar)",
    )


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, "header length 0x0 is smaller than the 48-byte DMAR header"),
        (47, "header length 0x2f is smaller than the 48-byte DMAR header"),
        (0xA1, "header length 0xa1 is larger than the data (0xa0 bytes)"),
        (0xFFFFFFFF, "header length 0xffffffff is larger than the data (0xa0 bytes)"),
    ],
)
def test_header_length_lies(capture_root: CaptureRoot, length: int, expected: str) -> None:
    raw = bytearray(real_dmar(capture_root, "a_legacy"))
    struct.pack_into("<I", raw, 4, length)
    err = parse_error(bytes(raw))
    assert (err.offset, err.reason) == (4, expected)


@pytest.mark.parametrize(
    ("drhd_length", "expected"),
    [
        (0x90, "DRHD at 0x30: length 0x90 runs past the end of the table (0xa0)"),
        (0x71, "DRHD at 0x30: length 0x71 runs past the end of the table (0xa0)"),
        (0, "DRHD at 0x30: length 0x0 is less than 4 (acpi_dmar_header)"),
        (3, "DRHD at 0x30: length 0x3 is less than 4 (acpi_dmar_header)"),
        (12, "DRHD at 0x30: length 0xc is shorter than its fixed part (0x10 bytes)"),
    ],
)
def test_structure_length_lies(capture_root: CaptureRoot, drhd_length: int, expected: str) -> None:
    raw = bytearray(real_dmar(capture_root, "a_legacy"))
    struct.pack_into("<H", raw, 0x32, drhd_length)  # DRHD at 0x30, length at +2
    err = parse_error(bytes(raw))
    assert (err.offset, err.reason) == (0x30, expected)


def test_structure_header_runs_past_table() -> None:
    # a DRHD of 16 bytes (0x30..0x40), then 3 bytes that cannot hold a 4-byte header
    body = pack_structure(0, struct.pack("<BBHQ", 1, 0, 0, 0xFED90000)) + b"\0\0\0"
    err = parse_error(pack_table(body))
    assert err.offset == 0x40
    assert (
        err.reason == "structure at 0x40: its 4-byte header runs past the end of the table (0x43)"
    )


@pytest.mark.parametrize(
    ("type_", "name", "fixed"),
    # fixed parts: DRHD 4+12, RMRR 4+20, ATSR 4+4, RHSA 4+16, ANDD 4+4, SATC 4+4, SIDP 4+4
    [(0, "DRHD", 16), (1, "RMRR", 24), (2, "ATSR", 8), (3, "RHSA", 20), (4, "ANDD", 8),
     (5, "SATC", 8), (6, "SIDP", 8)],
)  # fmt: skip
def test_structure_shorter_than_fixed_part(type_: int, name: str, fixed: int) -> None:
    body = pack_structure(type_, bytes(fixed - 1 - 4))  # one byte short
    err = parse_error(pack_table(body))
    assert err.offset == 0x30
    assert err.reason == (
        f"{name} at 0x30: length {fixed - 1:#x} is shorter than its fixed part ({fixed:#x} bytes)"
    )
    parse_dmar(pack_table(pack_structure(type_, bytes(fixed - 4))))  # exactly fixed: fine


DRHD_FIXED = struct.pack("<BBHQ", 0, 0, 0, 0xFED90000)


@pytest.mark.parametrize(
    ("scopes", "expected_offset", "expected"),
    [
        # one good 8-byte scope at 0x40, then a scope claiming length 4
        (
            pack_scope(1, 0, 0, [(2, 0)]) + bytes([1, 4, 0, 0, 0, 0, 0, 0]),
            0x48,
            "DRHD at 0x30: device scope at 0x48: length 0x4 is less than 6 (acpi_dmar_device_scope)",
        ),
        (
            bytes([1, 0, 0, 0, 0, 0]),  # length 0 (would loop forever if accepted)
            0x40,
            "DRHD at 0x30: device scope at 0x40: length 0x0 is less than 6 (acpi_dmar_device_scope)",
        ),
        (
            bytes([1, 7, 0, 0, 0, 0, 2, 0]),
            0x40,
            "DRHD at 0x30: device scope at 0x40: length 0x7 is odd; expected 6 + 2 bytes per PCI path entry",
        ),
        (
            bytes([1, 10, 0, 0, 0, 0, 2, 0]),  # claims 10 bytes, the structure has 8 left
            0x40,
            "DRHD at 0x30: device scope at 0x40: length 0xa runs past the end of its structure (0x48)",
        ),
        (
            pack_scope(1, 0, 0, [(2, 0)]) + b"\x01",  # one stray byte after a good scope
            0x48,
            "DRHD at 0x30: device scope at 0x48 runs past the end of its structure (0x49): "
            "1 byte left, a device scope needs at least 6",
        ),
    ],
)
def test_device_scope_length_lies(scopes: bytes, expected_offset: int, expected: str) -> None:
    err = parse_error(pack_table(pack_structure(0, DRHD_FIXED + scopes)))
    assert (err.offset, err.reason) == (expected_offset, expected)


def test_scope_errors_name_their_structure() -> None:
    # RMRR at 0x30 (fixed part 24, scopes from 0x48) with a 4-byte scope
    body = pack_structure(1, struct.pack("<HHQQ", 0, 0, 0, 0xFFF) + bytes([1, 4, 0, 0]))
    err = parse_error(pack_table(body))
    assert err.offset == 0x48
    assert err.reason.startswith("RMRR at 0x30: device scope at 0x48: length 0x4 is less than 6")


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_every_prefix_of_a_real_table(capture_root: CaptureRoot, name: str) -> None:
    raw = real_dmar(capture_root, name)
    assert len(raw) == 0xA0
    for n in range(len(raw)):  # header.length stays 0xa0: every proper prefix is short
        err = parse_error(raw[:n])
        assert err.offset == (n if n < 48 else 4)
    parse_dmar(raw)


def test_every_prefix_with_consistent_lengths(capture_root: CaptureRoot) -> None:
    """Prefixes whose table and DRHD length fields say the prefix length: the walk must fail
    exactly where a structure or a scope is cut (the DRHD is at 0x30, 8-byte scopes from 0x40)."""
    raw = real_dmar(capture_root, "a_legacy")
    for n in range(48, len(raw) + 1):
        cut = bytearray(raw[:n])
        struct.pack_into("<I", cut, 4, n)
        if n >= 0x34:
            struct.pack_into("<H", cut, 0x32, n - 0x30)
        if n == 48:
            assert parse_dmar(bytes(cut)).structures == ()
        elif n < 0x34:  # 1..3 bytes: not even a structure header
            assert parse_error(bytes(cut)).offset == 0x30
        elif n < 0x40:  # DRHD shorter than its 16-byte fixed part
            assert "shorter than its fixed part" in parse_error(bytes(cut)).reason
        elif (n - 0x40) % 8:  # a scope is cut: the error is at that scope's start
            assert parse_error(bytes(cut)).offset == 0x40 + (n - 0x40) // 8 * 8
        else:
            table = parse_dmar(bytes(cut))
            assert len(table.drhds[0].scopes) == (n - 0x40) // 8


# --- Hypothesis: only ParseError may escape ------------------------------------------------------


def parse_or_parse_error(data: bytes) -> None:
    try:
        table = parse_dmar(data)
    except ParseError as err:
        assert err.offset is not None and 0 <= err.offset <= len(data)
        return
    # whatever parses must render too
    json.dumps(dmar_to_json(table))
    format_dmar_text(table)


FAST = settings(max_examples=300, deadline=None)


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    parse_or_parse_error(data)


@FAST
@given(st.binary(max_size=400), st.integers(0, 3))
def test_random_structures_after_a_valid_header(body: bytes, slack: int) -> None:
    # a DMAR header whose length covers the random body (minus up to 3 bytes of slack)
    parse_or_parse_error(pack_table(body, length=max(48, 48 + len(body) - slack)))


@FAST
@given(
    name=st.sampled_from(CAPTURE_NAMES),
    flips=st.lists(st.tuples(st.integers(0, 0x9F), st.integers(0, 0xFF)), max_size=8),
    table_length=st.one_of(st.none(), st.integers(0, 0x200)),
    drhd_length=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    resize=st.integers(-0xA0, 0x40),
)
def test_mutated_real_tables(
    capture_root: CaptureRoot,
    *,
    name: str,
    flips: list[tuple[int, int]],
    table_length: int | None,
    drhd_length: int | None,
    resize: int,
) -> None:
    """Flipped bytes, lying table/DRHD length fields, truncation or zero padding."""
    raw = bytearray(real_dmar(capture_root, name))
    for index, value in flips:
        raw[index] = value
    if table_length is not None:
        struct.pack_into("<I", raw, 4, table_length)
    if drhd_length is not None:
        struct.pack_into("<H", raw, 0x32, drhd_length)
    raw = raw[: len(raw) + resize] if resize < 0 else raw + bytes(resize)
    parse_or_parse_error(bytes(raw))


@FAST
@given(st.data())
def test_mutated_synthetic_table(data: st.DataObject) -> None:
    raw = bytearray(every_type_table())
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 0xFF))
    parse_or_parse_error(bytes(raw))


def test_structure_classes_are_frozen() -> None:
    t = parse_dmar(every_type_table())
    for s in t.structures:
        with pytest.raises(AttributeError):
            s.length = 0  # type: ignore[misc]
    assert isinstance(t.structures[0], Drhd)
    assert {type(s) for s in t.structures} == {
        Drhd, Rmrr, Atsr, Rhsa, Andd, Satc, Sidp, UnknownStructure,
    }  # fmt: skip
