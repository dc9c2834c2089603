"""The .deb, built once per session for every packaging test that needs it."""

from __future__ import annotations

import pytest

from tests.needs import missing
from tests.packaging import DebBuild, build_deb
from tests.tools import in_ci


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> DebBuild:
    built = build_deb(tmp_path_factory.mktemp("deb"))
    if isinstance(built, str):
        if in_ci():
            pytest.fail(f"CI=true: {built}")
        missing(built)  # under CI=true a missing tool fails
    return built
