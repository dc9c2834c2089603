"""The IOMMU live-update ABI mirror against gcc.

``iommu_abi.c`` is a C replica of both posted header variants; gcc compiles it here and reports
``sizeof``/``offsetof`` of every non-bit-field member and the bytes of populated records, which
must equal what ``vtdlud.model.abi`` computes and packs.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.abi.samples import sample_pages, sample_records
from tests.needs import missing
from vtdlud.model.abi import (
    PAGE_SIZE,
    VARIANTS,
    AbiVariant,
    IommuDomainSer,
    Kind,
    unpack_array_page,
)
from vtdlud.output.abi import abi_layout

HERE = Path(__file__).parent
ABI_NUMBER = {"v1": 1, "v2": 2}


# --- gcc --------------------------------------------------------------------------------------


@dataclass
class GccReport:
    pointer_size: int = 0
    endian: str = ""
    compatible: str = ""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (sizeof, _Alignof)
    fields: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    flex: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)


def _parse_report(text: str) -> GccReport:
    report = GccReport()
    for line in text.splitlines():
        kind, *rest = line.split()
        match kind:
            case "abi":
                report.pointer_size, report.endian = int(rest[0]), rest[1]
            case "compatible":
                report.compatible = rest[0]
            case "sizeof":
                report.sizes[rest[0]] = (int(rest[1]), int(rest[2]))
            case "field":
                report.fields[rest[0], rest[1]] = (int(rest[2]), int(rest[3]))
            case "flex":
                report.flex[rest[0], rest[1]] = (int(rest[2]), int(rest[3]))
            case "record":
                report.records[rest[0]] = bytes.fromhex(rest[1])
            case _:
                raise AssertionError(f"unexpected line from the C replica: {line!r}")
    return report


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def gcc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AbiVariant, GccReport]:
    """(variant, what gcc says about the C replica of that variant)."""
    gcc_path = shutil.which("gcc")
    if gcc_path is None:
        missing("gcc not found: the C replica of the ABI header cannot be compiled")
    variant = VARIANTS[request.param]
    exe = tmp_path_factory.mktemp(f"abi-{variant.name}") / "iommu_abi"
    subprocess.run(
        [
            gcc_path,
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-DIOMMU_ABI_VARIANT={ABI_NUMBER[variant.name]}",
            "-o",
            str(exe),
            str(HERE / "iommu_abi.c"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    report = _parse_report(out)
    if (report.pointer_size, report.endian) != (8, "little"):
        pytest.skip(
            f"host C ABI is {report.pointer_size}-byte pointers, {report.endian}-endian; "
            "the kernel records are x86-64 (8-byte pointers, little-endian)"
        )
    return variant, report


def test_gcc_compatible(gcc: tuple[AbiVariant, GccReport]) -> None:
    variant, report = gcc
    assert report.compatible == variant.compatible


def test_gcc_sizeof_every_struct(gcc: tuple[AbiVariant, GccReport]) -> None:
    variant, report = gcc
    assert {layout.name: (layout.size, layout.align) for layout in variant.layouts} == report.sizes


def test_gcc_offsetof_every_non_bitfield(gcc: tuple[AbiVariant, GccReport]) -> None:
    variant, report = gcc
    plain = {
        (layout.name, f.name): (f.offset, f.size)
        for layout in variant.layouts
        for f in layout.fields
        if f.kind not in (Kind.BITFIELD, Kind.FLEX)
    }
    assert plain == report.fields
    flexible: dict[tuple[str, str], tuple[int, int]] = {}
    for layout in variant.layouts:
        for f in layout.fields:
            if f.kind is Kind.FLEX:
                assert f.size == 0 and f.struct is not None
                flexible[layout.name, f.name] = (f.offset, f.struct.sizeof())
    assert flexible == report.flex
    # What offsetof cannot see is covered by the records below: the one bit-field.
    bitfields = {
        (layout.name, f.name)
        for layout in variant.layouts
        for f in layout.fields
        if f.kind is Kind.BITFIELD
    }
    assert bitfields == {("iommu_domain_ser", "sign_extend")}


def test_gcc_json_layout_agrees(gcc: tuple[AbiVariant, GccReport]) -> None:
    """The ``abi --json`` document itself matches gcc field by field."""
    variant, report = gcc
    doc = abi_layout(variant.name)
    structs = doc["structs"]
    assert isinstance(structs, dict)
    for name, struct in structs.items():
        assert struct["size"] == report.sizes[name][0]
        for f in struct["fields"]:
            if "bit_size" in f:
                continue
            key = (name, f["name"])
            if key in report.flex:
                assert (f["offset"], f["size"]) == (report.flex[key][0], 0)
            else:
                assert (f["offset"], f["size"]) == report.fields[key]


# The records iommu_abi.c fills, with the same values.


def test_gcc_records_pack_and_unpack(gcc: tuple[AbiVariant, GccReport]) -> None:
    variant, report = gcc
    records = sample_records(variant)
    pages = sample_pages(variant)
    assert set(records) | set(pages) == set(report.records)
    for name, record in records.items():
        c_bytes = report.records[name]
        assert record.pack().hex() == c_bytes.hex(), name
        assert type(record).unpack(c_bytes) == record, name


def test_gcc_domain_bitfield_byte(gcc: tuple[AbiVariant, GccReport]) -> None:
    """gcc's packing of ``u32 sign_extend:1`` + pointer, spelt out."""
    _, report = gcc
    for name, fill, sign in (("domain", 0x00, 1), ("domain_filled", 0xFF, 0)):
        raw = report.records[name]
        assert len(raw) == 37
        assert raw[28] == (fill & 0xFE) | sign
        assert int.from_bytes(raw[29:37], "little") == IommuDomainSer.unpack(raw).restored_domain


def test_gcc_array_pages(gcc: tuple[AbiVariant, GccReport]) -> None:
    variant, report = gcc
    elements: dict[str, type[Any]] = {
        "domain_array": IommuDomainSer,
        "device_array": variant.device,
        "hw_array": variant.hw,
    }
    for name, page in sample_pages(variant).items():
        c_bytes = report.records[name]
        assert page.pack().hex() == c_bytes.hex(), name
        assert unpack_array_page(c_bytes, elements[name]) == page
        assert unpack_array_page(c_bytes.ljust(PAGE_SIZE, b"\0"), elements[name]) == page
