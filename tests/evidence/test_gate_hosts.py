"""The gate on bigger simulated hosts (backed by the kernel model, tests.kernelmodel): two units, many
devices, device records spanning two array pages; 0 on the clean host, 1 on its faulted twin."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.gate import gate_exit
from vtdlud.errors import ExitCode
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot

FUNCS = 96  # per unit, on one bus behind a root port
PRESERVED = 80  # on dmar0: more than the 72 v1 device records of one array page


def _host(scalable: bool) -> SimHost:
    host = SimHost(seed=17)
    for u in range(2):
        host.add_unit(reg_base=0xFED9_0000 + u * 0x1000, scalable=scalable)
    for u in range(2):
        bus = 0x10 * (u + 1)
        host.add_device(
            0, 0, u + 1, 0, pcie_type=4, secondary_bus=bus, unit=f"dmar{u}", driver="pcieport"
        )
        for devfn in range(FUNCS):
            host.add_device(
                0, bus, devfn >> 3, devfn & 7, pcie_type=0, unit=f"dmar{u}", driver="ixgbevf"
            )
    host.boot()
    for u, count in ((0, PRESERVED), (1, 4)):
        for devfn in range(count):
            bdf = f"0000:{0x10 * (u + 1):02x}:{devfn >> 3:02x}.{devfn & 7:x}"
            host.vfio_attach(bdf)
            host.preserve(bdf)
    return host


def _gate(host: SimHost, root: Path) -> tuple[ExitCode, list[str]]:
    write_tree(host, root)
    report = evaluate(take_snapshot(HostRoot(root)))
    return gate_exit(report), [f.code for f in report.findings]


@pytest.mark.parametrize("scalable", [False, True], ids=["legacy", "scalable"])
def test_clean_big_host_passes_and_its_twin_fails(tmp_path: Path, scalable: bool) -> None:
    host = _host(scalable)
    code, findings = _gate(host, tmp_path / "clean")
    assert (code, findings) == (ExitCode.OK, [])
    inject(host, Fault.BIT_MISSING, "0000:10:00.0")
    code, findings = _gate(host, tmp_path / "faulted")
    assert code is ExitCode.FAIL and "VTD011" in findings
