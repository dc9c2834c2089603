"""Which uevents count, read through the real pyudev monitor the daemon uses (umockdev)."""

from __future__ import annotations

import ctypes
import errno
import gc
import select
from dataclasses import dataclass

import pytest

from tests.daemon.conftest import HostBed
from vtdlud.service.udev import UeventSource, is_relevant


@pytest.mark.parametrize(
    ("subsystem", "action", "relevant"),
    [
        ("pci", "add", True),
        ("pci", "remove", True),
        ("pci", "bind", True),
        ("pci", "unbind", True),
        ("pci", "change", True),
        ("pci", "online", False),
        ("pci", "move", False),
        ("iommu", "add", True),
        ("vfio", "add", True),
        ("vfio-dev", "remove", True),
        ("usb", "add", False),
        ("block", "change", False),
        (None, None, False),
    ],
)
def test_is_relevant(subsystem: str | None, action: str | None, relevant: bool) -> None:
    assert is_relevant(subsystem, action) is relevant


def _wait_readable(fd: int) -> None:
    assert select.select([fd], [], [], 2.0)[0], "no uevent arrived"


def test_monitor_counts_relevant_events(testbed: HostBed) -> None:
    source = UeventSource()
    usb = testbed.add_unrelated("usb", "usb1")  # announced as "add"; libudev's filter drops it
    testbed.uevent(usb, "change")
    pci = testbed.devpath("0000:00:02.0")
    for action in ("bind", "online", "change"):
        testbed.uevent(pci, action)
    testbed.uevent("/sys/devices/virtual/iommu/dmar0", "change")
    _wait_readable(source.fileno())
    got = source.drain()
    assert (got.relevant, got.ignored, got.overflow, got.error) == (3, 1, False, None)
    assert got.last == "change iommu /devices/virtual/iommu/dmar0"
    assert source.drain().relevant == 0  # nothing left, and it did not block


@dataclass
class Dev:
    subsystem: str
    action: str
    device_path: str = "/devices/x"


class FakeMonitor:
    """Replays a script of events and errors (an overflow is ENOBUFS from recvmsg)."""

    def __init__(self, script: list[Dev | OSError]) -> None:
        self.script = script

    def poll(self, timeout: float) -> Dev | None:
        assert timeout == 0
        if not self.script:
            return None
        item = self.script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def fileno(self) -> int:
        return -1


def test_overflow_is_reported_and_reading_goes_on() -> None:
    enobufs = OSError(errno.ENOBUFS, "No buffer space available")
    mon = FakeMonitor([Dev("pci", "add"), enobufs, Dev("pci", "add"), Dev("usb", "add")])
    got = UeventSource(mon).drain()
    assert (got.relevant, got.ignored, got.overflow, got.error) == (2, 1, True, None)


def test_other_errors_stop_the_drain() -> None:
    mon = FakeMonitor([OSError(errno.EBADF, "Bad file descriptor"), Dev("pci", "add")])
    got = UeventSource(mon).drain()
    assert got.error is not None and "errno 9" in got.error and got.relevant == 0


def test_drain_is_bounded() -> None:
    mon = FakeMonitor([Dev("pci", "change") for _ in range(10)])
    got = UeventSource(mon).drain(limit=4)
    assert got.relevant == 4 and got.more
    assert UeventSource(mon).drain().relevant == 6


def _umockdev_dir() -> str | None:
    """UMOCKDEV_DIR as the preload reads it: the C environment (os.environ is a copy)."""
    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    value: bytes | None = getenv(b"UMOCKDEV_DIR")
    return None if value is None else value.decode()


@pytest.mark.parametrize("run", [1, 2])
def test_earlier_testbed_collected_late_keeps_fake_sys(testbed: HostBed, run: int) -> None:
    """A testbed left in a reference cycle by one test, collected during the next, must not take
    the next test's /sys redirection with it (umockdev's finalizer unsets UMOCKDEV_DIR)."""
    gc.collect()  # run 2: collects run 1's cycle
    assert _umockdev_dir() == str(testbed.root_dir)
    assert (testbed.sys_dir / "class/iommu/dmar0").exists()
    cycle: list[object] = [testbed]
    cycle.append(cycle)  # run 1: keeps this testbed alive until the collector runs
