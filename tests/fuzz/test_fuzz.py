"""The fuzz targets in the normal test run: the regression corpus replayed, then a short
coverage-guided run of every target (the long run is `python -m tests.fuzz.run`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import SEEDS, TARGETS
from tests.needs import needs

REGRESSIONS = Path(__file__).parent / "regressions"


def _corpus() -> list[tuple[str, Path]]:
    return [(t, p) for t in sorted(TARGETS) for p in sorted((REGRESSIONS / t).glob("*"))]


@pytest.mark.parametrize(("target", "path"), _corpus(), ids=lambda x: str(x)[-24:])
def test_regressions_stay_fixed(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


def test_seeds_run() -> None:
    for name, fn in TARGETS.items():
        for seed in SEEDS.get(name, [b""]):
            fn(seed)


def test_there_is_a_regression_corpus() -> None:
    assert _corpus(), "the corpus holds the inputs the fuzzer once crashed on"


@needs(importlib.util.find_spec("atheris") is not None, "needs atheris (pip)")
def test_short_fuzz_run_of_every_target(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "--seconds", "2", "--runs", "3000"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.count(": exit 0;") == len(TARGETS), proc.stdout
