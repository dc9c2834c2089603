"""The ACPI DMAR table of a simulated host (``/sys/firmware/acpi/tables/DMAR``).

Layout per ACPICA ``actbl1.h`` (reference §7): the 48-byte table header (36-byte ACPI header,
host address width - 1, flags, 10 reserved bytes), then one DRHD per unit: type 0, length, flags
(INCLUDE_PCI_ALL), size, segment, register base, device scopes.  A unit that is not
INCLUDE_PCI_ALL lists its devices: PCI endpoints (type 1) and bridges (type 2), each with the path
of (device, function) hops from its root bus.  Firmware puts the INCLUDE_PCI_ALL unit of a
segment last, and so does this builder.  The checksum makes the byte sum 0.
"""

from __future__ import annotations

import struct

from tests.kernelmodel.iommu import DmarUnit
from tests.kernelmodel.pci import Topology

# include/acpi/actbl1.h
ACPI_DMAR_TYPE_HARDWARE_UNIT = 0  # DRHD
ACPI_DMAR_SCOPE_TYPE_ENDPOINT = 1
ACPI_DMAR_SCOPE_TYPE_BRIDGE = 2
ACPI_DMAR_INTR_REMAP = 1 << 0  # table flags
ACPI_DMAR_INCLUDE_ALL = 1 << 0  # DRHD flags: INCLUDE_PCI_ALL
OEM_ID = b"VTDLUD"
OEM_TABLE_ID = b"VTDSIM  "
CREATOR_ID = b"VSIM"
DRHD_FIXED = 16
SCOPE_FIXED = 6


def _scope(topology: Topology, bdf: str) -> bytes:
    chain = [topology.devices[bdf]]
    while chain[-1].parent is not None:
        chain.append(topology.devices[chain[-1].parent])
    chain.reverse()
    start_bus = chain[0].bus
    path = b"".join(bytes([d.devfn >> 3, d.devfn & 7]) for d in chain)
    kind = ACPI_DMAR_SCOPE_TYPE_BRIDGE if chain[-1].is_bridge else ACPI_DMAR_SCOPE_TYPE_ENDPOINT
    return struct.pack("<BBBxBB", kind, SCOPE_FIXED + len(path), 0, 0, start_bus) + path


def build_dmar(units: list[DmarUnit], topology: Topology) -> bytes:
    ordered = sorted(units, key=lambda u: (u.segment, u.include_all))
    body = bytearray()
    for unit in ordered:
        scopes = b""
        if not unit.include_all:
            scopes = b"".join(
                _scope(topology, d.bdf) for d in topology.sorted() if d.unit == unit.name
            )
        flags = ACPI_DMAR_INCLUDE_ALL if unit.include_all else 0
        body += struct.pack(
            "<HHBBHQ",
            ACPI_DMAR_TYPE_HARDWARE_UNIT,
            DRHD_FIXED + len(scopes),
            flags,
            0,
            unit.segment,
            unit.reg_base,
        )
        body += scopes
    width = max((u.agaw * 9 + 30 for u in units), default=39) - 1
    length = 48 + len(body)
    header = bytearray(
        struct.pack(
            "<4sIBB6s8sI4sIBB10x",
            b"DMAR",
            length,
            1,
            0,
            OEM_ID,
            OEM_TABLE_ID,
            1,
            CREATOR_ID,
            1,
            width,
            ACPI_DMAR_INTR_REMAP,
        )
    )
    table = header + body
    table[9] = -sum(table) & 0xFF
    return bytes(table)
