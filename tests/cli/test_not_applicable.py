"""A host without Intel VT-d (AMD, a VM without a virtual VT-d, VT-d off): verdict
NOT_APPLICABLE, `check` exits 0, no finding, and the reason says what the host has instead.

The host trees are minimal hand-written roots (sysfs as the kernel lays it out: an AMD host has
/sys/class/iommu/ivhd0, a host booted with intel_iommu=off keeps its ACPI DMAR table and has no
dmar* units); the DMAR table is the real one of the a_legacy capture.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli, validate
from vtdlud.host.procs import PROCESSES_JSON, facts_to_json
from vtdlud.model.snapshot import ProcessFacts, VfioHolder

DMAR = "sys/firmware/acpi/tables/DMAR"


def _host(tmp_path: Path, *, iommus: tuple[str, ...] = (), cmdline: str = "quiet") -> Path:
    root = tmp_path / "host"
    (root / "sys/class/iommu").mkdir(parents=True)
    for name in iommus:
        (root / "sys/class/iommu" / name).mkdir()
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "proc/cmdline").write_text(cmdline + "\n")
    return root


def _check(root: Path, *args: str) -> tuple[int, dict[str, object]]:
    rc, out, err = run_cli("check", "--json", "--root", str(root), *args)
    assert err == "", err
    return rc, validate(json.loads(out))


def test_amd_host_is_not_applicable_and_the_gate_passes(tmp_path: Path) -> None:
    root = _host(tmp_path, iommus=("ivhd0",))
    # A VMM holds a VFIO device behind the AMD IOMMU: none of vtdlud's business.
    holder = VfioHolder(7, "qemu", ("qemu",), ("vfio0",), (), True)
    (root / "vtdlud").mkdir()
    (root / PROCESSES_JSON).write_bytes(facts_to_json(ProcessFacts((holder,), True, "test")))
    rc, doc = _check(root)
    assert rc == 0
    assert (doc["verdict"], doc["findings"], doc["units"]) == ("NOT_APPLICABLE", [], [])
    vtdlud = doc["vtdlud"]
    assert isinstance(vtdlud, dict) and vtdlud["exit_status"] == 0
    [msg] = vtdlud["messages"]
    assert msg["severity"] == "information"
    assert msg["text"].startswith(
        "no Intel VT-d on this host: no DMAR unit in /sys/class/iommu (it holds ivhd0: another "
        "IOMMU) and no ACPI DMAR table: not an Intel VT-d host"
    )


def test_vtd_off_in_the_kernel_names_the_command_line(
    tmp_path: Path, capture_root: Callable[[str], Path]
) -> None:
    root = _host(tmp_path, cmdline="root=/dev/vda1 intel_iommu=off")
    (root / DMAR).parent.mkdir(parents=True)
    (root / DMAR).write_bytes((capture_root("a_legacy") / DMAR).read_bytes())
    rc, doc = _check(root)
    assert (rc, doc["verdict"]) == (0, "NOT_APPLICABLE")
    vtdlud = doc["vtdlud"]
    assert isinstance(vtdlud, dict)
    assert vtdlud["messages"][0]["text"].endswith(
        "no DMAR unit in /sys/class/iommu, although the firmware has an ACPI DMAR table: the "
        "kernel was booted with intel_iommu=off"
    )


def test_text_output_says_what_it_is(tmp_path: Path) -> None:
    root = _host(tmp_path)
    rc, out, err = run_cli("check", "--root", str(root))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"vtdlud check: root {root}, kernel unknown"
    assert lines[1].startswith("Summary: verdict NOT_APPLICABLE: no DMAR unit in /sys/class/iommu")
    assert any(
        line.startswith("  Intel VT-d         : NOT APPLICABLE (no DMAR unit") for line in lines
    ), out
    assert lines[-2] == "Verdict: NOT_APPLICABLE"
    assert lines[-1].startswith("vtdlud check: NOT APPLICABLE: no DMAR unit") and lines[
        -1
    ].endswith("; exit 0")
    rc, out, _ = run_cli("status", "--root", str(root))
    assert rc == 0 and out.endswith("Verdict: NOT_APPLICABLE\n")


@pytest.mark.parametrize("units", [("dmar0",), ()])
def test_not_applicable_needs_visible_sysfs(tmp_path: Path, units: tuple[str, ...]) -> None:
    """The converse: a host with a DMAR unit is audited, and a root without sysfs is UNKNOWN
    (cannot see is never "not applicable")."""
    root = _host(tmp_path, iommus=units)
    if not units:
        for p in sorted((root / "sys").rglob("*"), reverse=True):
            p.rmdir()
        (root / "sys").rmdir()
    rc, doc = _check(root)
    assert doc["verdict"] == "UNKNOWN" and rc == 3
    vtdlud = doc["vtdlud"]
    assert isinstance(vtdlud, dict) and vtdlud["messages"] == []
