"""PCI DMA aliases: the requester IDs the IOMMU sees for a device (``pci_for_each_dma_alias``).

The kernel (``drivers/pci/search.c``, Linux 7.2.13) reports the device's own RID, then the
requester IDs a quirk added to its ``dma_alias_mask`` (same bus, devfn order:
:mod:`vtdlud.model.quirks`), then walks from the device up to the root bus.  Root ports and switch
ports add nothing; a PCIe-to-PCI bridge (``PCI_EXP_TYPE_PCI_BRIDGE``) adds (its secondary bus,
devfn 00.0), because it takes ownership of the transactions it forwards, unless a quirk says it
forwards the requester ID (``PCI_DEV_FLAGS_PCI_BRIDGE_NO_ALIAS``); a PCI-to-PCIe bridge and a
conventional PCI bridge add their own requester ID, or (secondary bus, 00.0) for a conventional
bridge quirked ``PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS``; the walk stops at a bridge quirked
``PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT``.  At kexec the old kernel clears the context entry of every
non-preserved device *and of its aliases* (DESIGN.md §1), so two devices sharing an alias must be
preserved together.

Not visible from userspace (None, said where it matters): a bridge whose config space could not
be read, aliases a quirk reads from the device (Switchtec NTB), and devices in a VMD domain.
A quirk of a later kernel is unknown to :mod:`vtdlud.model.quirks`: the IOMMU group check (VTD028)
catches its effect, since the kernel builds groups from the same aliases.
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
from vtdlud.model.quirks import VMD_FIRST_DOMAIN, PciIds, Rule, bridge_rules, quirk_alias_devfns

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
    ids: PciIds | None = None  # what the alias quirks match on (None: no quirk applies)


def dma_aliases(bdf: str, nodes: Mapping[str, PciNode]) -> tuple[Rid, ...] | None:
    """The device's own RID followed by its aliases, in the kernel's order.

    None when a bridge on the way up is unknown (its config space could not be read): the
    aliases are then not visible, which is not the same as "none".  For many devices of one
    host use :class:`DmaAliases`, which walks each bridge once.
    """
    return DmaAliases(nodes).of(bdf)


# What the walk from one bridge up to the root bus adds: the RIDs in the kernel's order, the
# number of bridges walked and the bridges that added a RID (the kernel passes each as ``pdev``
# to the callback: ``pci_device_group()`` takes its group); None when not visible (an unknown
# bridge, a PCIe-to-PCI bridge without a secondary bus, a parent loop or a chain deeper than
# MAX_DEPTH allows).
_Upstream = tuple[tuple[Rid, ...], int, tuple[str, ...]] | None


class DmaAliases:
    """:func:`dma_aliases` for the devices of one host, each bridge's part of the walk computed
    once (devices behind the same bridges share it) and each device's answer kept."""

    def __init__(self, nodes: Mapping[str, PciNode]) -> None:
        self.nodes = nodes
        self._up: dict[str, _Upstream] = {}
        self._of: dict[str, tuple[Rid, ...] | None] = {}

    def own(self, bdf: str) -> tuple[Rid, ...] | None:
        """The requester IDs that are the device's own: its RID and its quirk aliases
        (``dma_alias_mask``).  ``intel_pasid_setup_sm_context()`` gives these, and not a
        bridge's alias, the device's PASID table (``pci_pasid_table_setup()`` skips an alias
        whose ``pdev`` is another device)."""
        node = self.nodes.get(bdf)
        if node is None or node.rid.segment >= VMD_FIRST_DOMAIN:
            return None  # pci_real_dma_dev(): the VMD endpoint is the requester
        mask = quirk_alias_devfns(node.ids, node.rid.devfn)
        if mask is None:
            return None
        rid = node.rid
        return tuple(dict.fromkeys((rid, *(Rid(rid.segment, rid.bus, d) for d in mask))))

    def of(self, bdf: str) -> tuple[Rid, ...] | None:
        """The device's own RID followed by its aliases (see :func:`dma_aliases`)."""
        if bdf in self._of:
            return self._of[bdf]
        out: tuple[Rid, ...] | None = None
        own = self.own(bdf)
        up = self._up_of(bdf) if own is not None else None
        if own is not None and up is not None:
            out = tuple(dict.fromkeys((*own, *up[0]))) if up[0] else own
        self._of[bdf] = out
        return out

    def bridges(self, bdf: str) -> tuple[str, ...] | None:
        """The bridges on the device's walk that added an alias (None: not visible)."""
        up = self._up_of(bdf) if bdf in self.nodes else None
        return None if up is None else up[2]

    def _up_of(self, bdf: str) -> _Upstream:
        parent = self.nodes[bdf].parent
        if parent is None:
            return (), 0, ()
        return self._up.get(parent) or self._upstream(parent)

    def every(self) -> dict[str, tuple[Rid, ...] | None]:
        """Every known device's RIDs, by BDF."""
        return {bdf: self.of(bdf) for bdf in self.nodes}

    def _upstream(self, start: str) -> _Upstream:
        """The walk from bridge ``start`` up, memoized for every bridge on the way."""
        path: list[str] = []
        on_path: set[str] = set()
        parent: str | None = start
        above: _Upstream = ((), 0, ())  # what the walk past the last bridge of ``path`` adds
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
            if Rule.BRIDGE_XLATE_ROOT in bridge_rules(bridge.ids):
                above = ((), 0, ())  # the walk stops here: nothing above it counts
                break
            parent = bridge.parent
        for name in reversed(path):
            node = self.nodes[name]
            if Rule.BRIDGE_XLATE_ROOT in bridge_rules(node.ids):
                above = ((), 0, ())
            elif above is not None:
                up = self.nodes.get(node.parent) if node.parent is not None else None
                own = _bridge_alias(node, up)
                # A device's walk takes one step per bridge and one more to see the root bus:
                # MAX_DEPTH steps reach MAX_DEPTH - 1 bridges.
                if own is None or above[1] + 1 >= MAX_DEPTH:
                    above = None
                else:
                    adds = (name,) if own else ()
                    above = ((*own, *above[0]), above[1] + 1, (*adds, *above[2]))
            self._up[name] = above
        return self._up[start] if path else above


def _bridge_alias(bridge: PciNode, up: PciNode | None) -> tuple[Rid, ...] | None:
    """What one bridge on the way up adds (``pci_for_each_dma_alias``); None: not visible.
    ``up`` is the bridge above it (the ``PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS`` quirk applies only to
    a bridge that is not on a root bus and sits below a PCIe port that is not a PCIe-to-PCI
    bridge: ``quirk_use_pcie_bridge_dma_alias()``)."""
    rules = bridge_rules(bridge.ids)
    if bridge.pcie_type in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM):
        return ()
    if bridge.pcie_type == PCI_EXP_TYPE_PCI_BRIDGE:
        if Rule.PCI_BRIDGE_NO_ALIAS in rules:
            return ()
        if bridge.secondary_bus is None:
            return None
        return (Rid(bridge.rid.segment, bridge.secondary_bus, 0),)
    if bridge.pcie_type is None and Rule.PCIE_BRIDGE_ALIAS in rules:
        if up is None and bridge.parent is not None:
            return None  # whether the quirk applies depends on a bridge not visible
        applies = (
            up is not None
            and bridge.secondary_bus is not None
            and up.pcie_type is not None
            and up.pcie_type != PCI_EXP_TYPE_PCI_BRIDGE
        )
        if applies and bridge.secondary_bus is not None:
            return (Rid(bridge.rid.segment, bridge.secondary_bus, 0),)
        return (bridge.rid,)
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
