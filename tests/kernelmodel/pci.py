"""Simulated PCI topology: functions, bridges, DMA aliases, IOMMU groups and config space.

DMA aliases are the model's own reading of the kernel (:mod:`tests.kernelmodel.alias`:
``pci_for_each_dma_alias`` with the alias quirks), not vtdlud's auditor's.  The config space
written for each function holds what vtdlud reads: header type, secondary bus, subsystem IDs,
the PCI Express capability with its port type, and for PCIe endpoints the ATS, PRI and PASID
extended capabilities with their enable bits (offsets from include/uapi/linux/pci_regs.h).

IOMMU groups follow ``pci_device_group()``: unless a function is given an explicit group, a
function joins the group of every bridge its alias walk passes as ``pdev`` (a conventional or
PCIe-to-PCI bridge owning the alias) and of every function sharing one of its requester IDs
(own RID or alias, quirks included); every other function gets its own, numbered in BDF order.
Real kernels also merge functions without ACS isolation (e.g. 00:1f.x in the captures); give
those an explicit group.  SR-IOV VFs are ordinary functions here (any devfn, e.g. >= 0x80); one
given ``physfn`` (its PF's BDF) is a VF as the SR-IOV spec has it: its config space Vendor and
Device ID fields read 0xffff (the kernel takes the IDs from the PF, so sysfs ``vendor`` and
``device`` hold the real ones), and sysfs links it to the PF with ``physfn``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from tests.kernelmodel.alias import PCI_BRIDGE, PCIE_BRIDGE, ROOT_PORT, dma_alias_walk

# include/uapi/linux/pci_regs.h
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_HEADER_TYPE = 0x0E
PCI_HEADER_TYPE_BRIDGE = 1
PCI_SECONDARY_BUS = 0x19
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_EXP = 0x10
PCI_EXP_FLAGS = 2
PCI_EXP_FLAGS_TYPE_SHIFT = 4
PCI_EXP_TYPE_ENDPOINT = 0x0
PCI_EXP_TYPE_ROOT_PORT = ROOT_PORT
PCI_EXP_TYPE_PCI_BRIDGE = PCI_BRIDGE
PCI_EXP_TYPE_PCIE_BRIDGE = PCIE_BRIDGE
PCI_EXP_TYPE_RC_END = 0x9
PCI_EXT_CAP_ID_ATS = 0x0F
PCI_EXT_CAP_ID_PRI = 0x13
PCI_EXT_CAP_ID_PASID = 0x1B
PCI_CFG_SPACE_SIZE = 256
PCI_CFG_SPACE_EXP_SIZE = 4096
PCI_CLASS_BRIDGE_PCI = 0x060400
PCI_SUBORDINATE_BUS = 0x1A
PCI_PRIMARY_BUS = 0x18
PCI_EXP_CAP_OFFSET = 0x40
PCI_EXP_FLAGS_VERSION = 2
EXT_CAP_VERSION = 1
EXT_CAPS = (  # (id, control offset, enable bit, device attribute), chained from 0x100
    (PCI_EXT_CAP_ID_ATS, 0x06, 0x8000, "ats_enabled"),
    (PCI_EXT_CAP_ID_PRI, 0x04, 0x0001, "pri_enabled"),
    (PCI_EXT_CAP_ID_PASID, 0x06, 0x0001, "pasid_enabled"),
)
EXT_CAP_STRIDE = 0x10


def format_bdf(segment: int, bus: int, devfn: int) -> str:
    return f"{segment:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"


def devfn_of(slot: int, func: int) -> int:
    if not 0 <= slot <= 0x1F or not 0 <= func <= 7:
        raise ValueError(f"slot {slot:#x} / function {func} out of range")
    return slot << 3 | func


class Rid(NamedTuple):
    """A requester ID of the model: segment, bus, devfn."""

    segment: int
    bus: int
    devfn: int


@dataclass
class SimDevice:
    """One PCI function.  ``parent`` is the upstream bridge's BDF (None on a root bus);
    ``secondary_bus`` makes it a bridge; ``pcie_type`` None is conventional PCI."""

    segment: int
    bus: int
    devfn: int
    vendor: int = 0x8086
    device: int = 0x10D3
    pci_class: int = 0x020000
    driver: str | None = None
    pcie_type: int | None = PCI_EXP_TYPE_ENDPOINT
    secondary_bus: int | None = None
    parent: str | None = None
    unit: str = "dmar0"  # the DMAR unit translating it (name in this boot)
    group: int | None = None
    vfio: int | None = None  # vfio-dev/vfioN once bound to vfio-pci
    ats_enabled: bool = False
    pri_enabled: bool = False
    pasid_enabled: bool = False
    in_sysfs: bool = True
    subsystem: tuple[int, int] | None = None  # (subsystem vendor, device); type-0 headers
    physfn: str | None = None  # an SR-IOV VF: its PF's BDF

    @property
    def bdf(self) -> str:
        return format_bdf(self.segment, self.bus, self.devfn)

    @property
    def rid(self) -> Rid:
        return Rid(self.segment, self.bus, self.devfn)

    @property
    def is_bridge(self) -> bool:
        return self.secondary_bus is not None


@dataclass
class Topology:
    """All PCI functions by BDF."""

    devices: dict[str, SimDevice] = field(default_factory=dict)

    def add(self, dev: SimDevice) -> SimDevice:
        if dev.bdf in self.devices:
            raise ValueError(f"{dev.bdf} added twice")
        if dev.parent is not None:
            bridge = self.devices.get(dev.parent)
            if bridge is None or bridge.secondary_bus != dev.bus:
                raise ValueError(f"{dev.bdf}: parent {dev.parent} is not the bridge to its bus")
        elif self._bridge_to(dev.segment, dev.bus) is not None:
            raise ValueError(f"{dev.bdf}: bus {dev.bus:#x} is behind a bridge; give its parent")
        self.devices[dev.bdf] = dev
        return dev

    def _bridge_to(self, segment: int, bus: int) -> SimDevice | None:
        return next(
            (d for d in self.devices.values() if d.segment == segment and d.secondary_bus == bus),
            None,
        )

    def add_function(
        self, segment: int, bus: int, slot: int, func: int = 0, /, **kw: object
    ) -> SimDevice:
        """Add a function; its parent is the bridge whose secondary bus is ``bus``, if any."""
        bridge = self._bridge_to(segment, bus)
        dev = SimDevice(segment, bus, devfn_of(slot, func), **kw)  # type: ignore[arg-type]
        dev.parent = bridge.bdf if bridge is not None else None
        if dev.secondary_bus is not None and dev.pci_class == SimDevice.pci_class:
            dev.pci_class = PCI_CLASS_BRIDGE_PCI
        return self.add(dev)

    def sorted(self) -> list[SimDevice]:
        return [self.devices[b] for b in sorted(self.devices)]

    def aliases(self, bdf: str) -> tuple[Rid, ...]:
        """The device's RID and its DMA aliases, in the kernel's order (duplicates once)."""
        seg = self.devices[bdf].segment
        walk = dma_alias_walk(self, bdf)
        return tuple(dict.fromkeys(Rid(seg, bus, devfn) for _, bus, devfn in walk))

    def own_rids(self, bdf: str) -> tuple[Rid, ...]:
        """The requester IDs the alias walk reports with the device itself as ``pdev``: its
        RID and its quirk aliases (what ``intel_pasid_setup_sm_context()`` programs)."""
        seg = self.devices[bdf].segment
        walk = dma_alias_walk(self, bdf)
        return tuple(dict.fromkeys(Rid(seg, b, d) for pdev, b, d in walk if pdev == bdf))

    def sysfs_path(self, bdf: str) -> str:
        """``pci0000:00/0000:00:04.3/0000:04:00.0/0000:05:01.0``: the device under /sys/devices."""
        chain = [bdf]
        dev = self.devices[bdf]
        while dev.parent is not None:
            chain.append(dev.parent)
            dev = self.devices[dev.parent]
        root = f"pci{dev.segment:04x}:{dev.bus:02x}"
        return "/".join([root, *reversed(chain)])

    def subordinate(self, bdf: str) -> int:
        """Highest bus number below a bridge (its secondary bus when nothing is deeper)."""
        dev = self.devices[bdf]
        assert dev.secondary_bus is not None
        below = [
            self.subordinate(d.bdf)
            for d in self.devices.values()
            if d.parent == bdf and d.is_bridge
        ]
        return max([dev.secondary_bus, *below])

    def assign_groups(self) -> None:
        """Give every device without a group one (shared requester IDs share a group)."""
        taken = {d.group for d in self.devices.values() if d.group is not None}
        parent: dict[str, str] = {b: b for b in self.devices}

        def find(b: str) -> str:
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            return b

        owner: dict[tuple[int, int, int], str] = {}
        for dev in self.sorted():
            for pdev, bus, devfn in dma_alias_walk(self, dev.bdf):
                # pci_device_group(): a bridge passed as pdev lends its group; a requester ID
                # another function uses (own or alias) joins the two.
                if pdev != dev.bdf:
                    parent[find(dev.bdf)] = find(pdev)
                rid = (dev.segment, bus, devfn)
                if rid in owner:
                    parent[find(dev.bdf)] = find(owner[rid])
                else:
                    owner[rid] = dev.bdf
        for dev in self.sorted():
            if dev.group is not None:
                continue
            root = find(dev.bdf)
            member = next(
                (d.group for d in self.sorted() if d.group is not None and find(d.bdf) == root),
                None,
            )
            if member is None:
                member = 0
                while member in taken:
                    member += 1
                taken.add(member)
            dev.group = member


def config_space(dev: SimDevice, topology: Topology) -> bytes:
    """The device's ``config`` file: 4 KiB for PCIe functions, 256 bytes for conventional PCI."""
    size = PCI_CFG_SPACE_EXP_SIZE if dev.pcie_type is not None else PCI_CFG_SPACE_SIZE
    cfg = bytearray(size)
    # SR-IOV 1.1 §3.4.1.1-2: a VF's Vendor ID and Device ID read 0xffff
    ids = (0xFFFF, 0xFFFF) if dev.physfn is not None else (dev.vendor, dev.device)
    struct.pack_into("<HH", cfg, 0, *ids)
    cfg[0x09:0x0C] = dev.pci_class.to_bytes(3, "little")
    if dev.subsystem is not None and not dev.is_bridge:
        struct.pack_into("<HH", cfg, PCI_SUBSYSTEM_VENDOR_ID, *dev.subsystem)
    if dev.is_bridge:
        assert dev.secondary_bus is not None
        cfg[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_BRIDGE
        cfg[PCI_PRIMARY_BUS] = dev.bus
        cfg[PCI_SECONDARY_BUS] = dev.secondary_bus
        cfg[PCI_SUBORDINATE_BUS] = topology.subordinate(dev.bdf)
    if dev.pcie_type is None:
        return bytes(cfg)
    struct.pack_into("<H", cfg, PCI_STATUS, PCI_STATUS_CAP_LIST)
    cfg[PCI_CAPABILITY_LIST] = PCI_EXP_CAP_OFFSET
    cfg[PCI_EXP_CAP_OFFSET] = PCI_CAP_ID_EXP
    flags = PCI_EXP_FLAGS_VERSION | dev.pcie_type << PCI_EXP_FLAGS_TYPE_SHIFT
    struct.pack_into("<H", cfg, PCI_EXP_CAP_OFFSET + PCI_EXP_FLAGS, flags)
    if dev.pcie_type in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_PCI_BRIDGE) or dev.is_bridge:
        return bytes(cfg)
    # a VF has no PRI or PASID capability of its own: it uses its PF's (the SR-IOV spec)
    caps = [c for c in EXT_CAPS if dev.physfn is None or c[0] == PCI_EXT_CAP_ID_ATS]
    for i, (cap_id, ctrl, enable, attr) in enumerate(caps):
        off = PCI_CFG_SPACE_SIZE + i * EXT_CAP_STRIDE
        nxt = off + EXT_CAP_STRIDE if i + 1 < len(caps) else 0
        struct.pack_into("<I", cfg, off, cap_id | EXT_CAP_VERSION << 16 | nxt << 20)
        if getattr(dev, attr):
            struct.pack_into("<H", cfg, off + ctrl, enable)
    return bytes(cfg)
