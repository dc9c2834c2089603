"""`vtdlud collect`: bundles read back identically with --root, and unsafe bundles are refused."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, status_json, validate
from tests.conftest import CAPTURE_NAMES


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc.pop("generated_at")
    doc["vtdlud"].pop("argv")
    doc["host"].pop("root")
    return doc


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_bundle_reads_identically(
    name: str, capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = capture_root(name)
    bundle = tmp_path / "b.tar.gz"
    rc, out, err = run_cli("collect", "--root", str(root), "-o", str(bundle))
    assert rc == 0, err
    assert out.startswith(f"wrote {bundle}: ")
    direct = status_json("--root", str(root))
    via_bundle = status_json("--root", str(bundle))
    assert _comparable(via_bundle) == _comparable(direct)
    # A bundle of a bundle is the same bundle (same members, same bytes).
    again = tmp_path / "again.tar.gz"
    assert run_cli("collect", "--root", str(bundle), "-o", str(again))[0] == 0
    with tarfile.open(bundle) as a, tarfile.open(again) as b:
        ma = {m.name: (m.type, m.linkname, m.size) for m in a.getmembers()}
        mb = {m.name: (m.type, m.linkname, m.size) for m in b.getmembers()}
    ma.pop("vtdlud-manifest.json")
    mb.pop("vtdlud-manifest.json")
    assert ma == mb


def test_bundle_layout_and_manifest(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    assert run_cli("collect", "--root", str(capture_root("a_legacy")), "-o", str(bundle))[0] == 0
    with tarfile.open(bundle) as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = json.loads(tar.extractfile("vtdlud-manifest.json").read())  # type: ignore[union-attr]
    link = members["sys/class/iommu/dmar0"]
    assert link.issym() and link.linkname == "../../devices/virtual/iommu/dmar0"
    assert members["sys/devices/virtual/iommu/dmar0/intel-iommu/cap"].isfile()
    assert members["sys/kernel/debug/iommu/intel/dmar_translation_struct"].isfile()
    assert members["sys/bus/pci/devices/0000:00:05.0"].issym()
    assert all(not n.startswith(("/", "./")) and ".." not in n.split("/") for n in members)
    assert all(not m.linkname.startswith("/") for m in members.values() if m.issym())
    assert "proc/kcore" not in members
    assert manifest["manifest_format"] == 1 and manifest["root"] == str(capture_root("a_legacy"))
    # Optional files a capture lacks (osrelease, boot_id, vfio-dev/) are not failures.
    assert manifest["unreadable"] == []


def test_collect_json_is_the_envelope(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    rc, out, _ = run_cli(
        "collect", "--json", "--root", str(capture_root("d_legacy_passthrough")), "-o", str(bundle)
    )
    assert rc == 0
    doc = validate(json.loads(out))
    assert doc["bundle"]["path"] == str(bundle) and doc["bundle"]["files"] > 50


def test_collect_output_errors(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    rc, _, err = run_cli("collect", "--root", str(capture_root("a_legacy")), "-o", str(tmp_path))
    assert rc == 2
    assert (
        err
        == f"vtdlud: error: -o {tmp_path}: is a directory, expected a file name for the bundle\n"
    )
    ro = tmp_path / "ro"
    ro.mkdir()
    target = ro / "sub" / "x.tar.gz"
    (ro / "sub").write_text("a file where a directory should be")
    rc, _, err = run_cli("collect", "--root", str(capture_root("a_legacy")), "-o", str(target))
    assert rc == 2 and err.startswith(f"vtdlud: error: -o {target}: cannot write the bundle")


def _evil_bundle(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("sys/class/iommu")
        ok.type = tarfile.DIRTYPE
        tar.addfile(ok)
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.size = kind, linkname, size
    return ti


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_member("/etc/vtdlud-evil", tarfile.REGTYPE, size=4), "has an absolute name"),
        (_member("sys/../../vtdlud-evil", tarfile.REGTYPE, size=4), "has a '..' component"),
        (_member("sys/null", tarfile.CHRTYPE), "is a device file"),
        (_member("sys/blk", tarfile.BLKTYPE), "is a device file"),
        (_member("sys/fifo", tarfile.FIFOTYPE), "is a FIFO"),
        (_member("sys/hard", tarfile.LNKTYPE, "sys/class/iommu"), "is a hard link"),
        (
            _member("sys/abs", tarfile.SYMTYPE, "/etc/passwd"),
            "is a symbolic link to the absolute path '/etc/passwd'",
        ),
        (
            _member("sys/class/up", tarfile.SYMTYPE, "../../../vtdlud-evil"),
            "is a symbolic link ('../../../vtdlud-evil') that leaves the bundle",
        ),
    ],
)
def test_unsafe_bundles_are_refused(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bundle = _evil_bundle(work / "evil.tar.gz", member, b"evil")
    rc, out, err = run_cli("status", "--root", str(bundle))
    assert rc == 2 and out == ""
    assert err.splitlines()[0] == (
        f"vtdlud: error: bundle {bundle}: member {member.name!r} {why}; refusing to extract it"
    )
    assert len(err.splitlines()) == 2 and err.splitlines()[1].startswith("vtdlud: hint: ")
    # Nothing was written next to the bundle or above it.
    assert sorted(p.name for p in work.iterdir()) == ["evil.tar.gz"]
    assert not (tmp_path / "vtdlud-evil").exists()
