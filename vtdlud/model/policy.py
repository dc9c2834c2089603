"""The policy: which devices must survive a live update, and what the gate requires.

Read from ``vtdlud.toml`` and its drop-ins by :mod:`vtdlud.host.config`, parsed by
:mod:`vtdlud.parse.policy`.
"""

from __future__ import annotations

from dataclasses import field

from vtdlud.frozen import frozen
from vtdlud.model.severity import Severity
from vtdlud.model.tiers import Tier


@frozen
class DeviceId:
    vendor: int
    device: int | None  # None: any device of the vendor

    def matches(self, vendor: int | None, device: int | None) -> bool:
        return vendor == self.vendor and (self.device is None or device == self.device)

    def __str__(self) -> str:
        return f"{self.vendor:04x}:" + ("*" if self.device is None else f"{self.device:04x}")


@frozen
class Policy:
    """What must be preserved and what the gate requires (defaults as DESIGN.md §3)."""

    devices: tuple[str, ...] = ()  # BDF globs ("0000:03:00.0", "0000:81:*.*")
    ids: tuple[DeviceId, ...] = ()
    vmm_held: bool = True  # every device a VMM holds through a VFIO cdev + /dev/iommu
    fail_severity: Severity = Severity.FAIL
    required_tiers: frozenset[Tier] = frozenset({Tier.SYSFS, Tier.KHO_DEBUGFS, Tier.KCORE})
    sources: tuple[str, ...] = field(default=(), compare=False)


def policy_wants(policy: Policy, bdf: str, vendor: int | None, device: int | None) -> bool:
    """Does the policy's device list or ID list name this device (vmm_held aside)?"""
    if policy.devices:
        from fnmatch import fnmatchcase  # noqa: PLC0415 - 3 ms of import, for device globs only

        if any(fnmatchcase(bdf, g) for g in policy.devices):
            return True
    return any(i.matches(vendor, device) for i in policy.ids)
