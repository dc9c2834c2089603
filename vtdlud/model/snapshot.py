"""What one look at a host saw: the pure data the audit evaluates (built by ``host/``)."""

from __future__ import annotations

from dataclasses import field
from enum import Enum
from typing import TYPE_CHECKING

from vtdlud.frozen import frozen
from vtdlud.parse.pciconfig import PciConfig
from vtdlud.parse.sysfs import ReservedRegion

if TYPE_CHECKING:
    from vtdlud.host.kho import KhoState
    from vtdlud.host.records import PreservedRecords
    from vtdlud.model.dmar import DmarTable
    from vtdlud.model.walk import WalkResult
    from vtdlud.parse.debugfs import Regset, TranslationStruct


# Why the kcore tier is unavailable when there is no /proc/kcore (shared by host/ modules).
KCORE_MISSING_LIVE = "no /proc/kcore (CONFIG_PROC_KCORE=n)"
KCORE_MISSING_ROOT = "no proc/kcore under this root (bundles carry no physical memory)"
VFIO_PCI = "vfio-pci"  # the driver a device must be bound to for VFIO to hand it to a VMM


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


@frozen
class SysfsUnit:
    """/sys/class/iommu/<name>/intel-iommu/* and devices/."""

    name: str
    address: int | None
    version: str | None
    cap: int | None
    ecap: int | None
    domains_supported: int | None
    domains_used: int | None
    devices: tuple[str, ...]


@frozen
class PciDevice:
    bdf: str
    vendor: int | None
    device: int | None
    pci_class: int | None
    driver: str | None  # basename of the driver link ("vfio-pci"), None when unbound
    iommu: str | None  # unit name from the iommu link ("dmar0")
    iommu_group: int | None
    vfio_devs: tuple[str, ...]  # vfio-dev/vfioN: the VFIO cdevs of this device
    parent: str | None = None  # upstream bridge (from the sysfs device path); None on a root bus
    config: PciConfig | None = None  # the facts read from config space


@frozen
class IommuGroup:
    number: int
    type: str | None
    reserved_regions: tuple[ReservedRegion, ...]
    devices: tuple[str, ...]


@frozen
class VfioHolder:
    """A process holding VFIO devices open (see host/procs.py)."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    vfio_cdevs: tuple[str, ...]  # "vfio0" for /dev/vfio/devices/vfio0
    vfio_groups: tuple[str, ...]  # "7" for /dev/vfio/7 (legacy group API)
    iommufd: bool  # holds /dev/iommu


@frozen
class ProcessFacts:
    holders: tuple[VfioHolder, ...]
    complete: bool  # every process's descriptors were readable
    note: str  # how the facts were obtained, and what could not be read


@frozen
class Snapshot:
    root: str
    kernel_release: str | None
    boot_id: str | None
    cmdline: tuple[str, ...] | None
    kexec_loaded: bool | None
    lockdown: str | None
    tiers: dict[Tier, TierState]
    units: tuple[SysfsUnit, ...]
    pci_devices: dict[str, PciDevice]
    groups: dict[int, IommuGroup]  # the IOMMU groups of the devices bound to vfio-pci
    dmar: DmarTable | None
    regset: Regset | None
    translation: TranslationStruct | None
    problems: tuple[InputProblem, ...] = field(default=())
    processes: ProcessFacts | None = None  # None: not known (a bundle without process facts)
    kho: KhoState | None = None  # None: the kho_debugfs tier is not available
    # Each unit's tables walked through /proc/kcore, by register base address.
    kcore_walks: dict[int, WalkResult] = field(default_factory=dict)
    # Every physical page read (for `collect --memory`); None when kcore was not open.
    kcore_pages: dict[int, bytes] | None = None
    # The kernel's IOMMU live-update records (after kexec through the LUO FLB, before it by
    # signature through KHO's preserved-memory map).
    preserved: PreservedRecords | None = None  # None: kcore or KHO not visible
    # Why this host has no Intel VT-d (sysfs visible, no DMAR unit): what sysfs, the ACPI DMAR
    # table and the command line show.  None: it has DMAR units, or sysfs is not visible.  The
    # verdict is then NOT_APPLICABLE (DESIGN.md §3).
    vtd_absent: str | None = None
