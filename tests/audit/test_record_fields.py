"""Item 7 of issue #11: record fields the kernel relies on, accepted when corrupt on main.

Backed by the simulator (vtdlud.sim) only: no real capture of the IOMMU live-update records
exists.  Each case preserves 00:05.0 on the q35 host, rewrites one field of one record in the
simulated memory, and evaluates the written tree: the finding must be there (on main none was,
or the wrong one for devid), and, where the field touches nothing else, be the only one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from vtdlud.audit.catalog import Severity
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.policy import Policy
from vtdlud.audit.report import Report
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.abi import IommuDeviceSerV1, IommuDomainSer, IommuHdrSer, IommuHwSerV1
from vtdlud.sim.faults import records
from vtdlud.sim.kernel import SimHost
from vtdlud.sim.scenarios import q35_host
from vtdlud.sim.tree import write_tree

DMAR0, VFIO = 0xFED90000, "0000:00:05.0"
FAIL = Severity.FAIL


def _host(*, scalable: bool = False, after: bool = False) -> SimHost:
    host = q35_host(scalable=scalable, seed=3)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    if after:
        host.kexec()
    return host


def _edit_hw(host: SimHost, edit: Callable[[IommuHwSerV1], IommuHwSerV1]) -> None:
    slot = records(host).hw[DMAR0]
    rec = IommuHwSerV1.unpack(host.mem.read(slot, IommuHwSerV1.sizeof()))
    host.mem.write(slot, edit(rec).pack())


def _edit_dev(host: SimHost, edit: Callable[[IommuDeviceSerV1], IommuDeviceSerV1]) -> None:
    slot = records(host).devices[VFIO]
    rec = IommuDeviceSerV1.unpack(host.mem.read(slot, IommuDeviceSerV1.sizeof()))
    host.mem.write(slot, edit(rec).pack())


def _edit_domain(host: SimHost, edit: Callable[[IommuDomainSer], IommuDomainSer]) -> None:
    dev_slot = records(host).devices[VFIO]
    dev = IommuDeviceSerV1.unpack(host.mem.read(dev_slot, IommuDeviceSerV1.sizeof()))
    slot = dev.domain_iommu_ser.domain_phys
    rec = IommuDomainSer.unpack(host.mem.read(slot, IommuDomainSer.sizeof()))
    host.mem.write(slot, edit(rec).pack())


def _hdr(ref_count: int | None = None, flags: int = 0) -> Callable[[IommuHdrSer], IommuHdrSer]:
    return lambda h: IommuHdrSer(h.ref_count if ref_count is None else ref_count, h.flags | flags)


def _report(host: SimHost, tmp_path: Path) -> Report:
    return evaluate(take_snapshot(HostRoot(write_tree(host, tmp_path))), Policy())


def _found(report: Report) -> list[tuple[str, Severity, int | None, str | None, str]]:
    return [(f.code, f.severity, f.unit, f.bdf, f.message) for f in report.findings]


def test_clean_twins_have_no_finding(tmp_path: Path) -> None:
    for i, host in enumerate((_host(), _host(scalable=True), _host(after=True))):
        assert _report(host, tmp_path / str(i)).findings == ()


Edit = Callable[[SimHost], None]
CASES: dict[str, tuple[Edit, tuple[str, int | None, str | None], str]] = {
    "hw-unknown-flag": (
        lambda h: _edit_hw(h, lambda r: dataclasses.replace(r, hdr=_hdr(flags=0x4)(r.hdr))),
        ("VTD003", DMAR0, None),
        "hdr.flags 0x4 has bits no kernel sets (0x4; only DELETED 0x1 and INCOMING 0x2 exist)",
    ),
    "hw-restored-before-kexec": (
        lambda h: _edit_hw(
            h, lambda r: dataclasses.replace(r, intel=dataclasses.replace(r.intel, restored=1))
        ),
        ("VTD003", DMAR0, None),
        "iommu_hw_ser.intel.restored 1, expected 0 (before the kexec: the next kernel skips "
        "reclaiming the root and context table pages of a unit marked restored)",
    ),
    "device-ref-count-2": (
        lambda h: _edit_dev(h, lambda r: dataclasses.replace(r, hdr=_hdr(2)(r.hdr))),
        ("VTD003", DMAR0, VFIO),
        "hdr.ref_count 2, expected 1 (a device is preserved once [I]): unpreserving it would "
        "leave the record live",
    ),
    "device-ref-count-0": (
        lambda h: _edit_dev(h, lambda r: dataclasses.replace(r, hdr=_hdr(0)(r.hdr))),
        ("VTD003", DMAR0, VFIO),
        "hdr.ref_count 0, expected 1",
    ),
    "device-unknown-flag": (
        lambda h: _edit_dev(h, lambda r: dataclasses.replace(r, hdr=_hdr(flags=0x80)(r.hdr))),
        ("VTD003", DMAR0, VFIO),
        "hdr.flags 0x80 has bits no kernel sets",
    ),
    "domain-ref-count-0": (
        lambda h: _edit_domain(h, lambda r: dataclasses.replace(r, hdr=_hdr(0)(r.hdr))),
        ("VTD003", None, None),
        "hdr.ref_count 0 on a live record: the kernel deletes a record at 0",
    ),
    "domain-ref-count-over-users": (
        lambda h: _edit_domain(h, lambda r: dataclasses.replace(r, hdr=_hdr(3)(r.hdr))),
        ("VTD003", None, None),
        "hdr.ref_count 3, more than the 1 live device record(s) pointing at it [I]",
    ),
    "domain-unknown-flag": (
        lambda h: _edit_domain(h, lambda r: dataclasses.replace(r, hdr=_hdr(flags=1 << 31)(r.hdr))),
        ("VTD003", None, None),
        "hdr.flags 0x80000000 has bits no kernel sets",
    ),
    "domain-vasz": (
        lambda h: _edit_domain(h, lambda r: dataclasses.replace(r, vasz=r.vasz + 9)),
        ("VTD027", None, None),
        "vasz 57, but its top_level 3 makes a 4-level table of 48 bits [I]",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_field_is_its_finding(case: str, tmp_path: Path) -> None:
    edit, (code, unit, bdf), text = CASES[case]
    host = _host()
    edit(host)
    found = _found(_report(host, tmp_path))
    judged = [(c, s, u, b) for c, s, u, b, _ in found if s is not Severity.UNKNOWN]
    assert judged == [(code, FAIL, unit, bdf)], found
    assert text in found[[f[0] for f in found].index(code)][4]


def test_devid_over_16_bits_is_no_bdf(tmp_path: Path) -> None:
    """On main devid 0x10028 was read as 00:05.0 and matched the device: no finding."""
    host = _host()
    _edit_dev(host, lambda r: dataclasses.replace(r, devid=r.devid | 1 << 16))
    found = _found(_report(host, tmp_path))
    assert (
        "VTD003",
        FAIL,
        DMAR0,
        None,
        f"device record at {records(host).devices[VFIO]:#x}: devid 0x10028 is wider than bus "
        "<< 8 | devfn (16 bits): it names no PCI device, and read as one it would be 00:05.0",
    ) in found
    # So 00:05.0 itself has no record, and the unit's count names a device it does not have.
    codes = {c for c, *_ in found}
    assert {"VTD030", "VTD020"} <= codes, found


@pytest.mark.parametrize(
    ("max_pasid", "text"),
    [
        (1 << 16, "intel.max_pasid 0x10000, but the live PASID directory (PDTS 2) covers 0x8000"),
        (0, "intel.max_pasid 0x0 is no PASID directory's size"),
        (1 << 21, "intel.max_pasid 0x200000 is no PASID directory's size"),
        (0x9000, "intel.max_pasid 0x9000 is no PASID directory's size"),
    ],
)
def test_max_pasid(max_pasid: int, text: str, tmp_path: Path) -> None:
    host = _host(scalable=True)
    _edit_dev(
        host,
        lambda r: dataclasses.replace(r, intel=dataclasses.replace(r.intel, max_pasid=max_pasid)),
    )
    found = _found(_report(host, tmp_path))
    assert [(c, s, u, b) for c, s, u, b, _ in found] == [("VTD024", FAIL, DMAR0, VFIO)], found
    assert text in found[0][4]


def test_restored_after_kexec_is_no_finding(tmp_path: Path) -> None:
    """After the kexec the new kernel sets restored = 1: that is VTD060's business, not this."""
    host = _host(after=True)
    assert _report(host, tmp_path).findings == ()
