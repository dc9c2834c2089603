"""Kexec in the model: the old kernel's shutdown, the KHO/LUO handover and the new kernel's
restore (backed by the model only: no real capture of a live update exists)."""

from __future__ import annotations

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.kernelmodel.iommu import PRESENT, SM_PRE
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.kho import LuoGeneration
from tests.kernelmodel.records import read_incoming
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from tests.sim import codes, status_json
from vtdlud.host.kho import read_kho
from vtdlud.host.root import HostRoot
from vtdlud.model.tables import context_table_bit

VFIO = "0000:00:05.0"
BEHIND_BRIDGE = "0000:05:01.0"


def root_halves(host: SimHost, unit: str = "dmar0") -> set[int]:
    return set(host.units[unit].context_tables())


def bits(host: SimHost, unit: str = "dmar0") -> set[int]:
    out = host.outgoing
    assert out is not None
    return out.bits(out.hw_slot[host.units[unit].reg_base])


def test_shutdown_clears_unpreserved_devices_and_their_aliases() -> None:
    host = q35_host()
    host.vfio_attach(BEHIND_BRIDGE)
    host.preserve(BEHIND_BRIDGE)
    unit = host.units["dmar0"]
    own = unit.read_context(5, 1 << 3)
    host.shutdown()
    assert unit.read_context(5, 1 << 3) == own  # the preserved device keeps its entry
    assert unit.read_context(5, 0) == (0, 0)  # its alias, shared with 05:02.0, is gone
    assert unit.read_context(0, 2 << 3) == (0, 0)
    assert root_halves(host) == bits(host)


def test_shutdown_clears_pre_and_drops_tables_allocated_after_preservation() -> None:
    host = q35_host(scalable=True)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    late = host.hotplug(0, 0x30, 0, driver="e1000e")
    unit = host.units["dmar0"]
    addr = unit.context_addr(0, 5 << 3)
    assert addr is not None
    host.mem.set_u64(addr, host.mem.u64(addr) | SM_PRE)  # as if page requests were on
    assert context_table_bit(0x30, 0) in root_halves(host) - bits(host)
    host.shutdown()
    assert host.mem.u64(addr) & (SM_PRE | PRESENT) == PRESENT
    assert root_halves(host) == bits(host)
    assert unit.read_context(late.bus, late.devfn) is None


@pytest.mark.parametrize("scalable", [False, True])
def test_the_new_kernel_restores_preserved_state(scalable: bool) -> None:
    host = q35_host(scalable=scalable)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    host.hotplug(0, 0x30, 0, driver="e1000e")
    unit = host.units["dmar0"]
    dev = host.device(VFIO)
    root, entry = unit.root_table, unit.read_context(dev.bus, dev.devfn)
    did = host.attached[VFIO].dids[unit.reg_base]
    old_late = unit.context_tables()[context_table_bit(0x30, 0)]
    flb = host.outgoing.flb_phys if host.outgoing else 0
    host.kexec(release="6.13.0-next")
    assert unit.root_table == root and unit.read_context(dev.bus, dev.devfn) == entry
    assert host.attached[VFIO].dids[unit.reg_base] == did and did in unit.dids
    others = {d.dids[unit.reg_base] for b, d in host.attached.items() if b != VFIO}
    assert did not in others
    assert unit.context_tables()[context_table_bit(0x30, 0)] != old_late  # a new table
    inc = read_incoming(host.mem, flb, host.flb_variant)
    (hw,) = [r for _, r in inc.hw]
    assert hw["intel.restored"] == 1 and inc.complete
    assert host.release == "6.13.0-next" and host.liveupdate_num == 1


def test_a_kexec_without_preserved_devices_starts_afresh() -> None:
    host = q35_host()
    root = host.units["dmar0"].root_table
    host.kexec()
    assert host.incoming is None and host.handed_over is not None
    assert not host.handed_over.flbs
    assert host.units["dmar0"].root_table != root
    assert "0000:00:02.0" in host.attached


@pytest.mark.parametrize("generation", list(LuoGeneration))
@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_vtdlud_reads_the_handover(generation: LuoGeneration, variant: str, tmp_path: Path) -> None:
    host = q35_host(scalable=True, luo_generation=generation, flb_variant=variant)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    before = read_kho(HostRoot(write_tree(host, tmp_path / "before")), host.mem.read_phys)
    assert not before.problems and before.incoming is None
    assert before.outgoing is not None and before.outgoing.luo_state is not None
    assert before.outgoing.luo_state.iommu is None  # the FLB list is written at kexec only
    host.kexec()
    state = read_kho(HostRoot(write_tree(host, tmp_path / "after")), host.mem.read_phys)
    assert not state.problems
    assert state.incoming is not None and state.outgoing is not None
    luo_in, luo_out = state.incoming.luo_state, state.outgoing.luo_state
    assert luo_in is not None and luo_out is not None
    assert (luo_in.liveupdate_num, luo_out.liveupdate_num) == (0, 1)
    if generation is LuoGeneration.FDT_V1:
        assert luo_in.iommu is None
        return
    iommu = luo_in.iommu
    assert iommu is not None and not isinstance(iommu, type(None))
    assert getattr(iommu, "compatible", None) == host.flb_compatible
    sessions = luo_in.sessions
    assert isinstance(sessions, tuple)
    (session,) = sessions
    assert session.files is not None
    assert {f.compatible for f in session.files} == {"iommufd-v1", "memfd-v1", "vfio-pci-v1"}


def test_kcore_holds_the_pages_the_model_uses(tmp_path: Path) -> None:
    host = q35_host()
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    host.kexec()
    tree = write_tree(host, tmp_path)
    with open(tree / "proc/kcore", "rb") as f:
        elf = ELFFile(f)
        assert elf.header["e_type"] == "ET_CORE" and elf.header["e_machine"] == "EM_X86_64"
        covered: dict[int, bytes] = {}
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            data = seg.data()
            for off in range(0, len(data), 4096):
                covered[seg["p_paddr"] + off] = data[off : off + 4096]
    assert covered == host.mem.snapshot()
    assert host.handed_over is not None and host.handed_over.flbs
    assert host.handed_over.flbs[0].data & ~0xFFF in covered


@pytest.mark.parametrize("scalable", [False, True])
def test_status_reads_both_sides_of_the_kexec(scalable: bool, tmp_path: Path) -> None:
    host = q35_host(scalable=scalable)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    before = status_json(write_tree(host, tmp_path / "before"))
    host.kexec()
    after = status_json(write_tree(host, tmp_path / "after"))
    assert codes(before) == [] and codes(after) == []
    assert before["units"][0]["root_table"] == after["units"][0]["root_table"]
    assert before["host"]["boot_id"] != after["host"]["boot_id"]


def test_a_second_live_update_chains() -> None:
    host = q35_host()
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    host.kexec()
    assert host.outgoing is None  # the new kernel preserved nothing yet
    host.preserve(VFIO)  # the VMM retrieved the device: preserve it again
    host.kexec()
    assert host.liveupdate_num == 2 and host.handed_over is not None
    flb = host.handed_over.flbs[0].data
    (hw,) = [r for _, r in read_incoming(host.mem, flb, host.flb_variant).hw]
    assert hw["intel.restored"] == 1
    assert hw["intel.root_table"] == host.units["dmar0"].root_table
    assert host.units["dmar0"].read_context(0, 5 << 3) is not None


def radix_pages(host: SimHost, root: int) -> set[int]:
    """Decode the kho-v2 tracker (include/linux/kho/abi/kexec_handover.h) from memory."""
    pages: set[int] = set()

    def walk(node: int, level: int, prefix: int) -> None:
        if level == 0:
            bitmap = host.mem.read(node, 4096)
            for byte in (i for i, b in enumerate(bitmap) if b):
                for bit in (byte * 8 + j for j in range(8) if bitmap[byte] >> j & 1):
                    key = prefix << 15 | bit
                    assert key >> 52 == 1  # order 0
                    pages.add((key & ((1 << 52) - 1)) << 12)
            return
        for i in range(512):
            child = host.mem.u64(node + 8 * i)
            if child:
                walk(child, level - 1, prefix << 9 | i)

    walk(root, 5, 0)
    return pages


def test_the_preserved_memory_map_lists_every_preserved_page(tmp_path: Path) -> None:
    """Before kexec the records are found through KHO's map (DESIGN §2): it must be exact."""
    host = q35_host(scalable=True)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    tree = write_tree(host, tmp_path)
    state = read_kho(HostRoot(tree), host.mem.read_phys)
    assert state.outgoing is not None and state.outgoing.root is not None
    root = getattr(state.outgoing.root, "preserved_memory_map", None)
    assert root == host.kho.radix_root
    assert radix_pages(host, root) == host.mem.preserved
    out = host.outgoing
    assert out is not None and out.hw.first in host.mem.preserved
