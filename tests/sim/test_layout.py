"""The kernel model's own record layouts (tests.kernelmodel.layout) against gcc.

gcc compiles tests/abi/iommu_abi.c (the header re-typed, both variants) and reports every
struct's sizeof and every member's offsetof: the model's format strings must give the same, so
that the records it writes are the kernel's bytes without borrowing the auditor's ABI mirror.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.kernelmodel.layout import ARRAY_HDR, DEVICE, DOMAIN, FLB, HW, Layout
from tests.needs import need_tool

ABI_C = Path(__file__).parents[1] / "abi" / "iommu_abi.c"


def _gcc(variant: int, tmp: Path) -> tuple[dict[str, int], dict[tuple[str, str], tuple[int, int]]]:
    gcc = need_tool("gcc")  # a skip outside CI, a failure under CI=true
    exe = tmp / f"abi{variant}"
    subprocess.run(
        [gcc, "-std=gnu11", f"-DIOMMU_ABI_VARIANT={variant}", "-o", str(exe), str(ABI_C)],
        check=True,
        capture_output=True,
    )
    sizes: dict[str, int] = {}
    fields: dict[tuple[str, str], tuple[int, int]] = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split(
        "\n"
    ):
        kind, *rest = line.split() or [""]
        if kind == "sizeof":
            sizes[rest[0]] = int(rest[1])
        elif kind == "field":
            fields[rest[0], rest[1]] = (int(rest[2]), int(rest[3]))
    return sizes, fields


def test_v1_layouts_are_gccs(tmp_path: Path) -> None:
    sizes, fields = _gcc(1, tmp_path)
    model = {
        "iommu_hdr_ser": Layout("iommu_hdr_ser"),
        "iommu_domain_ser": DOMAIN,
        "iommu_dev_map_ser": Layout("iommu_dev_map_ser"),
        "iommu_device_intel_ser": Layout("iommu_device_intel_ser"),
        "iommu_intel_ser": Layout("iommu_intel_ser"),
        "iommu_hw_ser": HW,
        "iommu_device_ser": DEVICE,
        "iommu_array_hdr_ser": ARRAY_HDR,
        "iommu_flb_ser": FLB["v1"],
    }
    for name, layout in model.items():
        assert layout.size == sizes[name], name
    checked = 0
    for (name, member), (offset, size) in fields.items():
        if name in model:
            assert model[name].member(member) == (offset, size), (name, member)
            checked += 1
    assert checked >= 30
    assert DOMAIN.member("sign_extend") == (28, 1)  # the bit-field gcc cannot offsetof
    assert (HW.capacity(), DOMAIN.capacity(), DEVICE.capacity()) == (36, 110, 72)


def test_v2_flb_is_gccs(tmp_path: Path) -> None:
    sizes, fields = _gcc(2, tmp_path)
    assert FLB["v2"].size == sizes["iommu_flb_ser"]
    for member in ("version", "iommu_array_phys", "iommu_domain_array_phys", "device_array_phys"):
        assert FLB["v2"].member(member) == fields["iommu_flb_ser", member]


def test_round_trip() -> None:
    rec = {
        "hdr.ref_count": 3,
        "hdr.flags": 1,
        "token": 0xFED90000,
        "type": 1,
        "intel.restored": 1,
        "intel.padding": bytes(7),
        "intel.phys_addr": 0xFED90000,
        "intel.root_table": 0x1000,
        "intel.context_tables_bitmap": (5, 0, 0, 0, 0, 0, 0, 1 << 63),
    }
    assert HW.unpack(HW.pack(rec)) == rec
    assert len(HW.pack(rec)) == 112
