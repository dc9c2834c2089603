"""`vtdlud check`, the pre-kexec gate: exit codes and their precedence, --report, the ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import copy_tree, run_cli, validate
from tests.conftest import capture_tarball
from vtdlud.host.procs import PROCESSES_JSON, facts_to_json
from vtdlud.host.root import HostRoot
from vtdlud.model.snapshot import ProcessFacts, VfioHolder
from vtdlud.service.ledger import read_ledger

SYSFS_ONLY = '[gate]\nrequired_tiers = ["sysfs"]\n[preserve]\nvmm_held = false\n'


def _cfg(tmp_path: Path, text: str) -> str:
    p = tmp_path / "vtdlud.toml"
    p.write_text(text)
    return str(p)


def test_default_policy_fails_closed_on_a_capture() -> None:
    rc, out, err = run_cli("check", "--root", str(capture_tarball("a_legacy")))
    assert rc == 3 and err == ""
    assert out.endswith(
        "vtdlud check: UNKNOWN (fails closed): 3 blocking finding(s) (VTD050); exit 3\n"
    )


def test_pass_json_and_report(tmp_path: Path) -> None:
    report = tmp_path / "run" / "gate.json"
    report.parent.mkdir()  # a missing directory is refused (tests/service/test_leftovers.py)
    rc, out, _ = run_cli(
        "check",
        "--json",
        "--root",
        str(capture_tarball("b_scalable")),
        "--config",
        _cfg(tmp_path, SYSFS_ONLY),
        "--report",
        str(report),
    )
    assert rc == 0
    doc = validate(json.loads(out))
    assert doc["vtdlud"]["exit_status"] == 0 and doc["verdict"] == "PASS"
    assert json.loads(report.read_text()) == doc


def _holder_host(capture_root: Callable[[str], Path], tmp_path: Path, iommufd: bool) -> Path:
    root = copy_tree(capture_root("a_legacy"), tmp_path / "host")
    (root / "vtdlud").mkdir()
    holder = VfioHolder(7, "qemu", ("qemu",), ("vfio0",), (), iommufd)
    (root / PROCESSES_JSON).write_bytes(facts_to_json(ProcessFacts((holder,), True, "test")))
    return root


def test_fail_beats_unknown(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    """A FAIL (VTD026: cdev without iommufd) with UNKNOWNs (kho_debugfs, kcore): exit 1."""
    root = _holder_host(capture_root, tmp_path, iommufd=False)
    rc, out, _ = run_cli("check", "--root", str(root))
    assert rc == 1
    assert "vtdlud check: FAIL: 2 blocking finding(s) (VTD026, VTD029); exit 1" in out


def test_fail_severity_warn(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    """gate.fail_severity = "WARN" makes a translation-disabled WARN (VTD070) block."""
    root = copy_tree(capture_root("a_legacy"), tmp_path / "host")
    regset = root / "sys/kernel/debug/iommu/intel/iommu_regset"
    text = regset.read_text().replace("0x00000000c7000000", "0x0000000047000000")  # TES off
    regset.unlink()
    regset.write_text(text)
    cfg_text = (
        '[gate]\nrequired_tiers = ["sysfs"]\nfail_severity = "WARN"\n[preserve]\nvmm_held = false\n'
    )
    cfg = _cfg(tmp_path, cfg_text)
    rc, out, _ = run_cli("check", "--root", str(root), "--config", cfg)
    assert rc == 1 and "(VTD070); exit 1" in out
    cfg = _cfg(tmp_path, cfg_text.replace('"WARN"', '"FAIL"'))
    assert run_cli("check", "--root", str(root), "--config", cfg)[0] == 0


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    rc, out, err = run_cli("check", "--root", str(tmp_path / "nope"))
    assert (rc, out) == (2, "") and err.startswith("vtdlud: error: --root ")


def test_ledger_written_only_on_a_passing_live_host(
    capture_root: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    cfg = _cfg(tmp_path, SYSFS_ONLY)
    root = str(capture_root("d_legacy_passthrough"))
    assert run_cli("check", "--root", root, "--config", cfg, "--state-dir", str(state))[0] == 0
    assert read_ledger(state) is None  # a --root that is not this host: nothing recorded
    monkeypatch.setattr(HostRoot, "is_live", property(lambda self: True))
    assert run_cli("check", "--root", root, "--config", cfg, "--state-dir", str(state))[0] == 0
    ledger = read_ledger(state)
    assert ledger is not None and ledger.units == () and not ledger.consumed
    assert (
        run_cli("check", "--root", root, "--config", cfg, "--state-dir", str(state), "--no-ledger")[
            0
        ]
        == 0
    )
