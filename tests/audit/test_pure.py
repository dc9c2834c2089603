"""``evaluate(snapshot, policy, ledger)`` touches nothing outside its arguments.

Each snapshot (and ledger) is read by ``host/`` first; then ``evaluate`` runs once to import what
it imports lazily, and once more under an audit hook that fails on any file, directory, process or
network access (``open`` — which covers ``os.open``, ``io.open`` and ``Path.read_*`` — and every
``os.``, ``shutil.``, ``glob.``, ``pathlib.``, ``subprocess.``, ``socket.``, ``mmap.`` and
``fcntl.`` event) and a profiler that records every function of ``host/`` or ``parse/`` it calls:
no ``host/`` code runs, and of ``parse/`` only the string helpers below (a BDF, a command-line
value).  Both runs give the same report.  The hosts are the real captures and the kernel model's
trees (tests/kernelmodel): the gate with preserved devices and faults, the daemon's view without
kcore, and after the kexec the post-kexec check with a ledger, a kernel log with DMAR fault lines
and records located at the ledger's addresses (Linux 7.2's model).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.conftest import CAPTURE_NAMES
from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import linux72_host, q35_host, two_unit_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.ledger import ledger_from_report
from vtdlud.audit.report import Report
from vtdlud.host.ledger import read_ledger_input
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.ledger import LedgerInput
from vtdlud.model.policy import Policy
from vtdlud.model.snapshot import Snapshot
from vtdlud.service.ledger import write_ledger

PACKAGE = Path(__file__).resolve().parents[2] / "vtdlud"
FORBIDDEN = (
    *("open", "os.", "shutil.", "glob.", "pathlib.", "subprocess.", "socket.", "mmap."),
    *("fcntl.", "ctypes.", "sqlite3.", "urllib.", "http.", "ftplib.", "webbrowser."),
)
# parse/ helpers evaluate may call: they read a string it already holds, never a file.
PURE_HELPERS = {"parse/sysfs.py": {"parse_bdf", "cmdline_value", "kstrtobool"}}
VFIO = "0000:00:05.0"
FAULT_LINE = (
    "3,813,5123460,-;DMAR: [DMA Read NO_PASID] Request device [00:05.0] fault addr 0xffffe000 "
    "[fault reason 0x06] PTE Read access is not set\n"
)

_armed: list[str] = []  # the events seen while armed; the hook stays installed once added


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _armed and event.startswith(FORBIDDEN):
        _armed.append(f"{event}{args!r:.120}")
        raise PermissionError(f"evaluate is pure: {event} {args!r:.120}")


sys.addaudithook(_hook)


@contextmanager
def _no_io(calls: list[str]) -> Iterator[None]:
    """Fail on any I/O (the audit hook) and record the host/ and parse/ functions called."""

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        path = frame.f_code.co_filename
        if path.startswith(str(PACKAGE)):
            rel = Path(path).relative_to(PACKAGE).as_posix()
            if rel.startswith(("host/", "parse/")):
                calls.append(f"{rel}:{frame.f_code.co_name}")

    _armed.append("armed")
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)
        seen = _armed[1:]
        _armed.clear()
        assert seen == [], f"evaluate did I/O: {seen}"


def _pure(
    snapshot: Snapshot, policy: Policy | None = None, ledger: LedgerInput | None = None
) -> Report:
    warm = evaluate(snapshot, policy, ledger)  # imports what evaluate imports lazily
    calls: list[str] = []
    with _no_io(calls):
        report = evaluate(snapshot, policy, ledger)
    foreign = sorted(
        {c for c in calls if c.split(":")[1] not in PURE_HELPERS.get(c.split(":")[0], set())}
    )
    assert foreign == [], f"evaluate ran host/ or parse/ code: {foreign}"
    assert (report.units, report.findings, report.wanted) == (
        warm.units,
        warm.findings,
        warm.wanted,
    )
    assert report.consume_ledger == warm.consume_ledger
    return report


def test_the_hook_sees_a_file_being_opened(tmp_path: Path) -> None:
    """Control: armed, opening, listing or reading a file fails and is reported."""
    (tmp_path / "f").write_text("x")
    reads: list[Callable[[], object]] = [
        lambda: open(tmp_path / "f").close(),
        (tmp_path / "f").read_bytes,
        lambda: list(tmp_path.iterdir()),
    ]
    for read in reads:
        with (
            pytest.raises(AssertionError, match="evaluate did I/O"),
            _no_io([]),
            suppress(PermissionError),
        ):
            read()


def test_the_profiler_sees_host_code(tmp_path: Path) -> None:
    """Control: a host/ function called while armed is recorded."""
    calls: list[str] = []
    root = HostRoot(tmp_path)
    with _no_io(calls):
        root.resolve("x")
    assert any(c.startswith("host/root.py:") for c in calls)


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_on_the_real_captures(capture_root: Callable[[str], Path], name: str) -> None:
    snap = take_snapshot(HostRoot(capture_root(name)))
    assert snap.live_tables  # derived by host/, read by evaluate
    _pure(snap)


def _preserved(host: SimHost) -> SimHost:
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    return host


GATE_FAULTS = (None, Fault.BIT_MISSING, Fault.DEBUGFS_DISAGREES, Fault.WRONG_ATTACHMENT_ID)
GATE_CASES = [(s, f) for s in (False, True) for f in GATE_FAULTS]


@pytest.mark.parametrize("scalable,fault", GATE_CASES)
def test_the_gate_on_the_kernel_model(tmp_path: Path, scalable: bool, fault: Fault | None) -> None:
    host = _preserved(q35_host(scalable=scalable, seed=5))
    if fault is not None:
        inject(host, fault)
    snap = take_snapshot(HostRoot(write_tree(host, tmp_path)))
    assert snap.kcore_walks and snap.preserved is not None
    report = _pure(snap, Policy(devices=(VFIO,)))
    assert (fault is None) == (report.findings == ())


def test_the_daemons_view_and_two_units(tmp_path: Path) -> None:
    root = write_tree(_preserved(two_unit_host(seed=6)), tmp_path)
    _pure(take_snapshot(HostRoot(root), skip_kcore="the daemon never reads kcore"))
    _pure(take_snapshot(HostRoot(root)))


def _after_kexec(host: SimHost, tmp_path: Path, fault: Fault | None, log: bytes) -> Report:
    before = take_snapshot(HostRoot(write_tree(host, tmp_path / "before")))
    state = tmp_path / "state"
    write_ledger(state, ledger_from_report(evaluate(before)))
    host.kexec()
    if fault is not None:
        inject(host, fault)
    found = read_ledger_input(state)
    assert found.ledger is not None
    root = write_tree(host, tmp_path / "after", TreeOptions(overrides={"dev/kmsg": log}))
    hints = found.ledger.record_addresses()
    snap = take_snapshot(HostRoot(root), record_hints=hints, kernel_log=True)
    assert snap.kernel_log is not None and snap.kernel_log.dmar_faults is not None
    return _pure(snap, Policy(), found)


@pytest.mark.parametrize(
    "fault", [None, Fault.NOT_RESTORED, Fault.ROOT_TABLE_CHANGED, Fault.CONTEXT_CHANGED]
)
def test_the_post_kexec_check(tmp_path: Path, fault: Fault | None) -> None:
    report = _after_kexec(_preserved(q35_host(seed=7)), tmp_path, fault, FAULT_LINE.encode())
    codes = {f.code for f in report.findings}
    assert "VTD063" in codes and report.consume_ledger


def test_the_post_kexec_check_on_linux72(tmp_path: Path) -> None:
    """The incoming records located at the ledger's addresses, read by host/ before evaluate."""
    report = _after_kexec(_preserved(linux72_host(seed=8)), tmp_path, None, b"")
    [unit] = report.units
    assert unit.preserved is not None and report.findings == ()
