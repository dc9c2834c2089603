"""Bad input: every broken file gives a VTD051/VTD052 naming it, and the rest of the report stays.

Tests run as root, where chmod 000 does not stop a read: EACCES/EIO are injected through the
host layer (FaultPlan), and one test runs the installed command as uid 65534 for a real EACCES.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import vtdlud
from tests.cli.helpers import (
    codes,
    copy_tree,
    finding_messages,
    run_cli,
    status_json,
    status_with_faults,
    validate,
)
from tests.needs import needs
from vtdlud.host.root import Fault, FaultPlan

DEBUG = "sys/kernel/debug/iommu/intel"
UNIT = "sys/devices/virtual/iommu/dmar0/intel-iommu"  # where sys/class/iommu/dmar0 points
REGSET = f"{DEBUG}/iommu_regset"
TRANS = f"{DEBUG}/dmar_translation_struct"


@pytest.fixture
def host(capture_root: Callable[[str], Path], tmp_path: Path) -> Path:
    return copy_tree(capture_root("a_legacy"), tmp_path / "host")


def _unit(doc: dict[str, object]) -> dict[str, object]:
    units = doc["units"]
    assert isinstance(units, list)
    unit = units[0]
    assert isinstance(unit, dict)
    return unit


def _write(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def test_non_hex_cap(host: Path) -> None:
    _write(host / UNIT / "cap", b"zz12\n")
    doc = status_json("--root", str(host))
    assert finding_messages(doc, "VTD051") == [
        "/sys/class/iommu/dmar0/intel-iommu/cap: line 1: 'zz12' is not a CAP_REG value"
    ]
    u = _unit(doc)
    assert u["cap"] == {"raw": None, "fields": {}}
    assert u["address"] == "0xfed90000" and u["mode"] == "legacy"  # the rest is still there


def test_empty_and_missing_sysfs_attributes(host: Path) -> None:
    _write(host / UNIT / "domains_used", b"")
    (host / UNIT / "version").unlink()
    doc = status_json("--root", str(host))
    msgs = finding_messages(doc, "VTD051")
    assert "/sys/class/iommu/dmar0/intel-iommu/version: no such file" in msgs
    assert any(
        m.startswith("/sys/class/iommu/dmar0/intel-iommu/domains_used: line 1: empty file")
        for m in msgs
    )
    assert _unit(doc)["version"] is None
    assert _unit(doc)["context_tables"] == [0, 2, 4, 6, 8, 10]


def test_truncated_regset_names_the_line(host: Path) -> None:
    text = (host / REGSET).read_text()
    cut = text.index("RTADDR") + 10  # mid-line, inside the RTADDR register line
    _write(host / REGSET, text[:cut].encode())
    doc = status_json("--root", str(host))
    [msg] = finding_messages(doc, "VTD051")
    line = text[:cut].count("\n") + 1
    assert msg.startswith(f"/{REGSET}: line {line}: ")
    u = _unit(doc)
    # Without the regset the translation struct still proves the mode and the root table.
    assert u["root_table"] == "0x1a49000" and u["mode"] == "legacy"


def test_regset_naming_another_unit_than_sysfs(host: Path) -> None:
    """iommu_regset and sysfs name the unit at 0xfed90000 differently (files of two boots): a
    VTD051 naming the block, which is not used, and the gate UNKNOWN (exit 3); it was an
    internal error (exit 4) when the block was paired with the translation struct by name."""
    text = (host / REGSET).read_text()
    _write(host / REGSET, text.replace("IOMMU: dmar0 ", "IOMMU: dmar7 ", 1).encode())
    doc = status_json("--root", str(host))
    [msg] = finding_messages(doc, "VTD051")
    assert msg == (
        f"/{REGSET}: the block at register base 0xfed90000 names dmar7, but sysfs names the "
        "unit there dmar0 (files of different boots?); not used"
    )
    assert _unit(doc)["root_table"] == "0x1a49000"  # the translation struct still says
    rc, _, err = run_cli("check", "--root", str(host), "--no-ledger", "--config", "/dev/null")
    assert rc == 3, err


def test_binary_garbage_in_a_text_file(host: Path) -> None:
    _write(host / TRANS, b"\x00\xff\xfe garbage \x81")
    doc = status_json("--root", str(host))
    [msg] = finding_messages(doc, "VTD051")
    assert msg == f"/{TRANS}: not text (byte 0x1 is not UTF-8)"
    assert _unit(doc)["context_tables"] is None  # not visible, not guessed
    assert _unit(doc)["root_table"] == "0x1a49000"  # from RTADDR in the regset


def test_dmar_table_whose_length_lies(host: Path) -> None:
    path = host / "sys/firmware/acpi/tables/DMAR"
    data = bytearray(path.read_bytes())
    data[0x32:0x34] = (0x200).to_bytes(2, "little")  # DRHD length 0x70 -> 0x200
    _write(path, bytes(data))
    doc = status_json("--root", str(host))
    [msg] = finding_messages(doc, "VTD051")
    assert msg.startswith("/sys/firmware/acpi/tables/DMAR: offset 0x30: ")
    assert len(_unit(doc)["devices"]) == 17  # type: ignore[arg-type]


def test_pre_52_debugfs_format_is_unsupported_not_wrong(host: Path) -> None:
    old = "IOMMU dmar0: Root Table Address:1a49000\nRoot Table Entries:\n Bus: 0 H: 0 L: 1a53001\n"
    _write(host / TRANS, old.encode())
    doc = status_json("--root", str(host))
    [msg] = finding_messages(doc, "VTD052")
    assert msg.startswith(f"/{TRANS}: ")
    assert "pre-5.2" in msg
    assert _unit(doc)["context_tables"] is None


@pytest.mark.parametrize(
    ("err", "reason"),
    [(errno.EACCES, "permission denied (EACCES)"), (errno.EIO, "I/O error (EIO)")],
)
@pytest.mark.parametrize(
    "rel",
    [
        REGSET,
        TRANS,
        "sys/class/iommu/dmar0/intel-iommu/ecap",
        "sys/firmware/acpi/tables/DMAR",
        "proc/cmdline",
        "sys/kernel/iommu_groups/7/reserved_regions",
        # config space gives the IDs; vendor, device and class are read only when it fails
        "sys/bus/pci/devices/0000:00:05.0/config",
    ],
)
def test_injected_read_errors(
    capture_root: Callable[[str], Path], rel: str, err: int, reason: str
) -> None:
    doc = status_with_faults(capture_root("a_legacy"), FaultPlan([Fault(rel, err)]))
    assert finding_messages(doc, "VTD051") == [f"/{rel}: {reason}"]
    assert doc["verdict"] == "UNKNOWN"
    assert _unit(doc)["address"] == "0xfed90000"


def test_injected_listing_error_on_devices(capture_root: Callable[[str], Path]) -> None:
    faults = FaultPlan([Fault("sys/class/iommu/dmar0/devices", errno.EACCES, on="list")])
    doc = status_with_faults(capture_root("a_legacy"), faults)
    assert finding_messages(doc, "VTD051") == [
        "/sys/class/iommu/dmar0/devices: permission denied (EACCES)"
    ]
    assert _unit(doc)["devices"] == []


def test_debugfs_denied_is_a_tier_state(capture_root: Callable[[str], Path]) -> None:
    faults = FaultPlan([Fault("sys/kernel/debug", errno.EACCES, on="list")])
    doc = status_with_faults(capture_root("a_legacy"), faults)
    assert doc["host"]["tiers"]["iommu_debugfs"] == {
        "state": "denied",
        "reason": "permission denied (EACCES) on /sys/kernel/debug",
    }
    assert _unit(doc)["mode"] == "unknown" and _unit(doc)["root_table"] is None
    assert "VTD051" not in codes(doc)


@pytest.fixture
def world_readable_copy(capture_root: Callable[[str], Path]) -> Iterator[Path]:
    """A world-readable directory holding a copy of a host and of the vtdlud package: uid 65534
    may not be able to reach the checkout (a clone in a ``mktemp -d`` directory is 0700)."""
    top = Path(tempfile.mkdtemp(prefix="vtdlud-unpriv-"))
    try:
        os.chmod(top, 0o755)
        pkg = Path(vtdlud.__file__).parent
        shutil.copytree(pkg, top / "pkg" / "vtdlud", ignore=shutil.ignore_patterns("__pycache__"))
        yield copy_tree(capture_root("a_legacy"), top / "host")
    finally:
        shutil.rmtree(top)


def run_as_nobody(top: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m vtdlud`` as uid 65534, on the package copy under ``top/pkg``; the interpreter
    by its real path (the venv's link to it lies in the checkout)."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    cmd += [os.path.realpath(sys.executable), "-m", "vtdlud", *args]
    return subprocess.run(
        cmd, cwd=top / "pkg", capture_output=True, text=True, check=False, timeout=60
    )


@needs(os.geteuid() == 0, "needs root to switch to uid 65534")
def test_real_eacces_as_an_unprivileged_user(world_readable_copy: Path) -> None:
    target = world_readable_copy / REGSET
    target.chmod(0)
    assert not target.stat().st_mode & stat.S_IRWXO
    proc = run_as_nobody(
        world_readable_copy.parent, "status", "--json", "--root", str(world_readable_copy)
    )
    assert proc.returncode == 0, proc.stderr
    doc = validate(json.loads(proc.stdout))
    assert finding_messages(doc, "VTD051") == [f"/{REGSET}: permission denied (EACCES)"]
    assert _unit(doc)["context_tables"] == [0, 2, 4, 6, 8, 10]
