"""packaging/prometheus/vtdlud.rules.yml under Debian's real promtool: `check rules`, and
`test rules` with the cases of vtdlud.rules.test.yml (each alert fires on one host and not on
another); a broken copy of the rules must make the same test fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tools import require_tool

HERE = Path(__file__).parent
RULES = HERE.parents[1] / "packaging" / "prometheus" / "vtdlud.rules.yml"
TESTS = HERE / "vtdlud.rules.test.yml"
ALERTS = (
    "VtdludGateFailed",
    "VtdludPostKexecFailed",
    "VtdludDaemonUnknown",
    "VtdludTextfileStale",
    "VtdludTierLost",
    "VtdludReportUnreadable",
)


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def _run(promtool: str, *args: str, cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def test_check_rules(promtool: str) -> None:
    run = _run(promtool, "check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in run.stdout


def test_every_alert_is_unit_tested(promtool: str) -> None:
    run = _run(promtool, "test", "rules", TESTS.name)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
    shipped = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    assert tuple(shipped) == ALERTS
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    assert tested == set(ALERTS)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('source="gate",verdict="FAIL"', 'source="gate",verdict="PASS"'),  # wrong verdict
        ("for: 1h", "for: 10m"),  # UNKNOWN alerts too early
        ("> 1800", "> 3600"),  # stale too late
        ("== 0\n          and", "== 0\n          or"),  # any unavailable tier would fire
    ],
)
def test_a_broken_rule_fails_its_test(promtool: str, tmp_path: Path, old: str, new: str) -> None:
    """Control: the unit tests catch a rule that is wrong."""
    text = RULES.read_text()
    assert old in text
    broken = tmp_path / "packaging" / "prometheus" / RULES.name
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1))
    tests = tmp_path / "tests" / "prometheus"
    tests.mkdir(parents=True)
    shutil.copy(TESTS, tests)
    run = _run(promtool, "test", "rules", TESTS.name, cwd=tests)
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr
