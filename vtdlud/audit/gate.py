"""The pre-kexec gate's decision: the exit code of ``vtdlud check`` (DESIGN.md §4).

1 when any finding is at or above the policy's fail severity; else 3 when a required tier or
input is missing, the ABI is unknown or an input is unreadable (the gate fails closed); else 0 —
also on a host without Intel VT-d (verdict NOT_APPLICABLE): there is no VT-d state for a live
update to carry, so the gate does not block it (a fleet-wide pre-kexec hook passes on AMD hosts
and VMs; the verdict in the JSON tells it apart from PASS).
"""

from __future__ import annotations

from vtdlud.audit.catalog import Severity
from vtdlud.audit.report import Report
from vtdlud.errors import ExitCode


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
