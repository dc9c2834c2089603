"""PCI DMA aliases: the requester IDs the IOMMU sees for a device (``pci_for_each_dma_alias``).

The kernel walks from the device up to the root bus.  Root ports and switch ports add nothing;
a PCIe-to-PCI bridge (``PCI_EXP_TYPE_PCI_BRIDGE``) adds (its secondary bus, devfn 00.0), because
it takes ownership of the transactions it forwards; a PCI-to-PCIe bridge and a conventional PCI
bridge add their own requester ID.  At kexec the old kernel clears the context entry of every
non-preserved device *and of its aliases* (DESIGN.md §1), so two devices sharing an alias must be
preserved together.

Not visible from userspace (inferred gap, said where it matters): the quirk aliases of
``pci_add_dma_alias()`` (``dma_alias_mask``) and the ``PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS`` quirk;
vtdlud follows the generic rules only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vtdlud.parse.pciconfig import (
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
)

MAX_DEPTH = 64  # PCI hierarchies are far shallower; bounds a corrupt parent chain


@dataclass(frozen=True)
class Rid:
    """A requester ID on one segment: bus and devfn."""

    segment: int
    bus: int
    devfn: int

    def __str__(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}"


@dataclass(frozen=True)
class PciNode:
    """What the alias walk needs to know about one PCI function."""

    rid: Rid
    parent: str | None  # the upstream bridge's BDF; None on a root bus
    pcie_type: int | None  # None: conventional PCI
    secondary_bus: int | None  # bridges only


def dma_aliases(bdf: str, nodes: Mapping[str, PciNode]) -> tuple[Rid, ...] | None:
    """The device's own RID followed by its aliases, in the kernel's order.

    None when a bridge on the way up is unknown (its config space could not be read): the
    aliases are then not visible, which is not the same as "none".
    """
    node = nodes.get(bdf)
    if node is None:
        return None
    out = [node.rid]
    parent = node.parent
    for _ in range(MAX_DEPTH):
        if parent is None:
            return tuple(dict.fromkeys(out))
        bridge = nodes.get(parent)
        if bridge is None:
            return None
        if bridge.pcie_type in (
            PCI_EXP_TYPE_ROOT_PORT,
            PCI_EXP_TYPE_UPSTREAM,
            PCI_EXP_TYPE_DOWNSTREAM,
        ):
            pass
        elif bridge.pcie_type == PCI_EXP_TYPE_PCI_BRIDGE:
            if bridge.secondary_bus is None:
                return None
            out.append(Rid(bridge.rid.segment, bridge.secondary_bus, 0))
        elif bridge.pcie_type == PCI_EXP_TYPE_PCIE_BRIDGE or bridge.pcie_type is None:
            out.append(bridge.rid)
        parent = bridge.parent
    return None  # a parent chain deeper than any real hierarchy: corrupt input


def shared_aliases(
    bdf: str, others: list[str], nodes: Mapping[str, PciNode]
) -> dict[str, tuple[Rid, ...]]:
    """For each other device, the requester IDs it and ``bdf`` both use (own RID or alias)."""
    mine = dma_aliases(bdf, nodes)
    if mine is None:
        return {}
    out: dict[str, tuple[Rid, ...]] = {}
    for other in others:
        theirs = dma_aliases(other, nodes) if other != bdf else None
        common = tuple(r for r in theirs or () if r in mine)
        if common:
            out[other] = common
    return out
