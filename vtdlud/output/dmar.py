"""Rendering of a decoded ACPI DMAR table for ``vtdlud decode dmar FILE [--json]``.

:func:`format_dmar_text` is a terse ``iasl -d``: the header, then one block per remapping
structure (``@offset NAME``) with its device scopes indented below it.  :func:`dmar_to_json` is
the ``--json`` document (not the status envelope): keys are ACPICA's field names, addresses and
flag bytes are lowercase ``0x`` hex strings, other numbers are integers, offsets are byte offsets
in the table.
"""

from __future__ import annotations

from vtdlud.model.bitfield import BitField
from vtdlud.model.dmar import (
    ATSR_FLAG_FIELDS,
    DMAR_FLAG_FIELDS,
    DRHD_FLAG_FIELDS,
    SATC_FLAG_FIELDS,
    Andd,
    Atsr,
    DeviceScope,
    DmarStructure,
    DmarTable,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    Sidp,
    UnknownStructure,
    scope_type_constant,
    structure_type_constant,
)

UNKNOWN_HEXDUMP_BYTES = 32  # text output shows at most this many bytes of an unknown structure


def _hex(value: int) -> str:
    return f"{value:#x}"


def _flags_json(value: int, fields: tuple[BitField, ...]) -> dict[str, object]:
    out: dict[str, object] = {"raw": _hex(value)}
    for f in fields:
        out[f.name] = f.decode(value)
    return out


def _scope_json(scope: DeviceScope, segment: int) -> dict[str, object]:
    return {
        "offset": scope.offset,
        "entry_type": scope.entry_type,
        "type_name": scope_type_constant(scope.entry_type),
        "length": scope.length,
        "flags": _hex(scope.flags),
        "enumeration_id": scope.enumeration_id,
        "bus": scope.bus,
        "path": [[device, function] for device, function in scope.path],
        "bdf": scope.bdf(segment),
    }


def _scopes_json(scopes: tuple[DeviceScope, ...], segment: int) -> list[dict[str, object]]:
    return [_scope_json(s, segment) for s in scopes]


def _structure_json(s: DmarStructure) -> dict[str, object]:
    out: dict[str, object] = {
        "offset": s.offset,
        "type": s.type,
        "type_name": structure_type_constant(s.type),
        "name": s.name,
        "length": s.length,
    }
    match s:
        case Drhd():
            out |= {
                "flags": _flags_json(s.flags, DRHD_FLAG_FIELDS),
                "size": s.size,
                "register_set_size": s.register_set_size,
                "segment": s.segment,
                "address": _hex(s.address),
                "scopes": _scopes_json(s.scopes, s.segment),
            }
        case Rmrr():
            out |= {
                "segment": s.segment,
                "base_address": _hex(s.base_address),
                "end_address": _hex(s.end_address),
                "scopes": _scopes_json(s.scopes, s.segment),
            }
        case Atsr():
            out |= {
                "flags": _flags_json(s.flags, ATSR_FLAG_FIELDS),
                "segment": s.segment,
                "scopes": _scopes_json(s.scopes, s.segment),
            }
        case Rhsa():
            out |= {"base_address": _hex(s.base_address), "proximity_domain": s.proximity_domain}
        case Andd():
            out |= {
                "device_number": s.device_number,
                "device_name": s.device_name,
                "name_terminated": s.name_terminated,
            }
        case Satc():
            out |= {
                "flags": _flags_json(s.flags, SATC_FLAG_FIELDS),
                "segment": s.segment,
                "scopes": _scopes_json(s.scopes, s.segment),
            }
        case Sidp():
            out |= {"segment": s.segment, "scopes": _scopes_json(s.scopes, s.segment)}
        case UnknownStructure():
            out["raw"] = s.raw.hex()
    return out


def dmar_to_json(table: DmarTable) -> dict[str, object]:
    """The JSON document of ``vtdlud decode dmar --json``."""
    h = table.header
    return {
        "signature": h.signature,
        "length": h.length,
        "revision": h.revision,
        "checksum": _hex(h.checksum),
        "checksum_ok": table.checksum_ok,
        "oem_id": h.oem_id,
        "oem_table_id": h.oem_table_id,
        "oem_revision": h.oem_revision,
        "asl_compiler_id": h.asl_compiler_id,
        "asl_compiler_revision": h.asl_compiler_revision,
        "width": h.width,
        "host_address_width": h.host_address_width,
        "flags": _flags_json(h.flags, DMAR_FLAG_FIELDS),
        "structures": [_structure_json(s) for s in table.structures],
    }


def _flag_text(value: int, fields: tuple[BitField, ...]) -> str:
    names = [f.name.removeprefix("ACPI_DMAR_") for f in fields if f.decode(value)]
    known = 0
    for f in fields:
        known |= f.mask
    if value & ~known:
        names.append(f"unknown {value & ~known:#x}")
    return f"{value:#04x}" + (f" ({', '.join(names)})" if names else "")


def _path_text(scope: DeviceScope) -> str:
    return "/".join(f"{device:02x}.{function:x}" for device, function in scope.path) or "-"


def _scope_lines(scopes: tuple[DeviceScope, ...], segment: int) -> list[str]:
    lines = []
    for sc in scopes:
        line = (
            f"    scope @{sc.offset:#05x}  {sc.type_name:<21}  length {sc.length:<3}"
            f"  flags {sc.flags:#04x}  enumeration_id {sc.enumeration_id:#04x}"
            f"  bus {sc.bus:#04x}  path {_path_text(sc)}"
        )
        bdf = sc.bdf(segment)
        if bdf is not None:
            line += f"  -> {bdf}"
        lines.append(line)
    return lines


def _structure_lines(s: DmarStructure) -> list[str]:
    title = f"@{s.offset:#05x} {s.name} ({structure_type_constant(s.type)})  length {s.length:#x}"
    match s:
        case Drhd():
            body = [
                f"  flags {_flag_text(s.flags, DRHD_FLAG_FIELDS)}  segment {s.segment:#06x}"
                f"  address {s.address:#x}  size {s.size} ({s.register_set_size:#x} bytes)",
                *_scope_lines(s.scopes, s.segment),
            ]
        case Rmrr():
            body = [
                f"  segment {s.segment:#06x}  base_address {s.base_address:#x}"
                f"  end_address {s.end_address:#x}",
                *_scope_lines(s.scopes, s.segment),
            ]
        case Atsr():
            body = [
                f"  flags {_flag_text(s.flags, ATSR_FLAG_FIELDS)}  segment {s.segment:#06x}",
                *_scope_lines(s.scopes, s.segment),
            ]
        case Rhsa():
            body = [f"  base_address {s.base_address:#x}  proximity_domain {s.proximity_domain:#x}"]
        case Andd():
            unterminated = "" if s.name_terminated else "  (not NUL-terminated)"
            body = [
                f'  device_number {s.device_number:#04x}  device_name "{s.device_name}"'
                + unterminated
            ]
        case Satc():
            body = [
                f"  flags {_flag_text(s.flags, SATC_FLAG_FIELDS)}  segment {s.segment:#06x}",
                *_scope_lines(s.scopes, s.segment),
            ]
        case Sidp():
            body = [f"  segment {s.segment:#06x}", *_scope_lines(s.scopes, s.segment)]
        case UnknownStructure():
            shown = s.raw[:UNKNOWN_HEXDUMP_BYTES].hex(" ")
            more = " ..." if len(s.raw) > UNKNOWN_HEXDUMP_BYTES else ""
            body = [f"  not decoded, skipped by its length: {shown}{more}"]
    return [title, *body]


def format_dmar_text(table: DmarTable) -> str:
    """A compact human rendering of ``table``, one block per remapping structure."""
    h = table.header
    checksum = "ok" if table.checksum_ok else "MISMATCH"
    lines = [
        f"{h.signature}  length {h.length:#x}  revision {h.revision}"
        f"  checksum {h.checksum:#04x} ({checksum})",
        f'  oem_id "{h.oem_id}"  oem_table_id "{h.oem_table_id}"  oem_revision {h.oem_revision:#x}',
        f'  asl_compiler_id "{h.asl_compiler_id}"'
        f"  asl_compiler_revision {h.asl_compiler_revision:#x}",
        f"  width {h.width:#x} (host address width {h.host_address_width} bits)"
        f"  flags {_flag_text(h.flags, DMAR_FLAG_FIELDS)}",
    ]
    for s in table.structures:
        lines.append("")
        lines.extend(_structure_lines(s))
    return "\n".join(lines) + "\n"
