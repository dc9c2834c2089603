"""The model's own reading of ``include/linux/kho/abi/iommu.h``: struct format strings.

Independent of vtdlud's ABI mirror (``vtdlud.model.abi``), so that the record tests do not test
the auditor's reading against itself.  Each struct is a tuple of (member, format) in declaration
order, every struct ``__packed`` but ``iommu_intel_ser`` (naturally aligned, no implicit padding:
its explicit ``padding[7]`` does the aligning); a format is a :mod:`struct` code with a count, or
``@name`` for a nested struct.  ``u32 sign_extend : 1`` of the packed ``iommu_domain_ser``
takes one byte ("B", the flag in bit 0) and the pointer after it starts at the next byte.
tests/sim/test_layout.py compiles ``tests/abi/iommu_abi.c`` (the header re-typed, gcc decides
the layout) and compares every offset and size with these.

Header revisions followed (reference §1.1): v1 at samikhawaja/linux ef754267767f (Intel unions,
compatible ``"iommu-liveupdate-v1"``, a 3-word FLB), v2 at 07a493131c2b (``"iommu-liveupdate"``
with a version word first in the FLB).  The model writes Intel records with either FLB.

A record is a flat ``dict`` keyed by dotted member paths (``"intel.root_table"``); an array
member is a tuple.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

Record = dict[str, Any]

STRUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "iommu_hdr_ser": (("ref_count", "I"), ("flags", "I")),
    "iommu_domain_ser": (
        ("hdr", "@iommu_hdr_ser"),
        ("top_table_phys", "Q"),
        ("top_level", "Q"),
        ("vasz", "I"),
        ("sign_extend", "B"),  # u32 :1 in a packed struct: bit 0 of one byte
        ("restored_domain", "Q"),  # struct iommu_domain *: a kernel pointer
    ),
    "iommu_dev_map_ser": (("attachment_id", "Q"), ("domain_phys", "Q"), ("iommu_phys", "Q")),
    "iommu_device_intel_ser": (("pasid_table", "Q"), ("max_pasid", "Q")),
    "iommu_intel_ser": (
        ("restored", "B"),
        ("padding", "7s"),
        ("phys_addr", "Q"),
        ("root_table", "Q"),
        ("context_tables_bitmap", "8Q"),
    ),
    "iommu_hw_ser": (
        ("hdr", "@iommu_hdr_ser"),
        ("token", "Q"),
        ("type", "Q"),
        ("intel", "@iommu_intel_ser"),  # the anonymous union's only member
    ),
    "iommu_device_ser": (
        ("hdr", "@iommu_hdr_ser"),
        ("devid", "I"),
        ("pci_domain_nr", "I"),
        ("domain_iommu_ser", "@iommu_dev_map_ser"),
        ("intel", "@iommu_device_intel_ser"),
    ),
    "iommu_array_hdr_ser": (("next_array_phys", "Q"), ("nr_objects", "Q")),
    "iommu_flb_ser_v1": (
        ("iommu_array_phys", "Q"),
        ("iommu_domain_array_phys", "Q"),
        ("device_array_phys", "Q"),
    ),
    "iommu_flb_ser_v2": (
        ("version", "Q"),
        ("iommu_array_phys", "Q"),
        ("iommu_domain_array_phys", "Q"),
        ("device_array_phys", "Q"),
    ),
}

IOMMU_INTEL = 1  # enum iommu_type_ser, with the VT-d patches
FLAG_DELETED = 1 << 0  # IOMMU_SER_FLAG_DELETED
COMPATIBLE = {"v1": "iommu-liveupdate-v1", "v2": "iommu-liveupdate"}
FLB_VERSION = 1  # IOMMU_LUO_FLB_VERSION (v2)
PAGE = 4096


def _flatten(name: str, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for member, fmt in STRUCTS[name]:
        if fmt.startswith("@"):
            out += _flatten(fmt[1:], f"{prefix}{member}.")
        else:
            out.append((f"{prefix}{member}", fmt))
    return out


class Layout:
    """One struct: its flat members, their offsets, ``pack`` and ``unpack``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members = _flatten(name)
        self.struct = struct.Struct("<" + "".join(f for _, f in self.members))
        self.size = self.struct.size
        self.offsets: dict[str, tuple[int, int]] = {}
        pos = 0
        for member, fmt in self.members:
            size = struct.calcsize("<" + fmt)
            self.offsets[member] = (pos, size)
            pos += size

    def member(self, path: str) -> tuple[int, int]:
        """(offset, size) of a member or nested struct by dotted path."""
        if path in self.offsets:
            return self.offsets[path]
        inner = [(o, s) for m, (o, s) in self.offsets.items() if m.startswith(path + ".")]
        if not inner:
            raise KeyError(f"{self.name} has no member {path}")
        start = min(o for o, _ in inner)
        return start, max(o + s for o, s in inner) - start

    def unpack(self, data: bytes) -> Record:
        values = list(self.struct.unpack(data[: self.size]))
        out: Record = {}
        for member, fmt in self.members:
            count = int(fmt[:-1]) if fmt[:-1].isdigit() and fmt[-1] != "s" else 1
            if count > 1:
                out[member] = tuple(values[:count])
                del values[:count]
            else:
                out[member] = values.pop(0)
        return out

    def pack(self, record: Mapping[str, Any]) -> bytes:
        values: list[Any] = []
        for member, fmt in self.members:
            value = record.get(member, b"" if fmt.endswith("s") else 0)
            if isinstance(value, tuple):
                values.extend(value)
            elif fmt[:-1].isdigit() and fmt[-1] != "s":
                values.extend([0] * int(fmt[:-1]))
            else:
                values.append(value)
        return self.struct.pack(*values)

    def capacity(self) -> int:
        """Records in one array page: ``(PAGE_SIZE - sizeof(array header)) / sizeof``."""
        return (PAGE - ARRAY_HDR.size) // self.size


HDR = Layout("iommu_hdr_ser")
DOMAIN = Layout("iommu_domain_ser")
DEVICE = Layout("iommu_device_ser")
HW = Layout("iommu_hw_ser")
ARRAY_HDR = Layout("iommu_array_hdr_ser")
FLB = {"v1": Layout("iommu_flb_ser_v1"), "v2": Layout("iommu_flb_ser_v2")}
RESTORED_OFFSET = HW.member("intel.restored")[0]


def bitmap_bit(bus: int, devfn: int) -> int:
    """The bit of the context table holding (bus, devfn): two per bus, the upper table's odd
    (``CONTEXT_TABLE_PRESERVED_BIT`` of the series' intel/liveupdate.c)."""
    return bus * 2 + (1 if devfn >= 0x80 else 0)


def bitmap_words(bits: set[int] | frozenset[int]) -> tuple[int, ...]:
    """``u64 context_tables_bitmap[8]``, bit N in word N / 64 (``set_bit`` on x86-64)."""
    words = [0] * 8
    for bit in bits:
        words[bit // 64] |= 1 << (bit % 64)
    return tuple(words)


def bitmap_bits(words: tuple[int, ...]) -> set[int]:
    return {w * 64 + b for w, word in enumerate(words) for b in range(64) if word >> b & 1}
