"""Issue #11 item 9: paths that had no test.  The exit-4 handler (a real failure: stdout is
/dev/full), and the two write failures of ``check``: its --report and its ledger."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import VTDLUD, run_cli
from tests.conftest import capture_tarball
from tests.needs import missing

SYSFS_ONLY = '[preserve]\nvmm_held = false\n[gate]\nrequired_tiers = ["sysfs"]\n'


def test_internal_error_is_one_line_and_exit_4() -> None:
    """The one place that turns an unexpected exception into exit 4: a write to a full device."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [str(VTDLUD), "decode", "cap", "0xd2008c40660462"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 4
    assert proc.stderr.splitlines() == [
        "vtdlud: error: internal error: OSError: [Errno 28] No space left on device",
        "vtdlud: hint: run `vtdlud collect` and attach the bundle to a bug report",
    ]


@pytest.fixture
def sysfs_only(tmp_path: Path) -> Path:
    cfg = tmp_path / "vtdlud.toml"
    cfg.write_text(SYSFS_ONLY)
    return cfg


@pytest.mark.parametrize("kind", ["a directory", "beneath a file"])
def test_check_report_cannot_be_written(tmp_path: Path, sysfs_only: Path, kind: str) -> None:
    if kind == "a directory":
        report = tmp_path / "gate.json"
        report.mkdir()
        why = "Is a directory"
    else:
        (tmp_path / "file").write_text("")
        report = tmp_path / "file" / "gate.json"
        why = "Not a directory"
    rc, out, err = run_cli(
        "check",
        "--root",
        str(capture_tarball("b_scalable")),
        "--config",
        str(sysfs_only),
        "--report",
        str(report),
    )
    assert (rc, out) == (2, "")
    assert err == f"vtdlud: error: --report {report}: cannot write ({why})\n"


def _live_check(config: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """``vtdlud check --root /`` in a child without umockdev's preload (a testbed of an earlier
    test would otherwise stand in for this process's /sys)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UMOCKDEV_DIR")}
    cmd = [str(VTDLUD), "check", "--root", "/", "--config", str(config), "--state-dir", str(state)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_check_ledger_cannot_be_written(tmp_path: Path, sysfs_only: Path) -> None:
    """The ledger is written only by a passing gate on the live host: this host's."""
    good = tmp_path / "state"
    run = _live_check(sysfs_only, good)
    if run.returncode != 0:
        missing(f"the live host does not pass a sysfs-only gate (exit {run.returncode})")
    assert (good / "ledger.json").is_file()
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "state"
    run = _live_check(sysfs_only, bad)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.splitlines() == [
        f"vtdlud: error: --state-dir {bad}: cannot write the ledger (Not a directory)",
        "vtdlud: hint: the gate passed but nothing was recorded; run it as root or use --no-ledger",
    ]
