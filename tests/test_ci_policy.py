"""Under CI=true a test skipped for want of a tool fails (tests/conftest.py); other skips (a
kernel feature this machine lacks) stay skips, and outside CI both are skips."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CASES = """
import pytest

def test_tool():
    pytest.skip("needs frobnicator (apt package frob)")

@pytest.mark.skipif(True, reason="needs groff (apt package groff-base)")
def test_marker():
    pass

def test_kernel():
    pytest.skip("this kernel has no PR_SET_MDWE (6.3+)")
"""


@pytest.mark.parametrize(("ci", "failed", "skipped"), [("true", 2, 1), ("", 0, 3)])
def test_missing_tools_fail_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, failed: int, skipped: int
) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(CASES)
    result = pytester.runpytest("-p", "no:cacheprovider")
    got = result.parseoutcomes()
    # A skipif marker skips in setup: failed there, it counts as an error; both fail the run.
    assert got.get("failed", 0) + got.get("errors", 0) == failed
    assert got.get("skipped", 0) == skipped
    assert result.ret == (1 if failed else 0)
