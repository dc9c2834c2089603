"""Root/context/PASID tables of the model (backed by the model only; the capture replay in
test_capture_replay.py checks the same rules against real kernels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernelmodel.iommu import FLPT_DEFAULT_DID, PGTT_PASS_THROUGH, TT_PASS_THROUGH
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.memory import OutsideRam, PhysMemory
from tests.kernelmodel.pci import config_space
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from tests.kernelmodel.tree import write_tree
from tests.sim import translation, tree_contents
from vtdlud.model.pci import PCI_EXP_TYPE_PCI_BRIDGE
from vtdlud.model.tables import context_table_bit
from vtdlud.parse.dmar import parse_dmar
from vtdlud.parse.pciconfig import parse_pci_config


def rows_by_bdf(host: SimHost) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for unit in translation(host).units:
        for row in unit.rows:
            out.setdefault(row.bdf, []).append(row)
    return out


def test_legacy_programs_the_bridge_alias_scalable_does_not() -> None:
    legacy, scalable = q35_host(), q35_host(scalable=True)
    assert "05:00.0" in rows_by_bdf(legacy)
    assert "05:00.0" not in rows_by_bdf(scalable)
    unit = legacy.units["dmar0"]
    ctx = unit.read_context(5, 0)
    assert ctx is not None and ctx == unit.read_context(5, 1 << 3)  # same DID and table as 05:01.0


def test_scalable_walk_stops_a_bus_at_a_missing_lower_table() -> None:
    """A bus whose devices are all at devfn >= 0x80 has an upper table but prints no row."""
    host = SimHost(seed=2)
    host.add_unit(scalable=True)
    host.add_device(0, 0, 0)
    host.add_device(0, 0x20, 0x10)  # devfn 0x80: upper table only
    host.boot()
    unit = host.units["dmar0"]
    assert context_table_bit(0x20, 0x80) in unit.context_tables()
    assert context_table_bit(0x20, 0) not in unit.context_tables()
    assert "20:10.0" not in rows_by_bdf(host)
    host.hotplug(0, 0x20, 0x01)  # a device in the lower half makes the bus walkable
    assert {"20:01.0", "20:10.0"} <= set(rows_by_bdf(host))


def test_identity_domains_use_pass_through_and_did_1() -> None:
    legacy = q35_host(identity=True)
    ctx = legacy.units["dmar0"].read_context(0, 2 << 3)
    assert ctx is not None
    lo, hi = ctx
    assert (lo >> 2) & 3 == TT_PASS_THROUGH and (hi >> 8) & 0xFFFF == FLPT_DEFAULT_DID
    scalable = q35_host(scalable=True, identity=True)
    (row,) = rows_by_bdf(scalable)["00:02.0"]
    assert row.pasid_entry.pgtt == PGTT_PASS_THROUGH  # type: ignore[attr-defined]
    assert row.pasid_entry.did == FLPT_DEFAULT_DID  # type: ignore[attr-defined]


def test_vfio_attach_reuses_the_freed_did_and_remaps_aliases() -> None:
    host = q35_host()
    unit = host.units["dmar0"]
    default = host.attached["0000:00:05.0"]
    did = default.dids[unit.reg_base]
    domain = host.vfio_attach("0000:00:05.0")
    assert domain.dids[unit.reg_base] == did  # freed by the block, then allocated again
    assert unit.read_context(0, 5 << 3) == (domain.pgd | 1, did << 8 | domain.agaw)
    vfio = host.vfio_attach("0000:05:02.0")  # behind the PCIe-to-PCI bridge
    alias = unit.read_context(5, 0)
    assert alias is not None and alias[0] == vfio.pgd | 1  # the alias follows the new domain


def test_dids_are_allocated_in_probe_order_per_unit() -> None:
    host = two_unit_host()
    dmar0, dmar1 = host.units["dmar0"], host.units["dmar1"]
    assert min(dmar0.dids) == min(dmar1.dids) == 2
    assert host.attached["0000:01:00.0"].dids == {dmar1.reg_base: 2}


def test_same_seed_same_tree_other_seed_other_addresses(tmp_path: Path) -> None:
    def build(seed: int, where: str) -> dict[str, bytes]:
        host = q35_host(seed=seed)
        host.vfio_attach("0000:00:05.0")
        host.preserve("0000:00:05.0")
        host.kexec()
        return tree_contents(write_tree(host, tmp_path / where))

    a, b, c = build(7, "a"), build(7, "b"), build(8, "c")
    assert a == b
    assert a["proc/kcore"] != c["proc/kcore"]


def test_rewriting_a_tree_is_stable(tmp_path: Path) -> None:
    host = q35_host(scalable=True)
    host.vfio_attach("0000:00:05.0")
    host.preserve("0000:00:05.0")
    first = tree_contents(write_tree(host, tmp_path / "1"))
    assert tree_contents(write_tree(host, tmp_path / "2")) == first


def test_config_space_says_what_the_alias_walk_needs() -> None:
    host = q35_host()
    bridge = parse_pci_config(config_space(host.device("0000:04:00.0"), host.topology))
    assert bridge.pcie_type == PCI_EXP_TYPE_PCI_BRIDGE and bridge.secondary_bus == 5
    behind = parse_pci_config(config_space(host.device("0000:05:01.0"), host.topology))
    assert behind.pcie_type is None and not behind.is_bridge
    host.device("0000:00:05.0").pri_enabled = True
    ep = parse_pci_config(config_space(host.device("0000:00:05.0"), host.topology))
    assert ep.pri_enabled is True and ep.ats_enabled is False


def test_dmar_table_lists_units_include_all_last(tmp_path: Path) -> None:
    host = two_unit_host()
    dmar = parse_dmar((write_tree(host, tmp_path) / "sys/firmware/acpi/tables/DMAR").read_bytes())
    assert dmar.checksum_ok
    first, last = dmar.drhds
    assert (first.address, first.include_all) == (0xFED9_0000, False)
    assert (last.address, last.include_all) == (0xFED9_1000, True)
    scoped = {s.bdf(0) for s in first.scopes}
    assert "0000:00:05.0" in scoped and "0000:01:00.0" not in scoped


def test_memory_reads_outside_ram_fail_and_unused_ram_reads_zero() -> None:
    mem = PhysMemory(((0x100000, 0x100000),), seed=1)
    page = mem.alloc()
    mem.write(page + 8, b"\x01")
    assert mem.read(page, 16) == bytes(8) + b"\x01" + bytes(7)
    assert mem.read(0x1F0000, 8) == bytes(8)
    with pytest.raises(OutsideRam):
        mem.read(0x200000 - 4, 8)
    with pytest.raises(ValueError, match="unallocated"):
        mem.write(0x1F0000, b"x")
