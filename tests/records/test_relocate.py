"""vtdlud.model.relocate: the records at the physical addresses the gate recorded, proven by their
signature, or the reason they are not there.

Model-backed: the records are the kernel model's (vtdlud.sim), written with the ABI mirror's
layouts (samikhawaja/linux include/linux/kho/abi/iommu.h, v1), and read back through its memory.
"""

from __future__ import annotations

import dataclasses

import pytest

from vtdlud.model.abi import IOMMU_SER_FLAG_DELETED, PAGE_SIZE, V1, IommuHwSerV1
from vtdlud.model.records import ChainHeads, PreservedState, walk_records
from vtdlud.model.relocate import (
    RecordAddresses,
    UnitRecordAddress,
    locate_at,
    record_addresses,
    signature_problem,
)
from vtdlud.sim.kernel import SimHost
from vtdlud.sim.scenarios import linux72_host

UNIT = 0xFED9_0000
VFIO = "0000:00:05.0"


def _setup() -> tuple[SimHost, PreservedState, RecordAddresses]:
    host = linux72_host(seed=9)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    assert host.outgoing is not None
    state = walk_records(host.mem.read_phys, host.outgoing.flb_phys, V1, located_by="signature")
    found = record_addresses(state, [UNIT, 0xFEE0_0000])
    assert found is not None
    return host, state, found


def test_record_addresses_name_the_slot_and_its_pages() -> None:
    _, state, found = _setup()
    assert found.variant == "v1" and found.flb_phys == state.flb_phys
    assert state.heads is not None and found.heads == state.heads
    [unit] = found.units  # the second unit has no record
    hw = state.find_hw(UNIT)[0]
    assert unit == UnitRecordAddress(UNIT, hw.phys, unit.pages)
    [dev] = state.live_devices()
    domain = dev.record.domain_iommu_ser.domain_phys
    assert set(unit.pages) == {
        hw.phys & ~(PAGE_SIZE - 1),
        dev.phys & ~(PAGE_SIZE - 1),
        domain & ~(PAGE_SIZE - 1),
    }
    assert record_addresses(state, [0x1234_0000]) is None
    assert signature_problem(state, [UNIT]) is None


def test_located_after_the_kexec_at_the_same_addresses() -> None:
    host, _, found = _setup()
    host.kexec()
    located = locate_at(host.mem.read_phys, found, [UNIT])
    assert isinstance(located, PreservedState) and located.located_by == "ledger"
    [hw] = located.find_hw(UNIT)
    assert hw.phys == found.units[0].hw_record and isinstance(hw.record, IommuHwSerV1)
    assert hw.record.intel.restored == 1


def test_every_way_the_addresses_can_fail() -> None:
    host, _, found = _setup()
    host.kexec()
    read = host.mem.read_phys
    unit = found.units[0]
    bad_variant = dataclasses.replace(found, variant="v9")
    assert "layout 'v9'" in str(locate_at(read, bad_variant, [UNIT]))
    gone = dataclasses.replace(found, heads=ChainHeads((0x7FFF_F000_0000,), (), ()))
    assert "chain" in str(locate_at(read, gone, [UNIT]))
    not_a_slot = dataclasses.replace(
        found, units=(dataclasses.replace(unit, hw_record=unit.hw_record + 8),)
    )
    assert "is not a slot" in str(locate_at(read, not_a_slot, [UNIT]))
    assert "not in this kernel" in str(locate_at(read, found, [0xFEE0_0000]))
    more = dataclasses.replace(
        found, units=(dataclasses.replace(unit, pages=(*unit.pages, 0x1000)),)
    )
    assert "are not in the chains" in str(locate_at(read, more, [UNIT]))
    host.mem.write(unit.hw_record + 24 + 8, (0x1).to_bytes(8, "little"))  # intel.phys_addr
    why = locate_at(read, found, [UNIT])
    assert isinstance(why, str) and "intel.phys_addr 0x1 != token" in why and "reused" in why
    host.mem.write(unit.hw_record + 4, IOMMU_SER_FLAG_DELETED.to_bytes(4, "little"))
    assert "DELETED" in str(locate_at(read, found, [UNIT]))


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (8, 0xDEAD_0000, "no DMAR unit's register base"),  # token
        (16, 7, "type 7"),  # type
    ],
)
def test_signature_problem(offset: int, value: int, match: str) -> None:
    host, _, found = _setup()
    host.mem.write(found.units[0].hw_record + offset, value.to_bytes(8, "little"))
    assert host.outgoing is not None
    again = walk_records(host.mem.read_phys, host.outgoing.flb_phys, V1)
    why = signature_problem(again, [UNIT])
    assert why is not None and match in why
    broken = walk_records(host.mem.read_phys, 0x7FFF_F000_0000, V1)
    assert "chain is broken" in str(signature_problem(broken, [UNIT]))
