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

The records are written from the model's own layout tables (:mod:`tests.kernelmodel.layout`, checked
against gcc), never with vtdlud's ABI mirror, and always with the Intel unions; the FLB is that
of the chosen variant: v1 (3 words, ``"iommu-liveupdate-v1"``) or v2 (a version word first,
``"iommu-liveupdate"``).  A v2 FLB with Intel records is what the guest harness's test driver
writes too (no posted header has the pairing).
``top_level`` of a domain record is the generic page table's 0-based level of the top table
(levels - 1) [I].
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.kernelmodel.iommu import ONE_PAGE_MAX_PASID, ROOT_ENTRY_NR, DmarUnit, Domain
from tests.kernelmodel.layout import (
    ARRAY_HDR,
    COMPATIBLE,
    DEVICE,
    DOMAIN,
    FLAG_DELETED,
    FLB,
    FLB_VERSION,
    HW,
    IOMMU_INTEL,
    RESTORED_OFFSET,
    Layout,
    Record,
    bitmap_bits,
    bitmap_words,
)
from tests.kernelmodel.memory import OutsideRam, PhysMemory
from tests.kernelmodel.pagetable import table_pages
from tests.kernelmodel.pci import SimDevice
from vtdlud.frozen import frozen

MAX_CHAIN_PAGES = 1024  # bounds the incoming walk (a corrupt chain must not hang the model)
FLB_VARIANTS = ("v1", "v2")
__all__ = ["RESTORED_OFFSET"]  # iommu_hw_ser.intel.restored: the new kernel sets it


def deleted(rec: Record) -> Record:
    return rec | {"hdr.flags": rec["hdr.flags"] | FLAG_DELETED}


class Chain:
    """One record array chain, as the kernel's private bookkeeping sees it."""

    def __init__(self, mem: PhysMemory, layout: Layout) -> None:
        self.mem = mem
        self.layout = layout
        self.capacity = layout.capacity()
        self.size = layout.size
        self.pages: list[int] = []
        self.counts: list[int] = []
        self._new_page()

    def _new_page(self) -> None:
        page = self.mem.alloc()
        self.mem.preserve(page)
        self.mem.write(page, ARRAY_HDR.pack({}))
        if self.pages:
            self.mem.set_u64(self.pages[-1], page)  # next_array_phys of the current last page
        self.pages.append(page)
        self.counts.append(0)

    @property
    def first(self) -> int:
        return self.pages[0]

    def append(self, record: Record) -> int:
        if self.counts[-1] >= self.capacity:
            self._new_page()
        slot = self.pages[-1] + ARRAY_HDR.size + self.counts[-1] * self.size
        self.mem.write(slot, self.layout.pack(record))
        self.counts[-1] += 1
        self.mem.set_u64(self.pages[-1] + 8, self.counts[-1])  # nr_objects
        return slot

    def read(self, slot: int) -> Record:
        return self.layout.unpack(self.mem.read(slot, self.size))

    def write(self, slot: int, record: Record) -> None:
        self.mem.write(slot, self.layout.pack(record))

    def slots(self) -> Iterator[int]:
        for page, count in zip(self.pages, self.counts, strict=True):
            for i in range(count):
                yield page + ARRAY_HDR.size + i * self.size

    def free(self) -> None:
        for page in self.pages:
            self.mem.free(page)


class Outgoing:
    """The outgoing IOMMU FLB of one kernel: created at the first preservation."""

    def __init__(self, mem: PhysMemory, variant: str) -> None:
        if variant not in FLB_VARIANTS:
            raise ValueError(f"FLB variant {variant} is not a posted one")
        self.mem = mem
        self.variant = variant
        self.flb_phys = mem.alloc()
        mem.preserve(self.flb_phys)
        self.hw = Chain(mem, HW)
        self.domains = Chain(mem, DOMAIN)
        self.devices = Chain(mem, DEVICE)
        self.hw_slot: dict[int, int] = {}  # unit register base -> slot
        self.domain_slot: dict[Domain, int] = {}
        self.device_slot: dict[str, int] = {}  # BDF -> slot
        self.write_flb()

    @property
    def compatible(self) -> str:
        return COMPATIBLE[self.variant]

    def write_flb(self) -> None:
        flb = {
            "version": FLB_VERSION,
            "iommu_array_phys": self.hw.first,
            "iommu_domain_array_phys": self.domains.first,
            "device_array_phys": self.devices.first,
        }
        self.mem.write(self.flb_phys, FLB[self.variant].pack(flb))

    def bits(self, slot: int) -> set[int]:
        """The context-table bits of the hw record at ``slot`` (read from memory)."""
        return bitmap_bits(self.hw.read(slot)["intel.context_tables_bitmap"])

    # -- hw records ------------------------------------------------------------------------
    def _preserve_hw(self, unit: DmarUnit) -> int:
        slot = self.hw_slot.get(unit.reg_base)
        if slot is not None:
            rec = self.hw.read(slot)
            self.hw.write(slot, rec | {"hdr.ref_count": rec["hdr.ref_count"] + 1})
            return slot
        self.mem.preserve(unit.root_table)
        rec = {
            "hdr.ref_count": 1,
            "hdr.flags": 0,
            "token": unit.reg_base,
            "type": IOMMU_INTEL,
            "intel.restored": 0,
            "intel.padding": bytes(7),
            "intel.phys_addr": unit.reg_base,
            "intel.root_table": unit.root_table,
            "intel.context_tables_bitmap": bitmap_words(set()),
        }
        slot = self.hw.append(rec)
        self.hw_slot[unit.reg_base] = slot
        return slot

    def _preserve_context_tables(self, unit: DmarUnit, slot: int) -> None:
        """``preserve_iommu_context_tables()``: every context table of the unit now."""
        rec = self.hw.read(slot)
        bits = bitmap_bits(rec["intel.context_tables_bitmap"])
        halves = (0, 0x80) if unit.scalable else (0,)
        for bus in range(ROOT_ENTRY_NR):
            for devfn in halves:
                entry = unit.context_addr(bus, devfn)
                bit = bus * 2 + (1 if devfn else 0)
                if entry is not None and bit not in bits:
                    self.mem.preserve(entry)
                    bits.add(bit)
        self.hw.write(slot, rec | {"intel.context_tables_bitmap": bitmap_words(bits)})

    def _unpreserve_hw(self, unit: DmarUnit, slot: int) -> None:
        rec = self.hw.read(slot)
        count = max(rec["hdr.ref_count"] - 1, 0)
        if count:
            self.hw.write(slot, rec | {"hdr.ref_count": count})
            return
        tables = unit.context_tables()
        for bit in bitmap_bits(rec["intel.context_tables_bitmap"]):
            if bit in tables:
                self.mem.unpreserve(tables[bit])
        self.mem.unpreserve(unit.root_table)
        gone = rec | {"hdr.ref_count": 0, "intel.context_tables_bitmap": bitmap_words(set())}
        self.hw.write(slot, deleted(gone))
        del self.hw_slot[unit.reg_base]

    # -- domains ---------------------------------------------------------------------------
    def _preserve_domain(self, domain: Domain) -> int:
        slot = self.domain_slot.get(domain)
        if slot is not None:
            return slot
        for page in table_pages(self.mem, domain.pgd, domain.levels):
            self.mem.preserve(page)  # every level: iommupt's preserve callback
        rec = {
            "hdr.ref_count": 1,
            "hdr.flags": 0,
            "top_table_phys": domain.pgd,
            "top_level": domain.levels - 1,
            "vasz": domain.vasz,
            "sign_extend": 0,
            "restored_domain": 0,
        }
        slot = self.domains.append(rec)
        self.domain_slot[domain] = slot
        return slot

    def _release_domain(self, domain: Domain) -> None:
        slot = self.domain_slot[domain]
        if any(self.devices.read(s)["domain_iommu_ser.domain_phys"] == slot for s in self._live()):
            return
        self.domains.write(slot, deleted(self.domains.read(slot)))
        for page in table_pages(self.mem, domain.pgd, domain.levels):
            self.mem.unpreserve(page)
        del self.domain_slot[domain]

    def _live(self) -> list[int]:
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
        rec = {
            "hdr.ref_count": 1,
            "hdr.flags": 0,
            "devid": dev.bus << 8 | dev.devfn,
            "pci_domain_nr": dev.segment,
            "domain_iommu_ser.attachment_id": domain.dids[unit.reg_base],
            "domain_iommu_ser.domain_phys": domain_slot,
            "domain_iommu_ser.iommu_phys": hw_slot,
            "intel.pasid_table": pasid_table,
            "intel.max_pasid": max_pasid,
        }
        slot = self.devices.append(rec)
        self.device_slot[dev.bdf] = slot
        return slot

    def unpreserve_device(self, unit: DmarUnit, dev: SimDevice, domain: Domain) -> None:
        slot = self.device_slot.pop(dev.bdf)
        self.devices.write(slot, deleted(self.devices.read(slot)))
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

    hw: tuple[tuple[int, Record], ...]
    devices: tuple[tuple[int, Record], ...]
    domains: tuple[tuple[int, Record], ...]
    complete: bool  # False: a chain was corrupt (loop, bad count, pointer outside RAM)


def _walk(mem: PhysMemory, first: int, layout: Layout) -> tuple[list[tuple[int, Record]], bool]:
    out: list[tuple[int, Record]] = []
    seen: set[int] = set()
    page = first
    while page:
        if page in seen or len(seen) >= MAX_CHAIN_PAGES:
            return out, False
        seen.add(page)
        try:
            hdr = ARRAY_HDR.unpack(mem.read(page, ARRAY_HDR.size))
            if hdr["nr_objects"] > layout.capacity():
                return out, False
            for i in range(hdr["nr_objects"]):
                slot = page + ARRAY_HDR.size + i * layout.size
                rec = layout.unpack(mem.read(slot, layout.size))
                if not rec["hdr.flags"] & FLAG_DELETED:
                    out.append((slot, rec))
        except OutsideRam:
            return out, False
        page = hdr["next_array_phys"]
    return out, True


def read_incoming(mem: PhysMemory, flb_phys: int, variant: str) -> IncomingRecords:
    """What ``iommu_liveupdate_restore`` would see (bounded, never raising on corruption)."""
    layout = FLB[variant]
    try:
        flb = layout.unpack(mem.read(flb_phys, layout.size))
    except OutsideRam:
        return IncomingRecords((), (), (), False)
    hw, ok1 = _walk(mem, flb["iommu_array_phys"], HW)
    devices, ok2 = _walk(mem, flb["device_array_phys"], DEVICE)
    domains, ok3 = _walk(mem, flb["iommu_domain_array_phys"], DOMAIN)
    return IncomingRecords(tuple(hw), tuple(devices), tuple(domains), ok1 and ok2 and ok3)
