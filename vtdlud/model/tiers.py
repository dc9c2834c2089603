"""Tiers of visibility (DESIGN.md §2) and the inputs that could not be read."""

from __future__ import annotations

from enum import Enum

from vtdlud.frozen import frozen


class Tier(Enum):
    """Tiers of visibility (DESIGN.md §2), in the order they are reported."""

    SYSFS = "sysfs"
    IOMMU_DEBUGFS = "iommu_debugfs"
    KHO_DEBUGFS = "kho_debugfs"
    KCORE = "kcore"


class TierStatus(Enum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"  # not mounted, not built, not present in the bundle
    DENIED = "denied"  # permission denied or kernel lockdown


@frozen
class TierState:
    tier: Tier
    status: TierStatus
    reason: str

    @property
    def available(self) -> bool:
        return self.status is TierStatus.AVAILABLE


@frozen
class InputProblem:
    """An input that could not be read (VTD051) or is in an unsupported format (VTD052)."""

    path: str  # absolute path as on the host, e.g. /sys/kernel/debug/iommu/intel/iommu_regset
    reason: str
    tier: Tier
    unsupported: bool = False
    unit: int | None = None  # register base address when the input belongs to one unit
