"""One simulated VT-d unit: registers, root/context/PASID tables in simulated memory, DIDs.

Table handling follows ``drivers/iommu/intel/iommu.c`` and ``pasid.c`` (Linux 6.12, the kernel of
the real captures; read to learn the rules, not copied):

- ``iommu_context_addr(iommu, bus, devfn, alloc)`` (:meth:`DmarUnit.context_addr`): the root
  entry's ``lo`` half, or in scalable mode the ``hi`` half for devfn >= 0x80, with 256-bit entries
  (two 16-byte slots each); a missing table is allocated only when ``alloc``.
- legacy mode programs a context entry for the device and every DMA alias
  (``domain_context_mapping_one`` via ``pci_for_each_dma_alias``), leaving an entry that is already
  present alone, and clears the device and its aliases when the device leaves a domain;
- scalable mode gives each device its own PASID directory at probe and programs only the device's
  own context entry (``pci_pasid_table_setup`` skips aliases owned by another device); the domain
  goes into the RID_PASID (PASID 0) entry, whose PASID table page is allocated on demand.
- DIDs come from an IDA starting at 2; 0 is reserved and 1 (``FLPT_DEFAULT_DID``) belongs to the
  identity domain.  A domain's DID on a unit is freed when its last device on that unit leaves.

The debugfs files are the model's own rendering (:mod:`tests.kernelmodel.debugfs`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from tests.kernelmodel.memory import PAGE_SIZE, PhysMemory

FLPT_DEFAULT_DID = 1
IDA_START_DID = 2
DEFAULT_GSTS = 0xC700_0000  # TES | RTPS | QIES | IRES | IRTPS, as in the captures
GSTS_TES = 1 << 31
PRESENT = 1
ROOT_ENTRY_SIZE = 16
LEGACY_CONTEXT_SIZE = 16
SM_CONTEXT_SIZE = 32
PASID_ENTRY_SIZE = 64
PASID_PDE_SHIFT = 6  # 64 PASID entries per PASID table page
PASID_TABLE_ENTRIES = 1 << PASID_PDE_SHIFT
ROOT_ENTRY_NR = 256
SM_UPPER_DEVFN = 0x80  # scalable mode: devfn >= 0x80 is in the upper context table
PAGE_MASK = ~(PAGE_SIZE - 1) & (1 << 64) - 1
DMA_RTADDR_SMT = 1 << 10
TT_MULTI_LEVEL = 0
TT_PASS_THROUGH = 2
PGTT_SL_ONLY = 2
PGTT_PASS_THROUGH = 4
SM_PRE = 1 << 4
SM_PDTS_SHIFT = 9
PASID_PWSNP = 1 << 23  # val[1]: page-walk snoop (set when ECAP.SMPWC)
ONE_PAGE_MAX_PASID = 1 << 15  # a one-page PASID directory: 512 entries x 64 PASIDs
MAX_AGAW = 3  # width_to_agaw(DEFAULT_DOMAIN_ADDRESS_WIDTH = 57)


def _bits(value: int, high: int, low: int) -> int:
    return value >> low & ((1 << (high - low + 1)) - 1)


def cap_sagaw(cap: int) -> int:
    return _bits(cap, 12, 8)


def cap_mgaw(cap: int) -> int:
    return _bits(cap, 21, 16) + 1


def cap_ndoms(cap: int) -> int:
    return 1 << (4 + 2 * _bits(cap, 2, 0))


def ecap_smpwc(ecap: int) -> bool:
    return bool(_bits(ecap, 48, 48))


class RootEntry(NamedTuple):
    lo: int
    hi: int


class DomainKind(Enum):
    DMA = "DMA"  # a default paging domain
    IDENTITY = "identity"  # the static identity domain (pass-through)
    UNMANAGED = "unmanaged"  # a paging domain allocated by iommufd/VFIO


@dataclass(eq=False)
class Domain:
    """An IOMMU domain: ``pgd`` is its top page-table page (0 for identity), ``levels`` the
    page-table depth; ``dids`` its DID on each unit (by register base)."""

    kind: DomainKind
    pgd: int = 0
    agaw: int = 2
    dids: dict[int, int] = field(default_factory=dict)
    users: dict[int, set[str]] = field(default_factory=dict)  # unit base -> attached BDFs
    marked: bool = False  # iommufd: HWPT marked for preservation (sealed memfd mappings only)
    memfd: list[int] = field(default_factory=list)  # the pages the VMM's memfd maps

    @property
    def levels(self) -> int:
        return self.agaw + 2

    @property
    def vasz(self) -> int:
        return 30 + 9 * self.agaw


class Placement:
    """Where the unit puts new pages; None lets the allocator choose.  The capture replay
    answers with the real kernel's addresses."""

    def root_table(self, unit: str) -> int | None:
        return None

    def context_table(self, unit: str, bus: int, upper: bool) -> int | None:
        return None

    def pasid_dir(self, unit: str, bus: int, devfn: int) -> int | None:
        return None

    def pgd(self, bdf: str, kind: DomainKind) -> int | None:
        return None


def place(mem: PhysMemory, addr: int | None) -> int:
    return mem.alloc() if addr is None else mem.claim(addr)


class DmarUnit:
    """One DRHD.  ``name`` is ``dmarN`` in the current boot; everything keys on ``reg_base``."""

    def __init__(
        self,
        mem: PhysMemory,
        name: str,
        reg_base: int,
        cap: int,
        ecap: int,
        *,
        version: int = 0x10,
        scalable: bool = False,
        segment: int = 0,
        include_all: bool = True,
        gsts: int = DEFAULT_GSTS,
        registers: dict[str, int] | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.mem = mem
        self.name = name
        self.reg_base = reg_base
        self.cap = cap
        self.ecap = ecap
        self.version = version
        self.scalable = scalable
        self.segment = segment
        self.include_all = include_all
        self.gsts = gsts
        self.fsts = 0
        self.registers = dict(registers or {})
        self.placement = placement or Placement()
        self.devices: list[str] = []  # BDFs of probed devices (sysfs devices/)
        self.dids: set[int] = set()  # allocated DIDs >= IDA_START_DID
        self.pasid_dirs: dict[tuple[int, int], int] = {}  # (bus, devfn) -> PASID directory
        self.root_table = place(mem, self.placement.root_table(name))

    # -- capabilities --------------------------------------------------------------------------
    @property
    def agaw(self) -> int:
        """``iommu->agaw``: the widest supported AGAW not above the unit's MGAW."""
        sagaw = cap_sagaw(self.cap)
        limit = min(MAX_AGAW, (cap_mgaw(self.cap) - 30) // 9)
        return max((a for a in range(limit + 1) if sagaw >> a & 1), default=limit)

    @property
    def msagaw(self) -> int:
        sagaw = cap_sagaw(self.cap)
        return max((a for a in range(MAX_AGAW + 1) if sagaw >> a & 1), default=0)

    @property
    def ndoms(self) -> int:
        return cap_ndoms(self.cap)

    @property
    def rtaddr(self) -> int:
        return self.root_table | (DMA_RTADDR_SMT if self.scalable else 0)

    @property
    def enabled(self) -> bool:
        return bool(self.gsts & GSTS_TES)

    # -- DIDs ------------------------------------------------------------------------------------
    def alloc_did(self) -> int:
        did = IDA_START_DID
        while did in self.dids:
            did += 1
        if did >= self.ndoms:
            raise RuntimeError(f"{self.name}: out of domain IDs")
        self.dids.add(did)
        return did

    def reserve_did(self, did: int) -> None:
        self.dids.add(did)

    @property
    def domains_used(self) -> int:
        """sysfs ``domains_used``: the IDA's weight, with DIDs 0 and 1 always reserved."""
        return 2 + len(self.dids)

    def domain_did(self, domain: Domain) -> int:
        """``domain_id_iommu()``, attaching the domain to this unit first if needed."""
        if domain.kind is DomainKind.IDENTITY:
            return FLPT_DEFAULT_DID
        if self.reg_base not in domain.dids:
            domain.dids[self.reg_base] = self.alloc_did()
        return domain.dids[self.reg_base]

    def domain_leave(self, domain: Domain, bdf: str) -> None:
        users = domain.users.get(self.reg_base, set())
        users.discard(bdf)
        if not users and self.reg_base in domain.dids:
            self.dids.discard(domain.dids.pop(self.reg_base))

    # -- root and context tables -----------------------------------------------------------------
    def root_entry(self, bus: int) -> RootEntry:
        """The root entry of ``bus``: (lo, hi)."""
        addr = self.root_table + bus * ROOT_ENTRY_SIZE
        return RootEntry(lo=self.mem.u64(addr), hi=self.mem.u64(addr + 8))

    def _root_half_addr(self, bus: int, devfn: int) -> int:
        upper = self.scalable and devfn >= SM_UPPER_DEVFN
        return self.root_table + bus * ROOT_ENTRY_SIZE + (8 if upper else 0)

    def context_addr(self, bus: int, devfn: int, alloc: bool = False) -> int | None:
        """Physical address of the context entry of (bus, devfn); None when its table is
        missing and not ``alloc``."""
        half = self._root_half_addr(bus, devfn)
        entry = self.mem.u64(half)
        if not entry & PRESENT:
            if not alloc:
                return None
            upper = self.scalable and devfn >= SM_UPPER_DEVFN
            table = place(self.mem, self.placement.context_table(self.name, bus, upper))
            entry = table | PRESENT
            self.mem.set_u64(half, entry)
        table = entry & PAGE_MASK
        if self.scalable:
            return table + (devfn & 0x7F) * SM_CONTEXT_SIZE
        return table + devfn * LEGACY_CONTEXT_SIZE

    def context_tables(self) -> dict[int, int]:
        """Existing context tables: bitmap bit -> table address (upper halves only in SM)."""
        out: dict[int, int] = {}
        for bus in range(ROOT_ENTRY_NR):
            root = self.root_entry(bus)
            if root.lo & PRESENT:
                out[bus * 2] = root.lo & PAGE_MASK
            if self.scalable and root.hi & PRESENT:
                out[bus * 2 + 1] = root.hi & PAGE_MASK
        return out

    def read_context(self, bus: int, devfn: int) -> tuple[int, int] | None:
        addr = self.context_addr(bus, devfn)
        if addr is None:
            return None
        return self.mem.u64(addr), self.mem.u64(addr + 8)

    def clear_context(self, bus: int, devfn: int) -> None:
        """``context_clear_entry``: the entry goes to zero (its table stays)."""
        addr = self.context_addr(bus, devfn)
        if addr is not None:
            size = SM_CONTEXT_SIZE if self.scalable else LEGACY_CONTEXT_SIZE
            self.mem.write(addr, bytes(size))

    def map_legacy(self, bus: int, devfn: int, domain: Domain) -> None:
        """``domain_context_mapping_one``: program the entry unless it is already present."""
        addr = self.context_addr(bus, devfn, alloc=True)
        assert addr is not None
        if self.mem.u64(addr) & PRESENT:
            return
        did = self.domain_did(domain)
        if domain.kind is DomainKind.IDENTITY:
            lo = TT_PASS_THROUGH << 2 | PRESENT
            hi = did << 8 | self.msagaw
        else:
            lo = domain.pgd | TT_MULTI_LEVEL << 2 | PRESENT
            hi = did << 8 | domain.agaw
        self.mem.write(addr, struct.pack("<QQ", lo, hi))

    # -- scalable mode ---------------------------------------------------------------------------
    def setup_sm_context(self, bus: int, devfn: int, rids: list[tuple[int, int]]) -> None:
        """Probe in scalable mode: ``intel_pasid_alloc_table()`` gives the device (bus, devfn)
        a one-page PASID directory, then ``intel_pasid_setup_sm_context()`` names it in the
        context entry of each of ``rids`` — the device's own RID and its quirk aliases — that
        is not present yet (``device_pasid_table_setup()`` leaves a present entry alone)."""
        directory = place(self.mem, self.placement.pasid_dir(self.name, bus, devfn))
        self.pasid_dirs[bus, devfn] = directory
        pdts = (ONE_PAGE_MAX_PASID >> PASID_PDE_SHIFT).bit_length() - 1 - 7
        for rid_bus, rid_devfn in rids:
            addr = self.context_addr(rid_bus, rid_devfn, alloc=True)
            assert addr is not None
            if self.mem.u64(addr) & PRESENT:
                continue
            lo = directory | pdts << SM_PDTS_SHIFT | PRESENT
            self.mem.write(addr, struct.pack("<QQ", lo, 0))

    def pasid_entry_addr(self, bus: int, devfn: int, pasid: int, alloc: bool) -> int | None:
        directory = self.pasid_dirs.get((bus, devfn))
        if directory is None:
            return None
        pde_addr = directory + (pasid >> PASID_PDE_SHIFT) * 8
        pde = self.mem.u64(pde_addr)
        if not pde & PRESENT:
            if not alloc:
                return None
            pde = self.mem.alloc() | PRESENT
            self.mem.set_u64(pde_addr, pde)
        return (pde & PAGE_MASK) + (pasid & (PASID_TABLE_ENTRIES - 1)) * PASID_ENTRY_SIZE

    def set_rid_pasid(self, bus: int, devfn: int, domain: Domain) -> None:
        """``intel_pasid_setup_second_level`` / ``_pass_through`` for PASID 0."""
        addr = self.pasid_entry_addr(bus, devfn, 0, alloc=True)
        if addr is None:
            raise RuntimeError(f"{self.name}: {bus:02x}:{devfn:02x} has no PASID directory")
        did = self.domain_did(domain)
        snoop = PASID_PWSNP if ecap_smpwc(self.ecap) else 0
        if domain.kind is DomainKind.IDENTITY:
            val0 = PGTT_PASS_THROUGH << 6 | self.agaw << 2 | PRESENT
        else:
            val0 = domain.pgd | PGTT_SL_ONLY << 6 | domain.agaw << 2 | PRESENT
        self.mem.write(addr, struct.pack("<QQ", val0, did | snoop) + bytes(48))

    def clear_rid_pasid(self, bus: int, devfn: int) -> None:
        addr = self.pasid_entry_addr(bus, devfn, 0, alloc=False)
        if addr is not None:
            self.mem.write(addr, bytes(PASID_ENTRY_SIZE))

    def pasid_pages(self, bus: int, devfn: int) -> list[int]:
        """The device's PASID directory and every PASID table it points at."""
        directory = self.pasid_dirs.get((bus, devfn))
        if directory is None:
            return []
        out = [directory]
        for off in range(0, PAGE_SIZE, 8):
            pde = self.mem.u64(directory + off)
            if pde & PRESENT:
                out.append(pde & PAGE_MASK)
        return out

    # -- debugfs ---------------------------------------------------------------------------------
    def register_values(self) -> dict[str, int]:
        """The registers ``iommu_regset`` prints, by name (the rest read 0)."""
        values = dict(self.registers)
        values.update(
            VER=self.version,
            GSTS=self.gsts,
            FSTS=self.fsts,
            CAP=self.cap,
            ECAP=self.ecap,
            RTADDR=self.rtaddr,
        )
        return values
