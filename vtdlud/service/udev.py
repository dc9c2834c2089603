"""Kernel uevents that can change what vtdlud sees, from a pyudev netlink monitor.

The monitor listens to the kernel's uevents (``source="kernel"``), not udevd's: udevd's netlink
multicast stays in the host's network namespace, and the unit runs with ``PrivateNetwork=yes``.
No udev rules have run on these events and nothing is read from sysfs here (the device may be
gone already); the event only says "look again".

Relevant: the ``pci`` subsystem's add, remove, bind, unbind and change (a device appears, goes,
changes driver — vfio-pci or not — or SR-IOV VFs are created); anything from the ``iommu`` class
(DMAR units), ``vfio`` (legacy group nodes) and ``vfio-dev`` (VFIO cdevs).  The subsystem filter
runs inside libudev, which drops the other subsystems' events before they reach Python.

When the socket's receive buffer overflows (a burst while the daemon was evaluating), the kernel
drops events and the next read fails with ENOBUFS: :meth:`UeventSource.drain` reports the
overflow and the daemon rescans, which is what the lost events would have caused anyway.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

SUBSYSTEMS = ("pci", "iommu", "vfio", "vfio-dev")
PCI_ACTIONS = frozenset({"add", "remove", "bind", "unbind", "change"})


def is_relevant(subsystem: str | None, action: str | None) -> bool:
    if subsystem == "pci":
        return action in PCI_ACTIONS
    return subsystem in SUBSYSTEMS


@dataclass
class Drained:
    relevant: int = 0
    ignored: int = 0
    overflow: bool = False
    error: str | None = None
    more: bool = False  # stopped at the limit: the socket may still be readable
    last: str | None = None  # "action subsystem devpath" of the last relevant event


class UeventSource:
    """A started ``pyudev.Monitor`` on kernel uevents, filtered to :data:`SUBSYSTEMS`."""

    def __init__(self, monitor: Any = None) -> None:
        """``monitor``: an already started monitor-like object (tests); default: a new one."""
        if monitor is None:
            import pyudev  # noqa: PLC0415 - the daemon path only

            monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
            for subsystem in SUBSYSTEMS:
                monitor.filter_by(subsystem)
            monitor.start()  # non-blocking fd from here on
        self._monitor: Any = monitor

    def fileno(self) -> int:
        fd: int = self._monitor.fileno()
        return fd

    def drain(self, limit: int = 4096) -> Drained:
        """Read queued events without blocking, at most ``limit`` of them."""
        out = Drained()
        for _ in range(limit):
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    out.overflow = True
                    continue  # the error is reported once; events after it are readable
                out.error = f"{exc.strerror or exc} (errno {exc.errno})"
                return out
            if device is None:
                return out
            if is_relevant(device.subsystem, device.action):
                out.relevant += 1
                out.last = f"{device.action} {device.subsystem} {device.device_path}"
            else:
                out.ignored += 1
        out.more = True
        return out
