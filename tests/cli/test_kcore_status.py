"""status/collect with a kcore tier: tables laid out in an ELF core at the physical addresses the
real capture's debugfs shows (the memory is synthetic, its values are the capture's)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import copy_tree, run_cli, status_json
from tests.kcore import Memory, lay_out
from vtdlud.host.corewriter import build_core
from vtdlud.parse.translation import parse_dmar_translation_struct

TRANS = "sys/kernel/debug/iommu/intel/dmar_translation_struct"


def _host_with_core(
    capture_root: Callable[[str], Path], tmp_path: Path, name: str, did_delta: int = 0
) -> Path:
    root = copy_tree(capture_root(name), tmp_path / "host")
    [unit] = parse_dmar_translation_struct((root / TRANS).read_text()).units
    mem = lay_out(unit, scalable=name.startswith(("b_", "g_")), mem=Memory())
    if did_delta:  # legacy 00:05.0: context hi holds DID 9 in bits 23:8
        row = next(r for r in unit.rows if r.bdf == "00:05.0")
        table = row.root.lo & ~0xFFF
        mem.put_u64(table + row.devfn * 16 + 8, row.context_hi + (did_delta << 8))
    (root / "proc/kcore").write_bytes(build_core(mem.frozen()))
    return root


def _finding_codes(doc: dict[str, Any]) -> list[str]:
    return [f["code"] for f in doc["findings"]]


@pytest.mark.parametrize(
    ("name", "bits"), [("a_legacy", [0, 2, 4, 6, 8, 10]), ("b_scalable", [0, 1, 2, 4, 6, 8, 10])]
)
def test_context_tables_come_from_kcore(
    capture_root: Callable[[str], Path], tmp_path: Path, name: str, bits: list[int]
) -> None:
    doc = status_json("--root", str(_host_with_core(capture_root, tmp_path, name)))
    assert doc["host"]["tiers"]["kcore"] == {"state": "available", "reason": "/proc/kcore"}
    [u] = doc["units"]
    assert (u["context_tables"], u["context_tables_source"]) == (bits, "kcore")
    assert "VTD015" not in _finding_codes(doc) and "VTD041" not in _finding_codes(doc)


def test_kcore_debugfs_disagreement_is_vtd015(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    doc = status_json(
        "--root", str(_host_with_core(capture_root, tmp_path, "a_legacy", did_delta=1))
    )
    vtd015 = [f for f in doc["findings"] if f["code"] == "VTD015"]
    assert [(f["severity"], f["bdf"]) for f in vtd015] == [("FAIL", "0000:00:05.0")]
    assert doc["verdict"] == "FAIL"


def test_collect_memory_replays_the_kcore_tier(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = _host_with_core(capture_root, tmp_path, "b_scalable")
    bundle = tmp_path / "b.tar.gz"
    assert run_cli("collect", "--memory", "--root", str(root), "-o", str(bundle))[0] == 0
    with tarfile.open(bundle) as tar:
        assert tar.getmember("proc/kcore").isfile()
    direct, replay = status_json("--root", str(root)), status_json("--root", str(bundle))
    for d in (direct, replay):
        d.pop("generated_at"), d["vtdlud"].pop("argv"), d["host"].pop("root")
    assert json.dumps(replay) == json.dumps(direct)
    plain = tmp_path / "plain.tar.gz"
    assert run_cli("collect", "--root", str(root), "-o", str(plain))[0] == 0
    with tarfile.open(plain) as tar:
        assert "proc/kcore" not in tar.getnames()  # memory only on request


def test_collect_memory_without_kcore_is_a_usage_error(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    rc, out, err = run_cli(
        "collect",
        "--memory",
        "--root",
        str(capture_root("a_legacy")),
        "-o",
        str(tmp_path / "x.tar.gz"),
    )
    assert (rc, out) == (2, "")
    assert err.startswith(
        "vtdlud: error: collect --memory: no physical memory was read (kcore tier: "
    )
