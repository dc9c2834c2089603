"""The codes of the kcore table walk's problems (issue #14 item 6).

A live table pointer that leads outside RAM, or into another table's page, is VTD016: the
translation structures themselves are corrupt.  VTD041 is the record chains' code and must not
be used for it.  Both tests fail on the main of before issue #14 (VTD041 there).  The hosts are
written by the kernel model; the second is then edited by hand (kcore bytes).
"""

from __future__ import annotations

from pathlib import Path

from tests import handedit
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.report import Report
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity

VFIO = "0000:00:05.0"
DMAR0 = 0xFED90000
OUTSIDE_RAM = 0x7F_0000_0000  # far above the model's RAM


def _evaluate(root: Path) -> Report:
    return evaluate(take_snapshot(HostRoot(root)), Policy())


def _codes(report: Report) -> set[tuple[str, Severity]]:
    return {(f.code, f.severity) for f in report.findings}


def test_root_table_outside_ram_is_vtd016_not_vtd041(tmp_path: Path) -> None:
    """RTADDR names a page in no RAM segment: VTD016 FAIL on the unit."""
    host = q35_host(seed=6)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    root = write_tree(host, tmp_path)
    handedit.set_rtaddr(root, OUTSIDE_RAM)
    report = _evaluate(root)
    vtd016 = [f for f in report.findings if f.code == "VTD016"]
    assert [(f.severity, f.unit) for f in vtd016] == [(Severity.FAIL, DMAR0)]
    assert f"{OUTSIDE_RAM:#x}" in vtd016[0].message and "root table" in vtd016[0].message
    assert "VTD041" not in {f.code for f in report.findings}
    assert report.verdict is Severity.FAIL


def test_context_table_pointer_outside_ram_by_hand(tmp_path: Path) -> None:
    """A root entry of an unused bus edited by hand to name a context table outside RAM."""
    host = q35_host(scalable=True, seed=6)
    root = write_tree(host, tmp_path)
    entry = handedit.root_table(root) + 0x42 * 16
    assert handedit.u64(root, entry) == 0
    handedit.set_u64(root, entry, OUTSIDE_RAM | 1)
    report = _evaluate(root)
    assert ("VTD016", Severity.FAIL) in _codes(report)
    assert "VTD041" not in {f.code for f in report.findings}
    [f] = [f for f in report.findings if f.code == "VTD016"]
    assert "bus 42" in f.message
