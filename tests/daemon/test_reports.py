"""The oneshots' reports: the daemon picks up gate.json (written by the real `vtdlud check
--report`) and post-kexec.json, turns them into journald events and metrics, and survives
garbage in them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.daemon.conftest import DaemonFactory, DaemonProc, HostBed, Journald, clean_env
from vtdlud.audit.catalog import CATALOG
from vtdlud.output import journal as events


def run_gate(tree: Path, report: Path) -> int:
    """The real gate on the simulated host's tree (no kcore, no KHO: it fails closed, exit 3)."""
    cmd = [sys.executable, "-m", "vtdlud", "check", "--root", str(tree), "--no-ledger"]
    run = subprocess.run(
        [*cmd, "--report", str(report)],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return run.returncode


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m is None:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return None


def test_gate_report_becomes_events_and_metrics(
    daemon: DaemonProc, testbed: HostBed, journald: Journald
) -> None:
    assert run_gate(testbed.work / "tree", daemon.runtime / "gate.json") == 3
    gate = json.loads((daemon.runtime / "gate.json").read_text())
    daemon.wait_message(lambda m: "gate report UNKNOWN" in m)
    [picked] = journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=events.REPORT_PICKED_UP)
    assert picked["VTDLUD_SOURCE"] == "gate"
    assert picked["VTDLUD_EXIT_STATUS"] == "3"
    assert picked["VTDLUD_VERDICT"] == "UNKNOWN"
    mid = CATALOG["VTD050"].message_id
    vtd050 = journald.read(_PID=daemon.pid, MESSAGE_ID=mid, VTDLUD_SOURCE="gate")
    assert len(vtd050) == sum(f["code"] == "VTD050" for f in gate["findings"]) > 0
    assert {e["PRIORITY"] for e in vtd050} == {"4"}

    text = daemon.metrics.read_text()
    assert metric(text, "vtdlud_verdict", source="gate", verdict="UNKNOWN") == 1
    assert metric(text, "vtdlud_verdict", source="daemon", verdict="PASS") == 1
    assert metric(text, "vtdlud_report_exit_status", source="gate") == 3
    assert metric(text, "vtdlud_tier_available", source="gate", tier="kcore") == 0
    assert metric(text, "vtdlud_report_valid", source="gate") == 1
    assert daemon.daemon_json()["reports"]["gate"]["verdict"] == "UNKNOWN"

    # Garbage: logged, metrics say so, the daemon carries on.
    (daemon.runtime / "gate.json").write_text("{not json")
    [bad] = journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=events.REPORT_UNREADABLE)
    assert "not JSON" in bad["VTDLUD_ERROR"] and bad["VTDLUD_SOURCE"] == "gate"
    daemon.wait_message(lambda m: "STATUS=" in m)
    assert metric(daemon.metrics.read_text(), "vtdlud_report_valid", source="gate") == 0
    assert daemon.running.poll() is None

    # A post-kexec report (same envelope) is the post_kexec source.
    (daemon.runtime / "post-kexec.json").write_text(json.dumps(gate))
    journald.wait_for(lambda e: len(e) == 2, _PID=daemon.pid, MESSAGE_ID=events.REPORT_PICKED_UP)
    both = journald.read(_PID=daemon.pid, MESSAGE_ID=events.REPORT_PICKED_UP)
    assert [p["VTDLUD_SOURCE"] for p in both] == ["gate", "post_kexec"]


def test_a_restarted_daemon_does_not_repeat_the_report_events(
    daemon_factory: DaemonFactory, testbed: HostBed, journald: Journald
) -> None:
    first = daemon_factory()
    assert run_gate(testbed.work / "tree", first.runtime / "gate.json") == 3
    first.wait_message(lambda m: "gate report" in m)
    assert first.stop()[0] == 0
    second = DaemonProc(first.work, testbed, config=first.config.read_text())
    try:
        second.launch()
        assert "gate report UNKNOWN" in second.messages[-1]
        journald.wait_for(bool, _PID=second.pid, MESSAGE_ID=events.STARTED)
        assert journald.read(_PID=second.pid, MESSAGE_ID=events.REPORT_PICKED_UP) == []
        assert journald.read(_PID=first.pid, MESSAGE_ID=events.REPORT_PICKED_UP) != []
    finally:
        second.close()
