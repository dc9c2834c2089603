"""Preservation records (backed by the model only: no real capture of IOMMU records exists).

The model writes the records with its own layouts (tests.kernelmodel.layout); these tests read them
back with vtdlud's ABI mirror, so each reading checks the other."""

from __future__ import annotations

import pytest

from tests.kernelmodel.kernel import PreserveError, SimHost
from tests.kernelmodel.records import read_incoming
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from vtdlud.model.abi import (
    IOMMU_SER_FLAG_DELETED,
    V1,
    V2,
    IommuArrayHdrSer,
    IommuDeviceSerV1,
    IommuDomainSer,
    IommuHwSerV1,
    IommuTypeSer,
    capacity_of,
    select_variant,
)
from vtdlud.model.tables import context_table_bit

VFIO = "0000:00:05.0"


def hw_record(host: SimHost, unit: str = "dmar0") -> IommuHwSerV1:
    out = host.outgoing
    assert out is not None
    return hw_at(host, out.hw_slot[host.units[unit].reg_base])


def hw_at(host: SimHost, slot: int) -> IommuHwSerV1:
    return IommuHwSerV1.unpack(host.mem.read(slot, IommuHwSerV1.sizeof()))


def device_at(host: SimHost, slot: int) -> IommuDeviceSerV1:
    return IommuDeviceSerV1.unpack(host.mem.read(slot, IommuDeviceSerV1.sizeof()))


def preserved_host(scalable: bool = False, *bdfs: str) -> SimHost:
    host = q35_host(scalable=scalable)
    for bdf in bdfs or (VFIO,):
        host.vfio_attach(bdf)
        host.preserve(bdf)
    return host


@pytest.mark.parametrize("scalable", [False, True])
def test_a_preservation_adds_every_existing_context_table(scalable: bool) -> None:
    host = preserved_host(scalable)
    unit = host.units["dmar0"]
    rec = hw_record(host)
    assert set(rec.intel.context_table_bits) == set(unit.context_tables())
    assert (context_table_bit(0, 0x80) in rec.intel.context_table_bits) == scalable  # 00:1f.x
    assert (rec.token, rec.intel.phys_addr, rec.type) == (0xFED9_0000, 0xFED9_0000, 1)
    assert rec.intel.root_table == unit.root_table and rec.hdr.ref_count == 1
    for table in [unit.root_table, *unit.context_tables().values()]:
        assert table in host.mem.preserved


def test_a_table_allocated_later_joins_at_the_next_preservation() -> None:
    host = preserved_host(False)
    late = host.hotplug(0, 0x30, 0, driver="e1000e")
    bit = context_table_bit(0x30, 0)
    assert bit not in hw_record(host).intel.context_table_bits
    host.vfio_attach("0000:00:02.0")
    host.preserve("0000:00:02.0")
    assert bit in hw_record(host).intel.context_table_bits
    assert host.units["dmar0"].context_tables()[bit] in host.mem.preserved
    assert late.bdf not in host.preserved


def test_device_record_names_did_domain_hw_record_and_pasid_directory() -> None:
    host = preserved_host(True)
    out = host.outgoing
    assert out is not None
    unit, dev = host.units["dmar0"], host.device(VFIO)
    rec = device_at(host, out.device_slot[VFIO])
    domain = host.attached[VFIO]
    assert (rec.devid, rec.pci_domain_nr) == (dev.bus << 8 | dev.devfn, 0)
    assert rec.domain_iommu_ser.attachment_id == domain.dids[unit.reg_base]
    assert rec.domain_iommu_ser.iommu_phys == out.hw_slot[unit.reg_base]
    assert rec.domain_iommu_ser.domain_phys == out.domain_slot[domain]
    ctx = unit.read_context(dev.bus, dev.devfn)
    assert ctx is not None and rec.intel.pasid_table == ctx[0] & ~0xFFF
    assert rec.intel.max_pasid == 1 << 15
    slot = out.domain_slot[domain]
    dom = IommuDomainSer.unpack(host.mem.read(slot, IommuDomainSer.sizeof()))
    assert (dom.top_table_phys, dom.top_level, dom.vasz) == (domain.pgd, domain.agaw + 1, 48)
    for page in unit.pasid_pages(dev.bus, dev.devfn):
        assert page in host.mem.preserved


def test_ref_count_follows_devices_and_the_last_unpreserve_deletes() -> None:
    host = two_unit_host()
    for bdf in (VFIO, "0000:00:02.0", "0000:01:00.0"):  # two on dmar0, one on dmar1
        host.vfio_attach(bdf)
        host.preserve(bdf)
    out = host.outgoing
    assert out is not None
    slot = out.hw_slot[0xFED9_0000]
    assert hw_record(host).hdr.ref_count == 2 and hw_record(host, "dmar1").hdr.ref_count == 1
    host.unpreserve(VFIO)
    assert hw_at(host, slot).hdr.ref_count == 1
    assert hw_at(host, slot).intel.context_table_bits  # tables stay until the unit is released
    first_slot = min(out.devices.slots())
    host.vfio_attach(VFIO)
    host.preserve(VFIO)  # again: a new slot, the DELETED one is not reused
    assert out.device_slot[VFIO] > first_slot
    assert device_at(host, first_slot).hdr.flags & IOMMU_SER_FLAG_DELETED
    tables = list(host.units["dmar0"].context_tables().values())
    host.unpreserve(VFIO)
    host.unpreserve("0000:00:02.0")
    rec = hw_at(host, slot)
    assert rec.hdr.flags & IOMMU_SER_FLAG_DELETED and rec.hdr.ref_count == 0
    assert not rec.intel.context_table_bits
    assert not set(tables) & host.mem.preserved
    assert host.units["dmar0"].root_table not in host.mem.preserved
    assert 0xFED9_0000 not in out.hw_slot and hw_record(host, "dmar1").hdr.ref_count == 1
    host.unpreserve("0000:01:00.0")
    assert host.outgoing is None  # the last file went: the FLB and its arrays were freed
    assert out.flb_phys not in host.mem.preserved


def test_a_full_array_page_links_a_new_one() -> None:
    host = SimHost(seed=5)
    host.add_unit()
    bdfs = []
    for slot in range(1, 11):
        for func in range(8):
            bdfs.append(host.add_device(0, 0, slot, func, driver="vfio-pci").bdf)
    host.boot()
    for bdf in bdfs:
        host.vfio_attach(bdf)
        host.preserve(bdf)
    out = host.outgoing
    assert out is not None
    cap = capacity_of(IommuDeviceSerV1)
    assert cap == 72 and len(out.devices.pages) == 2
    first = IommuArrayHdrSer.unpack(host.mem.read(out.devices.pages[0], 16))
    assert (first.next_array_phys, first.nr_objects) == (out.devices.pages[1], cap)
    assert len(out.domains.pages) == 1 and capacity_of(IommuDomainSer) == 110
    inc = read_incoming(host.mem, out.flb_phys, "v1")
    assert inc.complete and len(inc.devices) == 80 and hw_record(host).hdr.ref_count == 80


@pytest.mark.parametrize("variant", [V1, V2])
def test_flb_variants_decode_with_the_abi_mirror(variant: object) -> None:
    host = q35_host(flb_variant="v1" if variant is V1 else "v2")
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    out = host.outgoing
    assert out is not None and out.compatible == variant.compatible  # type: ignore[attr-defined]
    flb_cls = variant.flb  # type: ignore[attr-defined]
    flb = flb_cls.unpack(host.mem.read(out.flb_phys, flb_cls.sizeof()))
    assert flb.device_array_phys == out.devices.first
    assert flb.iommu_array_phys == out.hw.first
    version = getattr(flb, "version", None)
    assert select_variant(out.compatible, version) is variant
    inc = read_incoming(host.mem, out.flb_phys, "v1" if variant is V1 else "v2")
    assert [r["type"] for _, r in inc.hw] == [IommuTypeSer.IOMMU_INTEL]


def test_the_kernel_refuses_what_it_cannot_preserve() -> None:
    host = q35_host()
    with pytest.raises(PreserveError, match="not bound to vfio-pci"):
        host.preserve("0000:00:02.0")
    with pytest.raises(PreserveError, match="not attached to an iommufd HWPT"):
        host.preserve(VFIO)  # vfio-pci, but still in its default domain
    host.vfio_attach(VFIO)
    host.device(VFIO).pri_enabled = True
    with pytest.raises(PreserveError, match="page requests"):
        host.preserve(VFIO)
    host.device(VFIO).pri_enabled = False
    host.legacy_group_users.add(VFIO)
    with pytest.raises(PreserveError, match="legacy VFIO group"):
        host.preserve(VFIO)
    assert host.outgoing is None
    with pytest.raises(PreserveError, match="is not preserved"):
        host.unpreserve(VFIO)


def test_a_vf_in_the_upper_half_sets_an_odd_bit_in_scalable_mode() -> None:
    """SR-IOV VFs at devfn >= 0x80 live in the upper context table (scalable mode)."""
    host = SimHost(seed=9)
    host.add_unit(scalable=True)
    host.add_device(0, 0x30, 0, driver="ixgbe")  # the PF: lower table, walkable bus
    vf = host.add_device(0, 0x30, 0x10, 1, driver="vfio-pci")  # devfn 0x81
    host.boot()
    host.vfio_attach(vf.bdf)
    host.preserve(vf.bdf)
    out = host.outgoing
    assert out is not None
    bits = hw_record(host).intel.context_table_bits
    assert {context_table_bit(0x30, 0), context_table_bit(0x30, 0x81)} <= set(bits)
    assert context_table_bit(0x30, 0x81) % 2 == 1
    assert device_at(host, out.device_slot[vf.bdf]).devid == 0x3081
