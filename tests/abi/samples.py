"""Populated records of both ABI variants, with recognisable byte patterns (``base`` shifts every
field), for the gcc comparison and the helpers' tests."""

from __future__ import annotations

from typing import Any

from vtdlud.model.abi import (
    IOMMU_LUO_FLB_VERSION,
    IOMMU_SER_FLAG_DELETED,
    IOMMU_SER_FLAG_INCOMING,
    V2,
    AbiStruct,
    AbiVariant,
    ArrayPage,
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
)

U64_MAX = (1 << 64) - 1


def sample_domain(fill: int, base: int, sign_extend: int) -> IommuDomainSer:
    return IommuDomainSer(
        hdr=IommuHdrSer(base + 1, base + 2),
        top_table_phys=0x0123456789ABCDE0 + base,
        top_level=0x1112131415161700 + base,
        vasz=0x21222300 + base,
        sign_extend=sign_extend,
        restored_domain=0xFEDCBA9876543200 + base,
        # byte 28 holds sign_extend in bit 0; its other 7 bits keep the C memset() fill
        holes=(fill & 0xFE) << (28 * 8),
    )


def sample_dev_map(base: int) -> IommuDevMapSer:
    return IommuDevMapSer(
        attachment_id=0x3132333435363700 + base,
        domain_phys=0x4142434445464700 + base,
        iommu_phys=0x5152535455565700 + base,
    )


def sample_device(variant: AbiVariant, base: int) -> IommuDeviceSerV1 | IommuDeviceSerV2:
    common: dict[str, Any] = {
        "hdr": IommuHdrSer(0x61626300 + base, 0x71727300 + base),
        "devid": 0x8182 + base,
        "pci_domain_nr": 0x91929300 + base,
        "domain_iommu_ser": sample_dev_map(base),
    }
    if variant is V2:
        return IommuDeviceSerV2(**common)
    intel = IommuDeviceIntelSer(0xA1A2A3A4A5A6A700 + base, 0xB1B2B3B4B5B6B700 + base)
    return IommuDeviceSerV1(**common, intel=intel)


def sample_hw(variant: AbiVariant, base: int) -> IommuHwSerV1 | IommuHwSerV2:
    common: dict[str, Any] = {
        "hdr": IommuHdrSer(0xC1C2C300 + base, 0xD1D2D300 + base),
        "token": 0xE1E2E3E4E5E6E700 + base,
        "type": 0xF1F2F3F4F5F6F700 + base,
    }
    if variant is V2:
        return IommuHwSerV2(**common)
    intel = IommuIntelSer(
        restored=0x01,
        padding=bytes(range(0x02, 0x09)),
        phys_addr=0x0A0B0C0D0E0F1000 + base,
        root_table=0x1A1B1C1D1E1F2000 + base,
        context_tables_bitmap=tuple(
            (0x8000000000000001 * (i + 1) + base) & U64_MAX for i in range(8)
        ),
    )
    return IommuHwSerV1(**common, intel=intel)


def sample_flb(variant: AbiVariant) -> IommuFlbSerV1 | IommuFlbSerV2:
    arrays = (0x100000000, 0x200001000, 0x300002000)
    if variant is V2:
        return IommuFlbSerV2(IOMMU_LUO_FLB_VERSION, *arrays)
    return IommuFlbSerV1(*arrays)


ARRAY_HDR = IommuArrayHdrSer(next_array_phys=0x123456789ABC000, nr_objects=2)


def sample_records(variant: AbiVariant) -> dict[str, AbiStruct]:
    return {
        "hdr": IommuHdrSer(0x04030201, IOMMU_SER_FLAG_DELETED | IOMMU_SER_FLAG_INCOMING),
        "domain": sample_domain(0x00, 0x10, 1),
        "domain_filled": sample_domain(0xFF, 0x20, 0),
        "dev_map": sample_dev_map(0x30),
        "device": sample_device(variant, 0x40),
        "hw": sample_hw(variant, 0x50),
        "array_hdr": ARRAY_HDR,
        "flb": sample_flb(variant),
    }


def sample_pages(variant: AbiVariant) -> dict[str, ArrayPage[Any]]:
    return {
        "domain_array": ArrayPage(
            ARRAY_HDR, (sample_domain(0x00, 0x10, 1), sample_domain(0xFF, 0x20, 0))
        ),
        "device_array": ArrayPage(
            ARRAY_HDR, (sample_device(variant, 0x40), sample_device(variant, 0x41))
        ),
        "hw_array": ArrayPage(ARRAY_HDR, (sample_hw(variant, 0x50), sample_hw(variant, 0x51))),
    }
