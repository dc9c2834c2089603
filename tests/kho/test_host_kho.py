"""vtdlud.host.kho: ``sys/kernel/debug/kho/{out,in}`` of both debugfs generations, read through a
HostRoot over a directory tree.

No real capture of KHO debugfs exists: the trees are laid out after kernel/kexec_handover.c of
6.16 (``out/finalize``, ``fdt`` and ``sub_fdts/`` only once finalized) and
kernel/liveupdate/kexec_handover_debugfs.c (no ``finalize``), and their blobs come from
tests/kho/blobs.py (layouts named there).
"""

from __future__ import annotations

import errno
from pathlib import Path

from tests.kho.blobs import (
    FakeMemory,
    flb_ser,
    kho_root,
    kho_v1,
    kho_v2,
    luo_fdt,
    luo_ser_features,
    u64le,
)
from vtdlud.host.kho import KHO_DEBUGFS, SubBlob, read_kho
from vtdlud.host.root import Fault, FaultPlan, HostRoot
from vtdlud.model.abi import IommuFlbSerV2
from vtdlud.model.snapshot import Tier
from vtdlud.parse.kho import KhoRoot, ScratchRegion, UnknownKho
from vtdlud.parse.luo import IommuFlb, LuoBlob, LuoGeneration, UnknownLuo

SCRATCH_PHYS = "0x1000000\n0x40000000\n"
SCRATCH_LEN = "0x1000000\n0x10000000\n"


def write(base: Path, rel: str, data: bytes | str) -> None:
    path = base / KHO_DEBUGFS / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def old_out(base: Path, *, finalized: bool, luo: bytes | None = None) -> None:
    write(base, "out/finalize", "1\n" if finalized else "0\n")
    write(base, "out/scratch_phys", SCRATCH_PHYS)
    write(base, "out/scratch_len", SCRATCH_LEN)
    (base / KHO_DEBUGFS / "out/sub_fdts").mkdir(parents=True, exist_ok=True)
    if finalized:
        write(base, "out/fdt", kho_v1({"LUO": 0x5000}))
        if luo is not None:
            write(base, "out/sub_fdts/LUO", luo)


def test_absent_kho_is_none_without_problems(tmp_path: Path) -> None:
    state = read_kho(HostRoot(tmp_path))
    assert state.outgoing is None
    assert state.incoming is None
    assert state.problems == ()
    assert not state.has_finalize


def test_old_generation_before_finalize(tmp_path: Path) -> None:
    old_out(tmp_path, finalized=False)
    state = read_kho(HostRoot(tmp_path))
    assert state.has_finalize
    out = state.outgoing
    assert out is not None
    assert out.finalized is False
    assert out.root is None
    assert out.scratch == (
        ScratchRegion(0x1000000, 0x1000000),
        ScratchRegion(0x40000000, 0x10000000),
    )
    assert out.blobs == ()
    assert state.problems == ()


def test_old_generation_finalized_with_luo_fdt(tmp_path: Path) -> None:
    old_out(tmp_path, finalized=True, luo=luo_fdt(number=2))
    state = read_kho(HostRoot(tmp_path))
    out = state.outgoing
    assert out is not None
    assert out.finalized is True
    assert isinstance(out.root, KhoRoot)
    assert out.root.compatible == "kho-v1"
    assert isinstance(out.luo, LuoBlob)
    assert out.luo.generation is LuoGeneration.FDT
    assert out.luo.liveupdate_num == 2
    assert out.blobs[0].name == "LUO"
    assert out.blobs[0].is_fdt
    assert out.luo_state is None  # no read_phys given
    assert state.problems == ()


def test_old_generation_finalized_but_fdt_missing_is_a_problem(tmp_path: Path) -> None:
    old_out(tmp_path, finalized=True)
    (tmp_path / KHO_DEBUGFS / "out/fdt").unlink()
    state = read_kho(HostRoot(tmp_path))
    assert [(p.path, p.reason, p.tier) for p in state.problems] == [
        (f"/{KHO_DEBUGFS}/out/fdt", "no such file", Tier.KHO_DEBUGFS)
    ]


def test_new_generation_in_and_out_with_raw_luo_struct(tmp_path: Path) -> None:
    mem = FakeMemory()
    flb_pa = mem.alloc(IommuFlbSerV2(1, 1, 2, 3).pack())
    flbs = mem.alloc(u64le(1) + u64le(1) + flb_ser("iommu-liveupdate", flb_pa, 1))
    luo = luo_ser_features(sessions_pa=0, flbs_pa=flbs)
    write(tmp_path, "out/scratch_phys", SCRATCH_PHYS)
    write(tmp_path, "out/scratch_len", SCRATCH_LEN)
    write(tmp_path, "out/fdt", kho_v2({"LUO": (0x5000, len(luo))}))
    write(tmp_path, "out/sub_fdts/LUO", luo)
    write(tmp_path, "in/fdt", kho_v2({"LUO": (0x6000, len(luo)), "memblock": (0x7000, 64)}))
    write(tmp_path, "in/sub_fdts/LUO", luo)
    write(tmp_path, "in/sub_fdts/memblock", b"\x01" * 64)
    state = read_kho(HostRoot(tmp_path), mem)
    assert not state.has_finalize
    assert state.problems == ()
    out, inc = state.outgoing, state.incoming
    assert out is not None
    assert inc is not None
    assert out.finalized is None
    assert inc.scratch is None
    assert isinstance(inc.root, KhoRoot)
    assert set(inc.root.subsystems) == {"LUO", "memblock"}
    assert inc.blobs == (SubBlob("LUO", 152, False), SubBlob("memblock", 64, False))
    assert isinstance(inc.luo, LuoBlob)
    assert inc.luo.generation is LuoGeneration.STRUCT_FEATURES
    assert inc.luo_state is not None
    assert isinstance(inc.luo_state.iommu, IommuFlb)
    assert inc.luo_state.iommu.flb_ser_phys == flb_pa


def test_unknown_compatibles_are_results_not_problems(tmp_path: Path) -> None:
    write(tmp_path, "in/fdt", kho_root("kho-v9", []))
    write(tmp_path, "in/sub_fdts/LUO", luo_fdt(compatible="luo-v2"))
    state = read_kho(HostRoot(tmp_path))
    assert state.problems == ()
    assert state.incoming is not None
    assert isinstance(state.incoming.root, UnknownKho)
    assert isinstance(state.incoming.luo, UnknownLuo)


def test_bad_files_become_problems_naming_the_path(tmp_path: Path) -> None:
    old_out(tmp_path, finalized=True, luo=b"garbage")
    write(tmp_path, "out/finalize", "yes\n")
    write(tmp_path, "out/scratch_len", "0x1\n")
    write(tmp_path, "in/fdt", b"\xd0\x0d\xfe\xed" + b"\x00" * 100)
    state = read_kho(HostRoot(tmp_path))
    got = {p.path.removeprefix(f"/{KHO_DEBUGFS}/"): p.reason for p in state.problems}
    assert set(got) == {"out/finalize", "out/scratch_phys", "out/sub_fdts/LUO", "in/fdt"}
    assert "'yes\\n'" in got["out/finalize"]
    assert "2 regions but scratch_len has 1" in got["out/scratch_phys"]
    assert "too short" in got["out/sub_fdts/LUO"]
    assert "not a valid FDT" in got["in/fdt"]
    assert state.outgoing is not None
    assert state.outgoing.finalized is None  # unparseable
    assert isinstance(state.outgoing.root, KhoRoot)  # present: read whatever finalize says
    assert state.outgoing.luo is None


def test_permission_and_io_errors(tmp_path: Path) -> None:
    old_out(tmp_path, finalized=True, luo=luo_fdt())
    write(tmp_path, "in/fdt", kho_v1({}))
    faults = FaultPlan(
        [
            Fault(f"{KHO_DEBUGFS}/out/fdt", errno.EACCES),
            Fault(f"{KHO_DEBUGFS}/out/sub_fdts/LUO", errno.EIO),
            Fault(f"{KHO_DEBUGFS}/in/sub_fdts", errno.EACCES, on="list"),
        ]
    )
    state = read_kho(HostRoot(tmp_path, faults=faults))
    got = {p.path.removeprefix(f"/{KHO_DEBUGFS}/"): p.reason for p in state.problems}
    assert got == {
        "out/fdt": "permission denied (EACCES)",
        "out/sub_fdts/LUO": "I/O error (EIO)",
        "in/sub_fdts": "permission denied (EACCES)",
    }
    assert state.outgoing is not None
    assert state.outgoing.luo is None
    assert state.outgoing.blobs == ()
    assert state.incoming is not None
    assert isinstance(state.incoming.root, KhoRoot)


def test_kcore_error_during_the_walk(tmp_path: Path) -> None:
    write(tmp_path, "in/fdt", kho_v1({}))
    write(tmp_path, "in/sub_fdts/LUO", luo_fdt())

    def broken(addr: int, size: int) -> bytes:
        raise OSError(errno.EIO, "I/O error")

    state = read_kho(HostRoot(tmp_path), broken)
    assert [(p.path, p.tier) for p in state.problems] == [("/proc/kcore", Tier.KCORE)]
    assert state.incoming is not None
    assert isinstance(state.incoming.luo, LuoBlob)
    assert state.incoming.luo_state is None


def test_collect_sees_what_was_read(tmp_path: Path) -> None:
    old_out(tmp_path, finalized=True, luo=luo_fdt())
    root = HostRoot(tmp_path)
    read_kho(root)
    assert f"{KHO_DEBUGFS}/out/sub_fdts/LUO" in root.contents
    assert f"{KHO_DEBUGFS}/out/fdt" in root.contents
