"""Fake physical memory and builders for the record-chain, preserved-map and signature tests.

Everything here is built from the layouts the modules document (the ABI mirror's ``pack()`` for
the records; kexec_handover.h / kexec_handover.c for the KHO map): no real capture of these
structures exists, so the tests check the walkers against those layouts only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import pairwise

from vtdlud.errors import ParseError
from vtdlud.model.abi import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_LUO_FLB_VERSION,
    IOMMU_SER_FLAG_DELETED,
    PAGE_SIZE,
    IommuArrayHdrSer,
    IommuDeviceIntelSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuDevMapSer,
    IommuDomainSer,
    IommuFlbSerV1,
    IommuFlbSerV2,
    IommuHdrSer,
    IommuHwSerV1,
    IommuHwSerV2,
    IommuIntelSer,
    IommuTypeSer,
    capacity_of,
)
from vtdlud.model.abi.layout import AbiStruct

UNIT_A = 0xFED9_0000
UNIT_B = 0xFED9_1000
RAM_START = 0x10_0000


class PageMemory:
    """Physical memory as a dict of 4 KiB pages.  Reading a page that is not in the dict raises
    ParseError, as the kcore reader does outside RAM; ``reads`` counts calls and bytes."""

    def __init__(self, start: int = RAM_START) -> None:
        self.pages: dict[int, bytearray] = {}
        self.next = start
        self.calls = 0
        self.bytes = 0

    def alloc(self) -> int:
        addr = self.next
        self.next += PAGE_SIZE
        self.pages[addr] = bytearray(PAGE_SIZE)
        return addr

    def write(self, addr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page = (addr + pos) & ~(PAGE_SIZE - 1)
            off = addr + pos - page
            take = min(PAGE_SIZE - off, len(data) - pos)
            self.pages.setdefault(page, bytearray(PAGE_SIZE))[off : off + take] = data[
                pos : pos + take
            ]
            pos += take

    def u64(self, addr: int) -> int:
        value: int = struct.unpack("<Q", self(addr, 8))[0]
        return value

    def set_u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value))

    def __call__(self, addr: int, size: int) -> bytes:
        self.calls += 1
        self.bytes += size
        out = bytearray()
        pos = addr
        while pos < addr + size:
            page = pos & ~(PAGE_SIZE - 1)
            data = self.pages.get(page)
            if data is None:
                raise ParseError(f"{pos:#x} is not in RAM")
            take = min(page + PAGE_SIZE, addr + size) - pos
            out += data[pos - page : pos - page + take]
            pos += take
        return bytes(out)


# --- records ---------------------------------------------------------------------------------


def hdr(ref_count: int = 1, *, deleted: bool = False) -> IommuHdrSer:
    return IommuHdrSer(ref_count, IOMMU_SER_FLAG_DELETED if deleted else 0)


def hw_v1(
    token: int, *, root: int = 0x5000_0000, bits: Iterable[int] = (), deleted: bool = False
) -> IommuHwSerV1:
    intel = IommuIntelSer(0, bytes(7), token, root, IommuIntelSer.bitmap_words(set(bits)))
    return IommuHwSerV1(hdr(deleted=deleted), token, IommuTypeSer.IOMMU_INTEL, intel)


def hw_v2(token: int, hw_type: int = IommuTypeSer.IOMMU_INVALID) -> IommuHwSerV2:
    return IommuHwSerV2(hdr(), token, hw_type)


def domain(top: int = 0x6000_0000, *, deleted: bool = False) -> IommuDomainSer:
    return IommuDomainSer(hdr(deleted=deleted), top, 3, 48, 0, 0)


def device_v1(
    devid: int, did: int, domain_phys: int, iommu_phys: int, *, deleted: bool = False
) -> IommuDeviceSerV1:
    dev_map = IommuDevMapSer(did, domain_phys, iommu_phys)
    return IommuDeviceSerV1(hdr(deleted=deleted), devid, 0, dev_map, IommuDeviceIntelSer(0, 0))


def device_v2(devid: int, did: int, domain_phys: int, iommu_phys: int) -> IommuDeviceSerV2:
    return IommuDeviceSerV2(hdr(), devid, 0, IommuDevMapSer(did, domain_phys, iommu_phys))


def slot(page: int, index: int, element: type[AbiStruct]) -> int:
    return page + IOMMU_ARRAY_HDR_SER_SIZE + index * element.sizeof()


def write_chain(mem: PageMemory, records: Sequence[AbiStruct]) -> list[int]:
    """Records in array pages as the kernel fills them (a page is full before the next is
    linked); an empty chain is one empty page.  Returns the pages, first first."""
    element = type(records[0]) if records else IommuHwSerV1
    capacity = capacity_of(element)
    pages = [mem.alloc()]
    for start in range(0, max(len(records), 1), capacity):
        chunk = records[start : start + capacity]
        if start:
            pages.append(mem.alloc())
        mem.write(pages[-1], IommuArrayHdrSer(0, len(chunk)).pack())
        mem.write(pages[-1] + IOMMU_ARRAY_HDR_SER_SIZE, b"".join(r.pack() for r in chunk))
    for prev, nxt in pairwise(pages):
        mem.set_u64(prev, nxt)
    return pages


def write_flb(mem: PageMemory, hw: int, dom: int, dev: int, *, v2: bool = False) -> int:
    flb = mem.alloc()
    packed = (
        IommuFlbSerV2(IOMMU_LUO_FLB_VERSION, hw, dom, dev).pack()
        if v2
        else IommuFlbSerV1(hw, dom, dev).pack()
    )
    mem.write(flb, packed)
    return flb


class Layout:
    """A consistent v1-layout record set: units, domains and devices across page chains."""

    def __init__(
        self,
        mem: PageMemory,
        *,
        units: Sequence[int] = (UNIT_A, UNIT_B),
        devices: int = 3,
        v2_flb: bool = False,
        deleted_device: int | None = None,
        extra_hw: int = 0,
    ) -> None:
        self.mem = mem
        hw_records = [hw_v1(u, bits={0, 2}) for u in units]
        hw_records += [hw_v1(UNIT_A, deleted=True) for _ in range(extra_hw)]
        self.hw_pages = write_chain(mem, hw_records)
        n_domains = max(devices, 1)
        self.dom_pages = write_chain(
            mem, [domain(0x6000_0000 + i * PAGE_SIZE) for i in range(n_domains)]
        )
        self.hw_slots = [
            self.slot_of(self.hw_pages, i, IommuHwSerV1) for i in range(len(hw_records))
        ]
        self.dom_slots = [self.slot_of(self.dom_pages, i, IommuDomainSer) for i in range(n_domains)]
        dev_records = [
            device_v1(
                0x0300 + i,
                10 + i,
                self.dom_slots[i],
                self.hw_slots[i % len(units)],
                deleted=i == deleted_device,
            )
            for i in range(devices)
        ]
        self.dev_pages = write_chain(mem, dev_records)
        self.flb = write_flb(mem, self.hw_pages[0], self.dom_pages[0], self.dev_pages[0], v2=v2_flb)

    @staticmethod
    def slot_of(pages: Sequence[int], index: int, element: type[AbiStruct]) -> int:
        capacity = capacity_of(element)
        return slot(pages[index // capacity], index % capacity, element)

    @property
    def record_pages(self) -> list[int]:
        return [self.flb, *self.hw_pages, *self.dom_pages, *self.dev_pages]


# --- the KHO preserved-memory map ---------------------------------------------------------------

ORDER0_BIT = 52
TABLE_BITS = 9
BITMAP_BITS = 15
TREE_LEVELS = 6


def radix_key(phys: int, order: int) -> int:
    return 1 << (ORDER0_BIT - order) | phys >> (12 + order)


def write_radix(mem: PageMemory, ranges: Iterable[tuple[int, int]]) -> int:
    """A kho-v2 radix tree holding (phys, order) ranges; returns the root's address."""
    root = mem.alloc()
    for phys, order in ranges:
        key = radix_key(phys, order)
        node = root
        for level in range(TREE_LEVELS - 1, 0, -1):
            index = (key >> (BITMAP_BITS + TABLE_BITS * (level - 1))) & ((1 << TABLE_BITS) - 1)
            child = mem.u64(node + index * 8)
            if not child:
                child = mem.alloc()
                mem.set_u64(node + index * 8, child)
            node = child
        bit = key & ((1 << BITMAP_BITS) - 1)
        byte = node + bit // 8
        mem.write(byte, bytes([mem(byte, 1)[0] | 1 << (bit % 8)]))
    return root


def write_chunks(mem: PageMemory, ranges: Iterable[tuple[int, int]]) -> int:
    """A kho-v1 ``khoser_mem_chunk`` list for (phys, order) ranges; returns the first chunk."""
    bitmaps: dict[tuple[int, int], int] = {}
    for phys, order in ranges:
        pfn_high = phys >> (12 + order)
        key = (order, pfn_high // 32768)
        if key not in bitmaps:
            bitmaps[key] = mem.alloc()
        bit = pfn_high % 32768
        byte = bitmaps[key] + bit // 8
        mem.write(byte, bytes([mem(byte, 1)[0] | 1 << (bit % 8)]))
    chunks: list[int] = []
    for order in sorted({o for o, _ in bitmaps}):
        elems = sorted((idx, addr) for (o, idx), addr in bitmaps.items() if o == order)
        for start in range(0, len(elems), 255):
            part = elems[start : start + 255]
            chunk = mem.alloc()
            mem.write(chunk + 8, struct.pack("<II", order, len(part)))
            for i, (idx, addr) in enumerate(part):
                phys_start = (idx * 32768) << (order + 12)
                mem.write(chunk + 16 + i * 16, struct.pack("<QQ", phys_start, addr))
            if chunks:
                mem.set_u64(chunks[-1], chunk)
            chunks.append(chunk)
    return chunks[0] if chunks else 0
