"""The IOMMU live-update records in simulated memory: FLB, hw, domain and device arrays.

Rules from ``drivers/iommu/liveupdate.c`` and ``drivers/iommu/intel/liveupdate.c``
(reference/kernel-interfaces.md §1.4-§1.5):

- the FLB (``iommu_flb_ser``) and one page for each of the three arrays are allocated and
  preserved up front; records are appended to the last page of a chain, a new page is linked
  through ``next_array_phys`` when it is full, and a DELETED slot is never reused;
- preserving a device creates or references its unit's ``iommu_hw_ser`` (token == phys_addr ==
  register base, type IOMMU_INTEL, the root table, preserved) and then adds **every** context
  table that exists on the unit at that moment to the bitmap, preserving its page; the device
  record names the DID (``attachment_id``), the domain record and the hw record by physical
  address, and in scalable mode the PASID directory and ``max_pasid`` (directory and PASID tables
  preserved); a domain record preserves every page of the domain's page table (all levels);
- unpreserving a device marks its record DELETED; the unit's ``ref_count`` drops and at 0 the
  context tables and the root table are unpreserved, the bitmap cleared and the hw record marked
  DELETED.  A domain record is marked DELETED when no live device record uses it.

The kernel keeps private pointers to its outgoing records; so does :class:`Outgoing` (the page
lists and counts of each chain, the slot of each unit's, domain's and device's record), while the
records themselves live only in memory and are updated read-modify-write, as the kernel does.
Corruptions written into memory by a fault therefore stay visible to the model's later steps.

The records always use the layout with the Intel unions (``IommuHwSerV1``/``IommuDeviceSerV1``);
the FLB is that of the chosen variant: v1 (3 words, ``"iommu-liveupdate-v1"``) or v2 (a version
word first, ``"iommu-liveupdate"``).  A v2 FLB with Intel records is the pairing vtdlud decodes as
``V2_ASSUMED_INTEL`` (no posted header has it; see :mod:`vtdlud.model.abi.variants`).
``top_level`` of a domain record is the generic page table's 0-based level of the top table
(levels - 1) [I].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Generic, TypeVar

from vtdlud.frozen import frozen
from vtdlud.model.abi import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_LUO_FLB_VERSION,
    IOMMU_SER_FLAG_DELETED,
    V1,
    V2,
    AbiVariant,
    IommuArrayHdrSer,
    IommuDeviceIntelSer,
    IommuDeviceSerV1,
    IommuDevMapSer,
    IommuDomainSer,
    IommuFlbSerV1,
    IommuFlbSerV2,
    IommuHdrSer,
    IommuHwSerV1,
    IommuIntelSer,
    IommuTypeSer,
    capacity_of,
)
from vtdlud.model.tables import ROOT_ENTRY_NR, SM_UPPER_DEVFN, bits_to_words, context_table_bit
from vtdlud.sim.iommu import ONE_PAGE_MAX_PASID, DmarUnit, Domain
from vtdlud.sim.memory import OutsideRam, PhysMemory
from vtdlud.sim.pagetable import table_pages
from vtdlud.sim.pci import SimDevice

R = TypeVar("R", IommuHwSerV1, IommuDomainSer, IommuDeviceSerV1)
MAX_CHAIN_PAGES = 1024  # bounds the incoming walk (a corrupt chain must not hang the model)
FLB_VARIANTS: dict[str, AbiVariant] = {"v1": V1, "v2": V2}
# Offset of iommu_hw_ser.intel.restored (a u8 the new kernel sets once it reclaimed the tables).
RESTORED_OFFSET = (
    IommuHwSerV1.LAYOUT.field("intel").offset + IommuIntelSer.LAYOUT.field("restored").offset
)


def _deleted(hdr: IommuHdrSer) -> IommuHdrSer:
    return IommuHdrSer(hdr.ref_count, hdr.flags | IOMMU_SER_FLAG_DELETED)


class Chain(Generic[R]):
    """One record array chain, as the kernel's private bookkeeping sees it."""

    def __init__(self, mem: PhysMemory, element: type[R]) -> None:
        self.mem = mem
        self.element: type[R] = element
        self.capacity = capacity_of(element)
        self.size = element.sizeof()
        self.pages: list[int] = []
        self.counts: list[int] = []
        self._new_page()

    def _new_page(self) -> None:
        page = self.mem.alloc()
        self.mem.preserve(page)
        self.mem.write(page, IommuArrayHdrSer(0, 0).pack())
        if self.pages:
            self.mem.set_u64(self.pages[-1], page)  # next_array_phys of the current last page
        self.pages.append(page)
        self.counts.append(0)

    @property
    def first(self) -> int:
        return self.pages[0]

    def append(self, record: R) -> int:
        if self.counts[-1] >= self.capacity:
            self._new_page()
        slot = self.pages[-1] + IOMMU_ARRAY_HDR_SER_SIZE + self.counts[-1] * self.size
        self.mem.write(slot, record.pack())
        self.counts[-1] += 1
        self.mem.set_u64(self.pages[-1] + 8, self.counts[-1])  # nr_objects
        return slot

    def read(self, slot: int) -> R:
        return self.element.unpack(self.mem.read(slot, self.size))

    def write(self, slot: int, record: R) -> None:
        self.mem.write(slot, record.pack())

    def slots(self) -> Iterator[int]:
        for page, count in zip(self.pages, self.counts, strict=True):
            for i in range(count):
                yield page + IOMMU_ARRAY_HDR_SER_SIZE + i * self.size

    def free(self) -> None:
        for page in self.pages:
            self.mem.free(page)


class Outgoing:
    """The outgoing IOMMU FLB of one kernel: created at the first preservation."""

    def __init__(self, mem: PhysMemory, variant: AbiVariant) -> None:
        if variant not in (V1, V2):
            raise ValueError(f"FLB variant {variant.name} is not a posted one")
        self.mem = mem
        self.variant = variant
        self.flb_phys = mem.alloc()
        mem.preserve(self.flb_phys)
        self.hw: Chain[IommuHwSerV1] = Chain(mem, IommuHwSerV1)
        self.domains: Chain[IommuDomainSer] = Chain(mem, IommuDomainSer)
        self.devices: Chain[IommuDeviceSerV1] = Chain(mem, IommuDeviceSerV1)
        self.hw_slot: dict[int, int] = {}  # unit register base -> slot
        self.domain_slot: dict[Domain, int] = {}
        self.device_slot: dict[str, int] = {}  # BDF -> slot
        self.write_flb()

    @property
    def compatible(self) -> str:
        return self.variant.compatible

    def write_flb(self) -> None:
        arrays = (self.hw.first, self.domains.first, self.devices.first)
        flb: IommuFlbSerV1 | IommuFlbSerV2 = (
            IommuFlbSerV1(*arrays)
            if self.variant is V1
            else IommuFlbSerV2(IOMMU_LUO_FLB_VERSION, *arrays)
        )
        self.mem.write(self.flb_phys, flb.pack())

    # -- hw records ------------------------------------------------------------------------
    def _preserve_hw(self, unit: DmarUnit) -> int:
        slot = self.hw_slot.get(unit.reg_base)
        if slot is not None:
            rec = self.hw.read(slot)
            hdr = IommuHdrSer(rec.hdr.ref_count + 1, rec.hdr.flags)
            self.hw.write(slot, dataclasses.replace(rec, hdr=hdr))
            return slot
        self.mem.preserve(unit.root_table)
        intel = IommuIntelSer(
            restored=0,
            padding=bytes(7),
            phys_addr=unit.reg_base,
            root_table=unit.root_table,
            context_tables_bitmap=bits_to_words(set()),
        )
        rec = IommuHwSerV1(IommuHdrSer(1, 0), unit.reg_base, IommuTypeSer.IOMMU_INTEL, intel)
        slot = self.hw.append(rec)
        self.hw_slot[unit.reg_base] = slot
        return slot

    def _preserve_context_tables(self, unit: DmarUnit, slot: int) -> None:
        rec = self.hw.read(slot)
        bits = set(rec.intel.context_table_bits)
        halves = (0, SM_UPPER_DEVFN) if unit.scalable else (0,)
        for bus in range(ROOT_ENTRY_NR):
            for devfn in halves:
                entry = unit.context_addr(bus, devfn)
                bit = context_table_bit(bus, devfn)
                if entry is not None and bit not in bits:
                    self.mem.preserve(entry)
                    bits.add(bit)
        intel = dataclasses.replace(rec.intel, context_tables_bitmap=bits_to_words(bits))
        self.hw.write(slot, dataclasses.replace(rec, intel=intel))

    def _unpreserve_hw(self, unit: DmarUnit, slot: int) -> None:
        rec = self.hw.read(slot)
        count = max(rec.hdr.ref_count - 1, 0)
        if count:
            self.hw.write(slot, dataclasses.replace(rec, hdr=IommuHdrSer(count, rec.hdr.flags)))
            return
        tables = unit.context_tables()
        for bit in rec.intel.context_table_bits:
            if bit in tables:
                self.mem.unpreserve(tables[bit])
        self.mem.unpreserve(unit.root_table)
        intel = dataclasses.replace(rec.intel, context_tables_bitmap=bits_to_words(set()))
        hdr = _deleted(IommuHdrSer(0, rec.hdr.flags))
        self.hw.write(slot, dataclasses.replace(rec, hdr=hdr, intel=intel))
        del self.hw_slot[unit.reg_base]

    # -- domains ---------------------------------------------------------------------------
    def _preserve_domain(self, domain: Domain) -> int:
        slot = self.domain_slot.get(domain)
        if slot is not None:
            return slot
        for page in table_pages(self.mem, domain.pgd, domain.levels):
            self.mem.preserve(page)  # every level: iommupt's preserve callback
        rec = IommuDomainSer(
            hdr=IommuHdrSer(1, 0),
            top_table_phys=domain.pgd,
            top_level=domain.levels - 1,
            vasz=domain.vasz,
            sign_extend=0,
            restored_domain=0,
        )
        slot = self.domains.append(rec)
        self.domain_slot[domain] = slot
        return slot

    def _release_domain(self, domain: Domain) -> None:
        slot = self.domain_slot[domain]
        if any(
            self.devices.read(s).domain_iommu_ser.domain_phys == slot for s in self._live_devs()
        ):
            return
        rec = self.domains.read(slot)
        self.domains.write(slot, dataclasses.replace(rec, hdr=_deleted(rec.hdr)))
        for page in table_pages(self.mem, domain.pgd, domain.levels):
            self.mem.unpreserve(page)
        del self.domain_slot[domain]

    def _live_devs(self) -> list[int]:
        return list(self.device_slot.values())

    # -- devices ---------------------------------------------------------------------------
    def preserve_device(self, unit: DmarUnit, dev: SimDevice, domain: Domain) -> int:
        """``iommu_preserve_device`` + ``intel_iommu_preserve_device``."""
        if dev.bdf in self.device_slot:
            raise ValueError(f"{dev.bdf} is already preserved")
        hw_slot = self._preserve_hw(unit)
        self._preserve_context_tables(unit, hw_slot)
        domain_slot = self._preserve_domain(domain)
        pasid_table = max_pasid = 0
        if unit.scalable:
            pages = unit.pasid_pages(dev.bus, dev.devfn)
            for page in pages:
                self.mem.preserve(page)
            pasid_table, max_pasid = pages[0], ONE_PAGE_MAX_PASID
        rec = IommuDeviceSerV1(
            hdr=IommuHdrSer(1, 0),
            devid=dev.bus << 8 | dev.devfn,
            pci_domain_nr=dev.segment,
            domain_iommu_ser=IommuDevMapSer(domain.dids[unit.reg_base], domain_slot, hw_slot),
            intel=IommuDeviceIntelSer(pasid_table, max_pasid),
        )
        slot = self.devices.append(rec)
        self.device_slot[dev.bdf] = slot
        return slot

    def unpreserve_device(self, unit: DmarUnit, dev: SimDevice, domain: Domain) -> None:
        slot = self.device_slot.pop(dev.bdf)
        rec = self.devices.read(slot)
        self.devices.write(slot, dataclasses.replace(rec, hdr=_deleted(rec.hdr)))
        if unit.scalable:
            for page in unit.pasid_pages(dev.bus, dev.devfn):
                self.mem.unpreserve(page)
        self._unpreserve_hw(unit, self.hw_slot[unit.reg_base])
        self._release_domain(domain)

    def live(self) -> bool:
        return bool(self.device_slot)

    def free(self) -> None:
        """FLB ``.unpreserve``: the last preserved file is gone; the arrays go with it."""
        for chain in (self.hw, self.domains, self.devices):
            chain.free()
        self.mem.free(self.flb_phys)


@frozen
class IncomingRecords:
    """Records the new kernel finds by walking the incoming FLB's chains (live ones only)."""

    hw: tuple[tuple[int, IommuHwSerV1], ...]
    devices: tuple[tuple[int, IommuDeviceSerV1], ...]
    domains: tuple[tuple[int, IommuDomainSer], ...]
    complete: bool  # False: a chain was corrupt (loop, bad count, pointer outside RAM)


def _walk(mem: PhysMemory, first: int, element: type[R]) -> tuple[list[tuple[int, R]], bool]:
    out: list[tuple[int, R]] = []
    seen: set[int] = set()
    page = first
    size, capacity = element.sizeof(), capacity_of(element)
    while page:
        if page in seen or len(seen) >= MAX_CHAIN_PAGES:
            return out, False
        seen.add(page)
        try:
            hdr = IommuArrayHdrSer.unpack(mem.read(page, IOMMU_ARRAY_HDR_SER_SIZE))
            if hdr.nr_objects > capacity:
                return out, False
            for i in range(hdr.nr_objects):
                slot = page + IOMMU_ARRAY_HDR_SER_SIZE + i * size
                rec = element.unpack(mem.read(slot, size))
                if not rec.hdr.deleted:
                    out.append((slot, rec))
        except OutsideRam:
            return out, False
        page = hdr.next_array_phys
    return out, True


def read_incoming(mem: PhysMemory, flb_phys: int, variant: AbiVariant) -> IncomingRecords:
    """What ``iommu_liveupdate_restore`` would see (bounded, never raising on corruption)."""
    flb_cls = variant.flb
    try:
        flb = flb_cls.unpack(mem.read(flb_phys, flb_cls.sizeof()))
    except OutsideRam:
        return IncomingRecords((), (), (), False)
    hw, ok1 = _walk(mem, flb.iommu_array_phys, IommuHwSerV1)
    devices, ok2 = _walk(mem, flb.device_array_phys, IommuDeviceSerV1)
    domains, ok3 = _walk(mem, flb.iommu_domain_array_phys, IommuDomainSer)
    return IncomingRecords(tuple(hw), tuple(devices), tuple(domains), ok1 and ok2 and ok3)
