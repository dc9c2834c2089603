"""The pre-kexec gate's decision: the exit code of ``vtdlud check`` (DESIGN.md §4).

1 when any finding is at or above the policy's fail severity; else 3 when a required tier or
input is missing, the ABI is unknown or an input is unreadable (the gate fails closed); else 0 —
also on a host without Intel VT-d (verdict NOT_APPLICABLE): there is no VT-d state for a live
update to carry, so the gate does not block it (a fleet-wide pre-kexec hook passes on AMD hosts
and VMs; the verdict in the JSON tells it apart from PASS).

Whatever the policy relaxes (``gate.required_tiers = []``), the gate has a floor,
:func:`gate_floor`: without the sysfs tier it checks nothing, and with devices to preserve but
no preserved record visible it has not seen what it vouches for; both block it (exit 3).
"""

from __future__ import annotations

import dataclasses

from vtdlud.audit.catalog import Severity
from vtdlud.audit.report import Finding, Report, finding
from vtdlud.errors import ExitCode
from vtdlud.model.snapshot import Tier

RECORD_TIERS = (Tier.KHO_DEBUGFS, Tier.KCORE)


def _unit_of(report: Report, bdf: str) -> int | None:
    dev = report.snapshot.pci_devices.get(bdf)
    return next((u.address for u in report.units if dev is not None and u.name == dev.iommu), None)


def gate_floor(report: Report) -> Report:
    """The report with what blocks any gate, whatever ``gate.required_tiers`` says: the sysfs
    tier (VTD050: nothing is checked without it), a record for each device to preserve
    (VTD030 UNKNOWN when no preserved record is visible at all; when records are visible the
    record audit judges each device itself), and each device preserve.devices names exactly
    being there (VTD030 UNKNOWN: no record of it can be checked)."""
    snap = report.snapshot
    out: list[Finding] = []
    extra: list[Finding] = []
    sysfs = snap.tiers[Tier.SYSFS]
    for f in report.findings:
        if f.code == "VTD050" and not f.required and f.message.startswith("sysfs tier"):
            msg = f.message.removesuffix(" (not required by policy)")
            msg += " (the gate checks nothing without it)"
            out.append(dataclasses.replace(f, required=True, message=msg))
        else:
            out.append(f)
    if not sysfs.available and not any(f.code == "VTD050" and f.required for f in out):
        extra.append(finding("VTD050", f"sysfs tier {sysfs.status.value}: {sysfs.reason}"))
    if report.wanted and (snap.preserved is None or snap.preserved.state is None):
        missing = [t.value for t in RECORD_TIERS if not snap.tiers[t].available]
        why = f"{' and '.join(missing)} unavailable" if missing else "none could be located"
        for w in report.wanted:
            if any(f.code == "VTD030" and f.bdf == w.bdf for f in out):
                continue
            extra.append(
                finding(
                    "VTD030",
                    f"{w.bdf} is to be preserved, but no preserved IOMMU record is visible "
                    f"({why}): the gate cannot vouch for it",
                    unit=_unit_of(report, w.bdf),
                    bdf=w.bdf,
                    severity=Severity.UNKNOWN,
                )
            )
    if sysfs.available:
        for bdf in _absent(report):
            extra.append(
                finding(
                    "VTD030",
                    f"{bdf} is named by preserve.devices, but sysfs has no such device: nothing "
                    "of it can be checked",
                    bdf=bdf,
                    severity=Severity.UNKNOWN,
                )
            )
    return dataclasses.replace(report, findings=(*out, *extra))


def _absent(report: Report) -> list[str]:
    """The exact BDFs (no glob characters) of preserve.devices that sysfs does not list."""
    present = {b.lower() for b in report.snapshot.pci_devices}
    exact = {d.lower() for d in report.policy.devices if not any(c in d for c in "*?[")}
    return sorted(exact - present)


def gate_exit(report: Report) -> ExitCode:
    threshold = report.policy.fail_severity.rank
    if any(
        f.severity is not Severity.UNKNOWN and f.severity.rank >= threshold for f in report.findings
    ):
        return ExitCode.FAIL
    if any(f.severity is Severity.UNKNOWN and f.required for f in report.findings):
        return ExitCode.UNKNOWN
    return ExitCode.OK


def gate_summary(report: Report, code: ExitCode) -> str:
    """One line for humans and the journal."""
    blocking = [
        f
        for f in report.findings
        if (code is ExitCode.FAIL and f.severity.rank >= report.policy.fail_severity.rank)
        or (code is ExitCode.UNKNOWN and f.severity is Severity.UNKNOWN and f.required)
    ]
    if code is ExitCode.OK and report.verdict is Severity.NOT_APPLICABLE:
        return f"vtdlud check: NOT APPLICABLE: {report.not_applicable}; exit 0"
    if code is ExitCode.OK:
        return "vtdlud check: PASS: the preserved state matches what the kernel should carry"
    what = "FAIL" if code is ExitCode.FAIL else "UNKNOWN (fails closed)"
    codes = ", ".join(sorted({f.code for f in blocking}))
    return f"vtdlud check: {what}: {len(blocking)} blocking finding(s) ({codes}); exit {int(code)}"
