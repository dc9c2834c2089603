"""``evaluate(snapshot, policy) -> Report``: the one evaluation path of status, check and daemon.

Pure: it reads only the snapshot.  A check whose inputs are not visible reports UNKNOWN (VTD050,
VTD051, VTD052), never FAIL.
"""

from __future__ import annotations

from vtdlud.audit.handover import handover_findings
from vtdlud.audit.policy import Policy
from vtdlud.audit.preconditions import check_preconditions
from vtdlud.audit.report import Finding, Report, UnitReport, finding
from vtdlud.model.snapshot import Snapshot, SysfsUnit, Tier
from vtdlud.model.tables import Mode
from vtdlud.parse.debugfs import LiveTables, RegsetUnit, TranslationUnit, derive_unit_tables


def _regset_unit(snapshot: Snapshot, unit: SysfsUnit) -> RegsetUnit | None:
    """The regset block of ``unit``: matched on the register base address (names may differ)."""
    if snapshot.regset is None or unit.address is None:
        return None
    return next((r for r in snapshot.regset.units if r.reg_base_addr == unit.address), None)


def _translation_unit(snapshot: Snapshot, unit: SysfsUnit) -> TranslationUnit | None:
    """dmar_translation_struct prints only the unit name; within one snapshot it is the same kernel."""
    if snapshot.translation is None:
        return None
    return next((t for t in snapshot.translation.units if t.name == unit.name), None)


def unit_report(snapshot: Snapshot, unit: SysfsUnit) -> UnitReport:
    regs = _regset_unit(snapshot, unit)
    trans = _translation_unit(snapshot, unit)
    live: LiveTables | None = None
    if regs is not None or trans is not None:
        live = derive_unit_tables(regs, trans)
    context_tables: tuple[int, ...] | None = None
    source: str | None = None
    if live is not None and trans is not None and trans.enabled:
        context_tables = tuple(sorted(live.context_table_bits))
        source = "debugfs"
    return UnitReport(
        name=unit.name,
        address=unit.address,
        version=unit.version,
        cap=unit.cap,
        ecap=unit.ecap,
        mode=live.mode if live is not None else Mode.UNKNOWN,
        translation_enabled=live.translation_enabled if live is not None else None,
        root_table=live.root_table if live is not None else None,
        devices=tuple(sorted(unit.devices)),
        context_tables=context_tables,
        context_tables_source=source,
    )


def _visibility_findings(snapshot: Snapshot, policy: Policy) -> list[Finding]:
    out = []
    for tier, state in snapshot.tiers.items():
        if not state.available:
            req = tier in policy.required_tiers
            out.append(
                finding(
                    "VTD050",
                    f"{tier.value} tier {state.status.value}: {state.reason}"
                    + ("" if req else " (not required by policy)"),
                    required=req,
                )
            )
    for p in snapshot.problems:
        out.append(
            finding(
                "VTD052" if p.unsupported else "VTD051",
                f"{p.path}: {p.reason}",
                unit=p.unit,
                required=True,  # an unreadable input always blocks the gate (fails closed)
            )
        )
    return out


def _translation_findings(units: tuple[UnitReport, ...]) -> list[Finding]:
    return [
        finding(
            "VTD070",
            f"{u.name}: translation disabled (GSTS.TES clear) with {len(u.devices)} device(s)",
            unit=u.address,
        )
        for u in units
        if u.translation_enabled is False and u.devices
    ]


def evaluate(snapshot: Snapshot, policy: Policy | None = None) -> Report:
    policy = policy or Policy()
    units = tuple(unit_report(snapshot, u) for u in snapshot.units)
    findings = _visibility_findings(snapshot, policy) + _translation_findings(units)
    if snapshot.tiers[Tier.SYSFS].available:
        findings += check_preconditions(snapshot, policy)
    findings += handover_findings(snapshot)
    return Report(snapshot=snapshot, policy=policy, units=units, findings=tuple(findings))
