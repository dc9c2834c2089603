"""The mirror's building blocks: the live side of each unit (kcore walk or debugfs rows), what
the kernel should have written (the ABI model filled from the live tables), field-by-field
diffs, and the finding sink shared by the record audit and the post-kexec check."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, TypeVar

from vtdlud.audit.report import Finding, UnitReport, finding
from vtdlud.frozen import frozen
from vtdlud.model.abi import IommuDeviceSerV1, IommuDomainSer, IommuHwSerV1, IommuTypeSer
from vtdlud.model.bitfield import field_named
from vtdlud.model.live import ContextInfo
from vtdlud.model.policy import Policy
from vtdlud.model.records import DeviceSlot, RefStatus
from vtdlud.model.registers import ECAP_FIELDS
from vtdlud.model.severity import Severity
from vtdlud.model.snapshot import Snapshot
from vtdlud.model.tables import (
    CONTEXT_HI_FIELDS,
    CONTEXT_LO_FIELDS,
    PASID_VAL0_FIELDS,
    PASID_VAL2_FIELDS,
    Mode,
)
from vtdlud.model.tiers import Tier

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


DevKey = tuple[int, int]  # (bus, devfn)
LIVE_TIERS = (Tier.IOMMU_DEBUGFS, Tier.KCORE)  # a kcore walk starts from RTADDR (debugfs)
RECORD_TIERS = (Tier.KHO_DEBUGFS, Tier.KCORE)
INTEL = int(IommuTypeSer.IOMMU_INTEL)
HW_FIELDS = {
    "intel.phys_addr": ("VTD003", "the token, the register base"),
    "intel.root_table": ("VTD010", "the live root table, RTADDR"),
    "hdr.ref_count": ("VTD020", "the unit's live device records"),
    "intel.restored": (
        "VTD003",
        "before the kexec: the next kernel skips reclaiming the root and context table pages "
        "of a unit marked restored",
    ),
}
DEVICE_FIELDS = {
    "domain_iommu_ser.attachment_id": ("VTD023", "live DID"),
    "intel.pasid_table": ("VTD024", "live PASID directory"),
}
DOMAIN_FIELDS = {
    "top_table_phys": ("VTD027", "the live entry's top page table"),
    "top_level": ("VTD027", "the live entry's AW + 1 [I]"),
}
DECIMAL = (
    "ref_count",
    "attachment_id",
    "top_level",
    "restored",
)  # counts, DIDs, levels; the rest addresses
REF_TEXT = {RefStatus.NULL: "is 0", RefStatus.DELETED: "points at a DELETED {} record"}
REF_TEXT[RefStatus.NOT_A_SLOT] = "points at no {} record"
_SMTS, _CTX_AW = field_named(ECAP_FIELDS, "smts"), field_named(CONTEXT_HI_FIELDS, "aw")
_CTX_TT, _CTX_SLPTPTR = (field_named(CONTEXT_LO_FIELDS, n) for n in ("tt", "slptptr"))
_PE_PGTT, _PE_AW, _PE_SLPTPTR = (
    field_named(PASID_VAL0_FIELDS, n) for n in ("pgtt", "aw", "slptptr")
)
_PE_FLPTPTR = field_named(PASID_VAL2_FIELDS, "flptptr")
TT_PASS_THROUGH = 2
PGTT_FIRST_LEVEL, PGTT_SECOND_LEVEL, PGTT_PASS_THROUGH = 1, 2, 4


_R = TypeVar("_R", bound="DataclassInstance")


# --- the live side ----------------------------------------------------------------------------


@frozen
class LiveView:
    """One unit's live tables: ``exact`` from a kcore walk, else debugfs rows (a lower bound)."""

    exact: bool
    bits: frozenset[int]  # present context-table halves
    tables: Mapping[int, int]  # bit -> table address (kcore only)
    devices: Mapping[DevKey, ContextInfo]
    unwalked: frozenset[int] = frozenset()
    incomplete: frozenset[DevKey] = frozenset()
    # Scalable mode, kcore only: each device's present PASID directory entries (index -> table)
    pasid_tables: Mapping[DevKey, Mapping[int, int]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return "kcore" if self.exact else "dmar_translation_struct"


def live_view(snapshot: Snapshot, unit: UnitReport) -> LiveView | None:
    """The unit's kcore walk when there is one, else what debugfs shows, else None."""
    walk = snapshot.kcore_walks.get(unit.address) if unit.address is not None else None
    if walk is not None and walk.root_entries:
        bits, tables_at = walk.context_table_bits, walk.context_tables
        return LiveView(
            True,
            bits,
            tables_at,
            walk.devices,
            walk.unwalked_tables,
            walk.incomplete_devices,
            walk.pasid_tables,
        )
    live = snapshot.live_tables.get(unit.name)
    if live is None or not live.debugfs_walked:
        return None
    return LiveView(False, live.context_table_bits, {}, live.devices)


def unit_mode(unit: UnitReport) -> Mode:
    """RTADDR's mode (or what the rows prove); a unit whose ECAP lacks SMTS can only be legacy."""
    if unit.mode is Mode.UNKNOWN and unit.ecap is not None and not _SMTS.raw(unit.ecap):
        return Mode.LEGACY
    return unit.mode


def live_top_table(info: ContextInfo) -> tuple[int | None, int | None] | str:
    """(top page-table page, record ``top_level``) the live entry translates with, or why it
    translates through none.  ``top_level`` = the table's levels - 1 = AW + 1 [I: the generic
    page table's 0-based level of its top table]; a first-level table's levels are not judged."""
    if info.mode is Mode.LEGACY:
        if _CTX_TT.raw(info.context_lo) == TT_PASS_THROUGH:
            return "the live context entry is pass-through (TT 2)"
        return int(_CTX_SLPTPTR.decode(info.context_lo)), _CTX_AW.raw(info.context_hi) + 1
    pe = info.pasid_entries.get(0)
    pgtt = _PE_PGTT.raw(pe.val0) if pe is not None else None
    if pe is None or pgtt not in (PGTT_FIRST_LEVEL, PGTT_SECOND_LEVEL, PGTT_PASS_THROUGH):
        return None, None  # no RID_PASID entry, or nested: the top table is the guest's
    if pgtt == PGTT_PASS_THROUGH:
        return "the live RID_PASID entry is pass-through (PGTT 4)"
    if pgtt == PGTT_FIRST_LEVEL:
        return int(_PE_FLPTPTR.decode(pe.val2)), None
    return int(_PE_SLPTPTR.decode(pe.val0)), _PE_AW.raw(pe.val0) + 1


# --- the mirror -------------------------------------------------------------------------------


def mirror_hw(
    actual: IommuHwSerV1,
    address: int,
    *,
    root_table: int | None,
    ref_count: int | None,
    restored: int | None = None,
) -> IommuHwSerV1:
    """``intel_iommu_preserve()``: token = phys_addr = the register base, type IOMMU_INTEL,
    root_table = the live root table; ``hdr.ref_count`` = the unit's device records;
    ``intel.restored`` 0 before the kexec.  A None argument is not known (or not judged): that
    field is copied from ``actual``."""
    root = actual.intel.root_table if root_table is None else root_table
    done = actual.intel.restored if restored is None else restored
    intel = _with(actual.intel, phys_addr=address, root_table=root, restored=done)
    hdr = actual.hdr if ref_count is None else _with(actual.hdr, ref_count=ref_count)
    return _with(actual, hdr=hdr, token=address, type=INTEL, intel=intel)


def mirror_device(
    actual: IommuDeviceSerV1, *, did: int | None, pasid_dir: int | None
) -> IommuDeviceSerV1:
    """``intel_iommu_preserve_device()``: attachment_id = the DID on the unit; in scalable mode
    intel.pasid_table = the PASID directory of its context entry (None: not known)."""
    dev_map, intel = actual.domain_iommu_ser, actual.intel
    dev_map = dev_map if did is None else _with(dev_map, attachment_id=did)
    intel = intel if pasid_dir is None else _with(intel, pasid_table=pasid_dir)
    return _with(actual, domain_iommu_ser=dev_map, intel=intel)


def mirror_domain(
    actual: IommuDomainSer, *, top_table: int | None, top_level: int | None
) -> IommuDomainSer:
    """The domain record of the page table the device's live entry points at."""
    top = actual.top_table_phys if top_table is None else top_table
    level = actual.top_level if top_level is None else top_level
    return _with(actual, top_table_phys=top, top_level=level)


def _with(record: _R, **changes: object) -> _R:
    """``dataclasses.replace``, or ``record`` itself when it already holds those values (the
    usual case: a record as the kernel should have written it)."""
    if all(getattr(record, k) == v for k, v in changes.items()):
        return record
    return dataclasses.replace(record, **changes)


def field_diffs(
    actual: DataclassInstance, expected: DataclassInstance, prefix: str = ""
) -> Iterator[tuple[str, object, object]]:
    """(dotted field path, actual, expected) for every leaf field that differs."""
    if actual == expected:  # records of int fields: equal records have no differing leaf
        return
    for f in dataclasses.fields(actual):
        a, e = getattr(actual, f.name), getattr(expected, f.name)
        if dataclasses.is_dataclass(a) and not isinstance(a, type):
            yield from field_diffs(a, e, f"{prefix}{f.name}.")
        elif a != e:
            yield f"{prefix}{f.name}", a, e


# --- helpers ----------------------------------------------------------------------------------


def _x(value: object, path: str = "") -> str:
    if isinstance(value, int) and not path.endswith(DECIMAL):
        return f"{value:#x}"
    return str(value)


def _half(*bits: int) -> str:
    return ", ".join(f"bit {b} (bus {b >> 1:02x} {'upper' if b & 1 else 'lower'})" for b in bits)


def required_for(snapshot: Snapshot, policy: Policy, tiers: Sequence[Tier]) -> bool:
    """Whether an UNKNOWN blocks: a missing tier the policy requires, or no tier missing at all
    (the tiers are there and the input still is not: fail closed)."""
    missing = [t for t in tiers if not snapshot.tiers[t].available]
    return not missing or any(t in policy.required_tiers for t in missing)


# What PhysReadError(outside_ram=True) and the record walker say of a pointer to nowhere; other
# unreadable ranges are I/O errors (VTD051, not VTD041).  ChainProblem and MemMapProblem keep only
# the reason text, so the distinction is made on it.
_NOWHERE = ("is not in RAM", "not a valid physical range", "outside the 64-bit space")


def points_nowhere(reason: str) -> bool:
    """An unreadable range that is a bad pointer (corruption), not an I/O error."""
    return any(text in reason for text in _NOWHERE)


def _key(slot: DeviceSlot) -> DevKey:
    return slot.record.devid >> 8 & 0xFF, slot.record.devid & 0xFF


class Sink:
    """Collects findings; an UNKNOWN one blocks per :func:`required_for`."""

    def __init__(self, snapshot: Snapshot, policy: Policy) -> None:
        self.snap, self.policy = snapshot, policy
        self.out: list[Finding] = []

    def add(
        self,
        code: str,
        message: str,
        *,
        unit: int | None = None,
        bdf: str | None = None,
        unknown: Sequence[Tier] | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """A finding; ``unknown`` makes it UNKNOWN, its inputs coming from those tiers;
        ``details`` its structured details (see :data:`vtdlud.audit.report.DETAIL_KEYS`)."""
        if unknown is None:
            self.out.append(finding(code, message, unit=unit, bdf=bdf, details=details))
        else:
            req = required_for(self.snap, self.policy, unknown)
            sev = Severity.UNKNOWN
            self.out.append(
                finding(
                    code,
                    message,
                    unit=unit,
                    bdf=bdf,
                    severity=sev,
                    required=req,
                    details=details,
                )
            )
