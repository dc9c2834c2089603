"""walk_records: the FLB and its three chains in a fake memory built with the ABI mirror's pack().

Backed only by the layouts of include/linux/kho/abi/iommu.h (reference §1.3/§1.4): no real
capture of these records exists.
"""

from __future__ import annotations

import pytest

from tests.records import (
    UNIT_A,
    UNIT_B,
    Layout,
    PageMemory,
    device_v1,
    device_v2,
    domain,
    hw_v1,
    hw_v2,
    slot,
    write_chain,
    write_flb,
)
from vtdlud.errors import ParseError
from vtdlud.model.abi import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    PAGE_SIZE,
    V1,
    V2,
    V2_ASSUMED_INTEL,
    IommuArrayHdrSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuDomainSer,
    IommuHwSerV1,
    IommuHwSerV2,
    IommuTypeSer,
    UnknownAbi,
)
from vtdlud.model.records import (
    Chain,
    ChainHeads,
    ProblemKind,
    RecordLimits,
    RefStatus,
    walk_from_heads,
    walk_records,
)


def test_full_pages_spill_to_a_second_page() -> None:
    mem = PageMemory()
    hw = write_chain(mem, [hw_v1(0xFED0_0000 + i * PAGE_SIZE) for i in range(40)])
    doms = write_chain(mem, [domain(0x7000_0000 + i * PAGE_SIZE) for i in range(120)])
    devs = write_chain(
        mem,
        [
            device_v1(i, i, slot(doms[0], 0, IommuDomainSer), slot(hw[0], 0, IommuHwSerV1))
            for i in range(80)
        ],
    )
    assert (len(hw), len(doms), len(devs)) == (2, 2, 2)
    flb = write_flb(mem, hw[0], doms[0], devs[0])
    state = walk_records(mem, flb, V1)
    assert state.complete and state.located_by == "flb" and state.variant is V1
    assert state.pages == {
        Chain.HW: tuple(hw),
        Chain.DOMAIN: tuple(doms),
        Chain.DEVICE: tuple(devs),
    }
    assert (len(state.hw), len(state.domains), len(state.devices)) == (40, 120, 80)
    # slot address = page + 16 + i * sizeof: 36 hw records fill the first page
    assert state.hw[35].phys == hw[0] + 16 + 35 * 112
    assert state.hw[36].phys == hw[1] + 16 and state.hw[36].index == 0
    assert state.hw[39].record.token == 0xFED0_0000 + 39 * PAGE_SIZE
    assert state.domains[110].page == doms[1]
    assert state.devices[72].phys == devs[1] + IOMMU_ARRAY_HDR_SER_SIZE
    assert state.flb is not None and state.flb.iommu_array_phys == hw[0]


def test_deleted_slots_stay_visible_and_references_resolve() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=3, deleted_device=2)
    # the third device's domain is deleted too; a fourth pointer lands inside a slot
    mem.write(layout.dom_slots[2], domain(deleted=True).hdr.pack())
    state = walk_records(mem, layout.flb, V1)
    assert state.complete
    assert len(state.devices) == 3 and len(state.live_devices()) == 2
    assert state.devices[2].deleted and not state.devices[0].deleted
    assert len(state.live_domains()) == 2
    dev0, dev2 = state.devices[0], state.devices[2]
    hw_ref = state.iommu_ref(dev0)
    assert hw_ref.status is RefStatus.OK and hw_ref.slot is not None
    assert hw_ref.slot.record.token == UNIT_A and hw_ref.phys == layout.hw_slots[0]
    dom_ref = state.domain_ref(dev2)
    assert dom_ref.status is RefStatus.DELETED and dom_ref.slot is not None
    assert state.find_hw(UNIT_B)[0].phys == layout.hw_slots[1]
    assert state.find_hw(0x1234) == []


@pytest.mark.parametrize(
    ("iommu_phys", "status"),
    [(0, RefStatus.NULL), (8, RefStatus.NOT_A_SLOT), (-1, RefStatus.NOT_A_SLOT)],
)
def test_reference_to_no_slot(iommu_phys: int, status: RefStatus) -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    target = {0: 0, 8: layout.hw_slots[0] + 8, -1: 0xDEAD_0000}[iommu_phys]
    mem.write(layout.dev_pages[0] + 16, device_v1(1, 1, layout.dom_slots[0], target).pack())
    state = walk_records(mem, layout.flb, V1)
    ref = state.iommu_ref(state.devices[0])
    assert ref.status is status and ref.slot is None and ref.phys == target


def test_v2_flb_with_intel_records_uses_the_assumed_layout() -> None:
    mem = PageMemory()
    layout = Layout(mem, v2_flb=True)
    state = walk_records(mem, layout.flb, V2)
    assert state.variant is V2_ASSUMED_INTEL and state.assumed and state.complete
    assert all(isinstance(s.record, IommuHwSerV1) for s in state.hw)
    assert all(isinstance(s.record, IommuDeviceSerV1) for s in state.devices)
    assert state.flb is not None and getattr(state.flb, "version", None) == 1


def test_v2_generic_records() -> None:
    mem = PageMemory()
    hw = write_chain(mem, [hw_v2(UNIT_A), hw_v2(UNIT_B)])
    doms = write_chain(mem, [domain()])
    devs = write_chain(
        mem, [device_v2(1, 5, slot(doms[0], 0, IommuDomainSer), slot(hw[0], 1, IommuHwSerV2))]
    )
    state = walk_records(mem, write_flb(mem, hw[0], doms[0], devs[0], v2=True), V2)
    assert state.variant is V2 and not state.assumed and state.complete
    assert isinstance(state.hw[1].record, IommuHwSerV2) and state.hw[1].phys == hw[0] + 16 + 24
    assert isinstance(state.devices[0].record, IommuDeviceSerV2)
    ref = state.iommu_ref(state.devices[0])
    assert ref.status is RefStatus.OK and ref.slot is state.hw[1]


def test_unknown_hw_type_and_version_are_unknown_results() -> None:
    mem = PageMemory()
    hw = write_chain(mem, [hw_v2(UNIT_A, hw_type=7)])
    doms, devs = write_chain(mem, []), write_chain(mem, [])
    state = walk_records(mem, write_flb(mem, hw[0], doms[0], devs[0], v2=True), V2)
    assert state.unknown is not None and "type 7" in state.unknown.reason
    assert state.hw == () and not state.complete
    flb = write_flb(mem, hw[0], doms[0], devs[0], v2=True)
    mem.set_u64(flb, 2)  # version 2
    state = walk_records(mem, flb, V2)
    assert state.unknown is not None and state.unknown.version == 2
    given = UnknownAbi("iommu-liveupdate-v9", None, "unknown compatible")
    state = walk_records(mem, flb, given)
    assert state.unknown is given and state.hw == ()


def test_empty_chains_are_complete() -> None:
    mem = PageMemory()
    pages = [write_chain(mem, [])[0] for _ in range(3)]
    state = walk_records(mem, write_flb(mem, *pages), V1)
    assert state.complete and state.hw == () and state.variant is V1


# --- corrupt chains ------------------------------------------------------------------------


def _two_page_hw(mem: PageMemory) -> tuple[Layout, list[int]]:
    layout = Layout(mem, devices=1, extra_hw=40)  # 42 hw records: two pages
    assert len(layout.hw_pages) == 2
    return layout, layout.hw_pages


def test_page_pointing_to_itself_is_a_loop() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    mem.set_u64(layout.hw_pages[0], layout.hw_pages[0])
    state = walk_records(mem, layout.flb, V1)
    (problem,) = state.problems
    assert problem.kind is ProblemKind.LOOP and problem.chain is Chain.HW
    assert problem.page_phys == layout.hw_pages[0] == problem.linked_from
    assert len(state.hw) == 2  # the page's records, once
    assert len(state.devices) == 1  # the other chains are still walked


def test_page_pointing_back_to_an_earlier_page_is_a_loop() -> None:
    mem = PageMemory()
    _layout, (first, second) = _two_page_hw(mem)
    mem.set_u64(second, first)
    state = walk_records(mem, _layout.flb, V1)
    (problem,) = state.problems
    assert (problem.kind, problem.page_phys, problem.linked_from) == (
        ProblemKind.LOOP,
        first,
        second,
    )
    assert len(state.hw) == 42


def test_count_over_capacity_keeps_the_earlier_pages() -> None:
    mem = PageMemory()
    layout, (first, second) = _two_page_hw(mem)
    mem.write(second, IommuArrayHdrSer(0, 37).pack())
    state = walk_records(mem, layout.flb, V1)
    (problem,) = state.problems
    assert problem.kind is ProblemKind.OVER_CAPACITY and problem.page_phys == second
    assert problem.linked_from == first and "37" in problem.reason and "36" in problem.reason
    assert len(state.hw) == 36 and state.pages[Chain.HW] == (first,)


def test_pointer_outside_ram() -> None:
    mem = PageMemory()
    layout, (first, _second) = _two_page_hw(mem)
    mem.set_u64(first, 0x7_0000_0000)
    state = walk_records(mem, layout.flb, V1)
    (problem,) = state.problems
    assert problem.kind is ProblemKind.UNREADABLE and problem.page_phys == 0x7_0000_0000
    assert problem.linked_from == first and "not in RAM" in problem.reason


def test_misaligned_next_pointer() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    mem.set_u64(layout.dev_pages[0], layout.hw_pages[0] + 8)
    (problem,) = walk_records(mem, layout.flb, V1).problems
    assert problem.kind is ProblemKind.MISALIGNED and problem.chain is Chain.DEVICE
    assert problem.page_phys == layout.hw_pages[0] + 8


def test_page_shared_by_two_chains() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    mem.set_u64(layout.dev_pages[0], layout.dom_pages[0])
    (problem,) = walk_records(mem, layout.flb, V1).problems
    assert problem.kind is ProblemKind.SHARED and problem.chain is Chain.DEVICE
    assert "domain" in problem.reason


def test_null_and_unreadable_flb_and_null_heads() -> None:
    mem = PageMemory()
    (problem,) = walk_records(mem, 0, V1).problems
    assert problem.chain is Chain.FLB and problem.kind is ProblemKind.NULL
    (problem,) = walk_records(mem, 0x9_0000_0000, V1).problems
    assert problem.chain is Chain.FLB and problem.kind is ProblemKind.UNREADABLE
    layout = Layout(mem, devices=1)
    flb = write_flb(mem, layout.hw_pages[0], 0, layout.dev_pages[0])
    state = walk_records(mem, flb, V1)
    (problem,) = state.problems
    assert (problem.chain, problem.kind, problem.linked_from) == (
        Chain.DOMAIN,
        ProblemKind.NULL,
        flb,
    )
    assert len(state.hw) == 2 and len(state.devices) == 1


class _Truncating:
    """Returns short data (or raises OSError) for one page."""

    def __init__(self, mem: PageMemory, page: int, *, error: bool = False) -> None:
        self.mem, self.page, self.error = mem, page, error

    def __call__(self, addr: int, size: int) -> bytes:
        if addr == self.page:
            if self.error:
                raise OSError(5, "Input/output error")
            return self.mem(addr, size)[: size // 2]
        return self.mem(addr, size)


@pytest.mark.parametrize("error", [False, True])
def test_truncated_or_failing_page(error: bool) -> None:
    mem = PageMemory()
    layout, (_first, second) = _two_page_hw(mem)
    state = walk_records(_Truncating(mem, second, error=error), layout.flb, V1)
    (problem,) = state.problems
    assert problem.kind is ProblemKind.UNREADABLE and problem.page_phys == second
    assert ("Input/output error" if error else "truncated") in problem.reason


def test_chain_longer_than_the_limit_stops() -> None:
    mem = PageMemory()
    layout, (first, second) = _two_page_hw(mem)
    state = walk_records(mem, layout.flb, V1, limits=RecordLimits(max_pages_per_chain=1))
    (problem,) = state.problems
    assert (problem.kind, problem.page_phys, problem.linked_from) == (
        ProblemKind.TOO_LONG,
        second,
        first,
    )


def test_heads_joining_a_walked_chain_are_not_loops() -> None:
    mem = PageMemory()
    layout, (first, second) = _two_page_hw(mem)
    heads = ChainHeads((first, second), (layout.dom_pages[0],), (layout.dev_pages[0],))
    state = walk_from_heads(mem, heads, V1, located_by="signature")
    assert state.complete and len(state.hw) == 42 and state.located_by == "signature"
    heads = ChainHeads((second, first), (layout.dom_pages[0],), ())
    state = walk_from_heads(mem, heads, V1, located_by="signature")
    # the second head's walk stops where it meets the page walked from the first head
    assert state.complete and len(state.hw) == 42
    assert state.pages[Chain.HW] == (second, first)


def test_read_phys_contract_parse_error_subclass_is_unreadable() -> None:
    class PhysReadError(ParseError):
        pass

    def read(addr: int, size: int) -> bytes:
        raise PhysReadError("outside RAM")

    (problem,) = walk_records(read, 0x1000, V1).problems
    assert problem.kind is ProblemKind.UNREADABLE and "outside RAM" in problem.reason


def test_type_field_refines_v1_invalid_records() -> None:
    mem = PageMemory()
    rec = hw_v1(UNIT_A)
    invalid = IommuHwSerV1(rec.hdr, rec.token, IommuTypeSer.IOMMU_INVALID, rec.intel)
    hw = write_chain(mem, [invalid])
    doms, devs = write_chain(mem, []), write_chain(mem, [])
    state = walk_records(mem, write_flb(mem, hw[0], doms[0], devs[0]), V1)
    assert state.variant is V1 and state.hw[0].record.type == 0 and state.find_hw(UNIT_A) == []
