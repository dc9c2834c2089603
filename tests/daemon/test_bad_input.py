"""Bad input (issue: the daemon keeps running, reports UNKNOWN where it cannot see, and recovers
on the next evaluation): unrelated uevents, vanishing devices, debugfs files disappearing,
journald restarting, garbage config and reports."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

from tests.daemon.conftest import VFIO_DEVICE, DaemonFactory, DaemonProc, HostBed, Journald
from vtdlud.audit.catalog import CATALOG
from vtdlud.output import journal as events

REGSET = "/sys/kernel/debug/iommu/intel/iommu_regset"


def test_unrelated_subsystems_do_not_evaluate(daemon: DaemonProc, testbed: HostBed) -> None:
    n = daemon.evaluations()
    usb = testbed.add_unrelated("usb", "usb1")  # add_device() itself announces "add"
    for action in ("change", "bind", "remove"):
        testbed.uevent(usb, action)
    testbed.uevent(testbed.devpath("0000:00:02.0"), "online")  # pci, but not an action we use
    assert daemon.drain(0.6) == []  # no evaluation, no STATUS
    assert daemon.evaluations() == n
    testbed.uevent(testbed.devpath("0000:00:02.0"), "change")  # positive control
    daemon.wait_evaluation(n)
    assert daemon.drain(0.4) == []
    uevents = daemon.daemon_json()["uevents"]
    assert uevents["relevant"] == 1 and uevents["ignored"] == 1


def test_vanished_device_is_unknown_then_recovers(daemon: DaemonProc, testbed: HostBed) -> None:
    """A device gone between the uevent and the read: its links dangle until the kernel has
    finished removing it.  UNKNOWN meanwhile, PASS once sysfs is consistent again."""
    bdf = "0000:00:03.0"
    devdir = testbed.real(f"/sys/bus/pci/devices/{bdf}")
    devpath = testbed.devpath(bdf)
    saved = testbed.work / "saved-dev"
    shutil.copytree(devdir, saved, symlinks=True)
    n = daemon.evaluations()
    testbed.uevent(devpath, "remove")
    shutil.rmtree(devdir)  # the device is gone; /sys/bus/pci/devices/<bdf> still points at it
    daemon.wait_evaluation(n)
    doc = daemon.status()
    assert doc["verdict"] == "UNKNOWN", doc["findings"]
    assert any(f["code"] == "VTD051" and bdf in f["message"] for f in doc["findings"]), doc[
        "findings"
    ]
    assert daemon.running.poll() is None

    shutil.copytree(saved, devdir, symlinks=True)  # the kernel re-adds it
    n = daemon.evaluations()
    testbed.uevent(devpath, "add")
    daemon.wait_evaluation(n)
    assert daemon.status()["verdict"] == "PASS"


def test_debugfs_file_disappearing(daemon_factory: DaemonFactory, testbed: HostBed) -> None:
    daemon = daemon_factory(args=("--debounce", "0.05"))
    regset = testbed.host_path(REGSET)
    saved = regset.read_bytes()
    regset.unlink()
    n = daemon.evaluations()
    testbed.uevent(testbed.devpath("0000:00:02.0"), "change")
    daemon.wait_evaluation(n)
    doc = daemon.status()
    assert doc["verdict"] == "UNKNOWN"
    assert any(f["code"] == "VTD051" and REGSET in f["message"] for f in doc["findings"])

    # Now it comes and goes while the daemon evaluates, again and again.
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            regset.write_bytes(saved)
            regset.unlink()

    flapper = threading.Thread(target=flap)
    flapper.start()
    try:
        for _ in range(6):
            n = daemon.evaluations()
            testbed.uevent(testbed.devpath("0000:00:02.0"), "change")
            daemon.wait_evaluation(n)
    finally:
        stop.set()
        flapper.join()
    assert daemon.running.poll() is None
    regset.write_bytes(saved)
    n = daemon.evaluations()
    testbed.uevent(testbed.devpath("0000:00:02.0"), "change")
    daemon.wait_evaluation(n)
    assert daemon.status()["verdict"] == "PASS"


def test_journald_restarting(
    daemon_factory: DaemonFactory, testbed: HostBed, journald: Journald
) -> None:
    assert journald.owned  # the session's own journald: stopping it disturbs no one else
    d = daemon_factory(watchdog_usec=400_000)  # pings (and backlog flushes) every 0.2 s
    journald.stop()  # its socket file stays behind: sends fail with ECONNREFUSED
    try:
        n = d.evaluations()
        testbed.set_driver(VFIO_DEVICE, "e1000e")
        testbed.uevent(testbed.devpath(VFIO_DEVICE), "unbind")
        d.wait_evaluation(n)
        assert d.daemon_json()["journal"]["backlog"] >= 2  # VTD026 new + verdict FAIL
        assert "journald unavailable" in d.stderr_text()
        assert d.running.poll() is None
    finally:
        journald.start()
    mid = CATALOG["VTD026"].message_id
    entries = journald.wait_for(bool, _PID=d.pid, MESSAGE_ID=mid)  # re-sent at a ping
    assert [(e["VTDLUD_CODE"], e.get("VTDLUD_RESENT")) for e in entries] == [("VTD026", "1")]
    verdicts = journald.read(_PID=d.pid, MESSAGE_ID=events.VERDICT_CHANGED)
    assert [v["VTDLUD_VERDICT"] for v in verdicts] == ["PASS", "FAIL"]
    assert all(v.get("VTDLUD_RESENT") == "1" for v in verdicts[1:])


def test_garbage_config_at_start_exits_2(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(config="[preserve\n", ready=False)
    assert d.running.wait(20) == 2
    assert f"{d.config}:1: TOML syntax error" in d.stderr_text()


def test_unwritable_metrics_directory_is_logged_not_fatal(
    daemon_factory: DaemonFactory, testbed: HostBed
) -> None:
    d = daemon_factory(args=("--metrics", "/nonexistent-dir/vtdlud.prom"))
    assert "cannot write the metrics textfile" in d.stderr_text()
    n = d.evaluations()
    testbed.uevent(testbed.devpath("0000:00:02.0"), "change")
    d.wait_evaluation(n)
    assert d.running.poll() is None
    assert not os.path.exists("/nonexistent-dir")


def test_fifo_config_and_report_do_not_stall(daemon: DaemonProc, testbed: HostBed) -> None:
    """Issue #11 item 4: on main a FIFO as the config blocked the daemon in open(2) at SIGHUP
    (and one as gate.json at every pickup); now the reload is rejected with the reason, the
    report is "unreadable", and the loop goes on."""
    daemon.config.unlink()
    os.mkfifo(daemon.config)
    os.mkfifo(daemon.runtime / "gate.json")
    daemon.signal(signal.SIGHUP)
    daemon.wait_message(lambda m: "READY=1" in m)
    assert f"{daemon.config}: cannot read: a FIFO, not a regular file" in daemon.stderr_text()
    n = daemon.evaluations()
    testbed.uevent(testbed.devpath("0000:00:02.0"), "change")
    daemon.wait_evaluation(n)
    assert daemon.running.poll() is None
    assert daemon.daemon_json()["reports"]["gate"]["error"] == (
        "cannot read: a FIFO, not a regular file"
    )


def test_start_sweeps_the_temp_files_a_killed_daemon_left(testbed: HostBed, tmp_path: Path) -> None:
    """Issue #11 item 8: on main a daemon killed mid-write left .status.json.*.tmp for good."""
    d = DaemonProc(tmp_path, testbed)
    left = [
        d.runtime / ".status.json.0123456789ab.tmp",
        d.runtime / ".daemon.json.0123456789ab.tmp",
        d.metrics_dir / ".vtdlud.prom.0123456789ab.tmp",
    ]
    for p in left:
        p.write_text("half")
    other = d.runtime / ".gate.json.0123456789ab.tmp"  # the gate's, possibly being written
    other.write_text("half")
    try:
        d.launch()
        assert [p for p in left if p.exists()] == []
        assert other.exists()
    finally:
        d.close()
