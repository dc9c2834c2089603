"""The model's own DMA aliases: ``pci_for_each_dma_alias()`` and the quirks feeding it.

An independent reading of Linux 7.2.13 (``drivers/pci/search.c``, ``drivers/pci/quirks.c``,
``drivers/pci/pci.c:pci_add_dma_alias``), written for the model and not shared with vtdlud's
auditor (:mod:`vtdlud.model.alias`), so that the alias tests compare two readings of the kernel.

:func:`dma_alias_walk` lists the callbacks the kernel makes, in its order, as
``(pdev, bus, devfn)``: ``pdev`` is the device the callback is given — the device itself for its
own RID and its ``dma_alias_mask`` RIDs (same bus), the bridge for a bridge's alias.  The kernel
tells them apart the same way: ``pci_pasid_table_setup()`` programs only RIDs whose ``pdev`` is
the device (scalable mode), ``get_pci_alias_or_group()`` takes the group of a ``pdev`` that is not
the device (``pci_device_group()``).

Header fixups modelled (by vendor:device): function 0 as requester (Ricoh e832/e476, Glenfly
3d40/3d41), function 1 as requester (Marvell 88SE91xx/92xx, TTI 0642/0645, JMicron JMB388 ESD,
Lite-On 0122), fixed alias 01.0 for the Adaptec 3405/3805 (by subsystem), MIC x200, Intel VCA
and PLX NTB ranges; bridge flags: ``PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS`` (ASMedia 1080, Tundra 8113,
ITE 8892/8893, Intel 244e, when the quirk's topology condition holds),
``PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT`` (Broadcom 9000/9084), ``PCI_DEV_FLAGS_PCI_BRIDGE_NO_ALIAS``
(ASPEED 1150).  Not modelled: Switchtec NTB proxy IDs (read from MMIO) and VMD.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.kernelmodel.pci import SimDevice, Topology

# PCI Express port types (include/uapi/linux/pci_regs.h PCI_EXP_TYPE_*)
ROOT_PORT, UPSTREAM, DOWNSTREAM, PCI_BRIDGE, PCIE_BRIDGE = 0x4, 0x5, 0x6, 0x7, 0x8

_FUNC0 = {(0x1180, 0xE832), (0x1180, 0xE476), (0x6766, 0x3D40), (0x6766, 0x3D41)}
_FUNC1 = {
    *((0x1B4B, d) for d in (0x9120, 0x9123, 0x9125, 0x9128, 0x9130, 0x9170, 0x9172, 0x917A,
                            0x9182, 0x9183, 0x91A0, 0x9215, 0x9220, 0x9230, 0x9235)),
    (0x1103, 0x0642), (0x1103, 0x0645), (0x197B, 0x2392), (0x1C28, 0x0122),
}  # fmt: skip
_ADAPTEC = (0x9005, 0x0285)
_ADAPTEC_SUBSYSTEMS = {(0x9005, 0x02BB), (0x9005, 0x02BC)}
_MIC_X200 = {(0x8086, 0x2260), (0x8086, 0x2264)}
_VCA = {(0x8086, d) for d in (0x2954, 0x2955, 0x2956, 0x2958, 0x2959, 0x295A)}
_PLX_NTB = {(0x10B5, 0x87B0), (0x10B5, 0x87B1)}
_PCIE_BRIDGE_ALIAS = {(0x1B21, 0x1080), (0x10E3, 0x8113), (0x1283, 0x8892), (0x1283, 0x8893),
                      (0x8086, 0x244E)}  # fmt: skip
_XLATE_ROOT = {(0x14E4, 0x9000), (0x14E4, 0x9084)}
_NO_ALIAS = {(0x1A03, 0x1150)}


def dma_alias_mask(dev: SimDevice) -> list[int]:
    """The devfns the header fixups add with ``pci_add_dma_alias()``, ascending."""
    ids = (dev.vendor, dev.device)
    slot, func = dev.devfn >> 3, dev.devfn & 7
    mask: set[int] = set()
    if ids in _FUNC0 and func != 0:
        mask.add(slot << 3)
    if ids in _FUNC1 and func != 1:
        mask.add(slot << 3 | 1)
    if ids == _ADAPTEC and dev.subsystem in _ADAPTEC_SUBSYSTEMS:
        mask.add(1 << 3)
    if ids in _MIC_X200:
        mask |= {0x10 << 3, 0x11 << 3, 0x12 << 3 | 3}
    if ids in _VCA:
        mask |= {s << 3 | f for s in range(32) for f in range(5)}
    if ids in _PLX_NTB:
        mask |= set(range(256))
    return sorted(mask)


def _pcie_bridge_alias(bridge: SimDevice, topo: Topology) -> bool:
    """``quirk_use_pcie_bridge_dma_alias()``: a conventional bridge, not on a root bus, below a
    PCIe port that is not a PCIe-to-PCI bridge."""
    if (bridge.vendor, bridge.device) not in _PCIE_BRIDGE_ALIAS or bridge.parent is None:
        return False
    above = topo.devices[bridge.parent]
    return (
        bridge.is_bridge
        and bridge.pcie_type is None
        and above.pcie_type is not None
        and above.pcie_type != PCI_BRIDGE
    )


def dma_alias_walk(topo: Topology, bdf: str) -> list[tuple[str, int, int]]:
    """Every callback of ``pci_for_each_dma_alias()`` for ``bdf``: (pdev, bus, devfn)."""
    dev = topo.devices[bdf]
    calls = [(bdf, dev.bus, dev.devfn)]
    calls += [(bdf, dev.bus, devfn) for devfn in dma_alias_mask(dev)]
    up = dev.parent
    while up is not None:
        tmp = topo.devices[up]
        ids = (tmp.vendor, tmp.device)
        if ids in _XLATE_ROOT:
            break
        if tmp.pcie_type is None:
            if _pcie_bridge_alias(tmp, topo):
                assert tmp.secondary_bus is not None
                calls.append((up, tmp.secondary_bus, 0))
            else:
                calls.append((up, tmp.bus, tmp.devfn))
        elif tmp.pcie_type == PCI_BRIDGE and ids not in _NO_ALIAS:
            assert tmp.secondary_bus is not None
            calls.append((up, tmp.secondary_bus, 0))
        elif tmp.pcie_type == PCIE_BRIDGE:
            calls.append((up, tmp.bus, tmp.devfn))
        up = tmp.parent
    return calls
