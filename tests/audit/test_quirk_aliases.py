"""DMA aliases from PCI quirks, and IOMMU-group peers no alias explains (issue #14 item 1).

A Marvell 88SE9123 (1b4b:9123) DMAs with function 1's requester ID (``quirk_dma_func1_alias``):
preserving function 0 while function 1 is not preserved loses the translation at kexec (the old
kernel clears function 1's context entry).  Independently of the quirk table, a device to
preserve with an IOMMU-group peer that is not preserved and that no known alias explains is
VTD028 (UNKNOWN, blocking): the kernel builds groups from the same aliases.  Every test here
fails on the main of before issue #14 (PASS there).  Hosts are written by the kernel model, then
edited by hand (sysfs IDs, group links) or built with the quirked IDs by the model itself.
"""

from __future__ import annotations

from pathlib import Path

from tests import handedit
from tests.cli.helpers import run_cli
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.report import Finding, Report
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.pci import PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_ROOT_PORT
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity
from vtdlud.model.snapshot import VFIO_PCI

MARVELL, SATA_9123, INTEL = 0x1B4B, 0x9123, 0x8086
FN0, FN1 = "0000:06:00.0", "0000:06:00.1"
VFIO = "0000:00:05.0"


def _host(*, scalable: bool = False, vendor: int = INTEL, device: int = 0x1572) -> SimHost:
    """A root port 00:1c.0 with a two-function endpoint on bus 6; 06:00.0 is the VMM's."""
    host = SimHost(seed=14)
    host.add_unit(scalable=scalable)
    host.add_device(0, 0, 0x1C, 0, pcie_type=PCI_EXP_TYPE_ROOT_PORT, secondary_bus=6)
    ep: dict[str, object] = {"vendor": vendor, "device": device, "pcie_type": PCI_EXP_TYPE_ENDPOINT}
    host.add_device(0, 6, 0, 0, driver=VFIO_PCI, pci_class=0x010601, **ep)
    host.add_device(0, 6, 0, 1, driver="pata_marvell", pci_class=0x01018F, **ep)
    host.boot()
    host.vfio_attach(FN0)
    host.preserve(FN0)
    return host


def _report(root: Path) -> Report:
    return evaluate(take_snapshot(HostRoot(root)), Policy())


def _judged(report: Report) -> list[tuple[str, Severity, str | None]]:
    return [(f.code, f.severity, f.bdf) for f in report.findings if f.severity is not Severity.PASS]


def _only(report: Report, code: str) -> list[Finding]:
    return [f for f in report.findings if f.code == code]


def test_clean_twin_passes(tmp_path: Path) -> None:
    """Two functions of an Intel NIC, each in its own group: preserving one is fine."""
    report = _report(write_tree(_host(), tmp_path))
    assert report.findings == () and report.verdict is Severity.PASS


def test_marvell_function1_alias_by_hand(tmp_path: Path) -> None:
    """The clean twin's IDs edited by hand to 1b4b:9123 and function 1 moved into function 0's
    group (where the kernel puts it): VTD025 FAIL on 06:00.0, alias 06:00.1."""
    root = write_tree(_host(), tmp_path)
    for bdf in (FN0, FN1):
        handedit.set_ids(root, bdf, MARVELL, SATA_9123)
    handedit.set_group(root, FN1, handedit.group_of(root, FN0))
    report = _report(root)
    [f] = _only(report, "VTD025")
    assert (f.severity, f.bdf) == (Severity.FAIL, FN0)
    assert "0000:06:00.1" in f.message and "not preserved" in f.message
    assert report.verdict is Severity.FAIL
    assert _only(report, "VTD028") == []  # the alias explains the group


def test_marvell_function1_alias_model_built(tmp_path: Path) -> None:
    """The same host written by the kernel model with the quirked IDs: the model's own reading
    of the quirk puts both functions in one group and DMA-aliases 06:00.0 to 06:00.1."""
    host = _host(vendor=MARVELL, device=SATA_9123)
    assert host.device(FN0).group == host.device(FN1).group
    report = _report(write_tree(host, tmp_path))
    assert ("VTD025", Severity.FAIL, FN0) in _judged(report)
    assert report.verdict is Severity.FAIL


def test_unexplained_group_peer_by_hand_blocks(tmp_path: Path) -> None:
    """A device moved by hand into the preserved device's group, sharing no alias vtdlud knows:
    VTD028 UNKNOWN, required: the verdict is UNKNOWN and the gate exits 3, not 0."""
    host = q35_host(seed=14)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    root = write_tree(host, tmp_path)
    assert _report(root).verdict is Severity.PASS
    handedit.set_group(root, "0000:00:03.0", handedit.group_of(root, VFIO))
    report = _report(root)
    [f] = _only(report, "VTD028")
    assert (f.severity, f.bdf, f.required) == (Severity.UNKNOWN, VFIO, True)
    assert "0000:00:03.0" in f.message
    assert report.verdict is Severity.UNKNOWN
    rc, _, _ = run_cli("check", "--root", str(root), "--no-ledger")
    assert rc == 3
