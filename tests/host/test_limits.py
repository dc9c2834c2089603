"""Item 3 of issue #11: every input is capped by its kind, and a bundle's limits hold while it
is read, so neither a huge file under a directory root nor a bomb of a bundle costs more than
the cap.  On main each of these read (or unpacked) the whole input."""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import codes, finding_messages, run_cli, status_json
from vtdlud.host.limits import (
    ACPI_TABLE_CAP,
    ATTRIBUTE_CAP,
    MAX_BUNDLE_BYTES,
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    InputTooLarge,
    debugfs_cap,
    input_cap,
    member_cap,
)
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot

GiB = 1 << 30


def test_caps_by_kind() -> None:
    assert input_cap("sys/devices/virtual/iommu/dmar0/intel-iommu/cap", 0) == ATTRIBUTE_CAP
    assert input_cap("proc/cmdline", 0) == ATTRIBUTE_CAP
    assert input_cap("sys/firmware/acpi/tables/DMAR", 0) == ACPI_TABLE_CAP
    assert input_cap("sys/kernel/debug/iommu/intel/dmar_translation_struct", 7) == 7
    assert input_cap("sys/kernel/debug/kho/out/fdt", 7) == 7
    assert input_cap("proc/kcore", 7) is None
    # Scaled to the host: 4 MiB, plus 64 KiB a unit and 16 KiB a PCI device.
    assert debugfs_cap(0, 0) == 4 << 20
    assert debugfs_cap(2, 2048) == (4 << 20) + 2 * (64 << 10) + 2048 * (16 << 10)
    assert member_cap("sys/class/iommu/dmar0/intel-iommu/cap") == ATTRIBUTE_CAP + 1


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: no disk used, but read(2) gives zeros to the end


@pytest.mark.parametrize(
    ("rel", "cap"),
    [
        ("sys/devices/virtual/iommu/dmar0/intel-iommu/cap", "64 KiB"),
        ("sys/firmware/acpi/tables/DMAR", "1 MiB"),
        ("sys/kernel/debug/iommu/intel/dmar_translation_struct", "4 MiB"),
    ],
)
def test_a_10_gib_file_is_read_to_its_cap(tmp_path: Path, rel: str, cap: str) -> None:
    """On main a 10 GiB file under a directory root was read whole (10 GB in 32 s)."""
    _sparse(tmp_path / rel, 10 * GiB)
    hr = HostRoot(tmp_path)
    with pytest.raises(InputTooLarge) as exc:
        hr.read_bytes(rel)
    assert exc.value.errno == errno.EFBIG
    assert hr.unreadable == {rel: f"larger than {cap}, the most vtdlud reads of it"}


def test_debugfs_cap_scales_with_the_host(capture_root: Callable[[str], Path]) -> None:
    hr = HostRoot(capture_root("b_scalable"))
    snap = take_snapshot(hr)
    assert hr.debugfs_cap == debugfs_cap(len(snap.units), len(snap.pci_devices))
    assert hr.debugfs_cap > debugfs_cap(0, 0)


def test_huge_translation_struct_is_vtd051(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = tmp_path / "host"
    shutil.copytree(capture_root("b_scalable"), root, symlinks=True)
    rel = "sys/kernel/debug/iommu/intel/dmar_translation_struct"
    (root / rel).unlink()
    _sparse(root / rel, 10 * GiB)
    doc = status_json("--root", str(root))
    assert "VTD051" in codes(doc)
    [msg] = [m for m in finding_messages(doc, "VTD051") if "dmar_translation_struct" in m]
    assert msg.startswith(f"/{rel}: larger than ") and msg.endswith("the most vtdlud reads of it")


# -- bundles -----------------------------------------------------------------------------------
class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.n = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def _bomb(
    path: Path, members: list[tuple[tarfile.TarInfo, int]], fmt: int = tarfile.PAX_FORMAT
) -> Path:
    with tarfile.open(path, "w:gz", format=fmt, compresslevel=9) as tar:
        for ti, size in members:
            ti.size = size
            tar.addfile(ti, io.BufferedReader(_Zeros(size)) if ti.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _status_in_child(bundle: Path, *args: str) -> tuple[int, str, str, int]:
    """``vtdlud status --root BUNDLE`` in a fresh process: exit, stdout, stderr, peak RSS (KiB)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked test process.
    code = (
        "import re, sys; from vtdlud.cli import main; rc = main(sys.argv[1:]); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]; "
        "sys.stderr.write(f'PEAK {hwm}\\n'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "status", "--root", str(bundle), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    *err, peak = proc.stderr.splitlines()
    return proc.returncode, proc.stdout, "\n".join(err), int(peak.split()[1])


def test_inflating_member_is_cut_at_its_cap(tmp_path: Path) -> None:
    """On main a 925 KB bundle inflating a 900 MiB debugfs file took 1.86 GB and 41 s (900 MiB
    is now past the bundle limit; 250 MiB is within it): the member is unpacked only to its
    cap, and reading it is VTD051."""
    rel = "sys/kernel/debug/iommu/intel/dmar_translation_struct"
    bundle = _bomb(tmp_path / "bomb.tar.gz", [(_file(rel), 250 << 20)])
    assert bundle.stat().st_size < 1 << 20
    rc, out, err, peak = _status_in_child(bundle, "--json")
    assert rc == 0, err
    assert peak < 64 << 10, f"peak RSS {peak} KiB"  # 23 MiB measured
    assert "larger than 4 MiB, the most vtdlud reads of it" in out


def test_too_many_members_is_refused_while_streaming(tmp_path: Path) -> None:
    """On main 300k members took 152 MB and 11.5 s before the refusal; now memory stays flat
    and nothing is written."""
    members = [(_file(f"m{i}"), 0) for i in range(MAX_MEMBERS + 1)]
    bundle = _bomb(tmp_path / "many.tar.gz", members, tarfile.USTAR_FORMAT)
    rc, _, err, peak = _status_in_child(bundle)
    assert rc == 2
    assert err.splitlines()[0] == (
        f"vtdlud: error: bundle {bundle}: has more than {MAX_MEMBERS} members; refusing to "
        "extract it"
    )
    assert peak < 64 << 10, f"peak RSS {peak} KiB"  # 18 MiB measured


def test_declared_sizes_over_the_limit_are_refused_before_unpacking(tmp_path: Path) -> None:
    members = [(_file(f"proc/big{i}"), MAX_BUNDLE_BYTES // 2 + 1) for i in range(2)]
    bundle = _bomb(tmp_path / "big.tar.gz", members)
    rc, _, err = run_cli("status", "--root", str(bundle))
    assert rc == 2
    assert err.splitlines()[0] == (
        f"vtdlud: error: bundle {bundle}: unpacks to more than {MAX_BUNDLE_BYTES} bytes; "
        "refusing to "
        "extract it"
    )


@pytest.mark.parametrize("kind", ["pax", "gnu-longname"])
def test_a_huge_tar_header_is_refused_unread(tmp_path: Path, kind: str) -> None:
    """tarfile reads a pax header or GNU long name whole into memory: one past the limit is
    refused before it is read (on main 900 MiB of one was read)."""
    raw = tmp_path / "h.tar"
    with open(raw, "wb") as f:
        ti = tarfile.TarInfo("x" * 100 if kind == "gnu-longname" else "././@PaxHeader")
        ti.type = tarfile.GNUTYPE_LONGNAME if kind == "gnu-longname" else tarfile.XHDTYPE
        ti.size = 900 << 20  # declared; the data stops well before
        f.write(ti.tobuf(tarfile.GNU_FORMAT if kind == "gnu-longname" else tarfile.USTAR_FORMAT))
    bundle = tmp_path / "h.tar.gz"
    with open(raw, "rb") as src, gzip.open(bundle, "wb") as dst:
        dst.write(src.read())
        dst.write(bytes(MAX_HEADER_BYTES + 4096))
    rc, _, err = run_cli("status", "--root", str(bundle))
    assert rc == 2
    assert err.splitlines()[0] == (
        f"vtdlud: error: bundle {bundle}: a member's tar headers hold more than "
        f"{MAX_HEADER_BYTES} bytes; refusing to extract it"
    )


def test_sparse_members_are_refused(tmp_path: Path) -> None:
    ti = _file("sys/sparse")
    ti.type = tarfile.GNUTYPE_SPARSE
    raw = io.BytesIO(ti.tobuf(tarfile.GNU_FORMAT) + bytes(1024))
    bundle = tmp_path / "s.tar"
    bundle.write_bytes(raw.getvalue())
    rc, _, err = run_cli("status", "--root", str(bundle))
    assert rc == 2
    assert "member 'sys/sparse' is a sparse file; refusing to extract it" in err


def test_corrupt_compressed_data_is_a_clean_error(tmp_path: Path) -> None:
    good = _bomb(tmp_path / "g.tar.gz", [(_file("sys/x"), 1 << 20)])
    data = bytearray(good.read_bytes())
    data[40:60] = os.urandom(20)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    rc, _, err = run_cli("status", "--root", str(bad))
    assert rc == 2
    assert err.startswith(f"vtdlud: error: bundle {bad}: not a readable .tar.gz bundle (")
