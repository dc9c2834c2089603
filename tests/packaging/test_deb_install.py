"""The .deb installed on this machine with the real dpkg (its maintainer scripts: py3compile,
deb-systemd-helper, systemd-tmpfiles, journalctl --update-catalog), used the way the units use
it, then purged: nothing of vtdlud's may be left, not the ledger, /run/vtdlud or the
node_exporter textfile (which would export the last verdict forever).

Needs root and a machine without a vtdlud package of its own (the CI kind); it retries while
another dpkg holds the lock.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging import REPO, DebBuild, clean_env
from tests.tools import in_ci, require_tool
from vtdlud.audit.catalog import CATALOG

# Where a package's files and its maintainer scripts' leftovers can be.
SCANNED = (
    "/etc",
    "/lib/systemd",
    "/run",
    "/usr/bin",
    "/usr/lib/python3",
    "/usr/lib/systemd",
    "/usr/lib/tmpfiles.d",
    "/usr/share",
    "/var/lib",
)
TEXTFILE_DIR = Path("/var/lib/prometheus/node-exporter")
CAPTURE = REPO / "tests" / "data" / "captures" / "a_legacy.tar.gz"


def _vtdlud_paths() -> set[str]:
    found: set[str] = set()
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                if "vtdlud" in name:
                    found.add(os.path.join(dirpath, name))
    return found


def _installed() -> bool:
    q = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", "vtdlud"],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    return q.returncode == 0 and q.stdout not in ("", "not-installed")


def _dpkg(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """dpkg ARGS, waiting (up to 2 minutes) while another dpkg or apt holds the lock."""
    deadline = time.monotonic() + 120
    while True:
        run = subprocess.run(
            ["dpkg", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=clean_env(DEBIAN_FRONTEND="noninteractive"),
        )
        if run.returncode == 0 or "lock" not in run.stderr or time.monotonic() > deadline:
            return run
        time.sleep(2)


@pytest.fixture
def installed(deb: DebBuild) -> Iterator[set[str]]:
    """Install the .deb; yields the vtdlud paths that existed before.  Always purged after."""
    require_tool("dpkg", "dpkg")
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("CI=true: the install/purge test needs root")
        pytest.skip("needs root (dpkg -i)")
    if _installed():
        pytest.skip("a vtdlud package is installed on this machine; not replacing it")
    before = _vtdlud_paths()
    made_textfile_dir = not TEXTFILE_DIR.exists()
    run = _dpkg("-i", str(deb.deb))
    try:
        assert run.returncode == 0, run.stdout + run.stderr
        yield before
    finally:
        if _installed():
            _dpkg("--purge", "vtdlud")
        if made_textfile_dir and TEXTFILE_DIR.is_dir() and not any(TEXTFILE_DIR.iterdir()):
            TEXTFILE_DIR.rmdir()
            if not any(TEXTFILE_DIR.parent.iterdir()):
                TEXTFILE_DIR.parent.rmdir()


def _catalog_ids() -> set[str]:
    listed = subprocess.run(
        ["journalctl", "--list-catalog"], capture_output=True, text=True, check=False
    ).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_install_use_and_purge_leave_nothing(installed: set[str], deb: DebBuild) -> None:
    # Installed: the command, man pages, completion, the catalog compiled, the state dirs.
    for path in (
        "/usr/bin/vtdlud",
        "/usr/share/man/man8/vtdlud.8.gz",
        "/usr/share/man/man5/vtdlud.toml.5.gz",
        "/usr/share/bash-completion/completions/vtdlud",
        "/usr/share/vtdlud/prometheus/vtdlud.rules.yml",
        "/etc/vtdlud/vtdlud.toml",
    ):
        assert Path(path).is_file(), path
    assert {e.message_id for e in CATALOG.values()} <= _catalog_ids()
    assert Path("/var/lib/vtdlud").is_dir() and Path("/run/vtdlud").is_dir()
    # Enabled as the RPM's preset enables them (test_rpmbuild.py): the units with [Install].
    for wants in ("multi-user.target.wants/vtdlud.service",
                  "sysinit.target.wants/vtdlud-post-kexec.service"):  # fmt: skip
        assert (Path("/etc/systemd/system") / wants).is_symlink(), wants
    run = subprocess.run(
        ["/usr/bin/vtdlud", "status", "--brief", "--root", str(CAPTURE)],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.startswith("vtdlud status: root "), run.stderr

    # Used: what the gate, the post-kexec check and the daemon write.
    Path("/var/lib/vtdlud/ledger.json").write_text("{}\n")
    for name in ("gate.json", "post-kexec.json", "status.json", "daemon.json"):
        (Path("/run/vtdlud") / name).write_text("{}\n")
    TEXTFILE_DIR.mkdir(parents=True, exist_ok=True)
    (TEXTFILE_DIR / "vtdlud.prom").write_text('vtdlud_verdict{source="gate",verdict="FAIL"} 1\n')
    unrelated = TEXTFILE_DIR / "other.prom"
    unrelated.write_text("other 1\n")

    try:
        run = _dpkg("--purge", "vtdlud")
        assert run.returncode == 0, run.stdout + run.stderr
        assert not _installed()
        left = _vtdlud_paths() - installed
        assert not left, f"left behind by purge: {sorted(left)}"
        assert not (TEXTFILE_DIR / "vtdlud.prom").exists()
        assert unrelated.read_text() == "other 1\n"  # node_exporter's directory is not ours
        assert not ({e.message_id for e in CATALOG.values()} & _catalog_ids())
    finally:
        unrelated.unlink(missing_ok=True)
