"""Real Linux 7.2 live-update captures (tests/data/captures/linux72/README.md), read on every run.

Each is a ``vtdlud collect --memory`` bundle made inside a real 7.2.13 guest by
``scripts/guest-liveupdate``: before the kexec (the gate's view, with the next kernel loaded) and
after it.  The IOMMU records in them were written into real KHO memory by the project's built-in
test driver (tests/guest/patches/), on the real intel-iommu state; KHO, LUO, the root FDT, the
memory map and the tables are the kernel's own bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, validate

CAPTURES = Path(__file__).parents[1] / "data" / "captures" / "linux72"
RUNS = ("legacy", "scalable", "legacy-drop-bit", "scalable-abi-v1")
NOISE = {"VTD040", "VTD051", "VTD052"}


def _bundle(run: str, side: str) -> str:
    path = CAPTURES / f"{run}-{side}.tar.gz"
    assert path.is_file(), f"{path}: missing real capture"
    return str(path)


def _json(*args: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = run_cli(*args, "--json")
    doc = validate(json.loads(out))
    assert doc["vtdlud"]["exit_status"] == rc, err
    return rc, doc


def _codes(doc: dict[str, Any]) -> set[str]:
    return {f["code"] for f in doc["findings"]}


def _preserved(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [u for u in doc["units"] if u["preserved"] is not None]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("side", ["pre", "post"])
def test_status_reads_real_72_cleanly(run: str, side: str) -> None:
    rc, doc = _json("status", "--root", _bundle(run, side))
    assert rc == 0
    assert not _codes(doc) & NOISE, doc["findings"]
    assert doc["handover"] is not None


@pytest.mark.parametrize("run", ["legacy", "scalable", "scalable-abi-v1"])
def test_gate_passes_on_real_records(run: str) -> None:
    """Before the kexec: the records are found in real KHO memory by signature, their root table
    is RTADDR's, their bitmap covers every root half present, and the gate exits 0."""
    rc, doc = _json("check", "--root", _bundle(run, "pre"))
    [unit] = _preserved(doc)
    rec = unit["preserved"]
    assert rec["located_by"] == "signature"
    assert rec["root_table"] == unit["root_table"]
    assert set(unit["context_tables"]) <= set(rec["bitmap"])
    assert set(rec["required_bitmap"]) <= set(rec["bitmap"])
    assert (rc, doc["verdict"], doc["findings"]) == (0, "PASS", [])


def test_gate_fails_on_a_dropped_bit() -> None:
    """The driver left out the bit of the table holding the preserved device's entry: VTD011."""
    rc, doc = _json("check", "--root", _bundle("legacy-drop-bit", "pre"))
    [unit] = _preserved(doc)
    assert set(unit["preserved"]["required_bitmap"]) - set(unit["preserved"]["bitmap"]) == {2}
    assert rc == 1
    assert "VTD011" in _codes(doc)


@pytest.mark.parametrize("run", ["legacy", "scalable", "scalable-abi-v1"])
def test_post_kexec_finds_the_records_again(run: str) -> None:
    """After the kexec LUO's incoming data is freed; the records are found at the ledger's
    addresses (the bundle carries the ledger).  A 7.2 kernel has no IOMMU restore code: restored
    stays 0 (VTD060) and it builds a new root table (VTD061)."""
    _, pre = _json("check", "--root", _bundle(run, "pre"))
    rc, doc = _json("check", "--post-kexec", "--root", _bundle(run, "post"))
    [unit] = _preserved(doc)
    assert unit["preserved"]["located_by"] == "ledger"
    assert unit["address"] == _preserved(pre)[0]["address"]
    assert unit["preserved"]["root_table"] == _preserved(pre)[0]["preserved"]["root_table"]
    assert {"VTD060", "VTD061"} <= _codes(doc)
    assert not _codes(doc) & NOISE
    assert rc == 1
