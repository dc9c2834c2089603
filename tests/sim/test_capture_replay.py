"""The model against the real captures (these tests compare with real kernel output).

:func:`tests.kernelmodel.capture.host_from_capture` takes only page *addresses* from a capture (root
table, context tables, PASID directories, top page-table pages); which entries exist, their bits,
the DIDs, the PASID entries and the walk that prints them are the model's.  Rendering must give
the capture's debugfs text back byte for byte, and vtdlud must read the tree the model writes as
it reads the capture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CAPTURE_NAMES
from tests.kernelmodel.capture import CapturePlacement, host_from_capture
from tests.kernelmodel.debugfs import regset_text, translation_text
from tests.kernelmodel.tree import write_tree
from tests.sim import codes, regset, status_json, translation
from vtdlud.parse.regset import render_iommu_regset
from vtdlud.parse.translation import render_dmar_translation_struct

DEBUGFS = "sys/kernel/debug/iommu/intel"
UNIT_KEYS = (
    "name",
    "address",
    "version",
    "cap",
    "ecap",
    "mode",
    "translation_enabled",
    "root_table",
    "devices",
    "context_tables",
)  # not context_tables_source: the model's tree has a kcore, the captures have none


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_debugfs_renders_byte_for_byte(capture_root: Callable[[str], Path], name: str) -> None:
    root = capture_root(name)
    host = host_from_capture(root)
    want_regset = (root / DEBUGFS / "iommu_regset").read_text()
    want_translation = (root / DEBUGFS / "dmar_translation_struct").read_text()
    # The model's own rendering, byte for byte; and vtdlud's parser + renderer agree with it.
    assert regset_text(host.units.values()) == want_regset
    assert translation_text(host.units.values()) == want_translation
    assert render_iommu_regset(regset(host)) == want_regset
    assert render_dmar_translation_struct(translation(host)) == want_translation


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_replay_takes_no_entry_contents_from_the_capture(
    capture_root: Callable[[str], Path], name: str
) -> None:
    """The placement knows page addresses only: the DIDs in the rendered rows were allocated by
    the model (probe order, freed-and-reused for the VFIO device), not copied."""
    root = capture_root(name)
    host = host_from_capture(root)
    placement = host.placement
    assert isinstance(placement, CapturePlacement)
    assert set(vars(placement)) == {"roots", "tables", "dirs", "pgds", "vfio"}
    unit = host.units["dmar0"]
    shown = {
        r.pasid_entry.did if r.is_scalable else r.context.did
        for r in translation(host).units[0].rows
    }
    identity = 1 in shown
    assert shown - {1} == unit.dids
    assert unit.domains_used == 2 + len(unit.dids)
    assert identity == (name == "d_legacy_passthrough")


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_sysfs_attributes_match_the_capture(
    capture_root: Callable[[str], Path], name: str, tmp_path: Path
) -> None:
    root = capture_root(name)
    tree = write_tree(host_from_capture(root), tmp_path / "model")
    base = "sys/class/iommu/dmar0/intel-iommu"
    for attr in ("address", "cap", "ecap", "version", "domains_supported", "domains_used"):
        assert (tree / base / attr).read_text() == (root / base / attr).read_text(), attr
    assert (tree / "proc/cmdline").read_text() == (root / "proc/cmdline").read_text()
    for bdf in sorted(p.name for p in (root / "sys/bus/pci/devices").iterdir()):
        dev = f"sys/bus/pci/devices/{bdf}"
        for attr in ("vendor", "device", "class"):
            assert (tree / dev / attr).read_text() == (root / dev / attr).read_text()
        for link in ("driver", "iommu", "iommu_group"):
            assert (tree / dev / link).resolve().name == (root / dev / link).resolve().name


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_vtdlud_reads_the_model_tree_like_the_capture(
    capture_root: Callable[[str], Path], name: str, tmp_path: Path
) -> None:
    root = capture_root(name)
    tree = write_tree(host_from_capture(root), tmp_path / "model")
    real, model = status_json(root), status_json(tree)
    assert [{k: u[k] for k in UNIT_KEYS} for u in model["units"]] == [
        {k: u[k] for k in UNIT_KEYS} for u in real["units"]
    ]
    assert not {"VTD051", "VTD052"} & set(codes(model))
    assert model["host"]["tiers"]["kcore"]["state"] == "available"
    assert model["host"]["tiers"]["kho_debugfs"]["state"] == "available"
