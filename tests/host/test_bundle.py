"""Opening a bundle as root: every way a member could be written outside the private temporary
directory is refused before anything lands there (issue #11 items 1 and 2).

These run as root, as ``vtdlud status --root BUNDLE`` does on a bug report's bundle: root passes
every permission check, so only the extraction's own checks stand between a member and the
filesystem.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli
from tests.needs import need_root


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, linkname
    return ti


def _bundle(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            data = b"evil\n" if m.isfile() else b""
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return path


def _refused(bundle: Path, member: str, why: str) -> None:
    rc, out, err = run_cli("status", "--root", str(bundle))
    assert (rc, out) == (2, ""), err
    lines = err.splitlines()
    assert lines[0] == (
        f"vtdlud: error: bundle {bundle}: member {member!r} {why}; refusing to extract it"
    )
    assert len(lines) == 2 and lines[1].startswith("vtdlud: hint: ")


@pytest.fixture(autouse=True)
def _as_root() -> None:
    need_root("the escapes matter as root, where no permission check stops them")


@pytest.mark.parametrize("prefix", [".//", "././/", ".///", "./././/"])
def test_dot_slash_then_absolute_name(tmp_path: Path, prefix: str) -> None:
    """Item 1: a leading "./" was stripped before the ".." check but the absolute-name test saw
    the unstripped name, so ``.//tmp/x`` was created at ``/tmp/x`` (fails on main before the fix:
    exit 0 and the file written)."""
    target = tmp_path / "escaped"
    name = prefix + str(target).lstrip("/")
    bundle = _bundle(tmp_path / "evil.tar.gz", [_member(name)])
    _refused(bundle, name, "has an absolute name")
    assert not target.exists()
