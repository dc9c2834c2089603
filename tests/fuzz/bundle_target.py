"""The fuzz target of bundle extraction (issue #11): raw bytes as a bundle, extracted as root.

The input is written as the bundle file (a plain tar, or gzip/bzip2/xz when its magic says so)
and extracted into a fresh directory.  Refusal is a UsageError; anything else raised is a bug,
and so is any of these after extraction, each an escape:

- an entry of the work directory other than the bundle and the destination;
- anything in the canary directory (:data:`CANARY`), which the seeds' escapes aim at: the
  members name it through ``.//``, ``..`` and symbolic-link chains;
- a symbolic link in the destination that resolves (on disk, following every link) outside it.

Seeds: every escape shape of tests/host/test_bundle.py, a capture-like member set, and the
bombs' headers (small: the fuzzer's inputs are 8 KiB at most).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from vtdlud.errors import UsageError
from vtdlud.host.unbundle import extract_bundle

CANARY = Path(tempfile.gettempdir()) / "vtdlud-fuzz-canary"
_ABS = str(CANARY).lstrip("/")


class Escape(AssertionError):
    """A bundle wrote (or linked) outside its destination."""


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top + os.sep)


def bundle(data: bytes) -> None:
    CANARY.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vtdlud-fuzz-"))
    try:
        src, dest = work / "b.tar", work / "dest"
        src.write_bytes(data)
        dest.mkdir()
        with contextlib.suppress(UsageError):
            extract_bundle(src, dest)
        if sorted(os.listdir(work)) != ["b.tar", "dest"]:
            raise Escape(f"the work directory holds {sorted(os.listdir(work))}")
        if os.listdir(CANARY):
            raise Escape(f"written into the canary: {os.listdir(CANARY)}")
        top = os.path.realpath(dest)
        for parent, dirs, files in os.walk(dest):
            for name in dirs + files:
                p = os.path.join(parent, name)
                if os.path.islink(p) and not _inside(os.path.realpath(p), top):
                    raise Escape(f"{p} -> {os.readlink(p)} resolves outside: {os.path.realpath(p)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for left in os.listdir(CANARY) if CANARY.is_dir() else ():
            shutil.rmtree(CANARY / left, ignore_errors=True)
            (CANARY / left).unlink(missing_ok=True)


def _tar(members: list[tuple[str, bytes, str]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """(name, type, link target) -> a plain tar; regular files hold b"x"."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, link in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, link
            data = b"x" if kind == tarfile.REGTYPE else b""
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data else None)
    return out.getvalue()


F, D, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE
SEEDS: list[bytes] = [
    _tar([(f".//{_ABS}/x", F, "")]),
    _tar([(f"././/{_ABS}/x", F, "")]),
    # dest is <tmp>/vtdlud-fuzz-*/dest: l1 = dest, l2 = the work directory, l3 = <tmp>, l4 = /
    _tar(
        [
            ("l1", L, "."),
            ("l2", L, "l1/.."),
            ("l3", L, "l2/.."),
            ("l4", L, "l3/.."),
            (f"l4/{_ABS}/x", F, ""),
        ]
    ),
    _tar(
        [
            ("l2", L, "l1/.."),
            ("l1", L, "."),
            ("l3", L, "l2/.."),
            ("l4", L, "l3/.."),
            (f"l4/{_ABS}/x", F, ""),
        ]
    ),
    _tar(
        [
            ("sys", D, ""),
            ("sys/up", L, ".."),
            ("sys/l", L, "up/../.."),
            ("sys/l2", L, "l/.."),
            (f"sys/l2/{_ABS}/x", F, ""),
        ]
    ),
    _tar([("l1", L, "."), ("sys", L, "l1"), ("sys/x", F, "")]),
    _tar([("sys", D, ""), ("sys/x", L, "y"), ("sys/x", F, "")]),
    _tar([("sys", L, "."), ("sys", D, ""), ("sys/x", F, "")]),
    _tar([("up", L, ".."), (f"up/{os.path.basename(tempfile.gettempdir())}/x", F, "")]),
    _tar([("abs", L, str(CANARY)), ("abs/x", F, "")]),
    _tar([("sys/../../x", F, "")]),
    _tar([("hard", tarfile.LNKTYPE, "sys"), ("fifo", tarfile.FIFOTYPE, "")]),
    _tar(
        [
            ("sys/devices/virtual/iommu/dmar0/intel-iommu/cap", F, ""),
            ("sys/class/iommu/dmar0", L, "../../devices/virtual/iommu/dmar0"),
            ("x" * 120 + "/long", F, ""),
        ],
        tarfile.PAX_FORMAT,
    ),
]
