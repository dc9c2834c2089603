"""External tools the tests run for real (promtool, rpmbuild, lintian, systemd-analyze...).

A missing tool skips its tests on a developer's machine but FAILS them under ``CI=true``:
`scripts/bootstrap` installs every one, so in CI a missing tool is a broken bootstrap, never a
reason for a test to pass by not running.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Debian's tools, not a venv's or pyenv's shims (tests/packaging's clean PATH).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(tool: str, package: str, *, path: str = SYSTEM_PATH) -> str:
    """The tool's path; skip (fail under CI=true) when it is not installed."""
    found = shutil.which(tool, path=path)
    if found is None:
        reason = f"needs {tool} (apt package {package}; scripts/bootstrap installs it)"
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found
