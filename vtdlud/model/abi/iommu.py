"""``include/linux/kho/abi/iommu.h``: the IOMMU live-update records, both posted variants.

reference/kernel-interfaces.md §1.  Two versions of the header were posted:

* **v1** (samikhawaja/linux @ef754267767f): compatible ``"iommu-liveupdate-v1"``, the version is
  in the string, ``enum iommu_type_ser`` has ``IOMMU_INTEL``, ``iommu_hw_ser`` and
  ``iommu_device_ser`` end in anonymous unions holding the Intel parts, and ``iommu_flb_ser`` is
  three u64;
* **v2** (@07a493131c2b): compatible ``"iommu-liveupdate"`` plus ``IOMMU_LUO_FLB_VERSION`` 1 as the
  first u64 of ``iommu_flb_ser`` (four u64), generic structs only (no unions, no ``IOMMU_INTEL``).

Records shared by both variants have one class; the others have a ``V1``/``V2`` class each.  The
field facts are confirmed from the header [C]; every size and offset below is computed by
:mod:`vtdlud.model.abi.layout` from the packing rules, and reference §1.3 marks them inferred
[I] — tests/abi compiles a C replica with gcc and compares every one of them.
"""

from __future__ import annotations

from enum import IntEnum

from vtdlud.frozen import frozen
from vtdlud.model.abi.layout import (
    U8,
    U32,
    U64,
    AbiStruct,
    StructLayout,
    abi_struct,
    array,
    bitfield,
    field,
    flex,
    nested,
    pointer,
    struct_layout,
    union,
)
from vtdlud.model.tables import CONTEXT_TABLES_BITMAP_WORDS, bits_to_words, words_to_bits

PAGE_SIZE = 4096  # x86-64; each record array is exactly one page (kho_alloc_preserve(PAGE_SIZE))

IOMMU_LUO_FLB_COMPATIBLE_V1 = "iommu-liveupdate-v1"
IOMMU_LUO_FLB_COMPATIBLE_V2 = "iommu-liveupdate"
IOMMU_LUO_FLB_VERSION = 1  # v2 only: iommu_flb_ser.version

IOMMU_SER_FLAG_DELETED = 1 << 0  # slot is dead: iterators skip it, it is never reused
IOMMU_SER_FLAG_INCOMING = 1 << 1  # defined; no use seen in the generic code read [?]

IOMMU_INTEL_SER_PADDING = 7  # u8 padding[7] after iommu_intel_ser.restored
PCI_DEVFN_BITS = 8  # devid = pci_dev_id() = bus << 8 | devfn


class IommuTypeSer(IntEnum):
    """``enum iommu_type_ser``, stored as a u64 in ``iommu_hw_ser.type``.

    v2 defines only ``IOMMU_INVALID``; ``IOMMU_INTEL`` comes with the VT-d patches (v1).
    """

    IOMMU_INVALID = 0
    IOMMU_INTEL = 1


# --- shared by both variants -----------------------------------------------------------------


@abi_struct("iommu_hdr_ser", field("ref_count", U32), field("flags", U32), packed=True)
@frozen
class IommuHdrSer(AbiStruct):
    """Common header of every record: reference count and ``IOMMU_SER_FLAG_*``."""

    ref_count: int
    flags: int

    @property
    def deleted(self) -> bool:
        return bool(self.flags & IOMMU_SER_FLAG_DELETED)

    @property
    def incoming(self) -> bool:
        return bool(self.flags & IOMMU_SER_FLAG_INCOMING)


# [I] 37 bytes: gcc packs ``u32 sign_extend:1`` into bit 0 of byte 28 and starts the pointer at
# byte 29; the other 7 bits of byte 28 are a hole (kept in ``holes``).  The size is
# compiler-dependent in principle (reference §1.3); tests/abi checks it against gcc.
@abi_struct(
    "iommu_domain_ser",
    nested("hdr", IommuHdrSer),
    field("top_table_phys", U64),
    field("top_level", U64),
    field("vasz", U32),
    bitfield("sign_extend", U32, 1),
    field("restored_domain", pointer("struct iommu_domain")),
    packed=True,
)
@frozen
class IommuDomainSer(AbiStruct):
    """A preserved domain: top page-table page and level, VA size, FEAT_SIGN_EXTEND.

    ``restored_domain`` is a kernel pointer valid only in the new kernel after restore: to
    userspace it is an opaque u64.  ``holes`` carries the unused bits after ``sign_extend``.
    """

    hdr: IommuHdrSer
    top_table_phys: int
    top_level: int
    vasz: int
    sign_extend: int
    restored_domain: int
    holes: int = 0


@abi_struct(
    "iommu_dev_map_ser",
    field("attachment_id", U64),
    field("domain_phys", U64),
    field("iommu_phys", U64),
    packed=True,
)
@frozen
class IommuDevMapSer(AbiStruct):
    """Device -> (domain record, hw record).  VT-d: ``attachment_id`` is the DID on that unit;
    ``domain_phys``/``iommu_phys`` are physical addresses of the records (array slots)."""

    attachment_id: int
    domain_phys: int
    iommu_phys: int


@abi_struct(
    "iommu_array_hdr_ser", field("next_array_phys", U64), field("nr_objects", U64), packed=True
)
@frozen
class IommuArrayHdrSer(AbiStruct):
    """Head of each one-page record array; ``next_array_phys`` 0 ends the chain."""

    next_array_phys: int
    nr_objects: int


# --- v1 only: the Intel parts ----------------------------------------------------------------


@abi_struct(
    "iommu_device_intel_ser", field("pasid_table", U64), field("max_pasid", U64), packed=True
)
@frozen
class IommuDeviceIntelSer(AbiStruct):
    """Scalable mode: physical address of the PASID directory and the device's max PASID."""

    pasid_table: int
    max_pasid: int


# Not __packed in the header, but naturally aligned without implicit padding: 88 bytes.
@abi_struct(
    "iommu_intel_ser",
    field("restored", U8),
    array("padding", U8, IOMMU_INTEL_SER_PADDING),
    field("phys_addr", U64),
    field("root_table", U64),
    array("context_tables_bitmap", U64, CONTEXT_TABLES_BITMAP_WORDS),
    packed=False,
)
@frozen
class IommuIntelSer(AbiStruct):
    """One VT-d unit: register base, root table and the preserved context tables.

    ``padding`` is kept as raw bytes; ``context_tables_bitmap`` holds the u64 words
    (bit ``(bus << 1) + (devfn >> 7)``, see :func:`vtdlud.model.tables.context_table_bit`).
    """

    restored: int
    padding: bytes
    phys_addr: int
    root_table: int
    context_tables_bitmap: tuple[int, ...]

    @property
    def context_table_bits(self) -> list[int]:
        """The set bits of ``context_tables_bitmap``, ascending."""
        return words_to_bits(self.context_tables_bitmap)

    @staticmethod
    def bitmap_words(bits: set[int] | frozenset[int]) -> tuple[int, ...]:
        """Bit indices -> the ``context_tables_bitmap`` words."""
        return bits_to_words(bits)


def _split_devid(devid: int) -> tuple[int, int]:
    return devid >> PCI_DEVFN_BITS, devid & ((1 << PCI_DEVFN_BITS) - 1)


# [I] 56 bytes (40 + the 16-byte intel union member).
@abi_struct(
    "iommu_device_ser",
    nested("hdr", IommuHdrSer),
    field("devid", U32),
    field("pci_domain_nr", U32),
    nested("domain_iommu_ser", IommuDevMapSer),
    union(nested("intel", IommuDeviceIntelSer)),
    packed=True,
)
@frozen
class IommuDeviceSerV1(AbiStruct):
    """A preserved device (v1): ``devid`` = bus << 8 | devfn on segment ``pci_domain_nr``."""

    hdr: IommuHdrSer
    devid: int
    pci_domain_nr: int
    domain_iommu_ser: IommuDevMapSer
    intel: IommuDeviceIntelSer

    @property
    def bus_devfn(self) -> tuple[int, int]:
        return _split_devid(self.devid)


# [I] 112 bytes (24 + the 88-byte intel union member at offset 24).
@abi_struct(
    "iommu_hw_ser",
    nested("hdr", IommuHdrSer),
    field("token", U64),
    field("type", U64),
    union(nested("intel", IommuIntelSer)),
    packed=True,
)
@frozen
class IommuHwSerV1(AbiStruct):
    """One IOMMU unit (v1).  VT-d: ``token == intel.phys_addr`` = register base,
    ``type == IOMMU_INTEL``; ``hdr.ref_count`` counts the unit's preserved devices."""

    hdr: IommuHdrSer
    token: int
    type: int
    intel: IommuIntelSer


@abi_struct(
    "iommu_flb_ser",
    field("iommu_array_phys", U64),
    field("iommu_domain_array_phys", U64),
    field("device_array_phys", U64),
    packed=True,
)
@frozen
class IommuFlbSerV1(AbiStruct):
    """Top-level record (v1): the first page of each of the three record arrays."""

    iommu_array_phys: int
    iommu_domain_array_phys: int
    device_array_phys: int


# --- v2 only: generic structs ----------------------------------------------------------------


# [I] 40 bytes.
@abi_struct(
    "iommu_device_ser",
    nested("hdr", IommuHdrSer),
    field("devid", U32),
    field("pci_domain_nr", U32),
    nested("domain_iommu_ser", IommuDevMapSer),
    packed=True,
)
@frozen
class IommuDeviceSerV2(AbiStruct):
    """A preserved device (v2, no Intel part)."""

    hdr: IommuHdrSer
    devid: int
    pci_domain_nr: int
    domain_iommu_ser: IommuDevMapSer

    @property
    def bus_devfn(self) -> tuple[int, int]:
        return _split_devid(self.devid)


# [I] 24 bytes.
@abi_struct(
    "iommu_hw_ser",
    nested("hdr", IommuHdrSer),
    field("token", U64),
    field("type", U64),
    packed=True,
)
@frozen
class IommuHwSerV2(AbiStruct):
    """One IOMMU unit (v2, no Intel part)."""

    hdr: IommuHdrSer
    token: int
    type: int


@abi_struct(
    "iommu_flb_ser",
    field("version", U64),
    field("iommu_array_phys", U64),
    field("iommu_domain_array_phys", U64),
    field("device_array_phys", U64),
    packed=True,
)
@frozen
class IommuFlbSerV2(AbiStruct):
    """Top-level record (v2): ``version`` (== IOMMU_LUO_FLB_VERSION) and the three arrays."""

    version: int
    iommu_array_phys: int
    iommu_domain_array_phys: int
    device_array_phys: int


# --- the array structs (header + flexible array; described, decoded by abi.arrays) -----------


def _array_layout(name: str, element: type[AbiStruct]) -> StructLayout:
    return struct_layout(
        name, nested("hdr", IommuArrayHdrSer), flex("objects", element), packed=True
    )


IOMMU_HW_ARRAY_SER_V1 = _array_layout("iommu_hw_array_ser", IommuHwSerV1)
IOMMU_DOMAIN_ARRAY_SER = _array_layout("iommu_domain_array_ser", IommuDomainSer)
IOMMU_DEVICE_ARRAY_SER_V1 = _array_layout("iommu_device_array_ser", IommuDeviceSerV1)
IOMMU_HW_ARRAY_SER_V2 = _array_layout("iommu_hw_array_ser", IommuHwSerV2)
IOMMU_DEVICE_ARRAY_SER_V2 = _array_layout("iommu_device_array_ser", IommuDeviceSerV2)

IOMMU_ARRAY_HDR_SER_SIZE = IommuArrayHdrSer.sizeof()  # 16
