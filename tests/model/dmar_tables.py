"""Synthetic ACPI DMAR tables packed with ``struct`` (acpi_table_dmar, acpi_dmar_header,
acpi_dmar_device_scope), for the decoder's tests; expected values are written from the bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

DMAR_REL = "sys/firmware/acpi/tables/DMAR"
CaptureRoot = Callable[[str], Path]


def real_dmar(capture_root: CaptureRoot, name: str) -> bytes:
    return (capture_root(name) / DMAR_REL).read_bytes()


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
