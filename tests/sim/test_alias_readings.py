"""Two readings of ``pci_for_each_dma_alias()`` agree: the kernel model's (tests.kernelmodel.alias)
and the auditor's (vtdlud.model.alias), on hand-made quirk topologies and random trees.

The auditor reads the host the model wrote (sysfs IDs, config space) for the first cases, and
the same devices handed over as PciNodes for the random ones.  A disagreement means one of them
misreads the kernel (issue #14: see the README's account of the ones found).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.pci import (
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_ROOT_PORT,
    Topology,
)
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.preconditions import pci_nodes
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.alias import DmaAliases, PciNode, Rid
from vtdlud.model.policy import Policy
from vtdlud.model.quirks import PciIds

QUIRKED = [
    (0x1B4B, 0x9123),  # Marvell: function 1
    (0x1180, 0xE832),  # Ricoh: function 0
    (0x8086, 0x2260),  # MIC x200
    (0x10B5, 0x87B0),  # PLX NTB: every devfn
    (0x8086, 0x10D3),  # no quirk
]
BRIDGES = [
    (0x1B21, 0x1080),  # ASM1083: PCIE_BRIDGE_ALIAS when below a PCIe port
    (0x1A03, 0x1150),  # ASPEED: PCIe-to-PCI bridge without alias
    (0x14E4, 0x9084),  # XLATE_ROOT
    (0x1B36, 0x000E),  # QEMU pcie-pci-bridge
]


def _quirk_host() -> SimHost:
    host = SimHost(seed=51)
    host.add_unit()
    host.add_device(0, 0, 0x1C, 0, pcie_type=PCI_EXP_TYPE_ROOT_PORT, secondary_bus=6)
    for func in range(2):
        host.add_device(0, 6, 0, func, vendor=0x1B4B, device=0x9123, driver="ahci")
    host.add_device(0, 0, 0x1D, 0, pcie_type=PCI_EXP_TYPE_ROOT_PORT, secondary_bus=7)
    host.add_device(0, 7, 0, 0, vendor=0x1B21, device=0x1080, pcie_type=None, secondary_bus=8)
    host.add_device(0, 8, 3, 0, vendor=0x1180, device=0xE832, pcie_type=None, driver="sdhci")
    host.add_device(0, 8, 3, 2, vendor=0x1180, device=0xE832, pcie_type=None, driver="sdhci")
    host.boot()
    return host


def test_readings_agree_on_a_quirk_host_read_back_from_its_tree(tmp_path: Path) -> None:
    host = _quirk_host()
    snap = take_snapshot(HostRoot(write_tree(host, tmp_path)))
    auditor = DmaAliases(pci_nodes(snap))
    for bdf in host.topology.devices:
        mine = [tuple(r) for r in host.topology.aliases(bdf)]
        theirs = auditor.of(bdf)
        assert theirs is not None and [tuple(r) for r in theirs] == mine, bdf
    # 08:03.2 DMAs as 08:03.0 (Ricoh), then as 08:00.0 (the ASM1083 below a root port).
    assert [tuple(r) for r in host.topology.aliases("0000:08:03.2")] == [
        (0, 8, 0x1A), (0, 8, 0x18), (0, 8, 0x00)
    ]  # fmt: skip
    # The kernel's groups, built by the model, are what the auditor expects: nothing unknown.
    host.vfio_attach("0000:06:00.0")
    host.vfio_attach("0000:06:00.1")
    assert host.attached["0000:06:00.0"] is host.attached["0000:06:00.1"]  # one group
    report = evaluate(take_snapshot(HostRoot(write_tree(host, tmp_path / "b"))), Policy())
    assert "VTD028" not in {f.code for f in report.findings}


@st.composite
def _trees(draw: st.DrawFn) -> Topology:
    topo = Topology()
    buses = [0]
    for i in range(draw(st.integers(1, 10))):
        bus = draw(st.sampled_from(buses))
        is_bridge = draw(st.booleans()) and len(buses) < 12
        kind = draw(
            st.sampled_from(
                [
                    None,
                    PCI_EXP_TYPE_ENDPOINT,
                    PCI_EXP_TYPE_ROOT_PORT,
                    PCI_EXP_TYPE_PCI_BRIDGE,
                    PCI_EXP_TYPE_PCIE_BRIDGE,
                ]
            )
        )
        ids = draw(st.sampled_from(BRIDGES if is_bridge else QUIRKED))
        sec = max(buses) + 1 if is_bridge else None
        slot, func = draw(st.integers(0, 3)), draw(st.integers(0, 2))
        try:
            topo.add_function(
                0,
                bus,
                slot,
                func,
                vendor=ids[0],
                device=ids[1],
                pcie_type=kind,
                secondary_bus=sec,
                driver=f"d{i}",
            )
        except ValueError:
            continue  # that BDF is taken
        if sec is not None:
            buses.append(sec)
    return topo


@settings(max_examples=200, deadline=None)
@given(_trees())
def test_readings_agree_on_random_trees(topo: Topology) -> None:
    nodes = {
        bdf: PciNode(
            Rid(d.segment, d.bus, d.devfn),
            d.parent,
            d.pcie_type,
            d.secondary_bus,
            PciIds(d.vendor, d.device, d.subsystem, d.pci_class),
        )
        for bdf, d in topo.devices.items()
    }
    auditor = DmaAliases(nodes)
    for bdf in topo.devices:
        theirs = auditor.of(bdf)
        assert theirs is not None
        assert [tuple(r) for r in theirs] == [tuple(r) for r in topo.aliases(bdf)], bdf
        assert [tuple(r) for r in auditor.own(bdf) or ()] == [tuple(r) for r in topo.own_rids(bdf)]
