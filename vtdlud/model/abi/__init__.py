"""Byte-exact mirror of ``include/linux/kho/abi/iommu.h`` (IOMMU live-update records).

* :mod:`.layout` — the declarative layout engine (offsets by gcc's rules, pack/unpack);
* :mod:`.iommu` — the structs, enums, flags and constants of both posted header variants;
* :mod:`.variants` — the variant registry, selection from (compatible, version), capacities;
* :mod:`.arrays` — one record-array page (header + records) to and from bytes.

Every record class has ``unpack(data, offset=0)`` (ParseError on short input) and ``pack()``
(exactly ``sizeof()`` bytes), and they round-trip both ways, bit for bit.
"""

from vtdlud.model.abi.arrays import ArrayPage, Record, unpack_array_page
from vtdlud.model.abi.iommu import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_LUO_FLB_COMPATIBLE_V1,
    IOMMU_LUO_FLB_COMPATIBLE_V2,
    IOMMU_LUO_FLB_VERSION,
    IOMMU_SER_FLAG_DELETED,
    IOMMU_SER_FLAG_INCOMING,
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
from vtdlud.model.abi.layout import AbiStruct, Field, Kind, StructLayout
from vtdlud.model.abi.variants import (
    V1,
    V2,
    V2_ASSUMED_INTEL,
    VARIANTS,
    AbiVariant,
    DeviceSer,
    FlbSer,
    HwSer,
    UnknownAbi,
    array_capacity,
    capacity_of,
    flb_has_version,
    get_variant,
    select_variant,
    variant_for_hw_type,
)

__all__ = [
    "IOMMU_ARRAY_HDR_SER_SIZE",
    "IOMMU_LUO_FLB_COMPATIBLE_V1",
    "IOMMU_LUO_FLB_COMPATIBLE_V2",
    "IOMMU_LUO_FLB_VERSION",
    "IOMMU_SER_FLAG_DELETED",
    "IOMMU_SER_FLAG_INCOMING",
    "PAGE_SIZE",
    "V1",
    "V2",
    "V2_ASSUMED_INTEL",
    "VARIANTS",
    "AbiStruct",
    "AbiVariant",
    "ArrayPage",
    "DeviceSer",
    "Field",
    "FlbSer",
    "HwSer",
    "IommuArrayHdrSer",
    "IommuDevMapSer",
    "IommuDeviceIntelSer",
    "IommuDeviceSerV1",
    "IommuDeviceSerV2",
    "IommuDomainSer",
    "IommuFlbSerV1",
    "IommuFlbSerV2",
    "IommuHdrSer",
    "IommuHwSerV1",
    "IommuHwSerV2",
    "IommuIntelSer",
    "IommuTypeSer",
    "Kind",
    "Record",
    "StructLayout",
    "UnknownAbi",
    "array_capacity",
    "capacity_of",
    "flb_has_version",
    "get_variant",
    "select_variant",
    "unpack_array_page",
    "variant_for_hw_type",
]
