"""The simulated host: units, devices, domains, live-update preservation and kexec.

A test builds a host, boots it, hands devices to VFIO, preserves some, kexecs, and writes the
tree vtdlud reads::

    host = SimHost(seed=1)
    host.add_unit(reg_base=0xFED90000, scalable=False)
    host.add_device(0, 0x00, 0x05, driver="vfio-pci")
    host.boot()
    host.vfio_attach("0000:00:05.0")   # VFIO cdev bound to iommufd, attached to a new HWPT
    host.preserve("0000:00:05.0")      # LUO preserves memfd, iommufd and the cdev
    host.kexec()                       # old kernel shutdown, handover, new kernel restore
    write_tree(host, root)             # tests.kernelmodel.tree

Boot follows the kernel's order: every device is probed first (scalable mode: PASID directory
and context entry), then each group, in the order its first device was probed, gets its default
domain (DIDs are handed out in that order).  Kexec follows reference §1.6-§1.7 (see
:meth:`SimHost.kexec`).  Everything is deterministic for a given seed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tests.kernelmodel.iommu import (
    PRESENT,
    ROOT_ENTRY_NR,
    SM_PRE,
    DmarUnit,
    Domain,
    DomainKind,
    Placement,
    place,
)
from tests.kernelmodel.kho import (
    KHO_COMPATIBLE,
    TEST_FLB_DATA,
    TEST_FLB_PREFIX,
    FlbEntry,
    HandedOver,
    KhoState,
    LuoFile,
    LuoGeneration,
    LuoSession,
)
from tests.kernelmodel.layout import COMPATIBLE, IOMMU_INTEL
from tests.kernelmodel.memory import DEFAULT_RAM, PAGE_SIZE, PhysMemory
from tests.kernelmodel.pagetable import IOVA_BASE, MEMFD_PAGES, map_page
from tests.kernelmodel.pci import SimDevice, Topology
from tests.kernelmodel.records import (
    FLB_VARIANTS,
    RESTORED_OFFSET,
    IncomingRecords,
    Outgoing,
    read_incoming,
)
from vtdlud.model.snapshot import VFIO_PCI

QEMU_CAP = 0x00D2_008C_222F_0686  # CAP of QEMU 7.2's intel-iommu with aw-bits=48 (b_scalable)
QEMU_ECAP_LEGACY = 0x0000_0000_00F0_0F4A
QEMU_ECAP_SCALABLE = 0x0000_4800_80F0_0F4A
VMM_PID = 4242
SESSION_NAME = "vmm"


class PreserveError(Exception):
    """The kernel refuses to preserve the device (the model mirrors its checks)."""


@dataclass
class Group:
    number: int
    default: Domain
    reserved_regions: str = "0x00000000fee00000 0x00000000feefffff msi\n"

    @property
    def type_name(self) -> str:
        return self.default.kind.value


class SimHost:
    """One machine across kexecs: memory survives, the kernel state is rebuilt."""

    def __init__(
        self,
        *,
        seed: int = 0,
        ram: tuple[tuple[int, int], ...] = DEFAULT_RAM,
        release: str = "6.12.117-vtdlud-sim",
        flb_variant: str = "v1",
        luo_generation: LuoGeneration = LuoGeneration.FDT_FLB,
        kho_abi: str = KHO_COMPATIBLE,
        identity_default: bool = False,
        placement: Placement | None = None,
        cmdline: str | None = None,
    ) -> None:
        self.mem = PhysMemory(ram, seed=seed)
        self.rng = random.Random(seed ^ 0x5EED)
        self.release = release
        if flb_variant not in FLB_VARIANTS:
            raise ValueError(f"FLB variant {flb_variant!r}: one of {', '.join(FLB_VARIANTS)}")
        self.flb_variant = flb_variant
        self.generation = luo_generation
        self.identity_default = identity_default
        self.placement = placement or Placement()
        self.topology = Topology()
        self.units: dict[str, DmarUnit] = {}
        self.groups: dict[int, Group] = {}
        self.attached: dict[str, Domain] = {}
        self.legacy_group_users: set[str] = set()  # BDFs held through /dev/vfio/<group>
        self.kexec_loaded = True
        self.liveupdate_num = 0
        self.boot_id = self._new_boot_id()
        self.booted = False
        self.kho_abi = kho_abi
        self.kexec_count = 0  # kexec-metadata (Linux 7.2 model)
        self.reuse_freed_luo = True  # Linux 7.2 model: the freed incoming LUO pages get reused
        # CONFIG_LIVEUPDATE_TEST (lib/tests/liveupdate.c): liveupdate-test-flb-v0..2 on every
        # file handler, preserved with the first file (the model counts every file for them)
        self.test_flbs = False
        self.kho = self._kho_state(kho_boot=False)
        self.outgoing: Outgoing | None = None
        self.handed_over: HandedOver | None = None
        self.incoming: IncomingRecords | None = None
        self._cmdline = cmdline
        # root-relative path -> rewrite of that file's bytes (None deletes it); see tree.py
        self.tree_hooks: dict[str, Callable[[bytes], bytes | None]] = {}

    # -- building ----------------------------------------------------------------------------
    @property
    def flb_compatible(self) -> str:
        """The IOMMU FLB's compatible string of :attr:`flb_variant`."""
        return COMPATIBLE[self.flb_variant]

    def _kho_state(self, *, kho_boot: bool) -> KhoState:
        return KhoState(
            self.mem,
            self.generation,
            self.liveupdate_num,
            kho_compatible=self.kho_abi,
            release=self.release,
            kexec_count=self.kexec_count,
            kho_boot=kho_boot,
        )

    def _new_boot_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    @property
    def cmdline(self) -> str:
        if self._cmdline is not None:
            return self._cmdline
        sm = ",sm_on" if any(u.scalable for u in self.units.values()) else ""
        pt = "pt" if self.identity_default else "nopt"
        return (
            f"BOOT_IMAGE=/vmlinuz-{self.release} root=/dev/vda1 ro intel_iommu=on{sm} "
            f"iommu={pt} kho=on kho_scratch=16M liveupdate=on"
        )

    def add_unit(
        self,
        *,
        reg_base: int = 0xFED9_0000,
        scalable: bool = False,
        cap: int = QEMU_CAP,
        ecap: int | None = None,
        name: str | None = None,
        **kw: object,
    ) -> DmarUnit:
        name = name or f"dmar{len(self.units)}"
        if ecap is None:
            ecap = QEMU_ECAP_SCALABLE if scalable else QEMU_ECAP_LEGACY
        unit = DmarUnit(
            self.mem,
            name,
            reg_base,
            cap,
            ecap,
            scalable=scalable,
            placement=self.placement,
            **kw,  # type: ignore[arg-type]
        )
        self.units[name] = unit
        return unit

    def add_device(
        self, segment: int, bus: int, slot: int, func: int = 0, /, **kw: object
    ) -> SimDevice:
        if "unit" not in kw and self.units:
            kw["unit"] = next(iter(self.units))
        dev = self.topology.add_function(segment, bus, slot, func, **kw)
        if dev.driver == VFIO_PCI and dev.vfio is None:
            dev.vfio = self._next_vfio()
        return dev

    def _next_vfio(self) -> int:
        used = {d.vfio for d in self.topology.devices.values() if d.vfio is not None}
        n = 0
        while n in used:
            n += 1
        return n

    def device(self, bdf: str) -> SimDevice:
        return self.topology.devices[bdf]

    def unit_of(self, bdf: str) -> DmarUnit:
        return self.units[self.device(bdf).unit]

    def unit_at(self, reg_base: int) -> DmarUnit | None:
        return next((u for u in self.units.values() if u.reg_base == reg_base), None)

    # -- boot and attach ---------------------------------------------------------------------
    def _new_domain(self, kind: DomainKind, unit: DmarUnit, bdf: str) -> Domain:
        if kind is DomainKind.IDENTITY:
            return Domain(kind, 0, unit.agaw)
        pgd = place(self.mem, self.placement.pgd(bdf, kind))
        return Domain(kind, pgd, unit.agaw)

    def boot(self) -> None:
        """Probe every device, then attach each group's default domain (the kernel's order)."""
        self.topology.assign_groups()
        self._probe(self.topology.sorted(), preserved=set())
        self.booted = True

    def _probe(self, devices: list[SimDevice], preserved: set[str]) -> None:
        self.groups = {}
        for dev in devices:
            unit = self.units[dev.unit]
            unit.devices.append(dev.bdf)
            if unit.scalable and dev.bdf not in preserved:
                unit.setup_sm_context(dev.bus, dev.devfn, self._own_rids(dev.bdf))
        for dev in devices:
            assert dev.group is not None
            if dev.group not in self.groups:
                kind = DomainKind.IDENTITY if self.identity_default else DomainKind.DMA
                domain = self._new_domain(kind, self.units[dev.unit], dev.bdf)
                self.groups[dev.group] = Group(dev.group, domain)
            if dev.bdf not in preserved:
                self.attach(dev.bdf, self.groups[dev.group].default)

    def hotplug(
        self, segment: int, bus: int, slot: int, func: int = 0, /, **kw: object
    ) -> SimDevice:
        """A device appears after boot: probed and attached to its group's default domain
        (a context table for its bus is allocated if there is none yet)."""
        dev = self.add_device(segment, bus, slot, func, **kw)
        self.topology.assign_groups()
        assert dev.group is not None
        unit = self.units[dev.unit]
        unit.devices.append(dev.bdf)
        if unit.scalable:
            unit.setup_sm_context(dev.bus, dev.devfn, self._own_rids(dev.bdf))
        if dev.group not in self.groups:
            kind = DomainKind.IDENTITY if self.identity_default else DomainKind.DMA
            self.groups[dev.group] = Group(dev.group, self._new_domain(kind, unit, dev.bdf))
        self.attach(dev.bdf, self.groups[dev.group].default)
        return dev

    def attach(self, bdf: str, domain: Domain) -> None:
        """Attach ``domain`` to a device: block the old one first, then program the new."""
        dev, unit = self.device(bdf), self.unit_of(bdf)
        old = self.attached.pop(bdf, None)
        aliases = self.topology.aliases(bdf)
        if old is not None:
            if unit.scalable:
                unit.clear_rid_pasid(dev.bus, dev.devfn)
            else:
                for rid in aliases:
                    unit.clear_context(rid.bus, rid.devfn)
            unit.domain_leave(old, bdf)
        domain.users.setdefault(unit.reg_base, set()).add(bdf)
        if unit.scalable:
            unit.set_rid_pasid(dev.bus, dev.devfn, domain)
        else:
            for rid in aliases:
                unit.map_legacy(rid.bus, rid.devfn, domain)
        self.attached[bdf] = domain

    def vfio_attach(self, bdf: str) -> Domain:
        """A VMM opens the VFIO cdev, binds it to iommufd and attaches a new HWPT to it.

        iommufd attaches a domain to a whole IOMMU group (``iommu_attach_group()``: every
        device of the group, bridges included, in probe order), so a second device of a group
        that already has the VMM's domain joins it instead of getting its own."""
        dev = self.device(bdf)
        if dev.driver != VFIO_PCI:
            dev.driver = VFIO_PCI
            dev.vfio = self._next_vfio() if dev.vfio is None else dev.vfio
        current = self.attached.get(bdf)
        if current is not None and current.kind is DomainKind.UNMANAGED:
            return current
        domain = self._new_domain(DomainKind.UNMANAGED, self.unit_of(bdf), bdf)
        self._map_memfd(domain)
        for member in self.topology.sorted():
            if member.group == dev.group and member.bdf in self.attached:
                self.attach(member.bdf, domain)
        if bdf not in self.attached or self.attached[bdf] is not domain:
            self.attach(bdf, domain)
        return domain

    def _map_memfd(self, domain: Domain) -> None:
        """IOMMU_IOAS_MAP_FILE: the VMM's sealed memfd (MEMFD_PAGES pages; its own LUO handler
        preserves them with the device) mapped at IOVA_BASE, which builds the page table."""
        for i in range(MEMFD_PAGES):
            page = self.mem.alloc()
            domain.memfd.append(page)
            map_page(self.mem, domain.pgd, domain.levels, IOVA_BASE + i * PAGE_SIZE, page)

    def _own_rids(self, bdf: str) -> list[tuple[int, int]]:
        return [(r.bus, r.devfn) for r in self.topology.own_rids(bdf)]

    def add_context_table(self, bus: int, devfn: int = 0, unit: str | None = None) -> int:
        """A context table allocated now (e.g. a hot-added device's bus); returns its address."""
        target = self.units[unit] if unit else next(iter(self.units.values()))
        addr = target.context_addr(bus, devfn, alloc=True)
        assert addr is not None
        return addr & ~0xFFF

    # -- live update -------------------------------------------------------------------------
    def preserve(self, bdf: str) -> None:
        """Preserve a device (memfd, iommufd and VFIO cdev into the LUO session)."""
        dev = self.device(bdf)
        domain = self.attached.get(bdf)
        if dev.driver != VFIO_PCI or dev.vfio is None:
            raise PreserveError(f"{bdf}: not bound to {VFIO_PCI}")
        if domain is None or domain.kind is not DomainKind.UNMANAGED:
            raise PreserveError(f"{bdf}: its VFIO cdev is not attached to an iommufd HWPT")
        if bdf in self.legacy_group_users:
            raise PreserveError(f"{bdf}: held through the legacy VFIO group API")
        if dev.pri_enabled:
            raise PreserveError(f"{bdf}: page requests are in use")
        domain.marked = True
        for page in domain.memfd:
            self.mem.preserve(page)  # the memfd's own LUO preservation
        if self.outgoing is None:
            self.outgoing = Outgoing(self.mem, self.flb_variant)
        self.outgoing.preserve_device(self.unit_of(bdf), dev, domain)

    def unpreserve(self, bdf: str) -> None:
        if self.outgoing is None or bdf not in self.outgoing.device_slot:
            raise PreserveError(f"{bdf} is not preserved")
        self.outgoing.unpreserve_device(self.unit_of(bdf), self.device(bdf), self.attached[bdf])
        if not self.outgoing.live():
            self.outgoing.free()
            self.outgoing = None

    @property
    def preserved(self) -> tuple[str, ...]:
        return tuple(sorted(self.outgoing.device_slot)) if self.outgoing else ()

    def sessions(self) -> list[LuoSession]:
        if self.outgoing is None:
            return []
        files = [LuoFile("iommufd-v1", self.outgoing.flb_phys, 0x123456)]
        domains = {self.attached[b] for b in self.preserved}
        files += [LuoFile("memfd-v1", d.pgd, 0x890000 + i) for i, d in enumerate(domains)]
        files += [
            LuoFile("vfio-pci-v1", self.outgoing.device_slot[b], 0x654300 + i)
            for i, b in enumerate(self.preserved)
        ]
        return [LuoSession(SESSION_NAME, files)]

    # -- kexec -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """The old kernel's last step before kexec (:meth:`kexec` runs it; tests may run it alone
        to look at the tables the next kernel gets): ``clear_unpreserved_context_entries`` and
        ``clear_unpreserved_context_root_entries`` on every unit with a preserved hw record
        (reference §1.6), the bitmap read from the record in memory.  Idempotent."""
        out = self.outgoing
        if out is None:
            return
        for unit in self.units.values():
            slot = out.hw_slot.get(unit.reg_base)
            if slot is None:
                continue
            for bdf in unit.devices:
                dev = self.device(bdf)
                if bdf not in out.device_slot:
                    for rid in self.topology.aliases(bdf):
                        unit.clear_context(rid.bus, rid.devfn)
                elif unit.scalable:
                    addr = unit.context_addr(dev.bus, dev.devfn)
                    if addr is not None:
                        self.mem.set_u64(addr, self.mem.u64(addr) & ~SM_PRE)
            bits = out.bits(slot)
            for bus in range(ROOT_ENTRY_NR):
                base = unit.root_table + bus * 16
                halves = ((0, base), (1, base + 8)) if unit.scalable else ((0, base),)
                for upper, addr in halves:
                    if self.mem.u64(addr) & PRESENT and bus * 2 + upper not in bits:
                        self.mem.set_u64(addr, 0)

    def kexec(self, *, release: str | None = None) -> None:
        """Shutdown, handover through KHO/LUO, and the new kernel's boot and restore."""
        if not self.booted:
            raise RuntimeError("boot() the host before kexec()")
        self.shutdown()
        flbs = []
        files = sum(len(s.files) for s in self.sessions())
        if self.test_flbs and files:  # registered first, with the first file handler
            flbs += [FlbEntry(f"{TEST_FLB_PREFIX}{i}", TEST_FLB_DATA + i, files) for i in range(3)]
        if self.outgoing is not None:
            flbs.append(FlbEntry(self.outgoing.compatible, self.outgoing.flb_phys, 1))
        self.kho.serialize(self.sessions(), flbs)
        self.kho.refresh_radix()
        reached = tuple(flbs) if self.kho.flb_header is not None else ()
        old = self.kho
        self.handed_over = HandedOver(
            old.root_fdt(),
            old.luo_blob(),
            self.generation,
            reached,
            old.flb_header,
            subtrees=tuple(old.subtrees()),
            freed_pages=(old.blob_phys, old.sessions_phys, *old.extra_pages) if old.linux72 else (),
            linux72=old.linux72,
        )
        self.mem.keep_only(self.mem.preserved | set(self.kho.metadata_pages()))
        self.mem.preserved = set()  # the new kernel owns what it received; it preserves anew
        # -- the new kernel --
        self.release = release or self.release
        self.boot_id = self._new_boot_id()
        self.liveupdate_num += 1
        self.kexec_count += 1
        self.kho = self._kho_state(kho_boot=True)
        self.outgoing = None
        self.incoming = None
        self.placement = Placement()  # known addresses describe the first boot only
        for unit in self.units.values():
            unit.placement = self.placement
        flb = next((f for f in reached if f.name == self.flb_compatible), None)
        if flb is not None:
            self.incoming = read_incoming(self.mem, flb.data, self.flb_variant)
        if self.handed_over.linux72 and self.reuse_freed_luo:
            self.kho.consume_incoming(self.handed_over, self.rng.randbytes(4096))
        self._restore()

    def _restore(self) -> None:
        """The new kernel: reuse preserved root tables, set ``restored``, re-reserve DIDs,
        re-attach preserved devices to their restored domains, probe the rest."""
        inc = self.incoming
        hw = [] if inc is None else [(s, r) for s, r in inc.hw if r["type"] == IOMMU_INTEL]
        self.attached = {}
        restored_devs: dict[str, Domain] = {}
        domains: dict[int, Domain] = {}
        for unit in self.units.values():
            unit.devices, unit.dids = [], set()
            match = next(((s, r) for s, r in hw if r["token"] == unit.reg_base), None)
            if match is None:
                unit.root_table = self.mem.alloc()
                unit.pasid_dirs = {}
                continue
            slot, rec = match
            unit.root_table = rec["intel.root_table"]
            if not rec["intel.restored"]:
                self.mem.write(slot + RESTORED_OFFSET, b"\x01")
            mine = {s for s, r in hw if r["intel.phys_addr"] == unit.reg_base}
            keep: dict[tuple[int, int], int] = {}
            for _, drec in inc.devices if inc else ():
                if drec["domain_iommu_ser.iommu_phys"] not in mine:
                    continue
                did = drec["domain_iommu_ser.attachment_id"]
                unit.reserve_did(did)
                bus, devfn = drec["devid"] >> 8 & 0xFF, drec["devid"] & 0xFF
                bdf = f"{drec['pci_domain_nr']:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"
                if bdf not in self.topology.devices:
                    continue
                dslot = drec["domain_iommu_ser.domain_phys"]
                if dslot not in domains:
                    drec_dom = (
                        next((r for s, r in inc.domains if s == dslot), None) if inc else None
                    )
                    pgd = drec_dom["top_table_phys"] if drec_dom else 0
                    agaw = drec_dom["top_level"] - 1 if drec_dom else unit.agaw
                    domains[dslot] = Domain(DomainKind.UNMANAGED, pgd, agaw)
                domain = domains[dslot]
                domain.dids[unit.reg_base] = did
                domain.users.setdefault(unit.reg_base, set()).add(bdf)
                restored_devs[bdf] = domain
                if drec["intel.pasid_table"]:
                    keep[bus, devfn] = drec["intel.pasid_table"]
            unit.pasid_dirs = keep
        self._probe(self.topology.sorted(), preserved=set(restored_devs))
        self.attached.update(restored_devs)
