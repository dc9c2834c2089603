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


def _sym(name: str, target: str) -> tarfile.TarInfo:
    return _member(name, tarfile.SYMTYPE, target)


def _dir(name: str) -> tarfile.TarInfo:
    return _member(name, tarfile.DIRTYPE)


# Item 2: the link check was lexical and the write followed every link but the last component.
# On main the three chains wrote their file outside the temporary directory (the chain's ``l3``
# is ``/`` on disk: l1 = the directory, l2 its parent /tmp, l3 = /); parent-is-link and
# dir-over-link wrote through a link (inside, here; anywhere with a chain), and the last two
# ended in a generic "not a readable bundle".  All fail on main.
ESCAPES = {
    "chain": (
        [_sym("l1", "."), _sym("l2", "l1/.."), _sym("l3", "l2/..")],
        "l3/{abs}",
        ("l2", "is a symbolic link ('l1/..') through the symbolic link 'l1'"),
    ),
    "chain-reversed": (
        [_sym("l2", "l1/.."), _sym("l1", "."), _sym("l3", "l2/..")],
        "l3/{abs}",
        ("l1", "is a symbolic link where the target of 'l2' passes through"),
    ),
    "chain-in-subdir": (
        [_dir("sys"), _sym("sys/up", ".."), _sym("sys/l", "up/../.."), _sym("sys/l2", "l/..")],
        "sys/l2/{abs}",
        ("sys/l", "is a symbolic link ('up/../..') through the symbolic link 'sys/up'"),
    ),
    "parent-is-link": (
        [_sym("l1", "."), _sym("sys", "l1")],
        "sys/{rel}",
        ("sys/{rel}", "lies beneath the symbolic link 'sys'"),
    ),
    "file-over-link": (
        [_dir("sys"), _sym("sys/x", "y")],
        "sys/x",
        ("sys/x", "has the name of an earlier member"),
    ),
    "dir-over-link": (
        [_sym("sys", "."), _dir("sys")],
        "sys/{rel}",
        ("sys", "is a directory where an earlier member is not"),
    ),
    "beneath-a-file": (
        [_dir("sys"), _member("sys/x")],
        "sys/x/{rel}",
        ("sys/x/{rel}", "lies beneath 'sys/x', which is not a directory"),
    ),
}


@pytest.mark.parametrize("shape", sorted(ESCAPES))
def test_symbolic_link_escapes(tmp_path: Path, shape: str) -> None:
    links, name, (member, why) = ESCAPES[shape]
    target = tmp_path / "escaped"
    fill = {"abs": str(target).lstrip("/"), "rel": "escaped"}
    file = _member(name.format(**fill))
    bundle = _bundle(tmp_path / "evil.tar.gz", [*links, file])
    _refused(bundle, member.format(**fill), why)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_collected_bundles_have_no_link_chains(tmp_path: Path) -> None:
    """What `collect` writes still opens: its links name real directories, never other links."""
    bundle = Path(__file__).parents[2] / "examples" / "1-preserved-clean.tar.gz"
    rc, out, err = run_cli("status", "--root", str(bundle))
    assert rc == 0 and "Verdict: PASS" in out, err
