"""Normal (non-editable) installs of vtdlud for the benchmarks and the output comparison.

An editable install runs every start through setuptools' import hook (a ``.pth`` file that
imports a finder), which roughly doubles the cost of ``python -c pass`` and hides part of
vtdlud's own start; a host runs vtdlud from the .deb or the RPM, byte-compiled, with no hook.
So figures are measured from ``pip install --no-deps .`` into a fresh venv, byte-compiled, the
dependencies taken from the project's venv through a ``.pth`` line naming its site-packages
(a path line only: the editable hook's own ``.pth`` there is not processed).

    python -m benchmarks.installs SRC VENV          # install the tree SRC into VENV
    python -m benchmarks.installs --rev REV VENV    # the same for a git revision of this repo
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Path(out)


def normal_install(src: Path, venv: Path) -> Path:
    """Install the source tree ``src`` into a new venv ``venv``; returns its ``vtdlud``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = _site_packages(python)
    # The dependencies (pyudev, psutil, structlog, systemd-python) from this interpreter's
    # site-packages: a path line, so the editable vtdlud hook there is never imported.
    (site / "vtdlud-bench-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with tempfile.TemporaryDirectory() as build:
        # A copy: setuptools writes build/ and *.egg-info beside the sources it builds.
        tree = Path(build) / "src"
        shutil.copytree(
            src,
            tree,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
            ),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-compile",
                "--target",
                str(site),
                str(tree),
            ],
            check=True,
            cwd=build,
        )
    shutil.rmtree(site / "bin", ignore_errors=True)  # --target's copy of the console script
    # Byte-compiled, as the .deb's py3compile and the RPM leave it.
    subprocess.run([str(python), "-m", "compileall", "-q", str(site / "vtdlud")], check=True)
    script = venv / "bin" / "vtdlud"
    script.write_text(f"#!{python}\nimport sys\nfrom vtdlud.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


def install_rev(rev: str, venv: Path) -> Path:
    """Install the git revision ``rev`` of this repository into ``venv``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(TOP), "archive", "--format=tar", rev],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        return normal_install(Path(tmp), venv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", nargs="?", help="source tree (default: this checkout)")
    ap.add_argument("venv")
    ap.add_argument("--rev", help="a git revision of this repository instead of a tree")
    args = ap.parse_args(argv)
    venv = Path(args.venv)
    script = (
        install_rev(args.rev, venv) if args.rev else normal_install(Path(args.src or TOP), venv)
    )
    print(script)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
