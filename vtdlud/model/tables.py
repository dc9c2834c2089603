"""Root, context and PASID entries, and the live-update context-table bitmap.

Layouts from ``drivers/iommu/intel/iommu.h`` and ``pasid.h`` (reference/kernel-interfaces.md
§6.5-§6.7).  debugfs prints 128-bit entries high qword first (``0xHI:0xLO``) and PASID entries as
``val[2]:val[1]:val[0]``; the constructors here take the words in the kernel's own order.
"""

from __future__ import annotations

from enum import Enum

from vtdlud.frozen import frozen
from vtdlud.model.bitfield import BitField, FieldValue, Scale, decode_fields, field_named, flag

ROOT_ENTRY_NR = 256  # one root entry per bus
# Live update (drivers/iommu/intel/liveupdate.c): CONTEXT_TABLE_PRESERVED_BIT(bus, devfn)
# = (bus << 1) + (devfn >> 7): two tables per bus in scalable mode, the upper one at the odd bit.
CONTEXT_TABLES_BITMAP_BITS = ROOT_ENTRY_NR * 2
BITS_PER_U64 = 64
CONTEXT_TABLES_BITMAP_WORDS = (
    CONTEXT_TABLES_BITMAP_BITS // BITS_PER_U64
)  # u64 context_tables_bitmap[8]
SM_UPPER_DEVFN = 0x80  # scalable mode: devfn >= 0x80 lives in the upper context table
PASID_PDE_SHIFT = 6  # 64 PASID entries per PASID table page


def context_table_bit(bus: int, devfn: int) -> int:
    """``CONTEXT_TABLE_PRESERVED_BIT(bus, devfn)``."""
    if not 0 <= bus < ROOT_ENTRY_NR or not 0 <= devfn <= 0xFF:
        raise ValueError(f"bus {bus:#x} / devfn {devfn:#x} out of range")
    return (bus << 1) + (devfn >> 7)


def bit_bus_half(bit: int) -> tuple[int, bool]:
    """Inverse of :func:`context_table_bit`: (bus, upper half?)."""
    return bit >> 1, bool(bit & 1)


def table_half(upper: bool) -> str:
    """The half of a bus a scalable-mode context table serves (devfn 0x80-0xff: upper)."""
    return "upper" if upper else "lower"


def bdf_name(bus: int, devfn: int) -> str:
    """ "bb:dd.f", as dmar_translation_struct prints a device (the tables carry no segment)."""
    return f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"


class Mode(Enum):
    LEGACY = "legacy"
    SCALABLE = "scalable"
    UNKNOWN = "unknown"


# --- root entry (struct root_entry { u64 lo; u64 hi; }) ---
# Legacy mode: one context table per bus (lo), hi is reserved (VT-d spec 9.1).
LEGACY_ROOT_LO_FIELDS: tuple[BitField, ...] = (
    flag("present", 0, "context table present"),
    BitField("ctp", 63, 12, Scale.PAGE_ADDR, "context table pointer"),
)
LEGACY_ROOT_HI_FIELDS: tuple[BitField, ...] = (
    BitField("reserved", 63, 0, Scale.RAW, "reserved in legacy mode: must be 0"),
)
# Scalable mode: a lower (devfn 0x00-0x7f) and an upper (devfn 0x80-0xff) table (spec 9.2).
ROOT_LO_FIELDS: tuple[BitField, ...] = (
    flag("lctp_present", 0, "lower (legacy: the) context table present"),
    BitField("lctp", 63, 12, Scale.PAGE_ADDR, "lower context table pointer"),
)
ROOT_HI_FIELDS: tuple[BitField, ...] = (
    flag("uctp_present", 0, "upper context table present (scalable mode)"),
    BitField("uctp", 63, 12, Scale.PAGE_ADDR, "upper context table pointer (scalable mode)"),
)

# --- legacy context entry (128 bit) ---
CONTEXT_LO_FIELDS: tuple[BitField, ...] = (
    flag("present", 0),
    flag("fpd", 1, "fault processing disable"),
    BitField("tt", 3, 2, Scale.RAW, "translation type: 0 multi-level, 1 dev-IOTLB, 2 pass-through"),
    BitField("slptptr", 63, 12, Scale.PAGE_ADDR, "second-level page-table pointer"),
)
CONTEXT_HI_FIELDS: tuple[BitField, ...] = (
    BitField("aw", 2, 0, Scale.RAW, "address width (agaw; levels = aw + 2)"),
    BitField("did", 23, 8, Scale.RAW, "domain ID"),
)

# --- scalable-mode context entry (256 bit; debugfs prints the low 128 bits) ---
SM_CONTEXT_LO_FIELDS: tuple[BitField, ...] = (
    flag("present", 0),
    flag("fpd", 1, "fault processing disable"),
    flag("dte", 2, "device-TLB enable"),
    flag("paside", 3, "PASID enable"),
    flag("pre", 4, "page request enable"),
    BitField("pdts", 11, 9, Scale.RAW, "PASID directory size: 1 << (pdts + 7) entries"),
    BitField("pasiddirptr", 63, 12, Scale.PAGE_ADDR, "PASID directory pointer"),
)
SM_CONTEXT_HI_FIELDS: tuple[BitField, ...] = (
    BitField("rid_pasid", 19, 0, Scale.RAW, "PASID used for requests without PASID"),
)

# --- scalable-mode PASID entry (512 bit; debugfs prints val[2]:val[1]:val[0]) ---
PASID_VAL0_FIELDS: tuple[BitField, ...] = (
    flag("present", 0),
    flag("fpd", 1, "fault processing disable"),
    BitField("aw", 4, 2, Scale.RAW, "address width (agaw)"),
    BitField("pgtt", 8, 6, Scale.RAW, "1 first-level, 2 second-level, 3 nested, 4 pass-through"),
    BitField("slptptr", 63, 12, Scale.PAGE_ADDR, "second-level page-table pointer"),
)
# DID position in val[1] bits 15:0 is inferred from the VT-d spec (reference §6.7 marks it [I]).
PASID_VAL1_FIELDS: tuple[BitField, ...] = (BitField("did", 15, 0, Scale.RAW, "domain ID"),)
PASID_VAL2_FIELDS: tuple[BitField, ...] = (
    BitField("flptptr", 63, 12, Scale.PAGE_ADDR, "first-level page-table pointer"),
)

# Accessors used by the entry classes, taken from the tables above (one definition per field).
_LCTP_PRESENT = field_named(ROOT_LO_FIELDS, "lctp_present")
_UCTP_PRESENT = field_named(ROOT_HI_FIELDS, "uctp_present")
_CTX_PRESENT = field_named(CONTEXT_LO_FIELDS, "present")
_CTX_TT = field_named(CONTEXT_LO_FIELDS, "tt")
_CTX_DID = field_named(CONTEXT_HI_FIELDS, "did")
_SM_PRESENT = field_named(SM_CONTEXT_LO_FIELDS, "present")
_SM_PASIDDIRPTR = field_named(SM_CONTEXT_LO_FIELDS, "pasiddirptr")
_SM_PDTS = field_named(SM_CONTEXT_LO_FIELDS, "pdts")
_PASID_PRESENT = field_named(PASID_VAL0_FIELDS, "present")
_PASID_PGTT = field_named(PASID_VAL0_FIELDS, "pgtt")
_PASID_DID = field_named(PASID_VAL1_FIELDS, "did")

PGTT_NAMES = {1: "first-level", 2: "second-level", 3: "nested", 4: "pass-through"}
TT_NAMES = {0: "multi-level", 1: "dev-iotlb", 2: "pass-through"}


@frozen
class RootEntry:
    lo: int
    hi: int

    @property
    def lctp_present(self) -> bool:
        return bool(_LCTP_PRESENT.raw(self.lo))

    @property
    def uctp_present(self) -> bool:
        return bool(_UCTP_PRESENT.raw(self.hi))

    def fields(self) -> dict[str, FieldValue]:
        return decode_fields(ROOT_LO_FIELDS, self.lo) | decode_fields(ROOT_HI_FIELDS, self.hi)


@frozen
class ContextEntry:
    """Legacy-mode context entry."""

    lo: int
    hi: int

    @property
    def present(self) -> bool:
        return bool(_CTX_PRESENT.raw(self.lo))

    @property
    def did(self) -> int:
        return _CTX_DID.raw(self.hi)

    @property
    def tt(self) -> int:
        return _CTX_TT.raw(self.lo)

    def fields(self) -> dict[str, FieldValue]:
        return decode_fields(CONTEXT_LO_FIELDS, self.lo) | decode_fields(CONTEXT_HI_FIELDS, self.hi)


@frozen
class SmContextEntry:
    """Scalable-mode context entry (low 128 bits)."""

    lo: int
    hi: int

    @property
    def present(self) -> bool:
        return bool(_SM_PRESENT.raw(self.lo))

    @property
    def pasid_dir_ptr(self) -> int:
        return int(_SM_PASIDDIRPTR.decode(self.lo))

    @property
    def pasid_dir_entries(self) -> int:
        """``get_pasid_dir_size()``: 1 << (PDTS + 7)."""
        return 1 << (_SM_PDTS.raw(self.lo) + 7)

    def fields(self) -> dict[str, FieldValue]:
        return decode_fields(SM_CONTEXT_LO_FIELDS, self.lo) | decode_fields(
            SM_CONTEXT_HI_FIELDS, self.hi
        )


@frozen
class PasidEntry:
    """Scalable-mode PASID table entry (the three low qwords)."""

    val0: int
    val1: int
    val2: int

    @property
    def present(self) -> bool:
        return bool(_PASID_PRESENT.raw(self.val0))

    @property
    def pgtt(self) -> int:
        return _PASID_PGTT.raw(self.val0)

    @property
    def did(self) -> int:
        return _PASID_DID.raw(self.val1)

    def fields(self) -> dict[str, FieldValue]:
        return (
            decode_fields(PASID_VAL0_FIELDS, self.val0)
            | decode_fields(PASID_VAL1_FIELDS, self.val1)
            | decode_fields(PASID_VAL2_FIELDS, self.val2)
        )


def bits_to_words(bits: set[int] | frozenset[int]) -> tuple[int, ...]:
    """Bit indices -> ``context_tables_bitmap`` u64 words (bit N in word N // 64)."""
    words = [0] * CONTEXT_TABLES_BITMAP_WORDS
    for bit in bits:
        if not 0 <= bit < CONTEXT_TABLES_BITMAP_BITS:
            raise ValueError(f"bit {bit} outside the {CONTEXT_TABLES_BITMAP_BITS}-bit bitmap")
        words[bit // BITS_PER_U64] |= 1 << (bit % BITS_PER_U64)
    return tuple(words)


def words_to_bits(words: tuple[int, ...] | list[int]) -> list[int]:
    """``context_tables_bitmap`` u64 words -> sorted bit indices."""
    return [
        i * BITS_PER_U64 + b for i, w in enumerate(words) for b in range(BITS_PER_U64) if w >> b & 1
    ]
