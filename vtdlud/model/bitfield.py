"""Table-driven bit-field decoding shared by registers and translation-table entries.

Each table has one :class:`BitField` per field, named after the kernel's accessor macro (without
its ``cap_``/``ecap_``/``context_`` prefix), with the bit range and how the macro turns the raw
field into the value it returns (:class:`Scale`).
"""

from __future__ import annotations

from enum import Enum
from functools import cached_property

from vtdlud.frozen import frozen

FieldValue = bool | int


class Scale(Enum):
    """How a field's raw bits become the value the kernel macro computes."""

    BOOL = "bool"  # 1-bit flag
    RAW = "raw"  # the field as it stands
    PLUS_ONE = "plus_one"  # field + 1 (cap_mgaw, cap_num_fault_regs)
    TIMES_16 = "times_16"  # field * 16 bytes (cap_fault_reg_offset, ecap_iotlb_offset)
    NDOMS = "ndoms"  # 1 << (4 + 2 * field) (cap_ndoms)
    PAGE_ADDR = "page_addr"  # the field kept in place: value & mask (a 4 KiB-aligned pointer)


@frozen
class BitField:
    name: str
    msb: int
    lsb: int
    scale: Scale = Scale.RAW
    doc: str = ""

    # Computed once per field (decoding runs per table entry: thousands per snapshot).
    @cached_property
    def width(self) -> int:
        return self.msb - self.lsb + 1

    @cached_property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    def raw(self, value: int) -> int:
        return (value & self.mask) >> self.lsb

    def decode(self, value: int) -> FieldValue:
        raw = self.raw(value)
        match self.scale:
            case Scale.BOOL:
                return bool(raw)
            case Scale.RAW:
                return raw
            case Scale.PLUS_ONE:
                return raw + 1
            case Scale.TIMES_16:
                return raw * 16
            case Scale.NDOMS:
                return 1 << (4 + 2 * raw)
            case Scale.PAGE_ADDR:
                return value & self.mask
        raise AssertionError(self.scale)  # pragma: no cover

    def bits(self) -> str:
        return f"{self.msb}" if self.msb == self.lsb else f"{self.msb}:{self.lsb}"


def flag(name: str, bit: int, doc: str = "") -> BitField:
    return BitField(name, bit, bit, Scale.BOOL, doc)


def field_named(table: tuple[BitField, ...], name: str) -> BitField:
    """The field ``name`` of ``table`` (KeyError when the table has none)."""
    for f in table:
        if f.name == name:
            return f
    raise KeyError(name)


def decode_fields(table: tuple[BitField, ...], value: int) -> dict[str, FieldValue]:
    """Decode ``value`` with every field of ``table``, in table order."""
    return {f.name: f.decode(value) for f in table}
