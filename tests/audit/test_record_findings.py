"""The record audit (vtdlud.audit.records): one fault per code, injected into a simulated host.

Backed by the simulator (tests.kernelmodel) only: no real capture of the IOMMU live-update records
exists.  Each case builds a host, preserves devices, kexecs when the code needs the incoming
records, injects exactly one fault, writes the tree and evaluates it; the finding must be there
with its code, severity, unit and BDF, and be the only one that is not UNKNOWN.  The clean twin
(the same recipe without the fault) has no finding at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.mirror import field_diffs, mirror_hw, points_nowhere
from vtdlud.audit.report import Finding, Report
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.abi import IommuHwSerV1
from vtdlud.model.live import derive_live_tables
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity
from vtdlud.model.snapshot import Snapshot
from vtdlud.model.tiers import Tier

DMAR0, DMAR1 = 0xFED90000, 0xFED91000
VFIO, NVME, NIC = "0000:00:05.0", "0000:01:00.0", "0000:00:02.0"
FAIL, NOTE, WARN, UNKNOWN = Severity.FAIL, Severity.NOTE, Severity.WARN, Severity.UNKNOWN
ONLY_05 = Policy(devices=(VFIO,), vmm_held=False)


@dataclass(frozen=True)
class Recipe:
    """How the host is built before the fault: which scenario, what is preserved, kexec or not."""

    after: bool = False
    scalable: bool = False
    two_units: bool = False
    flb: str = "v1"
    preserve: tuple[str, ...] = (VFIO,)
    attach_only: tuple[str, ...] = ()  # handed to the VMM, not preserved
    policy: Policy = field(default_factory=Policy)

    def host(self) -> SimHost:
        if self.two_units:
            host = two_unit_host(scalable=self.scalable, flb_variant=self.flb, seed=4)
        else:
            host = q35_host(scalable=self.scalable, flb_variant=self.flb, seed=3)
        for bdf in self.preserve:
            host.vfio_attach(bdf)
            host.preserve(bdf)
        for bdf in self.attach_only:
            host.vfio_attach(bdf)
        if self.after:
            host.kexec()
        return host


def _evaluate(root: Path, policy: Policy) -> Report:
    return evaluate(take_snapshot(HostRoot(root)), policy)


def _key(f: Finding) -> tuple[str, Severity, int | None, str | None]:
    return f.code, f.severity, f.unit, f.bdf


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Recipe], Report]:
    """The report of a recipe's clean twin, evaluated once per recipe."""
    cache: dict[Recipe, Report] = {}

    def get(recipe: Recipe) -> Report:
        if recipe not in cache:
            root = write_tree(recipe.host(), tmp_path_factory.mktemp("clean"))
            cache[recipe] = _evaluate(root, recipe.policy)
        return cache[recipe]

    return get


BEFORE, AFTER = Recipe(), Recipe(after=True)
SM = Recipe(scalable=True)
TWO = Recipe(two_units=True, preserve=(VFIO, NVME))
TWO_AFTER = Recipe(two_units=True, preserve=(VFIO, NVME), after=True)
V2 = Recipe(flb="v2")

# (fault, target, recipe, the finding: code, severity, unit, bdf)
CASES: list[tuple[Fault, str | None, Recipe, tuple[str, Severity, int | None, str | None]]] = [
    (Fault.TOKEN_NO_UNIT, None, AFTER, ("VTD001", FAIL, 0xFEE90000, None)),
    (Fault.TOKEN_NO_UNIT, "dmar1", TWO, ("VTD001", FAIL, 0xFEE91000, None)),
    (Fault.HW_RECORD_DELETED, None, BEFORE, ("VTD002", FAIL, DMAR0, VFIO)),
    (Fault.HW_RECORD_DELETED, None, AFTER, ("VTD002", FAIL, DMAR0, VFIO)),
    (Fault.HW_RECORD_DELETED, "dmar1", TWO, ("VTD002", FAIL, DMAR1, NVME)),
    (Fault.TYPE_NOT_INTEL, None, AFTER, ("VTD003", FAIL, DMAR0, None)),
    (Fault.TYPE_NOT_INTEL, "dmar1", TWO, ("VTD003", FAIL, DMAR1, None)),
    (Fault.TOKEN_NE_PHYS, None, AFTER, ("VTD003", FAIL, DMAR0, None)),
    (Fault.TOKEN_NE_PHYS, "dmar1", TWO, ("VTD003", FAIL, DMAR1, None)),
    (Fault.ROOT_TABLE_MISMATCH, None, BEFORE, ("VTD010", FAIL, DMAR0, None)),
    (Fault.BIT_MISSING, None, BEFORE, ("VTD011", FAIL, DMAR0, VFIO)),
    (Fault.BIT_MISSING, None, SM, ("VTD011", FAIL, DMAR0, VFIO)),
    (Fault.LATE_CONTEXT_TABLE, None, BEFORE, ("VTD012", NOTE, DMAR0, None)),
    (Fault.BIT_WITHOUT_TABLE, None, BEFORE, ("VTD013", FAIL, DMAR0, None)),
    (Fault.TABLE_NOT_PRESERVED, None, BEFORE, ("VTD013", FAIL, DMAR0, None)),
    (Fault.ODD_BIT_LEGACY, None, BEFORE, ("VTD014", FAIL, DMAR0, None)),
    (Fault.ODD_BIT_LEGACY, None, AFTER, ("VTD014", FAIL, DMAR0, None)),
    (Fault.REF_COUNT_OFF, None, BEFORE, ("VTD020", FAIL, DMAR0, None)),
    (Fault.REF_COUNT_OFF, None, AFTER, ("VTD020", FAIL, DMAR0, None)),
    (Fault.DEVICE_GONE, None, BEFORE, ("VTD021", FAIL, DMAR0, VFIO)),
    (Fault.DEVICE_GONE, None, AFTER, ("VTD021", FAIL, DMAR0, VFIO)),
    (Fault.WRONG_HW_RECORD, VFIO, TWO, ("VTD022", FAIL, DMAR0, VFIO)),
    (Fault.WRONG_HW_RECORD, VFIO, TWO_AFTER, ("VTD022", FAIL, DMAR0, VFIO)),
    (Fault.WRONG_ATTACHMENT_ID, None, BEFORE, ("VTD023", FAIL, DMAR0, VFIO)),
    (Fault.WRONG_ATTACHMENT_ID, None, SM, ("VTD023", FAIL, DMAR0, VFIO)),
    (Fault.WRONG_PASID_TABLE, None, SM, ("VTD024", FAIL, DMAR0, VFIO)),
    (Fault.DOMAIN_MISMATCH, None, BEFORE, ("VTD027", FAIL, DMAR0, VFIO)),
    (Fault.DOMAIN_MISMATCH, None, SM, ("VTD027", FAIL, DMAR0, VFIO)),
    (Fault.DOMAIN_MISMATCH, None, AFTER, ("VTD027", FAIL, DMAR0, VFIO)),
    (Fault.DOMAIN_DELETED, None, BEFORE, ("VTD027", FAIL, DMAR0, VFIO)),
    (Fault.DOMAIN_DELETED, None, AFTER, ("VTD027", FAIL, DMAR0, VFIO)),
    (Fault.UNKNOWN_FLB_VERSION, None, V2, ("VTD040", UNKNOWN, None, None)),
    (Fault.CHAIN_LOOP, None, BEFORE, ("VTD041", FAIL, None, None)),
    (Fault.CHAIN_LOOP, None, AFTER, ("VTD041", FAIL, None, None)),
    (Fault.COUNT_OVER_CAPACITY, None, BEFORE, ("VTD041", FAIL, None, None)),
    (Fault.COUNT_OVER_CAPACITY, None, AFTER, ("VTD041", FAIL, None, None)),
    (Fault.POINTER_OUTSIDE_RAM, None, BEFORE, ("VTD041", FAIL, None, None)),
    (Fault.POINTER_OUTSIDE_RAM, None, AFTER, ("VTD041", FAIL, None, None)),
]


def _id(case: tuple[Fault, str | None, Recipe, tuple[object, ...]]) -> str:
    fault, target, recipe, want = case
    where = ("after" if recipe.after else "before") + ("-sm" if recipe.scalable else "")
    return f"{want[0]}-{fault.value}-{where}" + (f"-{target}" if target else "")


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_fault_gives_exactly_its_finding(
    case: tuple[Fault, str | None, Recipe, tuple[str, Severity, int | None, str | None]],
    tmp_path: Path,
    clean: Callable[[Recipe], Report],
) -> None:
    fault, target, recipe, want = case
    assert clean(recipe).findings == ()
    host = recipe.host()
    inject(host, fault, target)
    report = _evaluate(write_tree(host, tmp_path), recipe.policy)
    found = [_key(f) for f in report.findings]
    assert want in found, [(f.code, f.severity, f.message) for f in report.findings]
    if want[1] is not UNKNOWN:
        judged = [_key(f) for f in report.findings if f.severity is not UNKNOWN]
        assert judged == [want], [f.message for f in report.findings]
    else:
        assert [f for f in report.findings if f.severity is FAIL] == []


def test_messages_name_the_fields_and_values(tmp_path: Path) -> None:
    host = BEFORE.host()
    inject(host, Fault.WRONG_ATTACHMENT_ID)
    [f] = _evaluate(write_tree(host, tmp_path), Policy()).findings
    assert (
        "iommu_device_ser.domain_iommu_ser.attachment_id 265, live DID 9 (per kcore)" in f.message
    )
    assert f.hint == "The new kernel would reserve the wrong domain ID; do not kexec."


def test_device_to_preserve_without_a_record(tmp_path: Path) -> None:
    """VTD030: the VMM holds a second device through iommufd, which nobody preserved."""
    recipe = Recipe(attach_only=(NIC,))
    [f] = _evaluate(write_tree(recipe.host(), tmp_path), recipe.policy).findings
    assert _key(f) == ("VTD030", FAIL, DMAR0, NIC)
    assert "held by a VMM" in f.message


def test_nothing_preserved_at_all(tmp_path: Path) -> None:
    """VTD030 when KHO's preserved memory was scanned whole and holds no record."""
    host = q35_host(seed=3)
    host.vfio_attach(VFIO)
    [f] = _evaluate(write_tree(host, tmp_path), Policy()).findings
    assert _key(f) == ("VTD030", FAIL, DMAR0, VFIO)
    assert "holds no IOMMU live-update record" in f.message


def test_unexpected_preserved_device(tmp_path: Path, clean: Callable[[Recipe], Report]) -> None:
    """VTD031 (WARN): the policy names only 00:05.0, the VMM preserved 00:02.0 as well."""
    assert clean(Recipe(policy=ONLY_05)).findings == ()
    recipe = Recipe(preserve=(VFIO, NIC), policy=ONLY_05)
    [f] = _evaluate(write_tree(recipe.host(), tmp_path), recipe.policy).findings
    assert _key(f) == ("VTD031", WARN, DMAR0, NIC)


def test_policy_codes_are_the_gates_only(tmp_path: Path) -> None:
    """After the kexec the incoming records are not judged against the policy."""
    recipe = Recipe(preserve=(VFIO, NIC), policy=ONLY_05, after=True)
    assert _evaluate(write_tree(recipe.host(), tmp_path), recipe.policy).findings == ()


def _without(snapshot: Snapshot, **changes: object) -> Snapshot:
    return dataclasses.replace(snapshot, **changes)  # type: ignore[arg-type]


def test_debugfs_rows_serve_when_there_is_no_kcore_walk(tmp_path: Path) -> None:
    """No kcore walk: the DIDs come from dmar_translation_struct (a lower bound), and what only
    the walk shows (every table, the page addresses) is UNKNOWN, not FAIL."""
    host = BEFORE.host()
    inject(host, Fault.WRONG_ATTACHMENT_ID)
    snap = _without(take_snapshot(HostRoot(write_tree(host, tmp_path))), kcore_walks={})
    found = evaluate(snap, Policy()).findings
    assert [(_key(f), f.required) for f in found] == [
        (("VTD013", UNKNOWN, DMAR0, None), True),
        (("VTD023", FAIL, DMAR0, VFIO), True),
    ]
    assert found[1].message.endswith("live DID 9 (per dmar_translation_struct)")


def test_absent_from_debugfs_proves_nothing(tmp_path: Path) -> None:
    host = BEFORE.host()
    snap = take_snapshot(HostRoot(write_tree(host, tmp_path)))
    assert snap.translation is not None
    rows = tuple(
        dataclasses.replace(u, rows=tuple(r for r in u.rows if (r.bus, r.devfn) != (0, 0x28)))
        for u in snap.translation.units
    )
    trans = dataclasses.replace(snap.translation, units=rows)
    # The snapshot carries what the rows prove, derived when it is taken: derive it again.
    live = derive_live_tables(snap.regset, trans, ((u.address, u.name) for u in snap.units))
    changed = _without(snap, kcore_walks={}, translation=trans, live_tables=live)
    found = evaluate(changed, Policy()).findings
    assert ("VTD023", UNKNOWN, DMAR0, VFIO) in [_key(f) for f in found]
    assert all(f.severity is not FAIL for f in found)


def test_no_iommu_debugfs_is_unknown_and_blocks_only_when_required(tmp_path: Path) -> None:
    """Without RTADDR there is no walk: VTD010/013/023 are UNKNOWN; they block the gate only
    when the policy requires the iommu_debugfs tier."""
    root = write_tree(BEFORE.host(), tmp_path, TreeOptions(iommu_debugfs=False))
    found = [f for f in _evaluate(root, Policy()).findings if f.code != "VTD050"]
    assert sorted((f.code, f.severity, f.required) for f in found) == [
        ("VTD010", UNKNOWN, False),
        ("VTD013", UNKNOWN, False),
        ("VTD023", UNKNOWN, False),
    ]
    strict = Policy(required_tiers=frozenset({Tier.SYSFS, Tier.IOMMU_DEBUGFS, Tier.KCORE}))
    assert all(f.required for f in _evaluate(root, strict).findings if f.code != "VTD050")


def test_no_preserved_memory_map_leaves_pages_unknown(tmp_path: Path) -> None:
    host = BEFORE.host()
    inject(host, Fault.TABLE_NOT_PRESERVED)
    snap = take_snapshot(HostRoot(write_tree(host, tmp_path)))
    assert snap.preserved is not None
    preserved = dataclasses.replace(snap.preserved, memory_map=None)
    found = evaluate(_without(snap, preserved=preserved), Policy()).findings
    assert [(_key(f), f.required) for f in found] == [
        (("VTD013", UNKNOWN, DMAR0, None), True),
        (("VTD017", UNKNOWN, DMAR0, VFIO), True),  # the page-table pages likewise
    ]


def test_mirror_of_a_clean_record_is_the_record(tmp_path: Path) -> None:
    """The ABI mirror rebuilds, from the live tables, the hw record the model kernel wrote."""
    root = write_tree(BEFORE.host(), tmp_path)
    snap = take_snapshot(HostRoot(root))
    report = evaluate(snap, Policy())
    [unit] = report.units
    assert unit.preserved is not None and unit.root_table is not None
    rec = unit.preserved.record
    assert isinstance(rec, IommuHwSerV1)
    assert mirror_hw(rec, DMAR0, root_table=unit.root_table, ref_count=1) == rec
    wrong = mirror_hw(rec, DMAR0, root_table=unit.root_table + 0x1000, ref_count=2)
    assert sorted(p for p, _, _ in field_diffs(rec, wrong)) == ["hdr.ref_count", "intel.root_table"]


def test_unreadable_is_not_corrupt() -> None:
    assert points_nowhere(
        "device array page 0x140000000: physical address 0x140000000 is not in RAM"
    )
    assert not points_nowhere("device array page 0x1000: I/O error (EIO)")
