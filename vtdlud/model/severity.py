"""Severities of findings and verdicts (DESIGN.md §3)."""

from __future__ import annotations

from enum import Enum


class Severity(Enum):
    """PASS < NOTE < WARN < FAIL; UNKNOWN stands apart (inputs not visible).

    NOT_APPLICABLE is a verdict only, never a finding's severity: the host has no Intel VT-d
    (no DMAR unit), so there is nothing for vtdlud to audit (DESIGN.md §3)."""

    PASS = "PASS"
    NOTE = "NOTE"
    WARN = "WARN"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"
    NOT_APPLICABLE = "NOT_APPLICABLE"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    Severity.PASS: 0,
    Severity.NOTE: 1,
    Severity.WARN: 2,
    Severity.FAIL: 3,
    Severity.UNKNOWN: -1,
    Severity.NOT_APPLICABLE: -2,
}
