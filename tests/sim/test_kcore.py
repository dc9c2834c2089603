"""vtdlud's kcore reader and table walk over the cores the model writes.

The capture cases compare with real kernel output: the model's memory, laid out at the
capture's addresses, walked by vtdlud through ``proc/kcore``, must print the capture's rows.
The others are backed by the model only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CAPTURE_NAMES
from tests.kernelmodel.capture import host_from_capture
from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from tests.sim import regset, translation
from vtdlud.errors import PhysReadError
from vtdlud.host.kcore import PhysMem
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.crosscheck import compare_with_debugfs, debugfs_rows
from vtdlud.model.live import derive_unit_tables
from vtdlud.model.walk import walk_unit_tables

VFIO = "0000:00:05.0"


def check_walk_agrees(host: SimHost, tree: Path) -> None:
    """For every unit: vtdlud's kcore walk sees the model's tables, prints the model's debugfs
    rows, and finds no disagreement with the debugfs the tree holds."""
    regs = {u.name: u for u in regset(host).units}
    trans = {u.name: u for u in translation(host).units}
    with PhysMem.open(HostRoot(tree)) as mem:
        for unit in host.units.values():
            walk = walk_unit_tables(mem.read, unit.root_table, unit.scalable)
            assert walk.complete, walk.problems
            assert set(walk.context_table_bits) == set(unit.context_tables())
            assert debugfs_rows(walk) == trans[unit.name].rows
            live = derive_unit_tables(regs[unit.name], trans[unit.name])
            assert compare_with_debugfs(walk, live, trans[unit.name].rows) == []


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_the_capture_models_core_walks_to_the_captures_rows(
    capture_root: Callable[[str], Path], name: str, tmp_path: Path
) -> None:
    root = capture_root(name)
    host = host_from_capture(root)
    tree = write_tree(host, tmp_path)
    check_walk_agrees(host, tree)
    real = take_snapshot(HostRoot(root)).translation
    assert real is not None
    with PhysMem.open(HostRoot(tree)) as mem:
        for unit, want in zip(host.units.values(), real.units, strict=True):
            walk = walk_unit_tables(mem.read, unit.root_table, unit.scalable)
            assert debugfs_rows(walk) == want.rows


@pytest.mark.parametrize("scalable", [False, True])
@pytest.mark.parametrize("kexec", [False, True])
def test_vtdlud_walks_the_model_like_the_model_prints(
    scalable: bool, kexec: bool, tmp_path: Path
) -> None:
    host = two_unit_host(scalable=scalable)
    for bdf in (VFIO, "0000:05:01.0", "0000:05:02.0"):
        host.vfio_attach(bdf)
        host.preserve(bdf)
    if kexec:
        host.kexec()
    check_walk_agrees(host, write_tree(host, tmp_path))


def test_the_debugfs_fault_is_a_disagreement_for_vtdlud(tmp_path: Path) -> None:
    host = q35_host()
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    inject(host, Fault.DEBUGFS_DISAGREES)
    tree = write_tree(host, tmp_path)
    snap = take_snapshot(HostRoot(tree))
    assert snap.regset is not None and snap.translation is not None
    live = derive_unit_tables(snap.regset.units[0], snap.translation.units[0])
    unit = host.units["dmar0"]
    with PhysMem.open(HostRoot(tree)) as mem:
        walk = walk_unit_tables(mem.read, unit.root_table, unit.scalable)
    (diff,) = compare_with_debugfs(walk, live, snap.translation.units[0].rows)
    assert diff.bdf == "00:05.0"


def test_a_full_ram_core_reads_unused_ram_as_zeros(tmp_path: Path) -> None:
    host = q35_host()
    tree = write_tree(host, tmp_path, TreeOptions(kcore_full_ram=True))
    ((start, size),) = host.mem.ranges
    unused = next(a for a in range(start, start + size, 4096) if not host.mem.allocated(a))
    with PhysMem.open(HostRoot(tree)) as mem:
        assert mem.read(unused, 64) == bytes(64)
        root = host.units["dmar0"].root_table
        assert mem.read(root, 4096) == host.mem.read(root, 4096)
        with pytest.raises(PhysReadError) as err:
            mem.read(start + size, 8)
        assert err.value.outside_ram
    assert (tree / "proc/kcore").stat().st_blocks * 512 < size  # sparse
