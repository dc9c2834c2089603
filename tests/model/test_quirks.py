"""The DMA-alias quirks of drivers/pci/quirks.c (Linux 7.2.13) in the alias walk (issue #14
item 1): the ``dma_alias_mask`` fixups and the bridge ``dev_flags`` fixups.  Synthetic
topologies; the expected RIDs are worked out from pci_for_each_dma_alias() by hand."""

from __future__ import annotations

from vtdlud.model.alias import DmaAliases, PciNode, Rid
from vtdlud.model.pci import (
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_ROOT_PORT,
)
from vtdlud.model.quirks import QUIRKS, PciIds, Rule, quirk_alias_devfns
from vtdlud.parse.sysfs import parse_bdf

ROOT_PORT = "0000:00:1c.0"


def _node(
    bdf: str,
    parent: str | None,
    pcie_type: int | None,
    sec: int | None = None,
    ids: PciIds | None = None,
) -> PciNode:
    b = parse_bdf(bdf)
    return PciNode(Rid(b.segment, b.bus, b.devfn), parent, pcie_type, sec, ids)


def _rids(walk: DmaAliases, bdf: str) -> list[str] | None:
    got = walk.of(bdf)
    return None if got is None else [str(r) for r in got]


def _endpoint_behind_root_port(bdf: str, ids: PciIds) -> dict[str, PciNode]:
    bus = parse_bdf(bdf).bus
    return {
        ROOT_PORT: _node(ROOT_PORT, None, PCI_EXP_TYPE_ROOT_PORT, bus),
        bdf: _node(bdf, ROOT_PORT, PCI_EXP_TYPE_ENDPOINT, ids=ids),
    }


def test_marvell_9123_function0_aliases_function1_only() -> None:
    ids = PciIds(0x1B4B, 0x9123)
    fn0 = _endpoint_behind_root_port("0000:06:00.0", ids)
    fn1 = _endpoint_behind_root_port("0000:06:00.1", ids)
    assert _rids(DmaAliases(fn0), "0000:06:00.0") == ["0000:06:00.0", "0000:06:00.1"]
    assert _rids(DmaAliases(fn1), "0000:06:00.1") == ["0000:06:00.1"]
    assert DmaAliases(fn0).own("0000:06:00.0") == DmaAliases(fn0).of("0000:06:00.0")


def test_ricoh_function0_and_fixed_adaptec_alias() -> None:
    ricoh = _endpoint_behind_root_port("0000:07:00.3", PciIds(0x1180, 0xE832))
    assert _rids(DmaAliases(ricoh), "0000:07:00.3") == ["0000:07:00.3", "0000:07:00.0"]
    adaptec = PciIds(0x9005, 0x0285, subsystem=(0x9005, 0x02BB))
    assert quirk_alias_devfns(adaptec, 0x70) == (0x08,)  # devfn 01.0
    other = PciIds(0x9005, 0x0285, subsystem=(0x9005, 0x0001))
    assert quirk_alias_devfns(other, 0x70) == ()
    assert quirk_alias_devfns(PciIds(0x9005, 0x0285), 0x70) is None  # subsystem not read


def test_ntb_quirks() -> None:
    assert quirk_alias_devfns(PciIds(0x10B5, 0x87B0), 0) == tuple(range(256))  # PLX
    switchtec = PciIds(0x11F8, 0x8531, pci_class=0x068000)
    assert quirk_alias_devfns(switchtec, 0) is None  # proxy IDs from MMIO: not visible
    assert quirk_alias_devfns(PciIds(0x11F8, 0x8531, pci_class=0x020000), 0) == ()
    mic = quirk_alias_devfns(PciIds(0x8086, 0x2260), 0)
    assert mic == (0x80, 0x88, 0x93)


def test_vmd_domain_is_not_visible() -> None:
    nodes = {"10000:01:00.0": PciNode(Rid(0x10000, 1, 0), None, PCI_EXP_TYPE_ENDPOINT, None)}
    assert DmaAliases(nodes).of("10000:01:00.0") is None


def test_pcie_bridge_alias_flag() -> None:
    """ASM1083 (1b21:1080), a conventional bridge below a root port: it aliases as its
    secondary bus, devfn 00.0, not as its own RID."""
    asm = PciIds(0x1B21, 0x1080)
    nodes = {
        ROOT_PORT: _node(ROOT_PORT, None, PCI_EXP_TYPE_ROOT_PORT, 3),
        "0000:03:00.0": _node("0000:03:00.0", ROOT_PORT, None, 4, asm),
        "0000:04:02.0": _node("0000:04:02.0", "0000:03:00.0", None),
    }
    assert _rids(DmaAliases(nodes), "0000:04:02.0") == ["0000:04:02.0", "0000:04:00.0"]
    # On a root bus the quirk does not apply: the bridge's own RID.
    nodes = {
        "0000:00:1e.0": _node("0000:00:1e.0", None, None, 4, asm),
        "0000:04:02.0": _node("0000:04:02.0", "0000:00:1e.0", None),
    }
    assert _rids(DmaAliases(nodes), "0000:04:02.0") == ["0000:04:02.0", "0000:00:1e.0"]


def test_xlate_root_stops_the_walk_and_no_alias_bridge_adds_nothing() -> None:
    thrx2 = PciIds(0x14E4, 0x9084)
    nodes = {
        "0000:00:00.0": _node("0000:00:00.0", None, None, 1),  # conventional: would alias
        "0000:01:00.0": _node("0000:01:00.0", "0000:00:00.0", PCI_EXP_TYPE_ROOT_PORT, 2, thrx2),
        "0000:02:00.0": _node("0000:02:00.0", "0000:01:00.0", PCI_EXP_TYPE_ENDPOINT),
    }
    walk = DmaAliases(nodes)
    assert _rids(walk, "0000:02:00.0") == ["0000:02:00.0"]
    assert walk.bridges("0000:02:00.0") == ()
    aspeed = PciIds(0x1A03, 0x1150)
    nodes = {
        ROOT_PORT: _node(ROOT_PORT, None, PCI_EXP_TYPE_ROOT_PORT, 3),
        "0000:03:00.0": _node("0000:03:00.0", ROOT_PORT, PCI_EXP_TYPE_PCI_BRIDGE, 4, aspeed),
        "0000:04:00.0": _node("0000:04:00.0", "0000:03:00.0", None),
    }
    assert _rids(DmaAliases(nodes), "0000:04:00.0") == ["0000:04:00.0"]


def test_bridges_that_added_an_alias() -> None:
    nodes = {
        ROOT_PORT: _node(ROOT_PORT, None, PCI_EXP_TYPE_ROOT_PORT, 3),
        "0000:03:00.0": _node("0000:03:00.0", ROOT_PORT, PCI_EXP_TYPE_DOWNSTREAM, 4),
        "0000:04:00.0": _node("0000:04:00.0", "0000:03:00.0", PCI_EXP_TYPE_PCI_BRIDGE, 5),
        "0000:05:01.0": _node("0000:05:01.0", "0000:04:00.0", None),
    }
    assert DmaAliases(nodes).bridges("0000:05:01.0") == ("0000:04:00.0",)


def test_table_names_its_fixups() -> None:
    assert all(q.rule in Rule for q in QUIRKS)
    assert {q.vendor for q in QUIRKS if q.rule is Rule.FUNC1} >= {0x1B4B, 0x197B, 0x1103}
