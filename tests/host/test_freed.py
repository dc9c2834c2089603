"""A snapshot and the reader that built it are freed by reference counting alone.

What a reference cycle holds waits for the cyclic collector's next full pass, which a
long-lived process with a large heap rarely reaches: the daemon had several storms' host reads
(17 MB of config space each on a 4,000-function host) alive at once.  These tests run with the
collector off, so a cycle shows as a reader still alive."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()  # what earlier tests left is not this test's
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tier but kcore: devices without vfio-dev and without attributes give the errors
    that are kept as values (DirEntries), the usual source of the cycles."""
    return write_tree(
        q35_host(scalable=True, seed=2),
        tmp_path_factory.mktemp("host"),
        TreeOptions(kcore=False, processes=False),
    )


@pytest.mark.parametrize("record", [True, False])
@pytest.mark.usefixtures("no_collector")
def test_snapshot_and_reader_freed_without_the_collector(tree: Path, record: bool) -> None:
    root = HostRoot(tree, record=record)
    snap = take_snapshot(root, processes=False)
    assert snap.pci_devices
    alive = weakref.ref(root), weakref.ref(snap)
    del root, snap
    assert [r() for r in alive] == [None, None]
