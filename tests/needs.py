"""What a test needs from the machine, and what happens when it is missing.

A developer's machine may lack a tool (journald, gcc, lintian, root): the test is skipped with
the reason.  Under ``CI=true`` the same absence FAILS the test, so CI never passes by running
less than it claims.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> NoReturn:
    """Skip for ``reason``, or fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"CI=true and this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def need_root(why: str = "needs root") -> None:
    if os.geteuid() != 0:
        missing(why)


def need_tool(name: str, why: str | None = None) -> str:
    """The path of ``name`` on PATH (or the absolute ``name`` if it exists)."""
    path = shutil.which(name)
    if path is None:
        missing(why or f"needs {name}")
    return path


def needs(ok: bool, reason: str) -> pytest.MarkDecorator:
    """A mark for a test (or ``pytestmark``) that cannot run unless ``ok``: evaluated at setup
    by tests/conftest.py, where it skips, or fails under ``CI=true``."""
    return pytest.mark.needs(ok=ok, reason=reason)
