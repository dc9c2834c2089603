"""The Debian package, built for real with `dpkg-buildpackage -us -uc -b` once per session.

What it installs is checked against the tree (every systemd/*.service, the catalog, tmpfiles, the
conffile, man pages and completion generated from this code), then it is unpacked into a
throw-away root with `dpkg -x` and its `vtdlud` runs there on a bundled capture, with PYTHONPATH
pointing into that root only, printing which `vtdlud` it imported.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.needs import missing
from tests.packaging import (
    DOC_DIR,
    PACKAGING,
    REPO,
    SYSTEM_PATH,
    DebBuild,
    clean_env,
    expand_spec,
    match_entries,
    outside_python,
    spec_files,
    spec_sections,
)
from vtdlud._build.argspec import describe
from vtdlud._build.completion import render_bash
from vtdlud._build.manpage import read_units, render_vtdlud_8, render_vtdlud_toml_5
from vtdlud.audit.catalog import CATALOG
from vtdlud.cli.args import build_parser

CAPTURE = REPO / "tests" / "data" / "captures" / "a_legacy.tar.gz"
DIST_PACKAGES = "usr/lib/python3/dist-packages"
DEBIAN_PYTHON = "/usr/bin/python3"
# pyproject dependency -> the Debian package that provides it
DEBIAN_NAME = {
    "pyudev": "python3-pyudev",
    "psutil": "python3-psutil",
    "structlog": "python3-structlog",
    "systemd-python": "python3-systemd",
    "pylibfdt": "python3-libfdt",
}


def _member(built: DebBuild, path: str) -> bytes:
    data = (built.root / path.lstrip("/")).read_bytes()
    return gzip.decompress(data) if path.endswith(".gz") else data


def _depends(built: DebBuild) -> dict[str, str | None]:
    """Depends as {package: minimum version or None}."""
    text = (built.control / "control").read_text()
    m = re.search(r"^Depends: (.+)$", text, re.M)
    assert m is not None
    deps: dict[str, str | None] = {}
    for item in m.group(1).split(","):
        dm = re.fullmatch(r"\s*([a-z0-9.+:-]+)(?:\s*\(>=\s*([^)]+)\))?\s*", item)
        assert dm is not None, item
        deps[dm.group(1)] = dm.group(2)
    return deps


def _pyproject_minimums() -> dict[str, str]:
    """The dependencies and the C bindings' extra (which the distributions' packages depend on:
    the .deb ships the design's stack, pip users may go without the bindings)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {}
    for req in [*project["dependencies"], *project["optional-dependencies"]["bindings"]]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", req)
        assert m is not None, f"unexpected requirement form {req!r}"
        out[m.group(1)] = m.group(2)
    return out


# ------------------------------------------------------------------------------ what it ships


def test_ships_the_command_and_the_python_package(deb: DebBuild) -> None:
    assert "/usr/bin/vtdlud" in deb.files
    assert os.access(deb.root / "usr/bin/vtdlud", os.X_OK)
    assert (deb.root / "usr/bin/vtdlud").read_text().startswith("#!/usr/bin/python3\n")
    pkg = deb.root / DIST_PACKAGES / "vtdlud"
    shipped = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")}
    tree = {p.relative_to(REPO / "vtdlud").as_posix() for p in (REPO / "vtdlud").rglob("*.py")}
    assert shipped == tree
    assert (pkg / "py.typed").exists()


def test_ships_no_kernel_model(deb: DebBuild) -> None:
    """The kernel model (tests/kernelmodel) is test and example infrastructure: the .deb (and the
    RPM, whose files equal the .deb's) installs the product package and nothing of it."""
    top = {
        Path(f).relative_to(f"/{DIST_PACKAGES}").parts[0]
        for f in deb.files
        if f.startswith(f"/{DIST_PACKAGES}/")
    }
    assert {t for t in top if not t.endswith((".dist-info", ".egg-info"))} == {"vtdlud"}
    pkg = deb.root / DIST_PACKAGES / "vtdlud"
    assert not (pkg / "sim").exists() and not list(pkg.rglob("kernelmodel"))
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        assert "SimHost" not in text and not re.search(r"^\s*(from|import) tests\b", text, re.M), (
            path
        )


def _unit_dir() -> str:
    """Where systemd on the build machine wants units (bookworm /lib/systemd/system, trixie and
    later /usr/lib/systemd/system: DEP17); debian/rules asks the same pkg-config."""
    run = subprocess.run(
        ["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    return run.stdout.strip()


def test_ships_every_unit_of_the_tree(deb: DebBuild) -> None:
    units = sorted((REPO / "systemd").glob("*.service"))
    assert units
    unitdir = _unit_dir()
    assert unitdir in ("/lib/systemd/system", "/usr/lib/systemd/system")
    shipped = sorted(f for f in deb.files if f.endswith(".service"))
    assert shipped == [f"{unitdir}/{u.name}" for u in units]
    for u in units:
        assert _member(deb, f"{unitdir}/{u.name}") == u.read_bytes()


def test_ships_catalog_tmpfiles_and_conffile(deb: DebBuild) -> None:
    systemd = REPO / "systemd"
    catalog = _member(deb, "/usr/lib/systemd/catalog/vtdlud.catalog")
    assert catalog == (systemd / "vtdlud.catalog").read_bytes()
    assert (
        _member(deb, "/usr/lib/tmpfiles.d/vtdlud.conf")
        == (systemd / "vtdlud.tmpfiles").read_bytes()
    )
    shipped = (REPO / "etc" / "vtdlud" / "vtdlud.toml").read_bytes()
    assert _member(deb, "/etc/vtdlud/vtdlud.toml") == shipped
    assert (deb.control / "conffiles").read_text().split() == ["/etc/vtdlud/vtdlud.toml"]


def test_man_pages_and_completion_are_generated_from_this_code(deb: DebBuild) -> None:
    page8 = _member(deb, "/usr/share/man/man8/vtdlud.8.gz").decode()
    page5 = _member(deb, "/usr/share/man/man5/vtdlud.toml.5.gz").decode()
    date = re.search(r'^\.TH "VTDLUD" 8 "([^"]*)"', page8, re.M)
    assert date is not None and re.fullmatch(r"\d{4}-\d\d-\d\d", date.group(1))
    units = read_units(REPO / "systemd")
    assert page8 == render_vtdlud_8(build_parser(), date=date.group(1), units=units)
    shipped = (REPO / "etc" / "vtdlud" / "vtdlud.toml").read_text()
    assert page5 == render_vtdlud_toml_5(shipped, date=date.group(1))
    completion = _member(deb, "/usr/share/bash-completion/completions/vtdlud").decode()
    assert completion == render_bash(describe(build_parser()))
    assert "/usr/share/doc/vtdlud/README.md.gz" in deb.files


# ------------------------------------------------------------------------------ dependencies


def test_depends_declares_the_pyproject_minimums(deb: DebBuild) -> None:
    deps = _depends(deb)
    assert set(_pyproject_minimums()) == set(DEBIAN_NAME)  # all five, the bindings included
    for dist, minimum in _pyproject_minimums().items():
        assert deps.get(DEBIAN_NAME[dist]) == minimum, (dist, deps)
    assert deps.get("python3:any") == "3.11~"


def test_bookworm_versions_satisfy_the_minimums(deb: DebBuild) -> None:
    """The installed Debian packages (bookworm on the CI kind) are new enough."""
    checked = 0
    for pkg, minimum in _depends(deb).items():
        if minimum is None or not pkg.startswith("python3-"):
            continue
        q = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False
        )
        if q.returncode != 0 or not q.stdout:
            missing(f"{pkg} is not installed (apt-get install {pkg})")
        ok = subprocess.run(["dpkg", "--compare-versions", q.stdout, "ge", minimum], check=False)
        assert ok.returncode == 0, f"{pkg} {q.stdout} < {minimum}"
        checked += 1
    assert checked == len(DEBIAN_NAME)


# -------------------------------------------------------------------------- maintainer scripts


def test_postinst_updates_the_catalog_and_creates_tmpfiles(deb: DebBuild) -> None:
    postinst = (deb.control / "postinst").read_text()
    assert re.search(r"^\s*journalctl \S* ?--update-catalog\b", postinst, re.M)
    assert "--create vtdlud.conf" in postinst
    # Only the daemon is ever started by the package: the oneshots run when a live update runs.
    started = set(re.findall(r"deb-systemd-invoke \$_dh_action '([^']+)'", postinst))
    assert started <= {"vtdlud.service"}
    assert "deb-systemd-invoke start 'vtdlud-gate.service'" not in postinst


def test_journalctl_reads_the_installed_catalog(deb: DebBuild, tmp_path: Path) -> None:
    if shutil.which("journalctl", path=SYSTEM_PATH) is None:
        missing("needs journalctl (systemd)")
    root = tmp_path / "root"
    shutil.copytree(deb.root, root)
    run = subprocess.run(
        ["journalctl", f"--root={root}", "--update-catalog"],
        capture_output=True,
        check=False,
        text=True,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr
    listed = subprocess.run(
        ["journalctl", f"--root={root}", "--list-catalog"],
        capture_output=True,
        check=False,
        text=True,
    ).stdout
    assert {line.split()[0] for line in listed.splitlines()} >= {
        e.message_id for e in CATALOG.values()
    }


def test_systemd_tmpfiles_creates_the_state_dirs(deb: DebBuild, tmp_path: Path) -> None:
    if shutil.which("systemd-tmpfiles", path=SYSTEM_PATH) is None or os.geteuid() != 0:
        missing("needs systemd-tmpfiles and root")
    root = tmp_path / "root"
    shutil.copytree(deb.root, root)
    run = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", "vtdlud.conf"],
        capture_output=True,
        check=False,
        text=True,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert (root / "var/lib/vtdlud").is_dir() and (root / "run/vtdlud").is_dir()


# ---------------------------------------------------------------------------- installed copy


def _debian_python_ready(deb: DebBuild) -> None:
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        missing(f"needs Debian's {DEBIAN_PYTHON}")
    absent = [
        p
        for p in _depends(deb)
        if p.startswith("python3-")
        and subprocess.run(["dpkg-query", "-W", p], capture_output=True, check=False).returncode
    ]
    if absent:
        missing("the package's Depends are not installed: apt-get install " + " ".join(absent))


def _installed_env(root: Path) -> dict[str, str]:
    env = clean_env(PYTHONPATH=str(root / DIST_PACKAGES), PYTHONDONTWRITEBYTECODE="1")
    env.pop("NO_COLOR", None)
    return env


def test_installed_vtdlud_runs_from_the_throwaway_root(deb: DebBuild, tmp_path: Path) -> None:
    _debian_python_ready(deb)
    script = deb.root / "usr/bin/vtdlud"
    argv = ["vtdlud", "status", "--root", str(CAPTURE)]
    # The installed console script, run as __main__ in a Debian python3 that says which vtdlud
    # it imported; -P keeps the working directory off sys.path (run from tmp_path anyway).
    probe = (
        "import runpy, sys, vtdlud; "
        "print('vtdlud from', vtdlud.__file__, file=sys.stderr); "
        f"sys.argv = {argv!r}; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    run = subprocess.run(
        [DEBIAN_PYTHON, "-P", "-c", probe],
        cwd=tmp_path,
        env=_installed_env(deb.root),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    origin = re.search(r"^vtdlud from (\S+)$", run.stderr, re.M)
    assert origin is not None, run.stderr
    assert origin.group(1) == str(deb.root / DIST_PACKAGES / "vtdlud" / "__init__.py")
    assert "Verdict: " in run.stdout and "dmar0  0xfed90000" in run.stdout

    # The script through its own #!/usr/bin/python3 line prints the same.
    direct = subprocess.run(
        [str(script), *argv[1:]],
        cwd=tmp_path,
        env=_installed_env(deb.root),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == run.stdout

    # ...and the same as this tree in the venv: Debian's older dependencies change nothing.
    dev = subprocess.run(
        [sys.executable, "-m", "vtdlud", *argv[1:]],
        cwd=tmp_path,
        env={**clean_env(PYTHONPATH=str(REPO)), "PATH": os.environ["PATH"]},
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert dev.returncode == 0, dev.stderr
    assert run.stdout == dev.stdout


def test_installed_package_imports_nothing_from_the_repo(deb: DebBuild, tmp_path: Path) -> None:
    """Control for the test above: without the PYTHONPATH, Debian's python3 has no vtdlud."""
    _debian_python_ready(deb)
    env = _installed_env(deb.root)
    del env["PYTHONPATH"]
    run = subprocess.run(
        [DEBIAN_PYTHON, "-P", "-c", "import vtdlud"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
        text=True,
    )
    assert run.returncode != 0 and "No module named 'vtdlud'" in run.stderr


# ------------------------------------------------------------------------------------ lintian

README = PACKAGING / "README"


def _explained_tags() -> set[str]:
    text = README.read_text()
    section = text.split("## Lintian tags", 1)
    assert len(section) == 2, "packaging/README has no '## Lintian tags' section"
    return set(re.findall(r"^- `([a-z0-9][a-z0-9.+-]+)`", section[1].split("\n## ", 1)[0], re.M))


def test_lintian_tags_are_all_explained(deb: DebBuild) -> None:
    if shutil.which("lintian", path=SYSTEM_PATH) is None:
        missing("needs lintian (apt package lintian)")
    run = subprocess.run(
        ["lintian", "--pedantic", "-E", "-I", "--show-overrides", "--tag-display-limit", "0",
         str(deb.changes)],
        capture_output=True, check=False,
        text=True,
        env=clean_env(),
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    tags = re.findall(r"^([EWIPXOMC]): vtdlud(?: \w+)?: (\S+)", run.stdout, re.M)
    assert not [t for level, t in tags if level == "E"], run.stdout
    unexplained = {t for _, t in tags} - _explained_tags()
    assert not unexplained, f"explain in packaging/README (## Lintian tags):\n{run.stdout}"


# --------------------------------------------------------------------------------- RPM vs deb


def test_rpm_files_equal_what_the_deb_installs(deb: DebBuild) -> None:
    if shutil.which("rpmspec", path=SYSTEM_PATH) is None:
        missing("needs rpmspec (apt package rpm)")
    expanded = expand_spec()
    listed = spec_files(expanded)
    outside = outside_python(deb.files)
    # RPM only: Fedora's presets disable every unit no preset file names; on Debian the
    # postinst enables the units (deb-systemd-helper).
    rpm_only = ["/usr/lib/systemd/system-preset/90-vtdlud.preset"]
    unmatched, unlisted = match_entries(listed.files, [*outside, *rpm_only])
    assert not unmatched, f"in vtdlud.spec %files but not in the .deb: {unmatched}"
    assert not unlisted, f"in the .deb but not in vtdlud.spec %files: {unlisted}"
    # Conffiles are %config(noreplace), the vtdlud-owned directories are %dir ...
    conffiles = (deb.control / "conffiles").read_text().split()
    assert sorted(listed.config) == sorted(conffiles)
    own_dirs = [
        d
        for d in deb.dirs
        if "vtdlud" in d and not d.startswith(("/usr/lib/python3", DOC_DIR.rstrip("/")))
    ]
    assert sorted(listed.dirs) == sorted(own_dirs)
    # ... and the docs are the same files.
    docs = {Path(f).name.removesuffix(".gz") for f in deb.files if f.startswith(DOC_DIR)}
    assert set(listed.docs) == docs - {"changelog", "copyright"}
    # The systemd scriptlets name exactly the units %files ships.
    units = {Path(f).name for f in listed.files if f.startswith("/usr/lib/systemd/system/")}
    sections = spec_sections(expanded)
    for section, macro in (("%post", "systemd_post"), ("%preun", "systemd_preun")):
        calls = [
            line.split()[2:] for line in sections[section] if line.startswith(f"echo {macro} ")
        ]
        assert len(calls) == 1 and set(calls[0]) == units, (section, calls)
    postun = [
        line.split() for line in sections["%postun"] if line.startswith("echo systemd_postun")
    ]
    restarted = {u for c in postun if c[1] == "systemd_postun_with_restart" for u in c[2:]}
    assert restarted and {u for c in postun for u in c[2:]} == units
    assert restarted <= {"vtdlud.service"}
