"""Every fault of the registry is visible in the files written (backed by the model only).

Each fault is injected into one of two identically built hosts; the trees they write must differ
in the files the fault's spec names.  Where vtdlud's audit already judges a fault, the finding is
checked too (and must be absent from the clean tree).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kernelmodel.faults import FAULTS, Fault, inject
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.records import read_incoming
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from tests.kernelmodel.tree import write_tree
from tests.sim import changed_files, codes, status_json
from vtdlud.audit.catalog import CATALOG

VFIO = "0000:00:05.0"
SCALABLE = {Fault.WRONG_PASID_TABLE}
V2_FLB = {Fault.UNKNOWN_FLB_VERSION}
TWO_UNITS = {Fault.WRONG_HW_RECORD}
BEHIND_BRIDGE = {Fault.SHARED_ALIAS}
# Faults vtdlud's audit judges already (the others wait for the record audit).
AUDITED = {
    Fault.DEBUGFS_DISAGREES: "VTD015",
    Fault.UNKNOWN_FLB_COMPATIBLE: "VTD040",
    Fault.SHARED_ALIAS: "VTD025",
    Fault.PRI_ENABLED: "VTD026",
    Fault.LEGACY_VFIO_GROUP: "VTD026",
    Fault.NOT_ARMED: "VTD029",
    Fault.UNKNOWN_KHO_COMPATIBLE: "VTD040",
    Fault.UNKNOWN_LUO_COMPATIBLE: "VTD040",
    Fault.TRANSLATION_DISABLED: "VTD070",
}


def recipe(fault: Fault) -> tuple[bool, ...]:
    """Faults with the same recipe start from identical hosts (the model is deterministic)."""
    return (
        fault in TWO_UNITS,
        fault in SCALABLE,
        fault in V2_FLB,
        fault in BEHIND_BRIDGE,
        FAULTS[fault].phase == "after",
    )


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Fault], Path]:
    """The tree of the unfaulted host of a fault's recipe, written once per recipe."""
    cache: dict[tuple[bool, ...], Path] = {}

    def get(fault: Fault) -> Path:
        key = recipe(fault)
        if key not in cache:
            cache[key] = write_tree(build(fault), tmp_path_factory.mktemp("clean"))
        return cache[key]

    return get


def build(fault: Fault) -> SimHost:
    """A host the fault applies to, in the phase it needs."""
    if fault in TWO_UNITS:
        host = two_unit_host()
        preserve = [VFIO, "0000:01:00.0"]
    else:
        host = q35_host(
            scalable=fault in SCALABLE, flb_variant="v2" if fault in V2_FLB else "v1", seed=3
        )
        preserve = ["0000:05:01.0", "0000:05:02.0"] if fault in BEHIND_BRIDGE else [VFIO]
    for bdf in preserve:
        host.vfio_attach(bdf)
        host.preserve(bdf)
    if FAULTS[fault].phase == "after":
        host.kexec()
    return host


def test_the_registry_covers_every_fault_with_a_catalog_code() -> None:
    assert set(FAULTS) == set(Fault)
    for fault, spec in FAULTS.items():
        assert spec.code in CATALOG, fault
        assert spec.phase in ("before", "after", "any")
        assert spec.shows_in, fault


@pytest.mark.parametrize("fault", list(Fault), ids=lambda f: f.value)
def test_each_fault_shows_in_the_files(
    fault: Fault, tmp_path: Path, clean_tree: Callable[[Fault], Path]
) -> None:
    faulty_host = build(fault)
    what = inject(faulty_host, fault)
    assert what
    clean = clean_tree(fault)
    faulty = write_tree(faulty_host, tmp_path / "faulty")
    changed = changed_files(clean, faulty)
    for prefix in FAULTS[fault].shows_in:
        assert any(c.startswith(prefix) for c in changed), (prefix, sorted(changed))
    if fault in AUDITED:
        code = AUDITED[fault]
        assert code not in codes(status_json(clean))
        assert code in codes(status_json(faulty))


def test_faults_refuse_the_wrong_phase_or_host() -> None:
    host = q35_host()
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    with pytest.raises(ValueError, match="kexec first"):
        inject(host, Fault.NOT_RESTORED)
    with pytest.raises(ValueError, match="second unit"):
        inject(host, Fault.WRONG_HW_RECORD)
    with pytest.raises(ValueError, match="version word"):
        inject(host, Fault.UNKNOWN_FLB_VERSION)
    with pytest.raises(ValueError, match="not behind a PCIe-to-PCI bridge"):
        inject(host, Fault.SHARED_ALIAS)
    scalable = q35_host(scalable=True)
    scalable.vfio_attach(VFIO)
    scalable.preserve(VFIO)
    with pytest.raises(ValueError, match="odd bits are legal"):
        inject(scalable, Fault.ODD_BIT_LEGACY)
    host.kexec()
    with pytest.raises(ValueError, match="before kexec"):
        inject(host, Fault.BIT_MISSING)


def test_a_missing_bit_costs_the_device_its_table_at_kexec() -> None:
    """The old kernel trusts the bitmap: the half whose bit is clear is zeroed, and the
    preserved device has no context entry in the new kernel (what VTD011 warns about)."""
    host = build(Fault.BIT_MISSING)
    inject(host, Fault.BIT_MISSING)
    host.kexec()
    dev = host.device(VFIO)
    entry = host.units["dmar0"].read_context(dev.bus, dev.devfn)
    assert entry is not None  # the new kernel allocated a fresh table for bus 0 ...
    assert entry[0] & ~0xFFF != host.attached[VFIO].pgd  # ... without the preserved entry


def test_a_corrupt_chain_does_not_hang_the_new_kernel() -> None:
    host = build(Fault.CHAIN_LOOP)
    out = host.outgoing
    assert out is not None
    flb = out.flb_phys
    inject(host, Fault.CHAIN_LOOP)
    host.kexec()
    inc = read_incoming(host.mem, flb, host.flb_variant)
    assert not inc.complete
