"""``evaluate(snapshot, policy, ledger) -> Report``: the one evaluation path of status, check
(the gate and ``--post-kexec``) and the daemon.

Pure: it reads only its arguments (``host/`` read the host into the snapshot, the kernel log
included, and the ledger; tests/audit/test_pure.py holds it to that).  A check whose inputs are not visible reports UNKNOWN (VTD050,
VTD051, VTD052), never FAIL.  A host without Intel VT-d (sysfs visible, no DMAR unit) gets no
finding at all and the verdict NOT_APPLICABLE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtdlud.audit.preconditions import check_preconditions, pci_nodes
from vtdlud.audit.report import Finding, Report, UnitReport, Wanted, finding
from vtdlud.model.alias import DmaAliases
from vtdlud.model.policy import Policy
from vtdlud.model.snapshot import Snapshot, SysfsUnit
from vtdlud.model.tables import Mode, bdf_name
from vtdlud.model.tiers import Tier

if TYPE_CHECKING:
    from vtdlud.audit.preserved import PreservedIndex, PreservedUnit
    from vtdlud.model.ledger import LedgerInput


def unit_report(
    snapshot: Snapshot, unit: SysfsUnit, preserved_index: PreservedIndex | None
) -> UnitReport:
    """One unit's view.  ``preserved_index`` (None: no preserved records) is the evaluation's,
    shared by every unit."""
    live = snapshot.live_tables.get(unit.name)
    context_tables: tuple[int, ...] | None = None
    source: str | None = None
    walk = snapshot.kcore_walks.get(unit.address) if unit.address is not None else None
    if walk is not None and walk.root_entries:
        # kcore reads the root table itself: exact, where debugfs is a lower bound.
        context_tables = tuple(sorted(walk.context_table_bits))
        source = "kcore"
    elif live is not None and live.debugfs_walked:
        context_tables = tuple(sorted(live.context_table_bits))
        source = "debugfs"
    mode = live.mode if live is not None else Mode.UNKNOWN
    preserved = None
    if preserved_index is not None and unit.address is not None:
        found = preserved_index.units(unit.address)
        preserved = found[0] if found else None
    return UnitReport(
        preserved=preserved,
        required_bitmap=_required_bits(preserved, mode),
        name=unit.name,
        address=unit.address,
        version=unit.version,
        cap=unit.cap,
        ecap=unit.ecap,
        mode=mode,
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


def _required_bits(preserved: PreservedUnit | None, mode: Mode) -> tuple[int, ...] | None:
    if preserved is None:
        return None
    from vtdlud.audit.preserved import required_bits  # noqa: PLC0415

    return required_bits(preserved, mode)


def _bdf_on_unit(unit: SysfsUnit, bus: int, devfn: int) -> str:
    """debugfs and the tables carry no PCI segment: take it from the unit's devices."""
    tail = bdf_name(bus, devfn)
    return next((d for d in unit.devices if d.endswith(tail)), f"0000:{tail}")


# Walk ProblemKind values -> codes.  A table pointer of the live tables (RTADDR's root table, a
# root entry's context table, a context entry's PASID directory, a directory entry's PASID
# table) that leads outside RAM or into another table's page is VTD016: VTD041 is the record
# chains' (issue #14 item 6).
_WALK_CODES = {
    "outside_ram": "VTD016",
    "alias": "VTD016",
    "unreadable": "VTD051",
    "limit": "VTD051",
}


def _kcore_findings(snapshot: Snapshot) -> list[Finding]:
    """Walk problems (VTD016/VTD051) and kcore-vs-debugfs disagreements (VTD015)."""
    out: list[Finding] = []
    if not snapshot.kcore_walks:
        return out
    from vtdlud.model.crosscheck import compare_with_debugfs  # noqa: PLC0415

    for unit in snapshot.units:
        walk = snapshot.kcore_walks.get(unit.address) if unit.address is not None else None
        if walk is None:
            continue
        for p in walk.problems:
            out.append(
                finding(
                    _WALK_CODES[p.kind.value],
                    f"{unit.name}: kcore: {p.what} at {p.addr:#x}: {p.message}",
                    unit=unit.address,
                )
            )
        live = snapshot.live_tables.get(unit.name)
        trans = snapshot.translation.unit(unit.name) if snapshot.translation else None
        if live is None or trans is None or not live.debugfs_walked:
            continue
        for d in compare_with_debugfs(walk, live, trans.rows):
            bdf = None
            if d.bus is not None and d.devfn is not None:
                bdf = _bdf_on_unit(unit, d.bus, d.devfn)
            out.append(finding("VTD015", f"{unit.name}: {d.message}", unit=unit.address, bdf=bdf))
    return out


def evaluate(
    snapshot: Snapshot,
    policy: Policy | None = None,
    ledger: LedgerInput | None = None,
    *,
    gate: bool = False,
) -> Report:
    """The report on ``snapshot`` under ``policy``.  ``gate``: with what blocks any gate
    (:func:`vtdlud.audit.gate.gate_floor`), as ``vtdlud check`` reports.  With the ``ledger``
    a passing gate wrote (as :func:`vtdlud.host.ledger.read_ledger_input` found it), the
    post-kexec report: this kernel against the ledger (:mod:`vtdlud.audit.postkexec`)."""
    report = _evaluate(snapshot, policy or Policy())
    if gate:
        from vtdlud.audit.gate import gate_floor  # noqa: PLC0415

        report = gate_floor(report)
    if ledger is None:
        return report
    from vtdlud.audit.postkexec import post_kexec  # noqa: PLC0415 - after a live update only

    return post_kexec(report, ledger)


def _evaluate(snapshot: Snapshot, policy: Policy) -> Report:
    if snapshot.vtd_absent is not None:
        # No Intel VT-d: nothing to audit, and no finding (a VMM holding VFIO devices behind
        # another IOMMU is none of vtdlud's business).  The verdict is NOT_APPLICABLE.
        return Report(snapshot=snapshot, policy=policy, units=())
    # Computed once and shared by the checks: the DMA aliases.
    aliases = DmaAliases(pci_nodes(snapshot))
    index = None
    if snapshot.preserved is not None and snapshot.preserved.state is not None:
        from vtdlud.audit.preserved import PreservedIndex  # noqa: PLC0415

        index = PreservedIndex(snapshot.preserved.state, aliases)
    units = tuple(unit_report(snapshot, u, index) for u in snapshot.units)
    findings = _visibility_findings(snapshot, policy) + _translation_findings(units)
    wanted: list[Wanted] = []
    if snapshot.tiers[Tier.SYSFS].available:
        wanted, pre = check_preconditions(snapshot, policy, aliases)
        findings += pre
    if snapshot.kho is not None:
        from vtdlud.audit.handover import handover_findings  # noqa: PLC0415

        findings += handover_findings(snapshot)
    findings += _kcore_findings(snapshot)
    if snapshot.preserved is not None or wanted:
        from vtdlud.audit.records import record_findings  # noqa: PLC0415

        findings += record_findings(snapshot, units, policy, wanted, aliases=aliases)
    return Report(
        snapshot=snapshot,
        policy=policy,
        units=units,
        findings=tuple(findings),
        wanted=tuple(wanted),
    )
