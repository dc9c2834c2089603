"""PhysMem: opening proc/kcore under a HostRoot, bounded reads, what it records.

Synthetic cores written by corewriter stand in for /proc/kcore (which a test cannot fake, and
whose EPERM/EACCES are injected through FaultPlan because chmod does not stop root).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vtdlud.errors import ParseError, PhysReadError
from vtdlud.host.corewriter import ExtraSegment, build_core, write_core
from vtdlud.host.kcore import PROC_KCORE, KcoreLimits, KcoreOpenError, PhysMem
from vtdlud.host.root import Fault, FaultPlan, HostRoot
from vtdlud.model.tiers import TierStatus

PAGE = 4096


def _pages(*addrs: int) -> dict[int, bytes]:
    return {a: (a // PAGE % 251).to_bytes(1, "little") * PAGE for a in addrs}


def _root(tmp_path: Path, pages: dict[int, bytes]) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    write_core(root / PROC_KCORE, pages)
    return root


def test_reads_records_and_never_packs(tmp_path: Path) -> None:
    root = HostRoot(_root(tmp_path, _pages(0x1000, 0x2000, 0x9000)))
    with PhysMem.open(root) as mem:
        assert mem.read(0x1FF8, 16) == bytes([1]) * 8 + bytes([2]) * 8
        assert mem.read(0x9010, 4) == bytes([9]) * 4
        assert mem.read(0x1000, 4) == bytes([1]) * 4  # cached: no new pread
        assert mem.pages_read == {0x1000, 0x2000, 0x9000}
        assert mem.bytes_read == 3 * PAGE
        assert set(mem.captured_pages()) == mem.pages_read
        assert mem.captured_pages()[0x2000] == bytes([2]) * PAGE
    assert root.contents == {} and root.files_read == set()
    with pytest.raises(PhysReadError, match="closed"):
        mem.read(0x1000, 1)


def test_outside_ram_and_limits(tmp_path: Path) -> None:
    root = HostRoot(_root(tmp_path, _pages(0x1000, 0x2000, 0x3000)))
    limits = KcoreLimits(max_read_bytes=2 * PAGE, max_total_bytes=2 * PAGE)
    with PhysMem.open(root, limits=limits) as mem:
        for addr, size in [(0x4000, 8), (0x3FFC, 8), (0, 1), (2**64 - 4, 8), (0x1000, 0)]:
            with pytest.raises(PhysReadError) as exc:
                mem.read(addr, size)
            assert exc.value.outside_ram
        with pytest.raises(PhysReadError, match="per read"):
            mem.read(0x1000, 3 * PAGE)
        assert mem.read(0x1000, 2 * PAGE)
        with pytest.raises(PhysReadError, match="budget") as exc:
            mem.read(0x3000, 8)
        assert not exc.value.outside_ram
        assert mem.bytes_read == 2 * PAGE


def test_page_partly_outside_ram_is_refused(tmp_path: Path) -> None:
    """Reads go by whole pages: a segment ending mid-page leaves that page unreadable."""
    core = tmp_path / "core"
    core.write_bytes(
        build_core({}, extra=[ExtraSegment(0xFFFF_8880_0000_1000, b"x" * 100, 0x1000)])
    )
    with PhysMem.open_file(core) as mem, pytest.raises(PhysReadError) as exc:
        mem.read(0x1000, 8)
    assert exc.value.outside_ram


def test_truncated_core_is_a_read_error(tmp_path: Path) -> None:
    core = tmp_path / "core"
    data = build_core(_pages(0x1000, 0x2000))
    core.write_bytes(data[: len(data) - PAGE // 2])
    with PhysMem.open_file(core) as mem:
        assert mem.read(0x1000, 8) == bytes([1]) * 8
        with pytest.raises(PhysReadError, match="truncated core"):
            mem.read(0x2000, 8)


def test_corrupt_header_is_a_parse_error(tmp_path: Path) -> None:
    root = _root(tmp_path, _pages(0x1000))
    kcore = root / PROC_KCORE
    os.chmod(kcore, 0o600)
    kcore.write_bytes(b"\x7fELF\x01" + bytes(100))
    with pytest.raises(ParseError, match="ELFCLASS64"):
        PhysMem.open(HostRoot(root))
    kcore.write_bytes(b"")
    with pytest.raises(ParseError, match="truncated"):
        PhysMem.open(HostRoot(root))


@pytest.mark.parametrize(
    ("err", "lockdown", "status", "reason"),
    [
        (errno.EPERM, None, TierStatus.DENIED, "needs CAP_SYS_RAWIO"),
        (errno.EPERM, "none", TierStatus.DENIED, "needs CAP_SYS_RAWIO"),
        (errno.EPERM, "confidentiality", TierStatus.DENIED, "lockdown (confidentiality)"),
        (errno.EACCES, None, TierStatus.DENIED, "needs root"),
        (errno.EIO, None, TierStatus.DENIED, "I/O error (EIO) on /proc/kcore"),
        (errno.ENOENT, None, TierStatus.UNAVAILABLE, "bundles carry no physical memory"),
    ],
)
def test_open_faults(
    tmp_path: Path, err: int, lockdown: str | None, status: TierStatus, reason: str
) -> None:
    root = HostRoot(_root(tmp_path, _pages(0x1000)), faults=FaultPlan([Fault("proc/kcore", err)]))
    with pytest.raises(KcoreOpenError) as exc:
        PhysMem.open(root, lockdown=lockdown)
    assert exc.value.status is status
    assert reason in exc.value.reason
    assert exc.value.errno == err


def test_missing_and_not_regular(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    with pytest.raises(KcoreOpenError) as exc:
        PhysMem.open(HostRoot(root))
    assert exc.value.status is TierStatus.UNAVAILABLE
    (root / PROC_KCORE).mkdir()
    with pytest.raises(KcoreOpenError, match="not a regular file"):
        PhysMem.open(HostRoot(root))


def test_pread_fault_after_open(tmp_path: Path) -> None:
    root = HostRoot(
        _root(tmp_path, _pages(0x1000)),
        faults=FaultPlan([Fault("proc/kcore", errno.EIO, on="pread")]),
    )
    with PhysMem.open(root) as mem, pytest.raises(PhysReadError, match="EIO") as exc:
        mem.read(0x1000, 8)
    assert not exc.value.outside_ram
    assert mem.pages_read == frozenset()


def test_symlinked_kcore_stays_inside_root(tmp_path: Path) -> None:
    root = _root(tmp_path, _pages(0x1000))
    (root / "mem").mkdir()
    os.replace(root / PROC_KCORE, root / "mem/core")
    os.symlink("/mem/core", root / PROC_KCORE)
    hr = HostRoot(root)
    with PhysMem.open(hr) as mem:
        assert mem.read(0x1000, 1) == b"\x01"
    assert hr.links == {"proc/kcore": "/mem/core"} and hr.contents == {}
    os.unlink(root / PROC_KCORE)
    os.symlink("../../outside", root / PROC_KCORE)
    with pytest.raises(KcoreOpenError, match="leaves the root"):
        PhysMem.open(HostRoot(root))


def test_sparse_ram_ranges(tmp_path: Path) -> None:
    """``ram=``: unused RAM reads as zeros, beyond the ranges is outside RAM; the file is
    sparse."""
    core = tmp_path / "core"
    ram = [(0x1000, 0x9F000), (0x10_0000, 0x3FF0_0000)]
    size = write_core(core, _pages(0x2000, 0x20_0000), ram=ram)
    assert size > 0x3FF0_0000 and core.stat().st_blocks * 512 < 1 << 20
    assert build_core(_pages(0x2000), ram=[(0x1000, 0x3000)])[-PAGE:] == bytes(PAGE)
    with PhysMem.open_file(core) as mem:
        assert [(s.paddr, s.memsz) for s in mem.layout.segments] == ram
        assert mem.read(0x2000, 2) == b"\x02\x02"
        assert mem.read(0x3000_0000, 8) == bytes(8)
        assert mem.read(0x20_0000, 1) == bytes([0x200 % 251])
        with pytest.raises(PhysReadError) as exc:
            mem.read(0xA0000, 8)
        assert exc.value.outside_ram
    with pytest.raises(ValueError, match="outside the RAM ranges"):
        build_core(_pages(0x9_0000), ram=[(0x1000, 0x1000)])
    with pytest.raises(ValueError, match="overlaps"):
        build_core({}, ram=[(0x1000, 0x2000), (0x2000, 0x1000)])
