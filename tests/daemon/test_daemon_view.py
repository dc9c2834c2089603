"""What the sandboxed daemon evaluates itself: never kcore, never process facts."""

from __future__ import annotations

import errno
import gc
import weakref
from collections.abc import Iterator
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
from vtdlud.model.snapshot import Snapshot
from vtdlud.model.tiers import Tier, TierStatus
from vtdlud.output.journal import JournalSink
from vtdlud.service import sandbox
from vtdlud.service.daemon import Daemon
from vtdlud.service.notify import Notifier
from vtdlud.service.options import DaemonOptions
from vtdlud.service.sandbox import (
    KCORE_REASON,
    VMM_HELD_NOTE,
    daemon_evaluate,
    daemon_policy,
    daemon_snapshot,
)
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
    """The operator's required tiers stay: the daemon's missing kcore blocks its verdict as
    it would block the gate's (issue #14 item 5); vmm_held is off (said by a VTD050)."""
    p = daemon_policy(Policy(devices=("0000:00:05.0",)))
    assert p.required_tiers == Policy().required_tiers
    assert Tier.KCORE in p.required_tiers
    assert not p.vmm_held and p.devices == ("0000:00:05.0",)


def test_missing_kcore_and_vmm_held_make_the_daemons_verdict_unknown(full_tree: Path) -> None:
    """The default policy requires kcore and has vmm_held: the daemon sees neither, so its
    verdict is UNKNOWN with the reasons, never PASS (it said PASS before issue #14)."""
    report = daemon_evaluate(full_tree, Policy())
    notes = [f for f in report.findings if f.code == "VTD050"]
    assert {f.message for f in notes} >= {VMM_HELD_NOTE}
    assert any(KCORE_REASON in f.message for f in notes)
    assert all(f.required for f in notes)
    assert {f.code for f in report.findings} == {"VTD050"}
    assert report.verdict is Severity.UNKNOWN
    # The privileged view of the same clean host passes.
    gate_view = evaluate(take_snapshot(HostRoot(full_tree)), Policy())
    assert gate_view.verdict is Severity.PASS and gate_view.findings == ()


def test_a_policy_that_does_not_require_kcore_lets_the_daemon_pass(full_tree: Path) -> None:
    """Not requiring kcore (and no vmm_held) is the operator's choice: then the daemon's own
    checks decide, and the missing kcore is a note that does not block."""
    relaxed = Policy(
        devices=("0000:00:05.0",),
        vmm_held=False,
        required_tiers=frozenset({Tier.SYSFS, Tier.KHO_DEBUGFS}),
    )
    report = daemon_evaluate(full_tree, relaxed)
    assert [(f.code, f.required) for f in report.findings] == [("VTD050", False)]
    assert report.verdict is Severity.PASS


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


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Only the daemon's own collections run: one the allocator happened to trigger would hide
    a snapshot held in a reference cycle."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_automatic_collection")
def test_an_evaluation_keeps_no_snapshot(
    full_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon keeps an evaluation's JSON document, never its snapshot (nor its reader, nor
    its report, which holds the snapshot): each is gone once the evaluation is over, so the
    next is never built beside it (issue #15: a storm's evaluations left several hosts' reads
    alive at once)."""
    taken: list[tuple[weakref.ref[Snapshot], weakref.ref[HostRoot]]] = []

    def spy(root: HostRoot, **kw: Any) -> Snapshot:
        assert [(s(), r()) for s, r in taken] == [(None, None)] * len(taken)  # before building
        snap = take_snapshot(root, **kw)
        taken.append((weakref.ref(snap), weakref.ref(root)))
        return snap

    monkeypatch.setattr(sandbox, "take_snapshot", spy)  # where daemon_snapshot looks it up
    d = Daemon(
        DaemonOptions(
            argv=["vtdlud", "run"], root=str(full_tree), runtime_dir=tmp_path, metrics=None
        ),
        Silent(),
        notifier=Notifier({}),
        sink=JournalSink(lambda ev, exc: None, sender=lambda fields: None),
    )
    for trigger in ("start", "uevent", "backstop"):
        d.evaluate(trigger)
        assert d.doc is not None and d.stats.evaluation_errors == 0
        assert [(s(), r()) for s, r in taken] == [(None, None)] * len(taken)
    assert len(taken) == d.stats.evaluations == 3
    assert (tmp_path / "status.json").exists()
