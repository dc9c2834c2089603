"""The real ``vtdlud run`` under umockdev: readiness, uevents, journald events, signals."""

from __future__ import annotations

import signal

from tests.daemon.conftest import VFIO_DEVICE, DaemonFactory, DaemonProc, HostBed, Journald
from vtdlud.audit.catalog import CATALOG
from vtdlud.output import journal as events


def test_ready_after_the_first_evaluation(daemon: DaemonProc, journald: Journald) -> None:
    ready = next(m for m in daemon.messages if "READY=1" in m)
    assert "STATUS=verdict PASS: 1 DMAR unit(s), 1 finding(s); evaluation #1" in ready
    doc = daemon.status()
    assert doc["source"] == "daemon" and doc["verdict"] == "PASS"
    assert [u["name"] for u in doc["units"]] == ["dmar0"]
    started = journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=events.STARTED)
    assert started and started[0]["SYSLOG_IDENTIFIER"] == "vtdlud"


def test_uevent_reevaluates_and_logs_the_change(
    daemon: DaemonProc, testbed: HostBed, journald: Journald
) -> None:
    n = daemon.evaluations()
    testbed.set_driver(VFIO_DEVICE, "e1000e")
    testbed.uevent(testbed.devpath(VFIO_DEVICE), "unbind")
    status = daemon.wait_evaluation(n)
    assert "verdict FAIL" in status
    assert "VTD026" in daemon.codes()
    mid = CATALOG["VTD026"].message_id
    [entry] = journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=mid)
    assert entry["PRIORITY"] == "3"
    assert entry["VTDLUD_CODE"] == "VTD026"
    assert entry["VTDLUD_BDF"] == VFIO_DEVICE
    assert entry["VTDLUD_SEVERITY"] == "FAIL"
    assert entry["VTDLUD_UNIT"] == "none"
    assert entry["VTDLUD_STATE"] == "new"
    assert "bound to e1000e" in entry["MESSAGE"]
    verdicts = journald.read(_PID=daemon.pid, MESSAGE_ID=events.VERDICT_CHANGED)
    assert [v["VTDLUD_VERDICT"] for v in verdicts] == ["PASS", "FAIL"]

    n = daemon.evaluations()
    testbed.set_driver(VFIO_DEVICE, "vfio-pci")
    testbed.uevent(testbed.devpath(VFIO_DEVICE), "bind")
    assert "verdict PASS" in daemon.wait_evaluation(n)
    resolved = journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=events.FINDING_RESOLVED)
    assert [(r["VTDLUD_CODE"], r["PRIORITY"]) for r in resolved] == [("VTD026", "6")]


def test_sigterm_exits_cleanly_within_a_second(daemon: DaemonProc, journald: Journald) -> None:
    assert "vtdlud_verdict{" in daemon.metrics.read_text()
    rc, elapsed = daemon.stop()
    assert rc == 0 and elapsed < 1.0, (rc, elapsed)
    assert any("STOPPING=1" in m for m in daemon.drain(0.1) + daemon.messages)
    assert journald.read(_PID=daemon.pid, MESSAGE_ID=events.STOPPED)
    # `systemctl stop`: node_exporter must not export the last verdict forever.
    assert not daemon.metrics.exists()
    assert daemon.metrics.parent.is_dir()  # node_exporter's directory is not vtdlud's


def test_a_killed_daemon_leaves_its_textfile_to_age(daemon: DaemonProc) -> None:
    """Control: a daemon that dies does not clean up; the file's last-evaluation timestamp then
    ages and VtdludTextfileStale fires."""
    daemon.signal(signal.SIGKILL)
    daemon.running.wait(5)
    assert "vtdlud_last_evaluation_timestamp_seconds " in daemon.metrics.read_text()


def test_watchdog_pings_come_from_the_loop(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(watchdog_usec=200_000)
    got = d.collect(1.0)
    pings = sum(m == "WATCHDOG=1" for m in got)
    assert 6 <= pings <= 14, got  # every 0.1 s for 1 s


def test_sighup_good_and_bad_config(
    daemon: DaemonProc, testbed: HostBed, journald: Journald
) -> None:
    n = daemon.evaluations()
    # A good config that requires 00:02.0 (bound to e1000e): VTD026 after the reload.
    daemon.config.write_text(daemon.config.read_text().replace(VFIO_DEVICE, "0000:00:02.0"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_message(lambda m: "RELOADING=1" in m)
    daemon.wait_evaluation(n)
    daemon.wait_message(lambda m: "READY=1" in m)
    assert "VTD026" in daemon.codes()
    assert journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=events.CONFIG_RELOADED)

    # Garbage: rejected with file:line, the previous policy stays.
    daemon.config.write_text('[preserve]\ndevices = ["0000:00:02.0"]\nvmm_held = "yes"\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_message(lambda m: "READY=1" in m)
    [rejected] = journald.wait_for(bool, _PID=daemon.pid, MESSAGE_ID=events.CONFIG_REJECTED)
    assert rejected["VTDLUD_CONFIG_ERROR"].startswith(f"{daemon.config}:3: ")
    assert rejected["PRIORITY"] == "3"
    assert f"{daemon.config}:3:" in daemon.stderr_text()
    n = daemon.evaluations()
    testbed.uevent(testbed.devpath("0000:00:02.0"), "change")
    daemon.wait_evaluation(n)
    assert "VTD026" in daemon.codes()  # still judged by the good config
    assert daemon.running.poll() is None
