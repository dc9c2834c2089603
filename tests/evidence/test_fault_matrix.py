"""Fault injection over every input of a host tree (issue: evidence).

A simulated host (tests.kernelmodel: one preserved device, every tier written, kcore included) is read
once cleanly to learn every input vtdlud reads; then each input in turn is made unreadable
(EACCES, EIO — injected through the host layer, since chmod does not stop root), vanishes
between listing and reading (ENOENT), or is truncated.  For every case: no exception escapes,
the JSON envelope still validates, every unit is still reported; for unreadable and vanished
inputs nothing FAILs (a missing input is UNKNOWN, never FAIL), a VTD051 names the path and
`check` exits 3.
Backed by the simulator: the tree is the model's, not a real capture.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.helpers import validate
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.gate import gate_exit
from vtdlud.audit.report import Report
from vtdlud.errors import ExitCode
from vtdlud.host.files import PreadDecoder
from vtdlud.host.root import DirEntries, Fault, FaultPlan, HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.severity import Severity
from vtdlud.output.envelope import envelope

VFIO = "0000:00:05.0"
# Files whose absence is normal (the snapshot reads them when they are there).
OPTIONAL = {
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/random/boot_id",
    "sys/kernel/kexec_loaded",
    "sys/kernel/security/lockdown",
    "vtdlud/processes.json",
}


@dataclass(frozen=True)
class Host:
    root: Path
    inputs: tuple[str, ...]  # every file read, as requested (root-relative, unresolved)
    units: int


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    sim = q35_host(scalable=True, seed=11)
    sim.vfio_attach(VFIO)
    sim.preserve(VFIO)
    root = tmp_path_factory.mktemp("matrix") / "host"
    write_tree(sim, root)
    hr = _Recording(root)
    report = evaluate(take_snapshot(hr))
    assert [f for f in report.findings if f.severity is not Severity.PASS] == []
    yield Host(root, tuple(sorted(hr.requested)), len(report.units))
    shutil.rmtree(root, ignore_errors=True)


class _Recording(HostRoot):
    """Records the paths as the snapshot asks for them (before link resolution)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.requested: set[str] = set()

    def read_bytes(self, rel: str, *, limit: int | None = None) -> bytes:
        data = super().read_bytes(rel, limit=limit)
        self.requested.add(rel)
        return data

    def read_entries(
        self,
        rel_dir: str,
        files: Sequence[str] = (),
        links: Sequence[str] = (),
        dirs: Sequence[str] = (),
        preads: Mapping[str, PreadDecoder] | None = None,
    ) -> DirEntries:
        got = super().read_entries(rel_dir, files, links, dirs, preads)
        self.requested.update(
            f"{rel_dir}/{n}" for n, d in got.files.items() if isinstance(d, bytes)
        )
        self.requested.update(
            f"{rel_dir}/{n}" for n, d in got.preads.items() if not isinstance(d, OSError)
        )
        return got


def _run(root: Path, faults: FaultPlan) -> Report:
    report = evaluate(take_snapshot(HostRoot(root, faults=faults)))
    validate(envelope(report, argv=["matrix"], exit_status=0, root_label=str(root)))
    return report


def _no_fail(report: Report, what: str) -> None:
    fails = [f"{f.code} {f.message}" for f in report.findings if f.severity is Severity.FAIL]
    assert fails == [], f"{what}: a missing input must not FAIL: {fails}"


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_every_input_unreadable(host: Host, err: int) -> None:
    # a whole host: units, devices (config space: the IDs come from its header), vfio groups,
    # debugfs, KHO
    assert len(host.inputs) > 30
    for rel in host.inputs:
        report = _run(host.root, FaultPlan([Fault(rel, err)]))
        assert len(report.units) == host.units, rel
        _no_fail(report, rel)
        named = [
            f for f in report.findings if f.code == "VTD051" and f.message.startswith(f"/{rel}: ")
        ]
        assert named, f"{rel}: no VTD051 names it: {[f.message for f in report.findings]}"
        assert gate_exit(report) is ExitCode.UNKNOWN, rel


def test_every_input_vanishes_before_it_is_read(host: Host) -> None:
    for rel in host.inputs:
        report = _run(host.root, FaultPlan([Fault(rel, errno.ENOENT, on="read")]))
        assert len(report.units) == host.units, rel
        _no_fail(report, rel)
        if rel not in OPTIONAL:
            assert any(f.message.startswith(f"/{rel}: ") for f in report.findings), rel
            assert gate_exit(report) is ExitCode.UNKNOWN, rel


def test_every_input_truncated(host: Host, tmp_path: Path) -> None:
    """Each file cut to nothing, to one byte and to half (every offset of every parser is
    covered by the parsers' own truncation and Hypothesis tests).  A cut file can still be
    valid input with another meaning (an empty command line lacks kho=on, and the gate then
    rightly FAILs), so only "no exception, a valid report, every unit" is asserted here."""
    work = tmp_path / "host"
    shutil.copytree(host.root, work, symlinks=True)
    for rel in host.inputs:
        path = (work / rel).resolve()
        original = path.read_bytes()
        for cut in sorted({0, 1, len(original) // 2}):
            path.chmod(0o600)
            path.write_bytes(original[:cut])
            report = _run(work, FaultPlan())
            assert len(report.units) == host.units, (rel, cut)
        path.write_bytes(original)


def test_kcore_reads_fail_midway(host: Host) -> None:
    """/proc/kcore opens, then every pread fails with EIO: the walks and the record search
    report what they could not read, and nothing FAILs."""
    report = _run(host.root, FaultPlan([Fault("proc/kcore", errno.EIO, on="pread")]))
    _no_fail(report, "kcore pread EIO")
    assert gate_exit(report) is ExitCode.UNKNOWN
