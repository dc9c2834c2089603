"""Decode the ACPI DMAR table (``/sys/firmware/acpi/tables/DMAR``) into :mod:`vtdlud.model.dmar`.

Layout: ACPICA ``include/acpi/actbl1.h`` and VT-d spec §8 (reference/kernel-interfaces.md §7);
everything little-endian and packed.  :func:`parse_dmar` is pure: it takes the table's bytes and
raises :class:`ParseError` (with the byte offset of the offending element) and nothing else.  It
is stricter than the kernel in one way only: where ``dmar_walk_remapping_entries()`` silently
stops at a zero-length structure, this parser reports it.  A bad checksum is not an error
(``DmarTable.checksum_ok``); bytes after the header's ``length`` are ignored; structure types it
does not know are kept as :class:`UnknownStructure` and skipped by their length, as the kernel
does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from vtdlud.errors import ParseError
from vtdlud.model.dmar import (
    ACPI_DMAR_HEADER_SIZE,
    ACPI_DMAR_PCI_PATH_SIZE,
    ACPI_DMAR_SCOPE_SIZE,
    ACPI_DMAR_TABLE_SIZE,
    ACPI_SIG_DMAR,
    STRUCTURE_TYPES,
    Andd,
    Atsr,
    DeviceScope,
    DmarHeader,
    DmarStructure,
    DmarTable,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    Sidp,
    UnknownStructure,
)

# acpi_table_header (36 bytes) + u8 width, u8 flags, u8 reserved[10]
_TABLE = struct.Struct("<4sIBB6s8sI4sIBB10x")
_SUB_HEADER = struct.Struct("<HH")  # acpi_dmar_header
_DRHD = struct.Struct("<BBHQ")  # flags, size, segment, address (after the header)
_RMRR = struct.Struct("<2xHQQ")  # reserved, segment, base_address, end_address
_ATSR_SATC = struct.Struct("<BxH")  # flags, reserved, segment
_RHSA = struct.Struct("<4xQI")  # reserved, base_address, proximity_domain
_ANDD = struct.Struct("<3xB")  # reserved[3], device_number
_SIDP = struct.Struct("<2xH")  # reserved, segment
_SCOPE = struct.Struct("<BBBxBB")  # entry_type, length, flags, reserved, enumeration_id, bus
assert _TABLE.size == ACPI_DMAR_TABLE_SIZE
assert _SCOPE.size == ACPI_DMAR_SCOPE_SIZE


def _text(raw: bytes) -> str:
    """An ACPI ID field: ASCII, trailing NULs dropped, other bytes escaped."""
    return raw.rstrip(b"\0").decode("ascii", "backslashreplace")


def _parse_scopes(data: bytes, start: int, end: int, owner: str) -> tuple[DeviceScope, ...]:
    """The device scopes in ``data[start:end]``; ``owner`` names the structure in messages."""
    scopes: list[DeviceScope] = []
    pos = start
    while pos < end:
        where = f"{owner}: device scope at {pos:#x}"
        if end - pos < 2:
            raise ParseError(
                f"{where} runs past the end of its structure ({end:#x}): {end - pos} byte left, "
                f"a device scope needs at least {ACPI_DMAR_SCOPE_SIZE}",
                offset=pos,
            )
        length = data[pos + 1]
        if length < ACPI_DMAR_SCOPE_SIZE:
            raise ParseError(
                f"{where}: length {length:#x} is less than {ACPI_DMAR_SCOPE_SIZE} "
                "(acpi_dmar_device_scope)",
                offset=pos,
            )
        if length % ACPI_DMAR_PCI_PATH_SIZE:
            raise ParseError(
                f"{where}: length {length:#x} is odd; expected 6 + 2 bytes per PCI path entry",
                offset=pos,
            )
        if pos + length > end:
            raise ParseError(
                f"{where}: length {length:#x} runs past the end of its structure ({end:#x})",
                offset=pos,
            )
        entry_type, _, flags, enumeration_id, bus = _SCOPE.unpack_from(data, pos)
        path = tuple(
            (data[p], data[p + 1])
            for p in range(pos + ACPI_DMAR_SCOPE_SIZE, pos + length, ACPI_DMAR_PCI_PATH_SIZE)
        )
        scopes.append(DeviceScope(pos, entry_type, length, flags, enumeration_id, bus, path))
        pos += length
    return tuple(scopes)


def _drhd(data: bytes, off: int, length: int, owner: str) -> Drhd:
    flags, size, segment, address = _DRHD.unpack_from(data, off + 4)
    scopes = _parse_scopes(data, off + Drhd.fixed_size, off + length, owner)
    return Drhd(off, length, flags, size, segment, address, scopes)


def _rmrr(data: bytes, off: int, length: int, owner: str) -> Rmrr:
    segment, base, end = _RMRR.unpack_from(data, off + 4)
    scopes = _parse_scopes(data, off + Rmrr.fixed_size, off + length, owner)
    return Rmrr(off, length, segment, base, end, scopes)


def _atsr(data: bytes, off: int, length: int, owner: str) -> Atsr:
    flags, segment = _ATSR_SATC.unpack_from(data, off + 4)
    scopes = _parse_scopes(data, off + Atsr.fixed_size, off + length, owner)
    return Atsr(off, length, flags, segment, scopes)


def _rhsa(data: bytes, off: int, length: int, owner: str) -> Rhsa:
    base, proximity_domain = _RHSA.unpack_from(data, off + 4)
    return Rhsa(off, length, base, proximity_domain)


def _andd(data: bytes, off: int, length: int, owner: str) -> Andd:
    (device_number,) = _ANDD.unpack_from(data, off + 4)
    raw_name = data[off + Andd.fixed_size : off + length]
    name, nul, _ = raw_name.partition(b"\0")
    return Andd(off, length, device_number, name.decode("ascii", "backslashreplace"), bool(nul))


def _satc(data: bytes, off: int, length: int, owner: str) -> Satc:
    flags, segment = _ATSR_SATC.unpack_from(data, off + 4)
    scopes = _parse_scopes(data, off + Satc.fixed_size, off + length, owner)
    return Satc(off, length, flags, segment, scopes)


def _sidp(data: bytes, off: int, length: int, owner: str) -> Sidp:
    (segment,) = _SIDP.unpack_from(data, off + 4)
    scopes = _parse_scopes(data, off + Sidp.fixed_size, off + length, owner)
    return Sidp(off, length, segment, scopes)


_Decoder = Callable[[bytes, int, int, str], DmarStructure]
# type -> (fixed size, decoder); the decoders run only once the fixed part is known to fit.
_DECODERS: dict[int, tuple[int, _Decoder]] = {
    Drhd.type: (Drhd.fixed_size, _drhd),
    Rmrr.type: (Rmrr.fixed_size, _rmrr),
    Atsr.type: (Atsr.fixed_size, _atsr),
    Rhsa.type: (Rhsa.fixed_size, _rhsa),
    Andd.type: (Andd.fixed_size, _andd),
    Satc.type: (Satc.fixed_size, _satc),
    Sidp.type: (Sidp.fixed_size, _sidp),
}


def _parse_header(data: bytes) -> DmarHeader:
    if len(data) >= 4 and data[:4] != ACPI_SIG_DMAR.encode():
        raise ParseError(
            f"signature {_text(data[:4])!r} is not {ACPI_SIG_DMAR!r}: not a DMAR table", offset=0
        )
    if len(data) < ACPI_DMAR_TABLE_SIZE:
        raise ParseError(
            f"table is {len(data):#x} bytes, shorter than the {ACPI_DMAR_TABLE_SIZE}-byte "
            "DMAR header (acpi_table_dmar)",
            offset=len(data),
        )
    fields = _TABLE.unpack_from(data, 0)
    sig, length, revision, checksum, oem_id, oem_table_id, oem_rev = fields[:7]
    creator, creator_rev, width, flags = fields[7:]
    if length < ACPI_DMAR_TABLE_SIZE:
        raise ParseError(
            f"header length {length:#x} is smaller than the {ACPI_DMAR_TABLE_SIZE}-byte "
            "DMAR header",
            offset=4,
        )
    if length > len(data):
        raise ParseError(
            f"header length {length:#x} is larger than the data ({len(data):#x} bytes)", offset=4
        )
    return DmarHeader(
        signature=_text(sig),
        length=length,
        revision=revision,
        checksum=checksum,
        oem_id=_text(oem_id),
        oem_table_id=_text(oem_table_id),
        oem_revision=oem_rev,
        asl_compiler_id=_text(creator),
        asl_compiler_revision=creator_rev,
        width=width,
        flags=flags,
    )


def parse_dmar(data: bytes) -> DmarTable:
    """Decode a DMAR table (the bytes of ``/sys/firmware/acpi/tables/DMAR``).

    Raises :class:`ParseError` with the byte offset of the first element that does not fit.
    """
    header = _parse_header(data)
    end = header.length
    structures: list[DmarStructure] = []
    pos = ACPI_DMAR_TABLE_SIZE
    while pos < end:
        if end - pos < ACPI_DMAR_HEADER_SIZE:
            raise ParseError(
                f"structure at {pos:#x}: its {ACPI_DMAR_HEADER_SIZE}-byte header runs past "
                f"the end of the table ({end:#x})",
                offset=pos,
            )
        type_, length = _SUB_HEADER.unpack_from(data, pos)
        known = STRUCTURE_TYPES.get(type_)
        owner = f"{known[0] if known else f'structure type {type_}'} at {pos:#x}"
        if length < ACPI_DMAR_HEADER_SIZE:
            raise ParseError(
                f"{owner}: length {length:#x} is less than {ACPI_DMAR_HEADER_SIZE} "
                "(acpi_dmar_header)",
                offset=pos,
            )
        if pos + length > end:
            raise ParseError(
                f"{owner}: length {length:#x} runs past the end of the table ({end:#x})",
                offset=pos,
            )
        decoder = _DECODERS.get(type_)
        if decoder is None:
            structures.append(UnknownStructure(pos, type_, length, bytes(data[pos : pos + length])))
        else:
            fixed_size, decode = decoder
            if length < fixed_size:
                raise ParseError(
                    f"{owner}: length {length:#x} is shorter than its fixed part "
                    f"({fixed_size:#x} bytes)",
                    offset=pos,
                )
            structures.append(decode(data, pos, length, owner))
        pos += length
    checksum_ok = sum(data[:end]) & 0xFF == 0
    return DmarTable(header, tuple(structures), checksum_ok)
