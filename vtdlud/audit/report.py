"""The result of one evaluation: per-unit views, findings and the verdict (pure data)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import field
from typing import TYPE_CHECKING

from vtdlud.audit.catalog import CATALOG, Severity
from vtdlud.audit.policy import Policy
from vtdlud.frozen import frozen
from vtdlud.model.snapshot import Snapshot, VfioHolder
from vtdlud.model.tables import Mode

if TYPE_CHECKING:  # imported when used: the live-update modules are not on status's hot path
    from vtdlud.audit.preserved import PreservedUnit
    from vtdlud.service.ledger import LedgerUnit


# The structured details a finding may carry (JSON ``details``, journald ``VTDLUD_<KEY>``), in
# this order: the device's bus and devfn (hex, from the BDF), the context-table bit(s) it is
# about (decimal; several joined by ","), and the expected and actual value of a comparison.
DETAIL_KEYS = ("bus", "devfn", "bit", "expected", "actual")
Details = tuple[tuple[str, str], ...]
_BDF = re.compile(r"^(?:[0-9a-fA-F]{4,}:)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


def bdf_details(bdf: str | None) -> dict[str, str]:
    """``bus`` and ``devfn`` of a BDF (``{}`` when there is none or it does not parse)."""
    m = _BDF.match(bdf or "")
    if m is None:
        return {}
    bus, dev, fn = (int(g, 16) for g in m.groups())
    if dev > 0x1F:
        return {}
    return {"bus": f"{bus:#04x}", "devfn": f"{dev << 3 | fn:#04x}"}


def bits_detail(*bits: int) -> str:
    return ",".join(str(b) for b in sorted(bits))


def make_details(bdf: str | None, given: Mapping[str, object] | None) -> Details:
    """The details of a finding: bus/devfn from its BDF, then the ones given (which win)."""
    d: dict[str, str] = bdf_details(bdf)
    for k, v in (given or {}).items():
        if k not in DETAIL_KEYS:
            raise ValueError(f"unknown finding detail {k!r}")
        if v is not None:
            d[k] = v if isinstance(v, str) else str(v)
    return tuple((k, d[k]) for k in DETAIL_KEYS if k in d)


@frozen
class Finding:
    code: str
    severity: Severity
    unit: int | None  # register base address, None for host-wide findings
    bdf: str | None
    message: str
    # A missing input that the policy requires: it makes the verdict UNKNOWN (and `check`
    # exit 3) when nothing FAILs.  Not part of the JSON.
    required: bool = True
    details: Details = ()  # (key, value) pairs, keys among DETAIL_KEYS, in that order

    @property
    def hint(self) -> str:
        return CATALOG[self.code].hint

    @property
    def message_id(self) -> str:
        return CATALOG[self.code].message_id


def finding(
    code: str,
    message: str,
    *,
    unit: int | None = None,
    bdf: str | None = None,
    required: bool = True,
    severity: Severity | None = None,
    details: Mapping[str, object] | None = None,
) -> Finding:
    sev = severity or CATALOG[code].severity
    return Finding(code, sev, unit, bdf, message, required, make_details(bdf, details))


@frozen
class Wanted:
    """A device the policy says must be preserved, why, and who holds it."""

    bdf: str
    by_policy: bool  # named by preserve.devices / preserve.ids
    holders: tuple[VfioHolder, ...]  # processes holding its VFIO cdev or its group


@frozen
class UnitReport:
    name: str
    address: int | None
    version: str | None
    cap: int | None
    ecap: int | None
    mode: Mode
    translation_enabled: bool | None
    root_table: int | None
    devices: tuple[str, ...]
    context_tables: tuple[int, ...] | None
    context_tables_source: str | None
    # The kernel's live hw record for this unit and the device records pointing at it.
    preserved: PreservedUnit | None = None
    required_bitmap: tuple[int, ...] | None = None  # None: not computable (aliases not visible)

    @property
    def ledger(self) -> LedgerUnit | None:
        """What the ledger records for this unit when the gate passes (None: nothing preserved)."""
        p = self.preserved
        if p is None or self.address is None:
            return None
        from vtdlud.model.abi import IommuDeviceSerV1  # noqa: PLC0415
        from vtdlud.service.ledger import LedgerDevice, LedgerUnit  # noqa: PLC0415

        return LedgerUnit(
            address=self.address,
            root_table=p.record.intel.root_table,
            bits=p.bitmap,
            devices=tuple(
                LedgerDevice(
                    d.bdf,
                    d.slot.record.domain_iommu_ser.attachment_id,
                    d.slot.record.intel.pasid_table
                    if isinstance(d.slot.record, IommuDeviceSerV1)
                    else None,
                )
                for d in p.devices
            ),
        )


@frozen
class Report:
    snapshot: Snapshot
    policy: Policy
    units: tuple[UnitReport, ...]
    findings: tuple[Finding, ...] = field(default=())
    wanted: tuple[Wanted, ...] = field(default=())  # the devices to preserve

    @property
    def not_applicable(self) -> str | None:
        """Why this host has no Intel VT-d to audit (None: it has DMAR units, or sysfs is not
        visible).  See :attr:`vtdlud.model.snapshot.Snapshot.vtd_absent`."""
        return self.snapshot.vtd_absent

    @property
    def verdict(self) -> Severity:
        """Highest severity present; UNKNOWN when a required input is missing and nothing FAILs;
        NOT_APPLICABLE on a host without VT-d where nothing was found (a post-kexec check whose
        ledger names units this kernel does not run still FAILs)."""
        if self.not_applicable is not None and not self.findings:
            return Severity.NOT_APPLICABLE
        if any(f.severity is Severity.FAIL for f in self.findings):
            return Severity.FAIL
        if any(f.severity is Severity.UNKNOWN and f.required for f in self.findings):
            return Severity.UNKNOWN
        ranked = [f.severity for f in self.findings if f.severity is not Severity.UNKNOWN]
        return max(ranked, key=lambda s: s.rank, default=Severity.PASS)
