"""One page of a record array: ``iommu_array_hdr_ser`` followed by ``nr_objects`` records.

The kernel fills each array page up to ``(PAGE_SIZE - 16) / sizeof(record)`` records, then links a
new page through ``next_array_phys`` (reference §1.4).  These helpers decode and encode one page;
following the chain (and bounding it) is the kcore walker's job.  DELETED records are returned
like the others: :meth:`ArrayPage.live` skips them, as the kernel's iterators do.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.model.abi.iommu import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IommuArrayHdrSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuDomainSer,
    IommuHwSerV1,
    IommuHwSerV2,
)
from vtdlud.model.abi.variants import capacity_of

Record = IommuHwSerV1 | IommuHwSerV2 | IommuDomainSer | IommuDeviceSerV1 | IommuDeviceSerV2
R = TypeVar("R", IommuHwSerV1, IommuHwSerV2, IommuDomainSer, IommuDeviceSerV1, IommuDeviceSerV2)

NR_OBJECTS_OFFSET = IommuArrayHdrSer.LAYOUT.field("nr_objects").offset


@frozen
class ArrayPage(Generic[R]):
    """``struct iommu_*_array_ser``: the header and its ``nr_objects`` records."""

    hdr: IommuArrayHdrSer
    objects: tuple[R, ...]

    def live(self) -> tuple[R, ...]:
        """The records without ``IOMMU_SER_FLAG_DELETED``."""
        return tuple(o for o in self.objects if not o.hdr.deleted)

    def pack(self) -> bytes:
        """Header plus records: ``16 + nr_objects * sizeof(record)`` bytes (pad to a page with
        ``.ljust(PAGE_SIZE, b"\\0")``).  ValueError if ``nr_objects`` disagrees with the records,
        they are not all of one class, or there are more than a page holds."""
        if self.hdr.nr_objects != len(self.objects):
            raise ValueError(
                f"array header says {self.hdr.nr_objects} objects, {len(self.objects)} given"
            )
        if not self.objects:
            return self.hdr.pack()
        cls = type(self.objects[0])
        if any(type(o) is not cls for o in self.objects):
            raise ValueError("an array page holds records of one class")
        capacity = capacity_of(cls)
        if len(self.objects) > capacity:
            raise ValueError(
                f"{len(self.objects)} {cls.LAYOUT.name} records exceed the page capacity {capacity}"
            )
        return self.hdr.pack() + b"".join(o.pack() for o in self.objects)


def unpack_array_page(data: bytes, element: type[R], offset: int = 0) -> ArrayPage[R]:
    """Decode the array page at ``data[offset:]`` holding ``element`` records.

    ``data`` needs the header and ``nr_objects`` records (a whole page is fine).  ParseError if
    it is short or ``nr_objects`` exceeds the page capacity (the kernel never writes that: a
    corrupt or misidentified page, VTD041).
    """
    hdr = IommuArrayHdrSer.unpack(data, offset)
    capacity = capacity_of(element)
    if hdr.nr_objects > capacity:
        raise ParseError(
            f"{element.LAYOUT.name} array: nr_objects {hdr.nr_objects} exceeds the capacity "
            f"{capacity} of a page",
            offset=offset + NR_OBJECTS_OFFSET,
        )
    size = element.sizeof()
    first = offset + IOMMU_ARRAY_HDR_SER_SIZE
    objects = tuple(element.unpack(data, first + i * size) for i in range(hdr.nr_objects))
    return ArrayPage(hdr, objects)
