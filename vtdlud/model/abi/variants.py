"""The posted variants of the IOMMU live-update ABI, and selecting one from an FLB.

A variant is chosen from the FLB's compatible string and (v2 only) the ``version`` word of its
``iommu_flb_ser``; anything not exactly known is an :class:`UnknownAbi`, which the audit turns
into VTD040.  Nothing is guessed, with one documented exception: a v2 FLB whose hw records say
``IOMMU_INTEL`` (a pairing no posted header has) is decoded with v1's union layout by
:data:`V2_ASSUMED_INTEL`, whose ``assumed`` flag the audit must carry into its results.
"""

from __future__ import annotations

from vtdlud.frozen import frozen
from vtdlud.model.abi.iommu import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_DEVICE_ARRAY_SER_V1,
    IOMMU_DEVICE_ARRAY_SER_V2,
    IOMMU_DOMAIN_ARRAY_SER,
    IOMMU_HW_ARRAY_SER_V1,
    IOMMU_HW_ARRAY_SER_V2,
    IOMMU_LUO_FLB_COMPATIBLE_V1,
    IOMMU_LUO_FLB_COMPATIBLE_V2,
    IOMMU_LUO_FLB_VERSION,
    PAGE_SIZE,
    IommuArrayHdrSer,
    IommuDeviceIntelSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuDevMapSer,
    IommuDomainSer,
    IommuFlbSerV1,
    IommuFlbSerV2,
    IommuHdrSer,
    IommuHwSerV1,
    IommuHwSerV2,
    IommuIntelSer,
    IommuTypeSer,
)
from vtdlud.model.abi.layout import AbiStruct, StructLayout

HwSer = IommuHwSerV1 | IommuHwSerV2
DeviceSer = IommuDeviceSerV1 | IommuDeviceSerV2
FlbSer = IommuFlbSerV1 | IommuFlbSerV2


@frozen
class AbiVariant:
    """One version of ``include/linux/kho/abi/iommu.h`` and the classes that decode it."""

    name: str
    compatible: str  # IOMMU_LUO_FLB_COMPATIBLE
    version: int | None  # IOMMU_LUO_FLB_VERSION; None: the version is in the compatible string
    iommu_types: frozenset[IommuTypeSer]  # the enum iommu_type_ser values this header defines
    hw: type[IommuHwSerV1] | type[IommuHwSerV2]
    device: type[IommuDeviceSerV1] | type[IommuDeviceSerV2]
    flb: type[IommuFlbSerV1] | type[IommuFlbSerV2]
    layouts: tuple[StructLayout, ...]  # every struct, in header order
    source: str  # where the header was posted
    assumed: bool = False  # layout not seen in any posted header (see module docstring)

    @property
    def has_version_field(self) -> bool:
        """Whether ``iommu_flb_ser`` starts with a ``version`` u64."""
        return self.version is not None

    def layout(self, struct: str) -> StructLayout:
        """The layout of ``struct <struct>`` (kernel name, without ``struct``)."""
        for layout in self.layouts:
            if layout.name == struct:
                return layout
        names = ", ".join(layout.name for layout in self.layouts)
        raise ValueError(f"ABI {self.name} has no struct {struct!r} (it has: {names})")

    def array_element(self, struct: str) -> type[AbiStruct]:
        """The record class stored in an array page: ``struct`` names the record
        (``iommu_hw_ser``) or its array (``iommu_hw_array_ser``)."""
        for layout in self.layouts:
            flex = layout.flex
            if flex is None or flex.struct is None:
                continue
            if struct in (layout.name, flex.struct.LAYOUT.name):
                return flex.struct
        raise ValueError(f"ABI {self.name}: {struct!r} is not a record array or its element")


def _layouts(*items: type[AbiStruct] | StructLayout) -> tuple[StructLayout, ...]:
    return tuple(i if isinstance(i, StructLayout) else i.LAYOUT for i in items)


V1 = AbiVariant(
    name="v1",
    compatible=IOMMU_LUO_FLB_COMPATIBLE_V1,
    version=None,
    iommu_types=frozenset({IommuTypeSer.IOMMU_INVALID, IommuTypeSer.IOMMU_INTEL}),
    hw=IommuHwSerV1,
    device=IommuDeviceSerV1,
    flb=IommuFlbSerV1,
    layouts=_layouts(
        IommuHdrSer,
        IommuDomainSer,
        IommuDevMapSer,
        IommuDeviceIntelSer,
        IommuDeviceSerV1,
        IommuIntelSer,
        IommuHwSerV1,
        IommuArrayHdrSer,
        IOMMU_HW_ARRAY_SER_V1,
        IOMMU_DOMAIN_ARRAY_SER,
        IOMMU_DEVICE_ARRAY_SER_V1,
        IommuFlbSerV1,
    ),
    source="samikhawaja/linux @ef754267767f4b2966507208d5b612468b664365",
)

V2 = AbiVariant(
    name="v2",
    compatible=IOMMU_LUO_FLB_COMPATIBLE_V2,
    version=IOMMU_LUO_FLB_VERSION,
    iommu_types=frozenset({IommuTypeSer.IOMMU_INVALID}),
    hw=IommuHwSerV2,
    device=IommuDeviceSerV2,
    flb=IommuFlbSerV2,
    layouts=_layouts(
        IommuHdrSer,
        IommuDomainSer,
        IommuDevMapSer,
        IommuDeviceSerV2,
        IommuHwSerV2,
        IommuArrayHdrSer,
        IOMMU_HW_ARRAY_SER_V2,
        IOMMU_DOMAIN_ARRAY_SER,
        IOMMU_DEVICE_ARRAY_SER_V2,
        IommuFlbSerV2,
    ),
    source="samikhawaja/linux @07a493131c2bbcfc0fefa1a5518dd178239cee31",
)

# Not a posted header: v2's FLB (compatible, version word) with v1's Intel unions in
# iommu_hw_ser / iommu_device_ser.  Only reached through variant_for_hw_type().
V2_ASSUMED_INTEL = AbiVariant(
    name="v2+v1-intel-unions",
    compatible=IOMMU_LUO_FLB_COMPATIBLE_V2,
    version=IOMMU_LUO_FLB_VERSION,
    iommu_types=V1.iommu_types,
    hw=IommuHwSerV1,
    device=IommuDeviceSerV1,
    flb=IommuFlbSerV2,
    layouts=_layouts(
        IommuHdrSer,
        IommuDomainSer,
        IommuDevMapSer,
        IommuDeviceIntelSer,
        IommuDeviceSerV1,
        IommuIntelSer,
        IommuHwSerV1,
        IommuArrayHdrSer,
        IOMMU_HW_ARRAY_SER_V1,
        IOMMU_DOMAIN_ARRAY_SER,
        IOMMU_DEVICE_ARRAY_SER_V1,
        IommuFlbSerV2,
    ),
    source="assumed: v2 FLB with the v1 Intel union layout (no such header was posted)",
    assumed=True,
)

VARIANTS: dict[str, AbiVariant] = {V1.name: V1, V2.name: V2}


def get_variant(name: str) -> AbiVariant:
    """A posted variant by name; ValueError listing the valid names otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown ABI variant {name!r}; valid variants: {', '.join(VARIANTS)}"
        ) from None


@frozen
class UnknownAbi:
    """An FLB this version of vtdlud cannot decode (finding VTD040)."""

    compatible: str
    version: int | None
    reason: str


def flb_has_version(compatible: str) -> bool:
    """Whether an FLB with this compatible string starts with a version word to read."""
    return any(v.compatible == compatible and v.has_version_field for v in VARIANTS.values())


def select_variant(compatible: str, version: int | None) -> AbiVariant | UnknownAbi:
    """The variant of an FLB: its compatible string exactly (no NULs) and the ``version`` u64
    of its ``iommu_flb_ser`` when :func:`flb_has_version` says it has one, else ``None``."""
    candidates = [v for v in VARIANTS.values() if v.compatible == compatible]
    for variant in candidates:
        if variant.version == version:
            return variant
    if not candidates:
        known = ", ".join(repr(v.compatible) for v in VARIANTS.values())
        reason = f"unknown compatible {compatible!r} (known: {known})"
    elif version is None:
        reason = f"{compatible!r} needs the iommu_flb_ser version, none given"
    else:
        known_versions = [v.version for v in candidates if v.version is not None]
        reason = (
            f"{compatible!r} version {version} is not a known one ({known_versions})"
            if known_versions
            else f"{compatible!r} has no version field, got version {version}"
        )
    return UnknownAbi(compatible, version, reason)


def variant_for_hw_type(variant: AbiVariant, hw_type: int) -> AbiVariant | UnknownAbi:
    """Refine ``variant`` with the ``type`` of its first ``iommu_hw_ser`` (offset 16 in every
    variant): a type the header defines keeps it; ``IOMMU_INTEL`` under v2 gives the assumed
    :data:`V2_ASSUMED_INTEL`; anything else is unknown."""
    if hw_type in variant.iommu_types:
        return variant
    if variant is V2 and hw_type == IommuTypeSer.IOMMU_INTEL:
        return V2_ASSUMED_INTEL
    return UnknownAbi(
        variant.compatible,
        variant.version,
        f"iommu_hw_ser.type {hw_type} is not an enum iommu_type_ser value of ABI {variant.name}",
    )


def capacity_of(element: type[AbiStruct]) -> int:
    """Records of this class per array page: ``(PAGE_SIZE - 16) / sizeof(record)``."""
    return (PAGE_SIZE - IOMMU_ARRAY_HDR_SER_SIZE) // element.sizeof()


def array_capacity(struct: str, variant: str | AbiVariant = V1) -> int:
    """Records per 4 KiB array page for ``struct`` (the record or its array) in ``variant``.

    [I] v1: hw 36, domain 110, device 72; v2: hw 170, domain 110, device 102 (tests/abi).
    """
    v = variant if isinstance(variant, AbiVariant) else get_variant(variant)
    return capacity_of(v.array_element(struct))
