"""Shared fixtures: the real kernel captures (tests/data/captures/*.tar.gz) unpacked once."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from tests.needs import missing
from tests.tools import in_ci

DATA = Path(__file__).parent / "data"
CAPTURES = DATA / "captures"
CAPTURE_NAMES = ("a_legacy", "b_scalable", "d_legacy_passthrough", "g_scalable_alias_fault")


def capture_tarball(name: str) -> Path:
    return CAPTURES / f"{name}.tar.gz"


@pytest.fixture(scope="session")
def capture_root(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``capture_root("a_legacy")`` -> a host root unpacked from the real capture (read-only use)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            dest = tmp_path_factory.mktemp(f"cap-{name}")
            with tarfile.open(capture_tarball(name)) as tar:
                tar.extractall(dest, filter="tar")
            cache[name] = dest
        return cache[name]

    return get


def capture_file(capture_root: Callable[[str], Path], name: str, rel: str) -> str:
    return (capture_root(name) / rel).read_text()


# A skip for want of a tool, a package or a privilege that scripts/bootstrap provides (CI runs as
# root): under CI=true it is a failure, never a test that passed by not running.
_MISSING = re.compile(
    r"^Skipped: (needs |CI=true|.* is not installed|.* not found|build dependencies missing"
    r"|the package's Depends)"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (in_ci() and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if _MISSING.match(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: {reason.removeprefix('Skipped: ')} (scripts/bootstrap installs it)"
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@needs(ok, reason)`` (tests/needs.py): skip, or under CI=true fail, unless ``ok``."""
    for mark in item.iter_markers("needs"):
        if not mark.kwargs["ok"]:
            missing(mark.kwargs["reason"])
