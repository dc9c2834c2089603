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
from typing import NamedTuple

from vtdlud.model.pci import (
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
)

MAX_DEPTH = 64  # PCI hierarchies are far shallower; bounds a corrupt parent chain


class Rid(NamedTuple):
    """A requester ID on one segment: bus and devfn.  A named tuple: a host has thousands and
    the alias checks hash and compare them (only ever with other ``Rid`` values)."""

    segment: int
    bus: int
    devfn: int

    def __str__(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}"


class PciNode(NamedTuple):
    """What the alias walk needs to know about one PCI function."""

    rid: Rid
    parent: str | None  # the upstream bridge's BDF; None on a root bus
    pcie_type: int | None  # None: conventional PCI
    secondary_bus: int | None  # bridges only


def dma_aliases(bdf: str, nodes: Mapping[str, PciNode]) -> tuple[Rid, ...] | None:
    """The device's own RID followed by its aliases, in the kernel's order.

    None when a bridge on the way up is unknown (its config space could not be read): the
    aliases are then not visible, which is not the same as "none".  For many devices of one
    host use :class:`DmaAliases`, which walks each bridge once.
    """
    return DmaAliases(nodes).of(bdf)


# What the walk from one bridge up to the root bus adds: the RIDs in the kernel's order and the
# number of bridges walked; None when not visible (an unknown bridge, a PCIe-to-PCI bridge
# without a secondary bus, a parent loop or a chain deeper than MAX_DEPTH allows).
_Upstream = tuple[tuple[Rid, ...], int] | None


class DmaAliases:
    """:func:`dma_aliases` for the devices of one host, each bridge's part of the walk computed
    once (devices behind the same bridges share it) and each device's answer kept."""

    def __init__(self, nodes: Mapping[str, PciNode]) -> None:
        self.nodes = nodes
        self._up: dict[str, _Upstream] = {}
        self._of: dict[str, tuple[Rid, ...] | None] = {}

    def of(self, bdf: str) -> tuple[Rid, ...] | None:
        """The device's own RID followed by its aliases (see :func:`dma_aliases`)."""
        if bdf in self._of:
            return self._of[bdf]
        node = self.nodes.get(bdf)
        out: tuple[Rid, ...] | None = None
        if node is not None:
            parent = node.parent
            up = ((), 0) if parent is None else self._up.get(parent) or self._upstream(parent)
            if up is not None:
                out = tuple(dict.fromkeys((node.rid, *up[0]))) if up[0] else (node.rid,)
        self._of[bdf] = out
        return out

    def every(self) -> dict[str, tuple[Rid, ...] | None]:
        """Every known device's RIDs, by BDF."""
        return {bdf: self.of(bdf) for bdf in self.nodes}

    def _upstream(self, start: str) -> _Upstream:
        """The walk from bridge ``start`` up, memoized for every bridge on the way."""
        path: list[str] = []
        on_path: set[str] = set()
        parent: str | None = start
        above: _Upstream = ((), 0)  # what the walk past the last bridge of ``path`` adds
        while parent is not None:
            if parent in self._up:
                above = self._up[parent]
                break
            if parent in on_path:  # a parent loop: every bridge on it walks forever
                above = None
                break
            bridge = self.nodes.get(parent)
            if bridge is None:
                above = None
                break
            path.append(parent)
            on_path.add(parent)
            parent = bridge.parent
        for name in reversed(path):
            if above is not None:
                own = _bridge_alias(self.nodes[name])
                # A device's walk takes one step per bridge and one more to see the root bus:
                # MAX_DEPTH steps reach MAX_DEPTH - 1 bridges.
                if own is None or above[1] + 1 >= MAX_DEPTH:
                    above = None
                else:
                    above = ((*own, *above[0]), above[1] + 1)
            self._up[name] = above
        return self._up[start] if path else above


def _bridge_alias(bridge: PciNode) -> tuple[Rid, ...] | None:
    """What one bridge on the way up adds (``pci_for_each_dma_alias``); None: not visible."""
    if bridge.pcie_type in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM):
        return ()
    if bridge.pcie_type == PCI_EXP_TYPE_PCI_BRIDGE:
        if bridge.secondary_bus is None:
            return None
        return (Rid(bridge.rid.segment, bridge.secondary_bus, 0),)
    if bridge.pcie_type == PCI_EXP_TYPE_PCIE_BRIDGE or bridge.pcie_type is None:
        return (bridge.rid,)
    return ()


def shared_aliases(
    bdf: str, others: list[str], nodes: Mapping[str, PciNode]
) -> dict[str, tuple[Rid, ...]]:
    """For each other device, the requester IDs it and ``bdf`` both use (own RID or alias)."""
    walk = DmaAliases(nodes)
    mine = walk.of(bdf)
    if mine is None:
        return {}
    out: dict[str, tuple[Rid, ...]] = {}
    for other in others:
        theirs = walk.of(other) if other != bdf else None
        common = tuple(r for r in theirs or () if r in mine)
        if common:
            out[other] = common
    return out
