"""What the sandboxed daemon evaluates itself: never kcore, never process facts."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_udev import Dev, FakeMonitor
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity
from vtdlud.model.tiers import Tier, TierStatus
from vtdlud.output.journal import JournalSink
from vtdlud.service.daemon import (
    KCORE_REASON,
    VMM_HELD_NOTE,
    Daemon,
    DaemonOptions,
    daemon_evaluate,
    daemon_policy,
    daemon_snapshot,
)
from vtdlud.service.notify import Notifier
from vtdlud.service.udev import UeventSource


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tier present, kcore and the VMM's process facts included."""
    host = q35_host(scalable=True, seed=2)
    host.vfio_attach("0000:00:05.0")
    host.preserve("0000:00:05.0")
    return write_tree(host, tmp_path_factory.mktemp("full"), TreeOptions())


def test_kcore_and_processes_are_not_read(full_tree: Path) -> None:
    direct = take_snapshot(HostRoot(full_tree))
    assert direct.tiers[Tier.KCORE].available and direct.kcore_walks
    assert direct.processes is not None and direct.processes.holders
    snap = daemon_snapshot(full_tree)
    assert snap.tiers[Tier.KCORE].status is TierStatus.UNAVAILABLE
    assert snap.tiers[Tier.KCORE].reason == KCORE_REASON
    assert snap.kcore_walks == {} and snap.kcore_pages is None and snap.processes is None
    assert snap.tiers[Tier.IOMMU_DEBUGFS].available and snap.tiers[Tier.KHO_DEBUGFS].available


def test_the_daemons_policy() -> None:
    p = daemon_policy(Policy(devices=("0000:00:05.0",)))
    assert p.required_tiers == frozenset({Tier.SYSFS, Tier.KHO_DEBUGFS})
    assert not p.vmm_held and p.devices == ("0000:00:05.0",)


def test_missing_kcore_and_vmm_held_do_not_block_the_daemons_verdict(full_tree: Path) -> None:
    report = daemon_evaluate(full_tree, Policy())  # the default policy: kcore, vmm_held
    notes = [f for f in report.findings if f.code == "VTD050"]
    assert {f.message for f in notes} >= {VMM_HELD_NOTE}
    assert all(not f.required for f in notes)
    assert {f.code for f in report.findings} == {"VTD050"}
    assert report.verdict is Severity.PASS  # the notes do not block
    # The privileged view of the same clean host agrees, without the notes.
    gate_view = evaluate(take_snapshot(HostRoot(full_tree)), Policy())
    assert gate_view.verdict is Severity.PASS and gate_view.findings == ()


class Silent:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def test_an_overflow_schedules_a_rescan(tmp_path: Path) -> None:
    d = Daemon(
        DaemonOptions(argv=["vtdlud", "run"], runtime_dir=tmp_path, metrics=None),
        Silent(),
        notifier=Notifier({}),
        sink=JournalSink(lambda ev, exc: None, sender=lambda fields: None),
        clock=lambda: 100.0,
    )
    d.uevents = UeventSource(FakeMonitor([OSError(errno.ENOBUFS, "No buffer space")]))
    d._on_uevents()
    assert d.stats.uevent_overflows == 1 and d.debounce.pending
    assert d.debounce.deadline() == pytest.approx(100.0 + d.opts.debounce)
    d.uevents = UeventSource(FakeMonitor([Dev("usb", "add")]))
    d.debounce.take(100.0)
    d._on_uevents()
    assert not d.debounce.pending and d.stats.uevents_ignored == 1
