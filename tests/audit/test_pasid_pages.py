"""PASID directory and tables of a preserved device (issue #14 item 3).

The series preserves the PASID directory and every PASID table it points to, and records
``intel.max_pasid``, which the next kernel BUG_ONs on when it is not its own; legacy mode has
no PASID table at all.  Hosts written by the kernel model (q35, 00:05.0 preserved), then a
kernel bug played by the model or bytes edited by hand in ``proc/kcore``.  Every fault test
fails on the main of before issue #14 (PASS there).
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

from tests import handedit
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.report import Finding, Report
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity

VFIO = "0000:00:05.0"
BUS, DEVFN = 0, 0x28
FREE_PAGE = 0x3FFF_F000  # in the model's RAM, never allocated (the allocator starts low)
MAX_PASID_OFFSET = 48  # iommu_device_ser: intel @40, then pasid_table (8), max_pasid (8)
PASID_TABLE_OFFSET = 40


def _host(scalable: bool = True) -> SimHost:
    host = q35_host(scalable=scalable, seed=31)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    return host


def _report(root: Path) -> Report:
    return evaluate(take_snapshot(HostRoot(root)), Policy())


def _only(report: Report, code: str) -> list[Finding]:
    return [f for f in report.findings if f.code == code]


def _fails(report: Report) -> list[tuple[str, str | None]]:
    return [(f.code, f.bdf) for f in report.findings if f.severity is Severity.FAIL]


def test_clean_scalable_host_passes(tmp_path: Path) -> None:
    assert _report(write_tree(_host(), tmp_path)).findings == ()


def test_pasid_table_allocated_after_preservation_model_built(tmp_path: Path) -> None:
    """The model plays a kernel bug: PASID 100 of 00:05.0 set up after the preservation, its
    PASID table (directory entry 1) allocated then and never preserved."""
    host = _host()
    unit = host.units["dmar0"]
    entry = unit.pasid_entry_addr(BUS, DEVFN, 100, alloc=True)
    assert entry is not None
    host.mem.write(entry, struct.pack("<QQ", 1 | 2 << 6 | 1 << 2, 7))  # present, SL-only
    report = _report(write_tree(host, tmp_path))
    [f] = _only(report, "VTD017")
    assert (f.severity, f.bdf) == (Severity.FAIL, VFIO)
    assert "PASID table" in f.message
    assert _fails(report) == [("VTD017", VFIO)]


def test_pasid_directory_entry_added_by_hand(tmp_path: Path) -> None:
    """A directory entry edited by hand to name an unused RAM page: a PASID table the next
    kernel does not get."""
    root = write_tree(_host(), tmp_path, TreeOptions(kcore_full_ram=True))
    lo = handedit.u64(root, handedit.context_entry(root, BUS, DEVFN))
    directory = lo & ~0xFFF
    assert handedit.u64(root, directory + 5 * 8) == 0
    handedit.set_u64(root, directory + 5 * 8, FREE_PAGE | 1)
    report = _report(root)
    [f] = _only(report, "VTD017")
    assert f.severity is Severity.FAIL and f"{FREE_PAGE:#x}" in f.message


def test_max_pasid_not_the_directorys_edited_by_hand(tmp_path: Path) -> None:
    """The record's max_pasid edited by hand: 65536 where PDTS 2 says 32768."""
    host = _host()
    assert host.outgoing is not None
    slot = host.outgoing.device_slot[VFIO]
    root = write_tree(host, tmp_path)
    assert handedit.u64(root, slot + MAX_PASID_OFFSET) == 32768
    handedit.set_u64(root, slot + MAX_PASID_OFFSET, 65536)
    report = _report(root)
    [f] = _only(report, "VTD024")
    assert (f.severity, f.bdf) == (Severity.FAIL, VFIO) and "BUG()" in f.message
    assert "max_pasid 0x10000" in f.message and "covers 0x8000" in f.message


def test_max_pasid_wrong_model_built(tmp_path: Path) -> None:
    """The model's record writer given another max_pasid (a series bug)."""
    host = _host()
    assert host.outgoing is not None
    chain, slot = host.outgoing.devices, host.outgoing.device_slot[VFIO]
    rec = chain.read(slot)
    chain.write(slot, rec | {"intel.max_pasid": 64})
    assert _fails(_report(write_tree(host, tmp_path))) == [("VTD024", VFIO)]


def test_legacy_record_with_a_pasid_table_by_hand(tmp_path: Path) -> None:
    host = _host(scalable=False)
    assert host.outgoing is not None
    slot = host.outgoing.device_slot[VFIO]
    root = write_tree(host, tmp_path)
    assert handedit.peek(root, slot + PASID_TABLE_OFFSET, 16) == bytes(16)
    handedit.set_u64(root, slot + PASID_TABLE_OFFSET, 0x1234_5000)
    report = _report(root)
    assert _fails(report) == [("VTD024", VFIO)]
    assert "legacy-mode" in _only(report, "VTD024")[0].message


def test_pasid_pages_unknown_without_kcore_walk(tmp_path: Path) -> None:
    """No kcore walk: the PASID pages cannot be checked; UNKNOWN, never FAIL."""
    snap = take_snapshot(HostRoot(write_tree(_host(), tmp_path)))
    report = evaluate(dataclasses.replace(snap, kcore_walks={}), Policy())
    [f] = _only(report, "VTD017")
    assert f.severity is Severity.UNKNOWN
