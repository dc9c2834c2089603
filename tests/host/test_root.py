"""HostRoot: confinement to the root, fault injection, and what it records for collect."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vtdlud.host.limits import ATTRIBUTE_CAP, InputTooLarge
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


def _device_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    dev = root / "sys/devices/pci0000:00/0000:00:05.0"
    (dev / "vfio-dev/vfio3").mkdir(parents=True)
    (dev / "vendor").write_text("0x8086\n")
    (dev / "config").write_bytes(bytes(range(64)))
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir(parents=True)
    os.symlink("../../../bus/pci/drivers/vfio-pci", dev / "driver")
    os.symlink("vendor", dev / "vendor_link")  # an attribute that is a link: resolved
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:05.0", root / "sys/bus/pci/devices/x")
    return root


def test_read_entries_equals_the_per_path_methods(tmp_path: Path) -> None:
    root = _device_tree(tmp_path)
    base = "sys/bus/pci/devices/x"
    args = (["vendor", "config", "vendor_link", "absent"], ["driver", "iommu"], ["vfio-dev", "no"])
    batched, single = HostRoot(root), HostRoot(root)
    got = batched.read_entries(base, *args)
    assert got.files["vendor"] == single.read_bytes(f"{base}/vendor") == b"0x8086\n"
    assert got.files["config"] == bytes(range(64))
    assert got.files["vendor_link"] == b"0x8086\n"
    assert isinstance(got.files["absent"], FileNotFoundError)
    assert got.links == {"driver": single.link_target(f"{base}/driver"), "iommu": None}
    assert got.links["driver"] == "../../../bus/pci/drivers/vfio-pci"
    assert got.dirs["vfio-dev"] == single.listdir(f"{base}/vfio-dev") == ["vfio3"]
    assert isinstance(got.dirs["no"], FileNotFoundError)
    single.read_bytes(f"{base}/config")
    single.read_bytes(f"{base}/vendor_link")
    # The same record for `collect`: resolved files, links with targets, listed dirs.
    assert batched.files_read == single.files_read
    assert batched.contents == single.contents
    assert batched.links == single.links
    assert batched.dirs_listed == single.dirs_listed
    assert batched.unreadable == single.unreadable == {}


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 5])
def test_read_entries_reads_whole_files_up_to_the_cap(tmp_path: Path, size: int) -> None:
    """One read(2) ends a file shorter than the buffer; a longer one is read on to the end, or
    to the attribute cap (64 KiB): beyond it the file is an error naming the cap."""
    root = _device_tree(tmp_path)
    data = bytes(i % 251 for i in range(size))
    (root / "sys/devices/pci0000:00/0000:00:05.0/big").write_bytes(data)
    hr = HostRoot(root)
    got = hr.read_entries("sys/bus/pci/devices/x", ["big"])
    if size <= ATTRIBUTE_CAP:
        assert got.files["big"] == data
        return
    err = got.files["big"]
    assert isinstance(err, InputTooLarge) and err.errno == errno.EFBIG
    assert hr.unreadable == {
        "sys/bus/pci/devices/x/big": "larger than 64 KiB, the most vtdlud reads of it"
    }


def test_read_entries_missing_directory(tmp_path: Path) -> None:
    got = HostRoot(_device_tree(tmp_path)).read_entries(
        "sys/bus/pci/devices/y", ["vendor"], ["driver"], ["vfio-dev"]
    )
    assert isinstance(got.files["vendor"], FileNotFoundError)
    assert got.links == {"driver": None}
    assert isinstance(got.dirs["vfio-dev"], FileNotFoundError)


def test_read_entries_takes_injected_faults(tmp_path: Path) -> None:
    faults = FaultPlan([Fault("sys/bus/pci/devices/x/vendor", errno.EIO)])
    hr = HostRoot(_device_tree(tmp_path), faults=faults)
    got = hr.read_entries("sys/bus/pci/devices/x", ["vendor", "config"], ["driver"])
    assert isinstance(got.files["vendor"], OSError) and got.files["vendor"].errno == errno.EIO
    assert got.files["config"] == bytes(range(64))
    assert got.links["driver"] == "../../../bus/pci/drivers/vfio-pci"
    assert hr.unreadable == {"sys/bus/pci/devices/x/vendor": "I/O error (EIO)"}


def test_a_reader_that_records_nothing_reads_the_same(tmp_path: Path) -> None:
    """record=False (the daemon, which never packs a bundle): the same data and errors, and
    nothing of it kept; failures are still named (they are few)."""
    root = _device_tree(tmp_path)
    base = "sys/bus/pci/devices/x"
    args = (["vendor", "config", "vendor_link", "absent"], ["driver", "iommu"], ["vfio-dev", "no"])
    kept, bare = HostRoot(root), HostRoot(root, record=False)
    a, b = kept.read_entries(base, *args), bare.read_entries(base, *args)
    assert a.links == b.links and a.dirs.keys() == b.dirs.keys()
    assert {k: v for k, v in a.files.items() if k != "absent"} == {
        k: v for k, v in b.files.items() if k != "absent"
    }
    assert isinstance(b.files["absent"], FileNotFoundError)
    assert bare.read_bytes(f"{base}/vendor") == kept.read_bytes(f"{base}/vendor")
    assert bare.listdir(f"{base}/vfio-dev") == ["vfio3"]
    assert bare.readlink(f"{base}/driver") == "../../../bus/pci/drivers/vfio-pci"
    assert kept.contents and kept.files_read and kept.links and kept.dirs_listed and kept.listed
    assert not (bare.contents or bare.files_read or bare.links or bare.dirs_listed or bare.listed)


def test_errors_kept_as_values_carry_no_traceback(tmp_path: Path) -> None:
    """An OSError in DirEntries (or returned) has no traceback: its frames would reach the
    frame holding it through f_back, a cycle that keeps the reader and everything the caller
    built alive until a full collection (the daemon held several hosts' reads at once)."""
    hr = HostRoot(_device_tree(tmp_path))
    got = hr.read_entries("sys/bus/pci/devices/x", ["absent"], [], ["no"])
    missing = hr.read_entries("sys/bus/pci/devices/y", ["vendor"], [], ["vfio-dev"])
    faulty = HostRoot(
        _device_tree(tmp_path / "f"), faults=FaultPlan([Fault("*/vendor", errno.EIO)])
    ).read_entries("sys/bus/pci/devices/x", ["vendor"], [], ["no"])
    errors = [*got.files.values(), *got.dirs.values(), *missing.files.values()]
    errors += [*missing.dirs.values(), *faulty.files.values(), *faulty.dirs.values()]
    assert all(isinstance(e, OSError) and e.__traceback__ is None for e in errors)
