"""Helpers for the packaging tests: build the .deb once per session, expand the RPM spec.

The Debian packaging lives in packaging/debian/; dpkg-buildpackage wants it as debian/ at the
root of the source tree, so the build runs on a staged copy of the tree (never in the repo).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SPEC = PACKAGING / "rpm" / "vtdlud.spec"
# What the build needs from the tree (pyproject's readme is README.md).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "vtdlud", "etc", "systemd", "packaging/prometheus")
# pyenv's shims come first on PATH here; Debian's tools must run Debian's python3 (recipes §5).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_TIMEOUT = 300


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that points Python or the loader elsewhere."""
    drop = {
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "LD_PRELOAD",
        "UMOCKDEV_DIR",
        "PYENV_VERSION",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = SYSTEM_PATH
    env.update(extra)
    return env


def stage_source(dest: Path) -> Path:
    """A copy of the source tree at ``dest/vtdlud-VERSION`` with packaging/debian as debian/."""
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    tree = dest / f"vtdlud-{version.group(1)}"
    tree.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in SOURCE_ITEMS:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, tree / item, ignore=ignore)  # makes the parents
        else:
            shutil.copy2(src, tree / item)
    shutil.copytree(PACKAGING / "debian", tree / "debian", symlinks=True)
    return tree


@dataclass(frozen=True)
class DebBuild:
    deb: Path
    changes: Path
    log: str
    root: Path  # the .deb unpacked with dpkg -x
    files: tuple[str, ...]  # regular files and symlinks in the .deb, as absolute paths
    dirs: tuple[str, ...]
    control: Path  # the control area (dpkg-deb -e)


_BUILT: dict[str, DebBuild | str] = {}


def _run(cmd: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _missing_tools() -> str | None:
    for tool, pkg in (
        ("dpkg-buildpackage", "dpkg-dev"),
        ("dpkg-checkbuilddeps", "dpkg-dev"),
        ("dh", "debhelper"),
    ):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            return f"needs {tool} (apt package {pkg})"
    return None


def build_deb(workdir: Path) -> DebBuild | str:
    """Build the .deb once (later calls return the same result); a str is the reason to skip."""
    if "deb" in _BUILT:
        return _BUILT["deb"]
    result: DebBuild | str
    missing = _missing_tools()
    if missing:
        result = missing
    else:
        tree = stage_source(workdir)
        deps = _run(["dpkg-checkbuilddeps"], tree)
        if deps.returncode != 0:
            result = "build dependencies missing: " + (deps.stderr.strip() or deps.stdout.strip())
        else:
            result = _build(tree)
    _BUILT["deb"] = result
    return result


def _build(tree: Path) -> DebBuild:
    run = _run(["dpkg-buildpackage", "-us", "-uc", "-b"], tree, timeout=BUILD_TIMEOUT)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise AssertionError(f"dpkg-buildpackage failed (exit {run.returncode}):\n{log[-6000:]}")
    out = tree.parent
    (deb,) = out.glob("vtdlud_*_all.deb")
    (changes,) = out.glob("vtdlud_*.changes")
    root = out / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, env=clean_env())
    control = out / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True, env=clean_env())
    files: list[str] = []
    dirs: list[str] = []
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True, env=clean_env()
    ).stdout
    (out / "data.tar").write_bytes(data)
    with tarfile.open(out / "data.tar") as tar:
        for m in tar.getmembers():
            path = "/" + m.name.removeprefix("./")
            (dirs if m.isdir() else files).append(path.rstrip("/") or "/")
    return DebBuild(deb, changes, log, root, tuple(sorted(files)), tuple(sorted(dirs)), control)


# Where Python packages live in the .deb; everything else is "outside the Python package".
PYTHON_TREE = re.compile(r"^/usr/lib/python3/dist-packages/")
DOC_DIR = "/usr/share/doc/vtdlud/"


def usrmerged(path: str) -> str:
    """Debian 12 installs units under /lib, Fedora under /usr/lib: the same file once merged."""
    return "/usr" + path if path.startswith(("/lib/", "/bin/", "/sbin/")) else path


def outside_python(files: tuple[str, ...]) -> list[str]:
    return [usrmerged(f) for f in files if not PYTHON_TREE.match(f) and not f.startswith(DOC_DIR)]


# ------------------------------------------------------------------------------------ RPM spec

# The Fedora macros Debian's rpm does not have, stubbed so `rpmspec -P` can expand the spec.
# Paths are Fedora's values; the script macros expand to an `echo` naming the macro and its
# arguments, so the expanded scriptlets show what each was called with.
SPEC_STUBS: dict[str, str] = {
    "_unitdir": "/usr/lib/systemd/system",
    "_tmpfilesdir": "/usr/lib/tmpfiles.d",
    "_journalcatalogdir": "/usr/lib/systemd/catalog",
    "_datadir": "/usr/share",
    "_presetdir": "/usr/lib/systemd/system-preset",
    "bash_completions_dir": "/usr/share/bash-completion/completions",
    "python3": "/usr/bin/python3",
    "pyproject_files": "%{_builddir}/pyproject-files",
    "systemd_requires": "Requires(post): systemd",
    "pyproject_buildrequires": "echo pyproject_buildrequires",
    "pyproject_wheel": "echo pyproject_wheel",
    "pyproject_install": "echo pyproject_install",
    "pyproject_save_files()": "echo pyproject_save_files %**",
    "pyproject_check_import(e:t)": "echo pyproject_check_import %**",
    "systemd_post()": "echo systemd_post %*",
    "systemd_preun()": "echo systemd_preun %*",
    "systemd_postun()": "echo systemd_postun %*",
    "systemd_postun_with_restart()": "echo systemd_postun_with_restart %*",
    "tmpfiles_create()": "echo tmpfiles_create %*",
}


def expand_spec(spec: Path = SPEC, stubs: dict[str, str] | None = None) -> str:
    """``rpmspec -P`` with the stubs defined; raises AssertionError with rpm's message."""
    cmd = ["rpmspec", "-P"]
    for name, body in (SPEC_STUBS if stubs is None else stubs).items():
        cmd += ["--define", f"{name} {body}"]
    run = subprocess.run(
        [*cmd, str(spec)], capture_output=True, text=True, env=clean_env(), check=False
    )
    if run.returncode != 0:
        raise AssertionError(f"rpmspec -P failed (exit {run.returncode}):\n{run.stderr}")
    return run.stdout


SECTIONS = (
    "%description", "%prep", "%generate_buildrequires", "%build", "%install", "%check",
    "%post", "%preun", "%postun", "%files", "%changelog",
)  # fmt: skip


def spec_sections(expanded: str) -> dict[str, list[str]]:
    """Expanded spec text split by section header (``%files -f X`` is under ``%files``);
    the preamble is under ``""``."""
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in expanded.splitlines():
        head = line.split(" ", 1)[0]
        if head in SECTIONS:
            current = head
            out[current] = [line[len(head) :].strip()] if line[len(head) :].strip() else []
            continue
        out[current].append(line)
    return out


@dataclass(frozen=True)
class SpecFiles:
    files: tuple[str, ...]  # explicit entries (may hold globs), %config ones included
    config: tuple[str, ...]  # %config(noreplace) entries
    dirs: tuple[str, ...]  # %dir entries
    docs: tuple[str, ...]  # %doc / %license names
    file_lists: tuple[str, ...]  # %files -f LIST


def spec_files(expanded: str) -> SpecFiles:
    sect = spec_sections(expanded)["%files"]
    files, config, dirs, docs, lists = [], [], [], [], []
    header, *body = sect if sect and sect[0].startswith("-f") else ["", *sect]
    if header:
        lists.append(header.split(None, 1)[1])
    for raw in body:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("%doc ", "%license ")):
            docs += line.split()[1:]
            continue
        if line.startswith("%dir "):
            dirs.append(line.split(None, 1)[1])
            continue
        m = re.match(r"^%config(?:\([a-z]+\))?\s+(\S+)$", line)
        if m:
            config.append(m.group(1))
            files.append(m.group(1))
            continue
        if line.startswith("%"):
            raise AssertionError(f"unexpected %files directive: {line}")
        files.append(line)
    return SpecFiles(tuple(files), tuple(config), tuple(dirs), tuple(docs), tuple(lists))


def match_entries(entries: tuple[str, ...], paths: list[str]) -> tuple[list[str], list[str]]:
    """(entries matching no path, paths matched by no entry); globs as rpm expands them."""
    unmatched = [e for e in entries if not any(fnmatchcase(p, e) for p in paths)]
    unlisted = [p for p in paths if not any(fnmatchcase(p, e) for e in entries)]
    return unmatched, unlisted
