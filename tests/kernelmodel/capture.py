"""Rebuild a simulated host from a real capture, so the model can be checked against a kernel.

:func:`host_from_capture` reads the capture through vtdlud's own snapshot (sysfs inventory, PCI
config space, ``iommu_regset``, ``dmar_translation_struct``) and builds a :class:`SimHost` with
the same units, registers, devices, bridges, groups and drivers.  Only *where* pages go is taken
from the capture (:class:`CapturePlacement`: the root table, each context table, each PASID
directory and each domain's top page-table page, at the addresses the real kernel used); *what*
goes into them is the model's: which context entries exist (aliases in legacy mode, none for
them in scalable mode), their bits, the DIDs (allocated in the kernel's probe order), the PASID
entries, the root entries, and the walk that prints them.  Rendering the model's tables must then
give the capture's debugfs text back byte for byte.

Devices bound to vfio-pci with a ``vfio-dev/vfioN`` are taken to have been attached to a new
iommufd/VFIO domain after boot (the captures' ``vfio_target``).
"""

from __future__ import annotations

from pathlib import Path

from tests.kernelmodel.iommu import DomainKind, Placement
from tests.kernelmodel.kernel import SimHost
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.debugfs import RegsetUnit, TranslationUnit
from vtdlud.model.registers import VTD_PAGE_MASK, rtaddr_is_scalable, rtaddr_root_table
from vtdlud.model.snapshot import VFIO_PCI, Snapshot
from vtdlud.parse.sysfs import parse_bdf

CAPTURE_RAM = ((0x0010_0000, 0x7FF0_0000),)  # the captures' guests: 2 GiB


class CapturePlacement(Placement):
    """The real kernel's page addresses, read from one capture's debugfs."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.roots: dict[str, int] = {}
        self.tables: dict[tuple[str, int, bool], int] = {}
        self.dirs: dict[tuple[str, int, int], int] = {}
        self.pgds: dict[tuple[int, int], int] = {}
        self.vfio: set[tuple[int, int]] = set()
        assert snapshot.regset is not None and snapshot.translation is not None
        for reg in snapshot.regset.units:
            rtaddr = reg.get("RTADDR")
            if rtaddr is not None:
                self.roots[reg.name] = rtaddr_root_table(rtaddr)
        for unit in snapshot.translation.units:
            for row in unit.rows:
                self.tables[unit.name, row.bus, False] = row.root.lo & VTD_PAGE_MASK
                if row.root.uctp_present:
                    self.tables[unit.name, row.bus, True] = row.root.hi & VTD_PAGE_MASK
                key = (row.bus, row.devfn)
                if row.is_scalable:
                    self.dirs[unit.name, row.bus, row.devfn] = row.context_lo & VTD_PAGE_MASK
                    if row.pasid == 0 and row.pasid_entry.pgtt != 4:
                        self.pgds[key] = row.pasid_entry.val0 & VTD_PAGE_MASK
                elif row.context.tt != 2:
                    self.pgds.setdefault(key, row.context_lo & VTD_PAGE_MASK)
        for bdf, dev in snapshot.pci_devices.items():
            if dev.driver == VFIO_PCI and dev.vfio_devs:
                b = parse_bdf(bdf)
                self.vfio.add((b.bus, b.devfn))

    def addresses(self) -> set[int]:
        return {
            *self.roots.values(),
            *self.tables.values(),
            *self.dirs.values(),
            *self.pgds.values(),
        }

    def root_table(self, unit: str) -> int | None:
        return self.roots.get(unit)

    def context_table(self, unit: str, bus: int, upper: bool) -> int | None:
        return self.tables.get((unit, bus, upper))

    def pasid_dir(self, unit: str, bus: int, devfn: int) -> int | None:
        return self.dirs.get((unit, bus, devfn))

    def pgd(self, bdf: str, kind: DomainKind) -> int | None:
        b = parse_bdf(bdf)
        key = (b.bus, b.devfn)
        if (kind is DomainKind.UNMANAGED) != (key in self.vfio):
            return None  # a vfio device's row shows its VFIO domain, not its default one
        return self.pgds.get(key)


def _depth(snapshot: Snapshot, bdf: str) -> int:
    depth, parent = 0, snapshot.pci_devices[bdf].parent
    while parent is not None and depth < 64:
        depth += 1
        parent = snapshot.pci_devices[parent].parent
    return depth


def host_from_capture(root: Path, *, seed: int = 0) -> SimHost:
    """A booted host equivalent to the capture at ``root`` (see the module docstring)."""
    snap = take_snapshot(HostRoot(root))
    if snap.regset is None or snap.translation is None or snap.cmdline is None:
        raise ValueError(f"{root}: the capture lacks iommu debugfs or /proc/cmdline")
    placement = CapturePlacement(snap)
    identity = bool(snap.groups) and all(g.type == "identity" for g in snap.groups.values())
    host = SimHost(
        seed=seed,
        ram=CAPTURE_RAM,
        placement=placement,
        identity_default=identity,
        cmdline=" ".join(snap.cmdline),
    )
    host.mem.reserve(placement.addresses())
    for unit in snap.units:
        reg: RegsetUnit | None = next(
            (r for r in snap.regset.units if r.reg_base_addr == unit.address), None
        )
        if reg is None or unit.address is None or unit.cap is None or unit.ecap is None:
            raise ValueError(f"{root}: unit {unit.name} is incomplete in the capture")
        rtaddr, gsts, ver = reg.get("RTADDR"), reg.get("GSTS"), reg.get("VER")
        assert rtaddr is not None and gsts is not None and ver is not None
        host.add_unit(
            name=unit.name,
            reg_base=unit.address,
            cap=unit.cap,
            ecap=unit.ecap,
            scalable=rtaddr_is_scalable(rtaddr),
            version=ver,
            gsts=gsts,
            registers={r.name: r.value for r in reg.registers},
        )
    for bdf in sorted(snap.pci_devices, key=lambda b: (_depth(snap, b), b)):
        dev = snap.pci_devices[bdf]
        b = parse_bdf(bdf)
        cfg = dev.config
        host.add_device(
            b.segment,
            b.bus,
            b.devfn >> 3,
            b.devfn & 7,
            vendor=dev.vendor or 0,
            device=dev.device or 0,
            pci_class=dev.pci_class or 0,
            driver=dev.driver,
            pcie_type=cfg.pcie_type if cfg else None,
            secondary_bus=cfg.secondary_bus if cfg else None,
            unit=dev.iommu or next(iter(host.units)),
            group=dev.iommu_group,
            vfio=int(dev.vfio_devs[0][4:]) if dev.vfio_devs else None,
        )
    host.boot()
    for bdf, dev in sorted(snap.pci_devices.items()):
        if dev.driver == VFIO_PCI and dev.vfio_devs:
            host.vfio_attach(bdf)
    return host


def capture_translation(root: Path) -> tuple[TranslationUnit, ...]:
    """The capture's own parsed ``dmar_translation_struct`` units (for comparisons)."""
    snap = take_snapshot(HostRoot(root))
    assert snap.translation is not None
    return snap.translation.units
