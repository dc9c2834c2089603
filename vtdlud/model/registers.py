"""VT-d registers as ``drivers/iommu/intel/iommu.h`` decodes them.

Field names are the kernel's accessor macros without the ``cap_``/``ecap_`` prefix; the values
are what the macros compute (``ndoms`` is the number of domain IDs, ``mgaw`` is field + 1,
offsets are in bytes).  Bit ranges: VT-d spec §11.4 and the kernel macros
(reference/kernel-interfaces.md §6).
"""

from __future__ import annotations

from vtdlud.model.bitfield import BitField, FieldValue, Scale, decode_fields, flag

# Register offsets (DMAR_*_REG) used by vtdlud.
DMAR_VER_REG = 0x00
DMAR_CAP_REG = 0x08
DMAR_ECAP_REG = 0x10
DMAR_GCMD_REG = 0x18
DMAR_GSTS_REG = 0x1C
DMAR_RTADDR_REG = 0x20
DMAR_FSTS_REG = 0x34

VTD_PAGE_SHIFT = 12
VTD_PAGE_SIZE = 1 << VTD_PAGE_SHIFT
VTD_PAGE_MASK = ~(VTD_PAGE_SIZE - 1) & 0xFFFF_FFFF_FFFF_FFFF

CAP_FIELDS: tuple[BitField, ...] = (
    BitField("ndoms", 2, 0, Scale.NDOMS, "number of domain IDs: 1 << (4 + 2*ND)"),
    flag("afl", 3, "advanced fault logging"),
    flag("rwbf", 4, "required write-buffer flushing"),
    flag("plmr", 5, "protected low-memory region"),
    flag("phmr", 6, "protected high-memory region"),
    flag("caching_mode", 7, "caching mode (virtual IOMMU)"),
    BitField(
        "sagaw", 12, 8, Scale.RAW, "supported AGAW bitmap: bit1 39-bit, bit2 48-bit, bit3 57-bit"
    ),
    BitField("mgaw", 21, 16, Scale.PLUS_ONE, "maximum guest address width (bits)"),
    flag("zlr", 22, "zero-length read"),
    flag("isoch", 23, "isochrony"),
    BitField(
        "fault_reg_offset", 33, 24, Scale.TIMES_16, "fault recording registers offset (bytes)"
    ),
    BitField(
        "super_page_val", 37, 34, Scale.RAW, "second-level large pages: bit0 2 MiB, bit1 1 GiB"
    ),
    flag("pgsel_inv", 39, "page-selective invalidation"),
    BitField("num_fault_regs", 47, 40, Scale.PLUS_ONE, "number of fault recording registers"),
    BitField("max_amask_val", 53, 48, Scale.RAW, "maximum address mask value"),
    flag("write_drain", 54, "write draining"),
    flag("read_drain", 55, "read draining"),
    flag("fl1gp_support", 56, "first-level 1 GiB pages"),
    flag("pi_support", 59, "posted interrupts"),
    flag("fl5lp_support", 60, "first-level 5-level paging"),
    flag("ecmds", 61, "enhanced command support"),
    flag("esirtps", 62, "enhanced set interrupt remapping table pointer"),
    flag("esrtps", 63, "enhanced set root table pointer"),
)

ECAP_FIELDS: tuple[BitField, ...] = (
    flag("coherent", 0, "page-walk coherency"),
    flag("qis", 1, "queued invalidation"),
    flag("dev_iotlb_support", 2, "device-TLB (ATS)"),
    flag("ir_support", 3, "interrupt remapping"),
    flag("eim_support", 4, "extended interrupt mode (x2APIC)"),
    flag("pass_through", 6, "pass-through"),
    flag("sc_support", 7, "snoop control"),
    BitField("iotlb_offset", 17, 8, Scale.TIMES_16, "IOTLB registers offset (bytes)"),
    BitField("max_handle_mask", 23, 20, Scale.RAW, "maximum handle mask value"),
    flag("mts", 25, "memory type support"),
    flag("nest", 26, "nested translation"),
    flag("dis", 27, "deferred invalidate"),
    flag("prs", 29, "page request support"),
    flag("ers", 30, "execute request support"),
    flag("srs", 31, "supervisor request support"),
    flag("nwfs", 33, "no write flag support"),
    flag("eafs", 34, "extended accessed flag"),
    BitField("pss", 39, 35, Scale.RAW, "PASID size supported (PASID width = pss + 1)"),
    flag("pasid", 40, "PASID support"),
    flag("dit", 41, "device-TLB invalidation throttle"),
    flag("pds", 42, "page-request drain support"),
    flag("smts", 43, "scalable-mode translation support"),
    flag("vcs", 44, "virtual command support"),
    flag("slads", 45, "second-level accessed/dirty"),
    flag("slts", 46, "second-level translation support"),
    flag("flts", 47, "first-level translation support"),
    flag("smpwc", 48, "scalable-mode page-walk coherency"),
    flag("rps", 49, "RID_PASID support"),
    flag("pms", 51, "performance monitoring support"),
)

# GSTS_REG (0x1c) status bits: DMA_GSTS_* in the kernel.
GSTS_FIELDS: tuple[BitField, ...] = (
    flag("tes", 31, "translation enable status"),
    flag("rtps", 30, "root table pointer status"),
    flag("fls", 29, "fault log status"),
    flag("afls", 28, "advanced fault logging status"),
    flag("wbfs", 27, "write buffer flush status"),
    flag("qies", 26, "queued invalidation enable status"),
    flag("ires", 25, "interrupt remapping enable status"),
    flag("irtps", 24, "interrupt remapping table pointer status"),
    flag("cfis", 23, "compatibility format interrupt status"),
)

# RTADDR_REG (0x20): DMA_RTADDR_SMT is bit 10 (TTM = 01b); the root table is 4 KiB aligned.
DMA_RTADDR_SMT = 1 << 10
RTADDR_FIELDS: tuple[BitField, ...] = (
    BitField("rta", 63, 12, Scale.PAGE_ADDR, "root table address"),
    BitField("ttm", 11, 10, Scale.RAW, "translation table mode: 0 legacy, 1 scalable"),
    flag("smt", 10, "scalable-mode root table (DMA_RTADDR_SMT)"),
)

# FSTS_REG (0x34)
FSTS_FIELDS: tuple[BitField, ...] = (
    flag("pfo", 0, "primary fault overflow"),
    flag("ppf", 1, "primary pending fault"),
    flag("iqe", 4, "invalidation queue error"),
    flag("ice", 5, "invalidation completion error"),
    flag("ite", 6, "invalidation time-out error"),
    flag("pro", 7, "page request overflow"),
    BitField("fri", 15, 8, Scale.RAW, "fault record index"),
)

REGISTER_TABLES: dict[str, tuple[BitField, ...]] = {
    "cap": CAP_FIELDS,
    "ecap": ECAP_FIELDS,
    "gsts": GSTS_FIELDS,
    "rtaddr": RTADDR_FIELDS,
    "fsts": FSTS_FIELDS,
}


def decode_cap(value: int) -> dict[str, FieldValue]:
    return decode_fields(CAP_FIELDS, value)


def decode_ecap(value: int) -> dict[str, FieldValue]:
    return decode_fields(ECAP_FIELDS, value)


def rtaddr_root_table(rtaddr: int) -> int:
    """Root table physical address in RTADDR_REG (``rtaddr & VTD_PAGE_MASK``)."""
    return rtaddr & VTD_PAGE_MASK


def rtaddr_is_scalable(rtaddr: int) -> bool:
    """True when RTADDR_REG selects a scalable-mode root table (``DMA_RTADDR_SMT``)."""
    return bool(rtaddr & DMA_RTADDR_SMT)


def gsts_tes(gsts: int) -> bool:
    """DMA_GSTS_TES: translation enabled."""
    return bool(gsts & (1 << 31))
