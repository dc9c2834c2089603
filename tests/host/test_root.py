"""HostRoot: confinement to the root, fault injection, and what it records for collect."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vtdlud.host.root import Fault, FaultPlan, HostRoot


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sys/devices/virtual/iommu/dmar0").mkdir(parents=True)
    (root / "sys/devices/virtual/iommu/dmar0/cap").write_text("d2008c22260286\n")
    (root / "sys/class/iommu").mkdir(parents=True)
    os.symlink("../../devices/virtual/iommu/dmar0", root / "sys/class/iommu/dmar0")
    return root


def test_relative_link_followed_and_recorded(tmp_path: Path) -> None:
    hr = HostRoot(_tree(tmp_path))
    assert hr.read_text("sys/class/iommu/dmar0/cap") == "d2008c22260286\n"
    assert hr.links == {"sys/class/iommu/dmar0": "../../devices/virtual/iommu/dmar0"}
    assert hr.files_read == {"sys/devices/virtual/iommu/dmar0/cap"}
    assert hr.contents["sys/devices/virtual/iommu/dmar0/cap"] == b"d2008c22260286\n"


def test_link_leaving_the_root_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (tmp_path / "secret").write_text("outside\n")
    os.symlink("../../../secret", root / "sys/class/escape")
    hr = HostRoot(root)
    with pytest.raises(OSError) as exc:
        hr.read_text("sys/class/escape")
    assert exc.value.errno == errno.EXDEV
    assert "leaves the root" in hr.unreadable["sys/class/escape"]


def test_absolute_link_resolves_inside_the_root(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.symlink("/sys/devices/virtual/iommu/dmar0", root / "sys/class/abs")
    assert HostRoot(root).read_text("sys/class/abs/cap") == "d2008c22260286\n"


def test_link_loop_is_an_error(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(OSError) as exc:
        HostRoot(root).read_text("a")
    assert exc.value.errno == errno.ELOOP


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO, errno.EPERM])
def test_fault_injection(tmp_path: Path, err: int) -> None:
    hr = HostRoot(_tree(tmp_path), faults=FaultPlan([Fault("sys/class/iommu/*/cap", err)]))
    with pytest.raises(OSError) as exc:
        hr.read_text("sys/class/iommu/dmar0/cap")
    assert exc.value.errno == err
    assert hr.files_read == set()


def test_fault_on_resolved_path_and_listing(tmp_path: Path) -> None:
    faults = FaultPlan([Fault("sys/devices/*", errno.EIO, on="list")])
    hr = HostRoot(_tree(tmp_path), faults=faults)
    assert hr.read_text("sys/class/iommu/dmar0/cap")  # reads are not affected
    with pytest.raises(OSError):
        hr.listdir("sys/class/iommu/dmar0")  # resolves into sys/devices/...
    assert hr.listdir("sys/class/iommu") == ["dmar0"]
