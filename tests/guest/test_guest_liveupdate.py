"""A real Linux 7.2 live update under QEMU, vtdlud before and after the kexec (tests/guest/README.md).

These boot a real kernel (minutes under TCG; a cold kernel build ~15 min), so they run when
``CI=true`` (``.ci/run``) or ``VTDLUD_GUEST=1``, and are skipped otherwise with that reason.  Under
CI a guest that cannot run (no QEMU, no kernel, no result) fails: it never skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
GUEST = ROOT / "scripts" / "guest-liveupdate"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("CI") != "true" and os.environ.get("VTDLUD_GUEST") != "1",
        reason="boots a real kernel under QEMU: runs under CI=true or VTDLUD_GUEST=1",
    ),
]


def _run(mode: str, out: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(GUEST), mode, *extra, str(out)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, (
        f"guest-liveupdate {mode} {extra}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    )
    return {
        name: json.loads((out / f"{name}.json").read_text())
        for name in ("pre-status", "pre-check", "post-status", "post-check")
    }


def _codes(doc: dict[str, Any]) -> set[str]:
    return {f["code"] for f in doc["findings"]}


def _rc(out: Path, name: str) -> int:
    return int((out / f"{name}.rc").read_text())


@pytest.mark.parametrize("mode", ["legacy", "scalable"])
def test_live_update_in_real_kernel(mode: str, tmp_path: Path) -> None:
    docs = _run(mode, tmp_path)
    pre = docs["pre-check"]
    units = [u for u in pre["units"] if u["preserved"] is not None]
    assert units, f"no preserved record found before the kexec: {_codes(pre)}"
    for unit in units:
        rec = unit["preserved"]
        assert rec["located_by"] == "signature"
        assert rec["root_table"] == unit["root_table"]  # the record's root table is RTADDR's
        assert set(unit["context_tables"]) <= set(rec["bitmap"])  # every root half present
    assert not _codes(pre) & {"VTD040", "VTD051", "VTD052"}
    assert _rc(tmp_path, "pre-check") == 0, pre["findings"]
    post = docs["post-check"]
    assert (tmp_path / "post" / "memfd-intact").read_text().strip() == "1"
    post_units = [u for u in post["units"] if u["preserved"] is not None]
    assert post_units, f"records not found again after the kexec: {_codes(post)}"
    assert {u["address"] for u in post_units} == {u["address"] for u in units}
    # A 7.2 kernel has no IOMMU restore code: the records stay with restored == 0 (VTD060).
    assert "VTD060" in _codes(post)
    assert not _codes(post) & {"VTD040", "VTD051", "VTD052"}


def test_drop_bit_fails_the_gate(tmp_path: Path) -> None:
    docs = _run("legacy", tmp_path, "--fault", "drop-bit")
    assert _rc(tmp_path, "pre-check") == 1
    assert _codes(docs["pre-check"]) & {"VTD011", "VTD012"}
