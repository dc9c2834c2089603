"""find_hw_records: the outgoing records found by signature among preserved pages and decoys.

The record pages are built with the ABI mirror's pack() (and, once, by the simulator's kernel
model); the decoys are pages whose first bytes look almost like a record page.  Backed only by
the layouts in include/linux/kho/abi/iommu.h: no real capture of preserved records exists.
"""

from __future__ import annotations

import random
import struct

import pytest

from tests.kernelmodel.scenarios import two_unit_host
from tests.records import (
    UNIT_A,
    UNIT_B,
    Layout,
    PageMemory,
    device_v1,
    hw_v1,
    write_chain,
)
from vtdlud.model.abi import (
    PAGE_SIZE,
    V1,
    V2_ASSUMED_INTEL,
    IommuArrayHdrSer,
    IommuHdrSer,
    IommuHwSerV1,
    IommuTypeSer,
)
from vtdlud.model.khomem import KHO_V2, MapState, walk_preserved_memory
from vtdlud.model.records import Chain, RefStatus
from vtdlud.model.signature import PROBE_SIZE, ScanLimits, find_hw_records

UNITS = {UNIT_A, UNIT_B}


def _array_page(mem: PageMemory, nxt: int, count: int, first: bytes) -> int:
    page = mem.alloc()
    mem.write(page, IommuArrayHdrSer(nxt, count).pack() + first)
    return page


def _decoys(mem: PageMemory, layout: Layout) -> list[int]:
    """Pages whose first bytes are almost those of a record page or of the FLB."""
    good = hw_v1(UNIT_A)
    intel_other = hw_v1(UNIT_B).intel
    pages = [
        _array_page(mem, 0, 1, hw_v1(0xFEE0_0000).pack()),  # token: no DMAR unit
        _array_page(mem, 0, 1, IommuHwSerV1(good.hdr, UNIT_A, 2, good.intel).pack()),  # type
        _array_page(mem, 0, 1, IommuHwSerV1(good.hdr, UNIT_A, 1, intel_other).pack()),  # phys
        _array_page(mem, 0, 37, good.pack()),  # nr_objects over the capacity (36)
        _array_page(mem, 0, 0, good.pack()),  # nr_objects 0
        _array_page(mem, 0x1234, 1, good.pack()),  # next_array_phys not page aligned
        _array_page(mem, 0, 1, device_v1(1, 1, 0, layout.hw_pages[-1] + 16 + 112 * 35).pack()),
        _array_page(mem, 0, 1, device_v1(1, 1, 0, layout.hw_slots[0] + 8).pack()),
    ]
    flb_like = mem.alloc()  # the three record arrays, in the wrong order
    arrays = (layout.dom_pages[0], layout.dev_pages[0], layout.hw_pages[0])
    mem.write(flb_like, struct.pack("<3Q", *arrays))
    v2_like = mem.alloc()
    mem.write(v2_like, struct.pack("<4Q", 1, layout.dom_pages[0], layout.dev_pages[0], 0x5000))
    rng = random.Random(7)
    noise = [mem.alloc() for _ in range(40)]
    for page in noise:
        mem.write(page, rng.randbytes(PAGE_SIZE))
    zeros = [mem.alloc() for _ in range(40)]
    return [*pages, flb_like, v2_like, *noise, *zeros]


def _preserved(layout: Layout, decoys: list[int], seed: int = 1) -> list[int]:
    pages = layout.record_pages + decoys
    random.Random(seed).shuffle(pages)
    return pages


@pytest.mark.parametrize("v2_flb", [False, True])
def test_records_found_among_decoys(v2_flb: bool) -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=4, deleted_device=3, v2_flb=v2_flb)
    decoys = _decoys(mem, layout)
    probe = PageMemory()  # counts the probe reads apart from the whole-page reads
    probe.pages = mem.pages
    scan = find_hw_records(mem, _preserved(layout, decoys), UNITS, probe=probe)
    assert scan.located_by == "signature" and scan.state is not None
    assert scan.flb_phys == layout.flb and scan.flb_layout == ("v2" if v2_flb else "v1")
    state = scan.state
    assert state.located_by == "signature" and state.complete
    assert state.variant is (V2_ASSUMED_INTEL if v2_flb else V1)
    assert [s.record.token for s in state.hw] == [UNIT_A, UNIT_B]
    assert len(state.devices) == 4 and len(state.live_devices()) == 3
    assert state.iommu_ref(state.devices[1]).status is RefStatus.OK
    assert scan.hw_pages == tuple(layout.hw_pages) and scan.orphan_hw_pages == ()
    # a few bytes per page, whole pages only for the candidates that passed the probe
    n = len(layout.record_pages) + len(decoys)
    assert scan.pages_scanned == n and probe.calls == n
    assert probe.bytes == scan.bytes_probed == n * PROBE_SIZE
    assert scan.full_reads == 1 and scan.unreadable == 0  # only the hw page passed the probe


def test_without_the_flb_chains_are_walked_from_the_found_pages() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=80, extra_hw=40)  # hw and device chains of two pages each
    assert len(layout.hw_pages) == len(layout.dev_pages) == 2
    pages = [p for p in _preserved(layout, _decoys(mem, layout)) if p != layout.flb]
    scan = find_hw_records(mem, pages, UNITS)
    assert scan.flb_phys is None and scan.flb_layout is None and scan.state is not None
    assert any("no iommu_flb_ser" in n for n in scan.notes)
    state = scan.state
    assert state.complete and state.variant is V1 and state.flb is None
    assert state.pages[Chain.HW] == tuple(layout.hw_pages)
    assert state.pages[Chain.DEVICE] == tuple(layout.dev_pages)
    assert state.pages[Chain.DOMAIN] == tuple(layout.dom_pages)
    assert len(state.hw) == 42 and len(state.devices) == 80
    assert all(state.domain_ref(d).status is RefStatus.OK for d in state.devices)


def test_without_the_flb_several_chains_are_named() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=2)
    stray = _array_page(mem, 0, 1, device_v1(9, 9, 0, layout.hw_slots[1]).pack())
    pages = [p for p in [*layout.record_pages, stray] if p != layout.flb]
    scan = find_hw_records(mem, pages, UNITS)
    assert scan.state is not None and len(scan.state.devices) == 3
    assert scan.state.pages[Chain.DEVICE] == (layout.dev_pages[0], stray)
    note = next(n for n in scan.notes if "device" in n and "chains" in n)
    assert f"{stray:#x}" in note


def test_first_record_deleted_and_wiped() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=2)
    wiped = IommuHdrSer(0, 1).pack() + bytes(IommuHwSerV1.sizeof() - 8)
    mem.write(layout.hw_slots[0], wiped)  # unit A unpreserved; its fields cleared
    scan = find_hw_records(mem, layout.record_pages, UNITS)
    assert scan.state is not None and scan.flb_phys == layout.flb
    assert scan.hw_pages == tuple(layout.hw_pages)
    assert [s.deleted for s in scan.state.hw] == [True, False]


def test_stray_hw_page_outside_the_chain_is_reported() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    stray = write_chain(mem, [hw_v1(UNIT_B)])[0]
    scan = find_hw_records(mem, [*layout.record_pages, stray], UNITS)
    assert scan.state is not None and scan.flb_phys == layout.flb
    assert scan.orphan_hw_pages == (stray,) and stray in scan.hw_pages
    assert any(f"{stray:#x}" in n for n in scan.notes)


def test_nothing_to_find() -> None:
    mem = PageMemory()
    layout = Layout(mem)
    decoys = _decoys(mem, layout)
    scan = find_hw_records(mem, decoys, UNITS)
    assert scan.state is None and scan.pages_scanned == len(decoys)
    assert any("no preserved page" in n for n in scan.notes)
    scan = find_hw_records(mem, layout.record_pages, set())
    assert scan.state is None and scan.pages_scanned == 0
    assert any("no DMAR unit" in n for n in scan.notes)


def test_unreadable_pages_and_pages_the_map_does_not_preserve() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    outside = [0x9_0000_0000, 0x9_0000_1000]
    preserved = set(layout.record_pages) - {layout.dev_pages[0]}
    scan = find_hw_records(
        mem, [*outside, *layout.record_pages], UNITS, is_preserved=preserved.__contains__
    )
    assert scan.unreadable == 2 and scan.state is not None
    assert scan.not_preserved == (layout.dev_pages[0],)


def test_candidate_bound_stops_the_scan() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    fake_dev = device_v1(1, 1, 0, layout.hw_slots[0]).pack()
    many = [_array_page(mem, 0, 1, fake_dev) for _ in range(50)]
    scan = find_hw_records(mem, many + layout.record_pages, UNITS, limits=ScanLimits(10, 10))
    assert scan.pages_scanned == 11 and scan.state is None
    assert any("candidate pages" in n for n in scan.notes)


def test_several_flb_candidates_prefer_the_consistent_one() -> None:
    mem = PageMemory()
    layout = Layout(mem, devices=1)
    other = mem.alloc()  # points at the hw page but not at a device-looking page
    mem.write(other, struct.pack("<3Q", layout.hw_pages[0], layout.dom_pages[0], 0x7000_0000))
    scan = find_hw_records(mem, [other, *layout.record_pages], UNITS)
    assert scan.flb_phys == layout.flb


def test_type_only_signature_is_not_enough() -> None:
    mem = PageMemory()
    good = hw_v1(UNIT_A)
    page = _array_page(
        mem, 0, 1, IommuHwSerV1(good.hdr, UNIT_A, IommuTypeSer.IOMMU_INVALID, good.intel).pack()
    )
    assert find_hw_records(mem, [page], UNITS).hw_pages == ()


@pytest.mark.parametrize(("variant", "scalable"), [("v1", False), ("v2", True)])
def test_simulated_kernel_state_before_kexec(variant: str, scalable: bool) -> None:
    host = two_unit_host(flb_variant=variant, scalable=scalable)
    for bdf in ("0000:00:05.0", "0000:03:00.0", "0000:00:02.0"):
        host.vfio_attach(bdf)
        host.preserve(bdf)
    host.unpreserve("0000:00:02.0")
    host.kho.refresh_radix()  # kho-v2: the tracker is live before kexec
    pm = walk_preserved_memory(host.mem.read_phys, KHO_V2, host.kho.radix_root)
    assert pm.state is MapState.COMPLETE
    assert host.outgoing is not None
    scan = find_hw_records(
        host.mem.read_phys, pm.order0_pages(), {0xFED9_0000, 0xFED9_1000}, is_preserved=pm.contains
    )
    assert scan.flb_phys == host.outgoing.flb_phys and scan.flb_layout == variant
    state = scan.state
    assert state is not None and state.complete and scan.not_preserved == ()
    assert sorted(s.record.token for s in state.live_hw()) == [0xFED9_0000, 0xFED9_1000]
    assert len(state.live_devices()) == 2 and len(state.devices) == 3
    assert {d.phys for d in state.live_devices()} == set(host.outgoing.device_slot.values())
    for dev in state.live_devices():
        assert state.iommu_ref(dev).status is RefStatus.OK
    for hw in state.live_hw():  # the root table a record names is itself preserved
        assert isinstance(hw.record, IommuHwSerV1) and pm.contains(hw.record.intel.root_table)
