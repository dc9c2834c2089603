"""The page-table pages of a preserved domain (issue #14 item 4).

The series preserves every page of a preserved domain's page table, every level; VTD027 only
compared the top table and the level.  The kernel model builds the domain's page table by
mapping the VMM's memfd (16 KiB at 4 GiB) and preserves every page; then a kernel bug played by
the model, or a page-table entry edited by hand in ``proc/kcore``, adds a table the next kernel
does not get: VTD017.  The fault tests fail on the main of before issue #14 (PASS there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
FREE_PAGE = 0x3FFF_F000  # in the model's RAM, never allocated


def _host(scalable: bool = False) -> SimHost:
    host = q35_host(scalable=scalable, seed=41)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    return host


def _report(root: Path) -> Report:
    return evaluate(take_snapshot(HostRoot(root)), Policy())


def _vtd017(report: Report) -> list[Finding]:
    return [f for f in report.findings if f.code == "VTD017"]


@pytest.mark.parametrize("scalable", [False, True], ids=["legacy", "scalable"])
def test_clean_host_walks_every_level(tmp_path: Path, scalable: bool) -> None:
    host = _host(scalable)
    snap = take_snapshot(HostRoot(write_tree(host, tmp_path)))
    assert snap.preserved is not None
    [walk] = snap.preserved.page_tables.values()
    levels = host.attached[VFIO].levels
    assert walk.complete and walk.levels == levels
    assert len(walk.pages) == levels  # one table per level maps the 16 KiB memfd
    assert evaluate(snap, Policy()).findings == ()


def test_table_allocated_after_preservation_model_built(tmp_path: Path) -> None:
    """The model plays a kernel bug: an IOVA mapped after the HWPT was preserved, far from
    the memfd, allocates new lower-level tables the preservation never saw."""
    from tests.kernelmodel.pagetable import map_page  # noqa: PLC0415 - the model's page tables

    host = _host()
    domain = host.attached[VFIO]
    map_page(host.mem, domain.pgd, domain.levels, 1 << 38, host.mem.alloc())
    report = _report(write_tree(host, tmp_path))
    [f] = _vtd017(report)
    assert (f.severity, f.bdf) == (Severity.FAIL, VFIO)
    assert f"2 of its {domain.levels + 2} page-table pages" in f.message  # new L2 and L1
    assert [x.code for x in report.findings if x.severity is Severity.FAIL] == ["VTD017"]


def test_page_table_entry_added_by_hand(tmp_path: Path) -> None:
    """The top table's entry 5 edited by hand to name an unused RAM page as a lower table."""
    root = write_tree(_host(), tmp_path, TreeOptions(kcore_full_ram=True))
    lo = handedit.u64(root, handedit.context_entry(root, 0, 0x28))
    top = lo & ~0xFFF
    assert handedit.u64(root, top + 5 * 8) == 0
    handedit.set_u64(root, top + 5 * 8, FREE_PAGE | 3)
    [f] = _vtd017(_report(root))
    assert f.severity is Severity.FAIL and f"{FREE_PAGE:#x}" in f.message
