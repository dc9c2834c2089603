"""Item 6 of issue #11: a gate that sees nothing must not pass, whatever the policy relaxes.

On main each of these exited 0 with ``gate.required_tiers = []``: a root with nothing visible,
a host whose VMM preserves a device while no preserved record is visible, a policy naming a
device sysfs does not have, and an empty debugfs dump (no VTD051)."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import finding_messages, run_cli, status_json, validate

EXAMPLE = Path(__file__).parents[2] / "examples" / "1-preserved-clean.tar.gz"
NO_TIERS = "[gate]\nrequired_tiers = []\n"


def _check(root: Path, config: Path, *extra: str) -> tuple[int, dict[str, object]]:
    rc, out, err = run_cli("check", "--json", "--root", str(root), "--config", str(config), *extra)
    assert out, err
    return rc, validate(json.loads(out))


def _blocking(doc: dict[str, object]) -> list[tuple[str, str]]:
    findings = doc["findings"]
    assert isinstance(findings, list)
    return [(f["code"], f["message"]) for f in findings if f["severity"] == "UNKNOWN"]


@pytest.fixture
def no_tiers(tmp_path: Path) -> Path:
    config = tmp_path / "vtdlud.toml"
    config.write_text(NO_TIERS)
    return config


def test_nothing_visible_does_not_pass(tmp_path: Path, no_tiers: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz kho=on liveupdate\n")
    rc, doc = _check(root, no_tiers)
    assert rc == 3
    assert doc["verdict"] == "UNKNOWN"
    assert (
        "VTD050",
        "sysfs tier unavailable: sysfs not mounted at /sys (the gate checks nothing without it)",
    ) in _blocking(doc)
    rc, out, _ = run_cli("check", "--root", str(root), "--config", str(no_tiers))
    assert rc == 3 and "UNKNOWN (fails closed): 1 blocking finding(s) (VTD050); exit 3" in out


def test_no_record_visible_for_a_device_to_preserve(tmp_path: Path, no_tiers: Path) -> None:
    """The example host's VMM preserves 00:05.0; without its kcore no record is visible."""
    root = tmp_path / "root"
    with tarfile.open(EXAMPLE) as tar:
        tar.extractall(root, filter="tar")
    (root / "proc/kcore").unlink()
    rc, doc = _check(root, no_tiers)
    assert rc == 3
    assert (
        "VTD030",
        "0000:00:05.0 is to be preserved, but no preserved IOMMU record is visible (kcore "
        "unavailable): the gate cannot vouch for it",
    ) in _blocking(doc)
    # With its kcore the same host passes: the floor asks only to see the records.
    assert run_cli("check", "--root", str(EXAMPLE), "--config", str(no_tiers))[0] == 0
    # status is no gate: its verdict still follows the policy.
    rc, out, _ = run_cli("status", "--json", "--root", str(root), "--config", str(no_tiers))
    assert rc == 0 and "VTD030" not in out


def test_policy_device_absent_from_sysfs(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    config = tmp_path / "vtdlud.toml"
    config.write_text(
        '[preserve]\ndevices = ["0000:42:00.0", "0000:43:*.*"]\nvmm_held = false\n' + NO_TIERS
    )
    rc, doc = _check(capture_root("a_legacy"), config)
    assert rc == 3
    assert (
        "VTD030",
        "0000:42:00.0 is named by preserve.devices, but sysfs has no such device: nothing of "
        "it can be checked",
    ) in _blocking(doc)
    assert not any("0000:43" in m for _, m in _blocking(doc))  # a glob may match nothing


@pytest.mark.parametrize("name", ["iommu_regset", "dmar_translation_struct"])
def test_empty_debugfs_dump_is_vtd051(
    capture_root: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    root = Path(shutil.copytree(capture_root("b_scalable"), tmp_path / "host", symlinks=True))
    (root / "sys/kernel/debug/iommu/intel" / name).write_text("")
    doc = status_json("--root", str(root))
    assert (
        f"/sys/kernel/debug/iommu/intel/{name}: no DMAR unit in it (empty or cut short), while "
        "sysfs lists 1"
    ) in finding_messages(doc, "VTD051")
