"""The ACPI DMAR table (``/sys/firmware/acpi/tables/DMAR``), decoded from its bytes.

Layout: ACPICA ``include/acpi/actbl1.h`` (``struct acpi_table_dmar``, ``struct acpi_dmar_header``
and the ``acpi_dmar_*`` remapping structures) and VT-d spec §8 (reference/kernel-interfaces.md §7).
Everything is little-endian and packed.  Field names are ACPICA's; the structure classes carry the
spec's short names (DRHD, RMRR, ...).

:func:`vtdlud.parse.dmar.parse_dmar` decodes the table's bytes into these classes.

Device scopes give the raw PCI path.  Resolving a multi-element path to the device's final
bus/device/function needs the secondary bus numbers of the bridges on the way (the live PCI
topology), so it is not done here; only a single-element path names a BDF by itself.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from vtdlud.frozen import frozen
from vtdlud.model.bitfield import BitField, FieldValue, decode_fields, flag

ACPI_SIG_DMAR = "DMAR"
ACPI_DMAR_TABLE_SIZE = 48  # sizeof(struct acpi_table_dmar): acpi_table_header (36) + 12
ACPI_DMAR_HEADER_SIZE = 4  # sizeof(struct acpi_dmar_header): u16 type, u16 length
ACPI_DMAR_SCOPE_SIZE = 6  # sizeof(struct acpi_dmar_device_scope), before the PCI path
ACPI_DMAR_PCI_PATH_SIZE = 2  # sizeof(struct acpi_dmar_pci_path): u8 device, u8 function

# enum acpi_dmar_type: acpi_dmar_header.type
ACPI_DMAR_TYPE_HARDWARE_UNIT = 0  # DRHD
ACPI_DMAR_TYPE_RESERVED_MEMORY = 1  # RMRR
ACPI_DMAR_TYPE_ROOT_ATS = 2  # ATSR
ACPI_DMAR_TYPE_HARDWARE_AFFINITY = 3  # RHSA
ACPI_DMAR_TYPE_NAMESPACE = 4  # ANDD
ACPI_DMAR_TYPE_SATC = 5  # SATC (VT-d 3.2)
ACPI_DMAR_TYPE_SIDP = 6  # SIDP (VT-d 3.4)
ACPI_DMAR_TYPE_RESERVED = 7  # 7 and greater are reserved

# enum acpi_dmar_scope_type: acpi_dmar_device_scope.entry_type
ACPI_DMAR_SCOPE_TYPE_NOT_USED = 0
ACPI_DMAR_SCOPE_TYPE_ENDPOINT = 1
ACPI_DMAR_SCOPE_TYPE_BRIDGE = 2
ACPI_DMAR_SCOPE_TYPE_IOAPIC = 3
ACPI_DMAR_SCOPE_TYPE_HPET = 4
ACPI_DMAR_SCOPE_TYPE_NAMESPACE = 5
ACPI_DMAR_SCOPE_TYPE_RESERVED = 6  # 6 and greater are reserved

# acpi_table_dmar.flags
ACPI_DMAR_INTR_REMAP = 1 << 0
ACPI_DMAR_X2APIC_OPT_OUT = 1 << 1
ACPI_DMAR_X2APIC_MODE = 1 << 2  # EDK2: DMA_CTRL_PLATFORM_OPT_IN_FLAG
# acpi_dmar_hardware_unit.flags
ACPI_DMAR_INCLUDE_ALL = 1 << 0  # INCLUDE_PCI_ALL
# acpi_dmar_atsr.flags
ACPI_DMAR_ALL_PORTS = 1 << 0
# acpi_dmar_satc.flags: ACPICA has no constant; the kernel reads ``satc->flags & 0x1`` into
# ``satcu->atc_required``.
ACPI_DMAR_SATC_ATC_REQUIRED = 1 << 0

DMAR_FLAG_FIELDS: tuple[BitField, ...] = (
    flag("ACPI_DMAR_INTR_REMAP", 0, "interrupt remapping supported"),
    flag("ACPI_DMAR_X2APIC_OPT_OUT", 1, "firmware asks the OS not to enable x2APIC mode"),
    flag("ACPI_DMAR_X2APIC_MODE", 2, "DMA control opt-in (EDK2: DMA_CTRL_PLATFORM_OPT_IN_FLAG)"),
)
DRHD_FLAG_FIELDS: tuple[BitField, ...] = (
    flag("ACPI_DMAR_INCLUDE_ALL", 0, "INCLUDE_PCI_ALL: the unit owns every device of its segment"),
)
ATSR_FLAG_FIELDS: tuple[BitField, ...] = (
    flag("ACPI_DMAR_ALL_PORTS", 0, "every root port of the segment supports ATS"),
)
SATC_FLAG_FIELDS: tuple[BitField, ...] = (
    flag("ATC_REQUIRED", 0, "the devices must have their ATC enabled (satcu->atc_required)"),
)

# type -> (short name, ACPICA constant)
STRUCTURE_TYPES: dict[int, tuple[str, str]] = {
    ACPI_DMAR_TYPE_HARDWARE_UNIT: ("DRHD", "ACPI_DMAR_TYPE_HARDWARE_UNIT"),
    ACPI_DMAR_TYPE_RESERVED_MEMORY: ("RMRR", "ACPI_DMAR_TYPE_RESERVED_MEMORY"),
    ACPI_DMAR_TYPE_ROOT_ATS: ("ATSR", "ACPI_DMAR_TYPE_ROOT_ATS"),
    ACPI_DMAR_TYPE_HARDWARE_AFFINITY: ("RHSA", "ACPI_DMAR_TYPE_HARDWARE_AFFINITY"),
    ACPI_DMAR_TYPE_NAMESPACE: ("ANDD", "ACPI_DMAR_TYPE_NAMESPACE"),
    ACPI_DMAR_TYPE_SATC: ("SATC", "ACPI_DMAR_TYPE_SATC"),
    ACPI_DMAR_TYPE_SIDP: ("SIDP", "ACPI_DMAR_TYPE_SIDP"),
}
# entry_type -> (name, ACPICA constant)
SCOPE_TYPES: dict[int, tuple[str, str]] = {
    ACPI_DMAR_SCOPE_TYPE_NOT_USED: ("not used", "ACPI_DMAR_SCOPE_TYPE_NOT_USED"),
    ACPI_DMAR_SCOPE_TYPE_ENDPOINT: ("PCI endpoint", "ACPI_DMAR_SCOPE_TYPE_ENDPOINT"),
    ACPI_DMAR_SCOPE_TYPE_BRIDGE: ("PCI bridge", "ACPI_DMAR_SCOPE_TYPE_BRIDGE"),
    ACPI_DMAR_SCOPE_TYPE_IOAPIC: ("IOAPIC", "ACPI_DMAR_SCOPE_TYPE_IOAPIC"),
    ACPI_DMAR_SCOPE_TYPE_HPET: ("HPET", "ACPI_DMAR_SCOPE_TYPE_HPET"),
    ACPI_DMAR_SCOPE_TYPE_NAMESPACE: ("ACPI namespace device", "ACPI_DMAR_SCOPE_TYPE_NAMESPACE"),
}

PCI_MAX_DEVICE = 0x1F
PCI_MAX_FUNCTION = 0x7

PciPath = tuple[tuple[int, int], ...]


def structure_type_constant(type_: int) -> str:
    """``ACPI_DMAR_TYPE_*`` name of a structure type (types >= 7 are ``..._RESERVED``)."""
    return STRUCTURE_TYPES[type_][1] if type_ in STRUCTURE_TYPES else "ACPI_DMAR_TYPE_RESERVED"


def scope_type_constant(entry_type: int) -> str:
    """``ACPI_DMAR_SCOPE_TYPE_*`` name of a device scope type (>= 6 are ``..._RESERVED``)."""
    known = SCOPE_TYPES.get(entry_type)
    return known[1] if known else "ACPI_DMAR_SCOPE_TYPE_RESERVED"


def format_bdf(segment: int, bus: int, device: int, function: int) -> str:
    """``ssss:bb:dd.f``, the way sysfs names PCI devices."""
    return f"{segment:04x}:{bus:02x}:{device:02x}.{function:x}"


def _single_bdf(segment: int, bus: int, path: PciPath) -> str | None:
    if len(path) != 1:
        return None
    device, function = path[0]
    if device > PCI_MAX_DEVICE or function > PCI_MAX_FUNCTION:
        return None
    return format_bdf(segment, bus, device, function)


@frozen
class DeviceScope:
    """``struct acpi_dmar_device_scope`` followed by its ``acpi_dmar_pci_path`` entries.

    ``flags`` is byte 2 (newer ACPICA; older headers had ``u16 reserved`` over bytes 2-3).
    ``bus`` is the start bus number; ``path`` holds (device, function) pairs, walked from
    ``bus`` through the bridges.  ``offset`` is the scope's byte offset in the table.
    """

    offset: int
    entry_type: int
    length: int
    flags: int
    enumeration_id: int
    bus: int
    path: PciPath

    @property
    def type_name(self) -> str:
        known = SCOPE_TYPES.get(self.entry_type)
        return known[0] if known else f"reserved type {self.entry_type}"

    @property
    def is_pci(self) -> bool:
        """A PCI endpoint or PCI bridge (sub-hierarchy) scope."""
        return self.entry_type in (ACPI_DMAR_SCOPE_TYPE_ENDPOINT, ACPI_DMAR_SCOPE_TYPE_BRIDGE)

    def bdf(self, segment: int) -> str | None:
        """The exact BDF when the path has a single element, else None.

        A longer path crosses bridges whose secondary bus numbers are not in the table.  A
        device > 0x1f or function > 7 names no BDF either (None).
        """
        return _single_bdf(segment, self.bus, self.path)


@frozen
class ScopePciDevice:
    """A PCI endpoint or bridge named by a device scope, with the segment of its structure."""

    entry_type: int
    segment: int
    bus: int  # start bus of the path
    path: PciPath

    @property
    def bdf(self) -> str | None:
        """Exact ``ssss:bb:dd.f`` for a single-element path; None otherwise (needs topology)."""
        return _single_bdf(self.segment, self.bus, self.path)


class _Scoped:
    """Mixin for the structures that carry a PCI segment and device scopes."""

    segment: int
    scopes: tuple[DeviceScope, ...]

    def pci_devices(self) -> tuple[ScopePciDevice, ...]:
        """The PCI endpoints and bridges of the scopes, as (segment, start bus, raw path)."""
        return tuple(
            ScopePciDevice(s.entry_type, self.segment, s.bus, s.path)
            for s in self.scopes
            if s.is_pci
        )


@frozen
class Drhd(_Scoped):
    """DRHD: ``struct acpi_dmar_hardware_unit`` (type 0), one VT-d remapping unit.

    ``size`` is byte 5 (``reserved`` in older ACPICA): the register set spans 2^size 4 KiB pages.
    ``address`` is the Register Base Address: the unit's identity (sysfs ``intel-iommu/address``).
    """

    type: ClassVar[int] = ACPI_DMAR_TYPE_HARDWARE_UNIT
    name: ClassVar[str] = "DRHD"
    fixed_size: ClassVar[int] = 16

    offset: int
    length: int
    flags: int
    size: int
    segment: int
    address: int
    scopes: tuple[DeviceScope, ...]

    @property
    def include_all(self) -> bool:
        """INCLUDE_PCI_ALL (``ACPI_DMAR_INCLUDE_ALL``): every device not claimed by another unit."""
        return bool(self.flags & ACPI_DMAR_INCLUDE_ALL)

    @property
    def register_set_size(self) -> int:
        """Bytes of register space, as ``dmar_parse_one_drhd()`` computes ``reg_size``."""
        return 1 << (self.size + 12)

    def flag_fields(self) -> dict[str, FieldValue]:
        return decode_fields(DRHD_FLAG_FIELDS, self.flags)


@frozen
class Rmrr(_Scoped):
    """RMRR: ``struct acpi_dmar_reserved_memory`` (type 1), memory the devices keep using.

    ``end_address`` is the inclusive limit (4 KiB aligned limit address: the last byte).
    """

    type: ClassVar[int] = ACPI_DMAR_TYPE_RESERVED_MEMORY
    name: ClassVar[str] = "RMRR"
    fixed_size: ClassVar[int] = 24

    offset: int
    length: int
    segment: int
    base_address: int
    end_address: int
    scopes: tuple[DeviceScope, ...]


@frozen
class Atsr(_Scoped):
    """ATSR: ``struct acpi_dmar_atsr`` (type 2), root ports that support ATS."""

    type: ClassVar[int] = ACPI_DMAR_TYPE_ROOT_ATS
    name: ClassVar[str] = "ATSR"
    fixed_size: ClassVar[int] = 8

    offset: int
    length: int
    flags: int
    segment: int
    scopes: tuple[DeviceScope, ...]

    @property
    def all_ports(self) -> bool:
        return bool(self.flags & ACPI_DMAR_ALL_PORTS)

    def flag_fields(self) -> dict[str, FieldValue]:
        return decode_fields(ATSR_FLAG_FIELDS, self.flags)


@frozen
class Rhsa:
    """RHSA: ``struct acpi_dmar_rhsa`` (type 3), the NUMA proximity domain of a unit."""

    type: ClassVar[int] = ACPI_DMAR_TYPE_HARDWARE_AFFINITY
    name: ClassVar[str] = "RHSA"
    fixed_size: ClassVar[int] = 20

    offset: int
    length: int
    base_address: int  # the DRHD's Register Base Address
    proximity_domain: int


@frozen
class Andd:
    """ANDD: ``struct acpi_dmar_andd`` (type 4), an ACPI namespace device.

    ``device_name`` is the NUL-terminated ACPI object path after byte 8;
    ``name_terminated`` is False when no NUL ends it inside the structure (the kernel's
    ``dmar_parse_one_andd()`` rejects such an entry as a firmware bug).
    """

    type: ClassVar[int] = ACPI_DMAR_TYPE_NAMESPACE
    name: ClassVar[str] = "ANDD"
    fixed_size: ClassVar[int] = 8

    offset: int
    length: int
    device_number: int  # matched by ACPI_DMAR_SCOPE_TYPE_NAMESPACE scopes' enumeration_id
    device_name: str
    name_terminated: bool


@frozen
class Satc(_Scoped):
    """SATC: ``struct acpi_dmar_satc`` (type 5), SoC-integrated address translation cache."""

    type: ClassVar[int] = ACPI_DMAR_TYPE_SATC
    name: ClassVar[str] = "SATC"
    fixed_size: ClassVar[int] = 8

    offset: int
    length: int
    flags: int
    segment: int
    scopes: tuple[DeviceScope, ...]

    @property
    def atc_required(self) -> bool:
        return bool(self.flags & ACPI_DMAR_SATC_ATC_REQUIRED)

    def flag_fields(self) -> dict[str, FieldValue]:
        return decode_fields(SATC_FLAG_FIELDS, self.flags)


@frozen
class Sidp(_Scoped):
    """SIDP: ``struct acpi_dmar_sidp`` (type 6), SoC integrated device properties."""

    type: ClassVar[int] = ACPI_DMAR_TYPE_SIDP
    name: ClassVar[str] = "SIDP"
    fixed_size: ClassVar[int] = 8

    offset: int
    length: int
    segment: int
    scopes: tuple[DeviceScope, ...]


@frozen
class UnknownStructure:
    """A remapping structure of a type this version does not decode, skipped by its length.

    ``raw`` is the whole structure, its 4-byte header included.
    """

    offset: int
    type: int
    length: int
    raw: bytes

    @property
    def name(self) -> str:
        return f"type {self.type}"


DmarStructure = Drhd | Rmrr | Atsr | Rhsa | Andd | Satc | Sidp | UnknownStructure
_S = TypeVar("_S", Drhd, Rmrr, Atsr, Rhsa, Andd, Satc, Sidp, UnknownStructure)


@frozen
class DmarHeader:
    """``struct acpi_table_dmar``: the ACPI table header, ``width`` and ``flags``."""

    signature: str
    length: int
    revision: int
    checksum: int
    oem_id: str
    oem_table_id: str
    oem_revision: int
    asl_compiler_id: str  # "Creator ID" in the ACPI spec
    asl_compiler_revision: int
    width: int
    flags: int

    @property
    def host_address_width(self) -> int:
        """HAW in bits: ``width`` + 1 (inferred from the VT-d spec, reference §7.1 [I])."""
        return self.width + 1

    def flag_fields(self) -> dict[str, FieldValue]:
        return decode_fields(DMAR_FLAG_FIELDS, self.flags)


@frozen
class DmarTable:
    """A decoded DMAR table; ``structures`` in table order."""

    header: DmarHeader
    structures: tuple[DmarStructure, ...]
    checksum_ok: bool

    def of_type(self, cls: type[_S]) -> tuple[_S, ...]:
        """The structures of one class, e.g. ``table.of_type(Satc)``, in table order."""
        return tuple(s for s in self.structures if isinstance(s, cls))

    @property
    def drhds(self) -> tuple[Drhd, ...]:
        return self.of_type(Drhd)

    @property
    def rmrrs(self) -> tuple[Rmrr, ...]:
        return self.of_type(Rmrr)

    def drhd_at(self, address: int) -> Drhd | None:
        """The DRHD whose Register Base Address is ``address`` (the unit's identity)."""
        return next((d for d in self.drhds if d.address == address), None)
