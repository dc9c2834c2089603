"""LUO (the Live Update Orchestrator) as vtdlud sees it: the blob of each generation, its
sessions, files and FLBs, and the IOMMU FLB with the ABI variant its records use.

Decoded (and walked through physical memory) by :mod:`vtdlud.parse.luo`.
"""

from __future__ import annotations

from enum import Enum

from vtdlud.frozen import frozen
from vtdlud.model.abi import AbiVariant, UnknownAbi

LUO_SESSION_COMPATIBLE_V1 = "luo-session-v1"
LUO_SESSION_COMPATIBLE_V2 = "luo-session-v2"
# Both posted IOMMU FLB compatibles start with this; a renamed later one is then still found
# (and reported as an unknown ABI) rather than silently missed.  [I]
IOMMU_FLB_PREFIX = "iommu-liveupdate"
# LIVEUPDATE_TEST_FLB_COMPATIBLE(i) of Linux 7.2.13 include/linux/kho/abi/luo.h
TEST_FLB_PREFIX = "liveupdate-test-flb-v"


class LuoGeneration(Enum):
    FDT = "fdt"  # (a)
    STRUCT_FEATURES = "struct-features"  # (b)
    STRUCT_COMPATIBLE = "struct-compatible"  # (c)


class SessionFormat(Enum):
    HEADER_V1 = LUO_SESSION_COMPATIBLE_V1  # contiguous, names only
    HEADER_V2 = LUO_SESSION_COMPATIBLE_V2  # contiguous, with contiguous file arrays
    BLOCKS = "kho-blocks"  # chained kho blocks, for the sessions and each file set


@frozen
class UnknownLuo:
    """A LUO blob, or one of its parts, in a format this version does not decode (VTD040)."""

    compatible: str
    reason: str


@frozen
class StaleLuo:
    """An incoming LUO blob (or a part behind it) that the running kernel consumed and freed at
    boot and that no longer reads as what the previous kernel wrote: no finding, a reason."""

    what: str  # "blob", "sessions", "FLBs", "IOMMU FLB"
    reason: str


@frozen
class LuoFeatures:
    supp: int
    req: int
    active: int


@frozen
class SessionsRef:
    format: SessionFormat
    phys: int  # the session header (a) or the first block (b, c); 0 = none (b, c)


@frozen
class FlbsRef:
    phys: int  # luo_flb_header_ser; 0 = none (b, c)


@frozen
class LuoBlob:
    """What the LUO blob itself says; no memory has been read."""

    generation: LuoGeneration
    compatible: str | None  # "luo-v1" (a), "luo-v5" (c); None for (b)
    liveupdate_num: int | None  # None when (b) has LUO_FEATURE_NUMBER inactive
    sessions: SessionsRef | UnknownLuo | None
    flbs: FlbsRef | UnknownLuo | None  # None: no FLB node (a, before FLBs) or feature inactive
    features: LuoFeatures | None = None


@frozen
class LuoFile:
    compatible: str  # the file handler's, e.g. "iommufd-v1", "memfd-v1"
    token: int
    data: int  # opaque to LUO; for most handlers a physical address


@frozen
class LuoSession:
    name: str
    files: tuple[LuoFile, ...] | None  # None: luo-session-v1 records no files


@frozen
class LuoFlb:
    name: str  # the FLB's compatible string
    data: int  # what its .preserve() returned; for the IOMMU FLB, phys of iommu_flb_ser
    count: int  # preserved files depending on it

    @property
    def role(self) -> str:
        return flb_role(self.name)


def flb_role(name: str) -> str:
    """``"iommu"`` (an IOMMU FLB, known or not: :func:`find_iommu_flb` decides), ``"test"``
    (the kernel's own test FLBs, ``liveupdate-test-flb-v<N>``), else ``"other"``."""
    if name.startswith(IOMMU_FLB_PREFIX):
        return "iommu"
    rest = name[len(TEST_FLB_PREFIX) :]
    if name.startswith(TEST_FLB_PREFIX) and rest.isdigit():
        return "test"
    return "other"


@frozen
class LuoCorrupt:
    """A structure behind a physical address is corrupt (VTD041), or could not be read at all
    (``unreadable``: an I/O error, not a bad pointer; VTD051)."""

    what: str
    reason: str
    unreadable: bool = False


@frozen
class IommuFlb:
    """The IOMMU FLB entry and the ABI variant its records use."""

    compatible: str
    flb_ser_phys: int  # struct iommu_flb_ser
    count: int
    version: int | None  # iommu_flb_ser.version, read only for compatibles that have one
    variant: AbiVariant | UnknownAbi


@frozen
class LuoState:
    """A walked LUO blob."""

    blob: LuoBlob
    sessions: tuple[LuoSession, ...] | UnknownLuo | LuoCorrupt | StaleLuo | None
    flbs: tuple[LuoFlb, ...] | UnknownLuo | LuoCorrupt | StaleLuo | None
    iommu: IommuFlb | LuoCorrupt | StaleLuo | None  # None: no IOMMU FLB (or FLBs not readable)

    @property
    def liveupdate_num(self) -> int | None:
        return self.blob.liveupdate_num
