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
MAX_EXPOSURE = {
    "vtdlud-gate.service": 2.5,
    "vtdlud-post-kexec.service": 2.5,
    "vtdlud.service": 1.0,
}

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
