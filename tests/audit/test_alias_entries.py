"""The context entries of a preserved device's DMA aliases (issue #14 item 2).

Behind QEMU's PCIe-to-PCI bridge 04:00.0 the hardware looks up 05:01.0's and 05:02.0's DMA under
the alias 05:00.0: in legacy mode that entry's DID must be the records' ``attachment_id``
(VTD023; VTD062 after the kexec), in scalable mode an entry there must name a preserved PASID
directory (VTD024).  The hosts are written by the kernel model (both devices of the bridge's
group preserved, attached to the group's one domain); the faults are then a kernel bug played
by the model, or bytes edited by hand in ``proc/kcore``.  Every fault test fails on the main of
before issue #14 (PASS there: only the device's own entry was compared).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from tests import handedit
from tests.audit.test_postkexec import live_tree  # noqa: F401 - the fixture
from tests.cli.helpers import run_cli, validate
from tests.kernelmodel.iommu import Domain, DomainKind
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.report import Report
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity

BEHIND = ("0000:05:01.0", "0000:05:02.0")
ALIAS_BUS, ALIAS_DEVFN = 5, 0
FAIL = Severity.FAIL


def _host(scalable: bool = False) -> SimHost:
    host = q35_host(scalable=scalable, seed=21)
    for bdf in BEHIND:
        host.vfio_attach(bdf)
    for bdf in BEHIND:
        host.preserve(bdf)
    return host


def _report(root: Path) -> Report:
    return evaluate(take_snapshot(HostRoot(root)), Policy())


def _codes(report: Report) -> set[tuple[str, Severity, str | None]]:
    return {(f.code, f.severity, f.bdf) for f in report.findings}


@pytest.mark.parametrize("scalable", [False, True], ids=["legacy", "scalable"])
def test_clean_bridge_group_passes(tmp_path: Path, scalable: bool) -> None:
    host = _host(scalable)
    assert len({id(host.attached[b]) for b in BEHIND}) == 1  # one domain for the group
    report = _report(write_tree(host, tmp_path))
    assert report.findings == (), [f.message for f in report.findings]


def test_alias_reprogrammed_by_a_kernel_bug_model_built(tmp_path: Path) -> None:
    """The model plays a kernel bug: the alias entry 05:00.0 re-programmed with another
    domain's DID while both devices' own entries stay right."""
    host = _host()
    unit = host.units["dmar0"]
    other = Domain(DomainKind.UNMANAGED, host.mem.alloc(), unit.agaw)
    unit.clear_context(ALIAS_BUS, ALIAS_DEVFN)
    unit.map_legacy(ALIAS_BUS, ALIAS_DEVFN, other)
    report = _report(write_tree(host, tmp_path))
    assert {("VTD023", FAIL, b) for b in BEHIND} <= _codes(report)
    assert all(f.code == "VTD023" for f in report.findings if f.severity is FAIL)
    assert "alias 0000:05:00.0" in report.findings[0].message


def test_alias_did_edited_by_hand(tmp_path: Path) -> None:
    root = write_tree(_host(), tmp_path)
    entry = handedit.context_entry(root, ALIAS_BUS, ALIAS_DEVFN)
    hi = handedit.u64(root, entry + 8)
    handedit.set_u64(root, entry + 8, hi ^ 0x7 << 8)  # another DID, same page table
    report = _report(root)
    vtd023 = [f for f in report.findings if f.code == "VTD023"]
    assert {(f.severity, f.bdf) for f in vtd023} == {(FAIL, b) for b in BEHIND}
    assert dict(vtd023[0].details)["actual"] == str((hi >> 8 & 0xFFFF) ^ 7)


def test_alias_entry_cleared_by_hand(tmp_path: Path) -> None:
    root = write_tree(_host(), tmp_path)
    handedit.poke(root, handedit.context_entry(root, ALIAS_BUS, ALIAS_DEVFN), bytes(16))
    report = _report(root)
    assert {("VTD023", FAIL, b) for b in BEHIND} <= _codes(report)
    assert any("no live context entry" in f.message for f in report.findings)


def test_scalable_alias_entry_with_a_foreign_pasid_directory_by_hand(tmp_path: Path) -> None:
    """Scalable mode programs no entry for the bridge alias (the real kernel's behaviour):
    clean.  An entry added there by hand naming 00:02.0's PASID directory (not preserved)
    translates the two devices' DMA with tables the next kernel does not get: VTD024."""
    root = write_tree(_host(scalable=True), tmp_path)
    alias = handedit.context_entry(root, ALIAS_BUS, ALIAS_DEVFN)
    assert handedit.peek(root, alias, 32) == bytes(32)
    nic = handedit.u64(root, handedit.context_entry(root, 0, 0x10))  # 00:02.0, lo word
    handedit.poke(root, alias, struct.pack("<QQ", nic, 0) + bytes(16))
    report = _report(root)
    vtd024 = [f for f in report.findings if f.code == "VTD024"]
    assert {(f.severity, f.bdf) for f in vtd024} == {(FAIL, b) for b in BEHIND}
    assert dict(vtd024[0].details)["actual"] == f"{nic & ~0xFFF:#x}"


def test_post_kexec_alias_did_edited_by_hand(tmp_path: Path) -> None:
    """After the kexec the alias entry carries another DID than the ledger's: VTD062."""
    host = _host()
    state = tmp_path / "state"
    rc, _, err = run_cli(
        "check", "--root", str(write_tree(host, tmp_path / "before")), "--state-dir", str(state)
    )
    assert rc == 0, err
    host.kexec()
    root = write_tree(host, tmp_path / "after")
    entry = handedit.context_entry(root, ALIAS_BUS, ALIAS_DEVFN)
    handedit.set_u64(root, entry + 8, handedit.u64(root, entry + 8) ^ 0x3 << 8)
    rc, out, _ = run_cli(
        "check", "--post-kexec", "--json", "--root", str(root), "--state-dir", str(state)
    )
    doc: dict[str, Any] = validate(json.loads(out))
    vtd062 = {(f["severity"], f["bdf"]) for f in doc["findings"] if f["code"] == "VTD062"}
    assert vtd062 >= {("FAIL", b) for b in BEHIND}, doc["findings"]
    assert rc == 1


def _ghost_host() -> SimHost:
    """A Marvell 88SE9123 whose function 1 is absent (a ghost requester): in scalable mode the
    kernel (intel_pasid_setup_sm_context) gives 06:00.1's context entry 06:00.0's PASID
    directory; the model does the same with its own reading of the quirk."""
    host = SimHost(seed=22)
    host.add_unit(scalable=True)
    host.add_device(0, 0, 0x1C, 0, pcie_type=4, secondary_bus=6)
    host.add_device(0, 6, 0, 0, vendor=0x1B4B, device=0x9123, driver="vfio-pci")
    host.boot()
    host.vfio_attach(MARVELL)
    host.preserve(MARVELL)
    return host


MARVELL = "0000:06:00.0"


def test_scalable_quirk_alias_entry_programmed_by_the_model(tmp_path: Path) -> None:
    host = _ghost_host()
    unit = host.units["dmar0"]
    own, alias = unit.read_context(6, 0), unit.read_context(6, 1)
    assert own is not None and alias is not None and own[0] == alias[0]
    assert _report(write_tree(host, tmp_path)).findings == ()


def test_scalable_quirk_alias_entry_cleared_by_hand(tmp_path: Path) -> None:
    root = write_tree(_ghost_host(), tmp_path)
    handedit.poke(root, handedit.context_entry(root, 6, 1), bytes(32))
    report = _report(root)
    [f] = [f for f in report.findings if f.code == "VTD024"]
    assert (f.severity, f.bdf) == (FAIL, MARVELL) and "quirk alias 0000:06:00.1" in f.message


def test_scalable_quirk_alias_entry_repointed_by_hand(tmp_path: Path) -> None:
    root = write_tree(_ghost_host(), tmp_path)
    entry = handedit.context_entry(root, 6, 1)
    handedit.set_u64(root, entry, handedit.u64(root, entry) + 0x5000)  # another directory
    report = _report(root)
    assert ("VTD024", FAIL, MARVELL) in _codes(report)
