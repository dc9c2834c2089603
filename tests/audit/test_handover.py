"""VTD040/VTD041 from the KHO/LUO hand-over, on a copy of the real a_legacy capture with KHO
debugfs files added.  The blobs are built from the reference's description of the formats (no
real KHO/LUO capture exists yet)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli.helpers import copy_tree, status_json
from tests.kho.blobs import kho_root, kho_v2, luo_fdt


def _host(capture_root: Callable[[str], Path], tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = copy_tree(capture_root("a_legacy"), tmp_path / "host")
    for rel, data in files.items():
        path = root / "sys/kernel/debug/kho" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _findings(doc: dict[str, Any], code: str) -> list[str]:
    return [f["message"] for f in doc["findings"] if f["code"] == code]


def test_known_formats_give_no_handover_findings(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = _host(
        capture_root,
        tmp_path,
        {
            "out/fdt": kho_v2({"LUO": (0x10_0000, 4096)}),
            "out/scratch_phys": b"0x1000000\n",
            "out/scratch_len": b"0x4000000\n",
            "out/sub_fdts/LUO": luo_fdt(),
        },
    )
    doc = status_json("--root", str(root))
    assert doc["host"]["tiers"]["kho_debugfs"]["state"] == "available"
    assert _findings(doc, "VTD040") == [] and _findings(doc, "VTD041") == []
    assert _findings(doc, "VTD051") == []


def test_unknown_kho_and_luo_compatibles(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = _host(
        capture_root,
        tmp_path,
        {"in/fdt": kho_root("kho-v9", []), "in/sub_fdts/LUO": luo_fdt(compatible="luo-v9")},
    )
    doc = status_json("--root", str(root))
    msgs = _findings(doc, "VTD040")
    assert len(msgs) == 2
    assert msgs[0].startswith("kho/in/fdt: KHO compatible 'kho-v9': ")
    assert msgs[1].startswith("kho/in/sub_fdts/LUO: LUO format 'luo-v9': ")
    assert all(f["severity"] == "UNKNOWN" for f in doc["findings"] if f["code"] == "VTD040")


def test_garbage_blob_is_an_input_problem(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = _host(capture_root, tmp_path, {"in/fdt": b"\xd0\x0d\xfe\xed garbage"})
    doc = status_json("--root", str(root))
    [msg] = _findings(doc, "VTD051")
    assert msg.startswith("/sys/kernel/debug/kho/in/fdt: ")
