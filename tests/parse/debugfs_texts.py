"""Shared texts of the debugfs parser tests: rows and units as the kernel prints them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import capture_file

CaptureRoot = Callable[[str], Path]
REGSET = "sys/kernel/debug/iommu/intel/iommu_regset"
TRANS = "sys/kernel/debug/iommu/intel/dmar_translation_struct"

PRE_5_2 = "dmar_translation_struct in the pre-5.2 per-bus format is not supported"
HDR = "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry\n"
Z3 = "0x0000000000000000:0x0000000000000000:0x0000000000000000"
LEG_00_02 = (
    "00:02.0\t0x0000000000000000:0x0000000001a53001\t0x0000000000000301:0x0000000001a56001\t-1    \t"
    + Z3
)
LEG_00_03 = (
    "00:03.0\t0x0000000000000000:0x0000000001a53001\t0x0000000000000401:0x0000000001a5a001\t-1    \t"
    + Z3
)
SM_P0 = (
    "00:1f.0\t0x0000000001b00001:0x0000000001a00001\t0x0000000000000000:0x0000000001c00401\t0     \t"
    "0x0000000000000000:0x0000000000000005:0x0000000001d00089"
)
SM_P1 = (
    "00:1f.0\t0x0000000001b00001:0x0000000001a00001\t0x0000000000000000:0x0000000001c00401\t1     \t"
    "0x0000000000000000:0x0000000000000006:0x0000000001e00089"
)

# Three units: a legacy one, one with translation off (no blank line after it), a scalable one
# with two PASID rows for one device in the upper context table.
THREE_UNITS = (
    "IOMMU dmar0: Root Table Address: 0x1a49000\n"
    + HDR
    + LEG_00_02
    + "\n\n"
    + "DMA Remapping is not enabled on dmar1\n"
    + "IOMMU dmar2: Root Table Address: 0x2000000\n"
    + HDR
    + SM_P0
    + "\n"
    + SM_P1
    + "\n\n"
)

TWO_REGSET_UNITS = (
    "IOMMU: dmar0 Register Base Address: fed90000\n"
    "Name\t\t\tOffset\t\tContents\n"
    "VER             \t0x00\t\t0x0000000000000010\n"
    "GSTS            \t0x1c\t\t0x00000000c7000000\n"
    "RTADDR          \t0x20\t\t0x0000000001a48400\n"
    "MTRR_FIX64K_00000\t0x120\t\t0x0000000000000000\n"
    "\n"
    "IOMMU: dmar1 Register Base Address: fed91000\n"
    "Name\t\t\tOffset\t\tContents\n"
    "GSTS            \t0x1c\t\t0x0000000000000000\n"
    "RTADDR          \t0x20\t\t0x0000000000000000\n"
    "VCCAP           \t0xe30\t\t0x0000000000000000\n"
    "\n"
)


def unit_text(rows: list[str], name: str = "dmar0", root: str = "0x1a49000") -> str:
    return (
        f"IOMMU {name}: Root Table Address: {root}\n" + HDR + "".join(r + "\n" for r in rows) + "\n"
    )


def texts(capture_root: CaptureRoot, name: str) -> tuple[str, str]:
    return capture_file(capture_root, name, REGSET), capture_file(capture_root, name, TRANS)
