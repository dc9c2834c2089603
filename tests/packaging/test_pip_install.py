"""`pip install .` into a fresh venv with no compiler on PATH (no gcc, cc, swig, pkg-config:
PATH is the venv's bin only): it succeeds because the two C bindings (systemd-python,
pylibfdt) are an extra, and the installed vtdlud then runs on the pure-Python fallbacks: the
FDT reader (the example bundles' KHO blobs), sd_notify and the journal's native protocol.

Needs the package index (PyPI) for pyudev, psutil, structlog and setuptools, as
scripts/bootstrap does; a copy of the tree is built, never the repository itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging import REPO

EXAMPLES = REPO / "examples"
COMPILERS = ("gcc", "cc", "c99", "clang", "swig", "pkg-config", "pkgconf")
PROBE = """
import importlib.util, json, sys, vtdlud
assert vtdlud.__file__.startswith(sys.prefix), vtdlud.__file__  # the installed copy
from vtdlud.output.journal import _sendv
from vtdlud.parse import kho
print(json.dumps({
    "libfdt": importlib.util.find_spec("libfdt") is not None,
    "systemd": importlib.util.find_spec("systemd") is not None,
    "fdt_reader": kho.libfdt.__name__,
    "journal": _sendv().__module__,
}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("pip")
    src = work / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / item, src / item)
    shutil.copytree(
        REPO / "vtdlud", src / "vtdlud", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    env_dir = work / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(env_dir)], check=True, timeout=120)
    bindir = env_dir / "bin"
    path = str(bindir)
    assert not [c for c in COMPILERS if shutil.which(c, path=path)]  # nothing to compile with
    env = {"PATH": path, "HOME": str(Path.home()), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "install", "--no-cache-dir", str(src)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=work,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return env_dir


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": str(venv / "bin")},
        cwd=venv.parent,  # nothing importable there (the repository's systemd/ would be)
        timeout=120,
    )


def test_installed_without_the_bindings(venv: Path) -> None:
    run = _run(venv, "python", "-P", "-c", PROBE)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "libfdt": False,
        "systemd": False,
        "fdt_reader": "vtdlud.parse.fdt",
        "journal": "vtdlud.output.journal_native",
    }


def test_the_pip_installed_vtdlud_reads_kho_with_the_fallback(venv: Path) -> None:
    """The example hosts carry KHO blobs: the gate reads them with the pure-Python FDT reader
    and gives what the development venv (with pylibfdt) gives."""
    for example, code, verdict in (
        ("1-preserved-clean.tar.gz", 0, "PASS"),
        ("2-preserved-bit-missing.tar.gz", 1, "FAIL"),
    ):
        root = str(EXAMPLES / example)
        run = _run(venv, "vtdlud", "check", "--json", "--no-ledger", "--root", root)
        assert run.returncode == code, run.stderr
        doc = json.loads(run.stdout)
        assert doc["verdict"] == verdict
        dev = subprocess.run(
            [sys.executable, "-m", "vtdlud", "check", "--json", "--no-ledger", "--root", root],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        want = json.loads(dev.stdout)
        for key in ("units", "findings", "preserve", "verdict"):
            assert doc[key] == want[key], key
