"""tests/needs.py: a missing tool skips on a developer's machine and fails under CI=true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.needs import missing, needs

ROOT = Path(__file__).parents[1]


def test_missing_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs frobnicate"):
        missing("needs frobnicate")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and this test cannot run: needs x"):
        missing("needs x")


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 error")])
def test_needs_mark_through_the_conftest_hook(tmp_path: Path, ci: str, outcome: str) -> None:
    """A test file under tests/ with @needs(False, ...), run by a child pytest."""
    probe = ROOT / "tests" / f"test_zz_needs_probe_{tmp_path.name}.py"
    probe.write_text(
        "from tests.needs import needs\n\n\n"
        "@needs(False, 'needs a tool this machine lacks')\n"
        "def test_probe() -> None:\n    pass\n"
    )
    try:
        env = {"PATH": "/usr/bin:/bin", "CI": ci, "HOME": str(tmp_path)}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        probe.unlink()
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == (1 if ci else 0)  # an error at setup fails the run
    assert needs(True, "x").kwargs == {"ok": True, "reason": "x"}
