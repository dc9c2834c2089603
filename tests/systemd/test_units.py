"""The shipped unit files, verified by the real systemd-analyze (252 on the CI kind).

`systemd-analyze verify` exits 0 even on unknown keys, so any stderr fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.needs import needs

SYSTEMD = Path(__file__).parents[2] / "systemd"
VTDLUD = Path(sys.executable).parent / "vtdlud"
# Highest acceptable `systemd-analyze security` exposure per unit (lower is safer).
# The gate was 2.3 before #16 (no PrivateMounts, DevicePolicy, ~@privileged), now 1.9.
MAX_EXPOSURE = {
    "vtdlud-gate.service": 2.0,
    "vtdlud-post-kexec.service": 2.2,
    "vtdlud.service": 1.0,
}
ONESHOTS = ("vtdlud-gate.service", "vtdlud-post-kexec.service")

pytestmark = needs(
    shutil.which("systemd-analyze") is not None, "needs systemd-analyze (package systemd)"
)


def _units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def _staged(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's vtdlud (verify needs an existing binary)."""
    text = unit.read_text().replace("/usr/bin/vtdlud", str(VTDLUD))
    out = tmp_path / unit.name
    out.write_text(text)
    return out


def test_every_unit_has_an_exposure_limit() -> None:
    assert {u.name for u in _units()} == set(MAX_EXPOSURE)


@pytest.mark.parametrize("unit", _units(), ids=lambda u: u.name)
def test_verify_is_clean(unit: Path, tmp_path: Path) -> None:
    staged = _staged(unit, tmp_path)
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(staged)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """The check above can fail: an unknown key makes stderr non-empty."""
    staged = _staged(SYSTEMD / "vtdlud-gate.service", tmp_path)
    staged.write_text(staged.read_text().replace("ProtectSystem=", "ProtectSystm="))
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(staged)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Unknown key" in run.stderr


@pytest.mark.parametrize("unit", _units(), ids=lambda u: u.name)
def test_security_exposure(unit: Path, tmp_path: Path) -> None:
    staged = _staged(unit, tmp_path)
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(staged)],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", run.stdout)
    assert m is not None, run.stdout + run.stderr
    score = float(m.group(1))
    print(f"{unit.name}: exposure {score}")
    assert score <= MAX_EXPOSURE[unit.name]


@needs(
    os.geteuid() == 0 and shutil.which("systemd-tmpfiles") is not None,
    "needs root and systemd-tmpfiles",
)
def test_tmpfiles_creates_the_directories(tmp_path: Path) -> None:
    run = subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={tmp_path}", str(SYSTEMD / "vtdlud.tmpfiles")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr
    for d in ("var/lib/vtdlud", "run/vtdlud"):
        assert oct((tmp_path / d).stat().st_mode & 0o777) == "0o755"


def _conditions(unit: Path) -> list[str]:
    return [
        line
        for line in unit.read_text().splitlines()
        if line.startswith(("ConditionPath", "AssertPath"))
    ]


@pytest.mark.parametrize("unit", _units(), ids=lambda u: u.name)
def test_units_run_only_on_intel_vtd_hosts(unit: Path) -> None:
    """Each unit is conditioned on a DMAR unit in sysfs (the post-kexec check also on a pending
    ledger), and systemd-analyze evaluates the conditions on this machine as the glob does."""
    conds = _conditions(unit)
    glob = "/sys/class/iommu/dmar*"
    assert any(c.endswith(glob) and c.startswith("ConditionPathExistsGlob=") for c in conds)
    if unit.name == "vtdlud-post-kexec.service":
        assert conds == [
            f"ConditionPathExistsGlob=|{glob}",
            "ConditionPathExists=|/var/lib/vtdlud/ledger.json",
        ]
    else:
        assert conds == [f"ConditionPathExistsGlob={glob}"]
    run = subprocess.run(
        ["systemd-analyze", "condition", *conds], capture_output=True, text=True, check=False
    )
    has_vtd = bool(list(Path("/sys/class/iommu").glob("dmar*")))
    pending = Path("/var/lib/vtdlud/ledger.json").exists() and "|" in conds[0]
    assert run.returncode == (0 if has_vtd or pending else 1), run.stdout + run.stderr


def test_condition_check_can_fail() -> None:
    """Control: a condition on a path that cannot exist fails in systemd-analyze."""
    run = subprocess.run(
        ["systemd-analyze", "condition", "ConditionPathExistsGlob=/nonexistent/dmar*"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1 and "failed" in run.stderr


def _service_section(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("name", ONESHOTS)
def test_oneshots_have_a_bounded_start(name: str) -> None:
    """A oneshot has no start timeout by default: a stuck gate would block the kexec forever."""
    service = _service_section(SYSTEMD / name)
    assert service["Type"] == ["oneshot"]
    [timeout] = service["TimeoutStartSec"]
    m = re.fullmatch(r"(\d+)(min|s)", timeout)
    assert m is not None, timeout
    seconds = int(m.group(1)) * (60 if m.group(2) == "min" else 1)
    assert 0 < seconds <= 300


def test_gate_has_the_post_kexec_sandbox() -> None:
    """The two privileged oneshots share one sandbox; they differ only where their inputs do
    (the post-kexec check reads /dev/kmsg: CAP_SYSLOG, DeviceAllow, no ProtectKernelLogs)."""
    gate = _service_section(SYSTEMD / "vtdlud-gate.service")
    post = _service_section(SYSTEMD / "vtdlud-post-kexec.service")
    own = {"ExecStart", "RemainAfterExit", "TimeoutStartSec", "CapabilityBoundingSet"}
    kmsg = {"DeviceAllow", "ProtectKernelLogs"}
    assert {k: v for k, v in gate.items() if k not in own | kmsg} == {
        k: v for k, v in post.items() if k not in own | kmsg
    }
    assert gate["CapabilityBoundingSet"] == ["CAP_SYS_RAWIO CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    assert post["CapabilityBoundingSet"] == [gate["CapabilityBoundingSet"][0] + " CAP_SYSLOG"]
    assert gate["DevicePolicy"] == ["closed"] and "DeviceAllow" not in gate
    assert gate["ProtectKernelLogs"] == ["yes"]
    # PrivateDevices= would drop CAP_SYS_RAWIO (kcore) from the bounding set.
    assert "PrivateDevices" not in gate
