"""The benchmarks still run (a quick version; the figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).parents[2]


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=TOP, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_bench_cli_quick() -> None:
    out = _run("-m", "benchmarks.bench_cli", "--quick")
    for figure in (
        "status --json:",
        "raw-read floor",
        "cold start:",
        "check end to end:",
        "rows/s",
        "objects/s",
    ):
        assert figure in out, out


def test_bench_signature_small() -> None:
    out = _run("benchmarks/bench_signature.py", "--pages", "20000")
    assert "pages/s" in out, out
