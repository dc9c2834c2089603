"""Human output: virt-host-validate style ``check : RESULT (reason)`` lines and a unit table.

Colour only when writing to a terminal, ``NO_COLOR`` is unset and ``TERM`` is not ``dumb``.

A summary line comes first (verdict and counts), then the tiers, the units, the devices to
preserve and the findings; the per-device table (thousands of lines on an SR-IOV host) only on
request (``--devices``), and ``--brief`` stops after the summary and one line per finding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TextIO

from vtdlud.audit.catalog import Severity
from vtdlud.audit.report import Finding, Report, UnitReport
from vtdlud.model.snapshot import TierStatus

_COLOURS = {
    "PASS": "32",
    "NOTE": "36",
    "WARN": "33",
    "FAIL": "31;1",
    "UNKNOWN": "35",
    "NOT_APPLICABLE": "2",
    "NOT APPLICABLE": "2",
}


def use_colour(stream: TextIO) -> bool:
    """A terminal that takes escape sequences, and the user did not opt out (no-color.org)."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(word: str, colour: bool) -> str:
    code = _COLOURS.get(word)
    return f"\x1b[{code}m{word}\x1b[0m" if colour and code else word


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


def _yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _ctx(u: UnitReport) -> str:
    if u.context_tables is None:
        return "-"
    return f"{len(u.context_tables)} ({u.context_tables_source})"


def _preserved(u: UnitReport) -> str:
    p = u.preserved
    if p is None:
        return "-"
    restored = ", restored" if p.record.intel.restored else ""
    return (
        f"ref {p.record.hdr.ref_count}, {len(p.devices)} dev, {len(p.bitmap)} bits"
        f"{restored} ({p.located_by})"
    )


def _check_line(name: str, result: str, reason: str, colour: bool, width: int) -> str:
    return f"  {name.ljust(width)} : {paint(result, colour)} ({reason})"


def format_findings(findings: Iterable[Finding], colour: bool) -> list[str]:
    lines = []
    for f in findings:
        where = f.bdf or (f"{f.unit:#x}" if f.unit is not None else "host")
        lines.append(f"  {f.code} {paint(f.severity.value, colour)} {where}: {f.message}")
        lines.append(f"         hint: {f.hint}")
    return lines


def _plural(n: int, what: str) -> str:
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


def summary_line(report: Report) -> str:
    """One line: the verdict and what it covers (first in the human output)."""
    verdict = report.verdict
    if verdict is Severity.NOT_APPLICABLE:
        return f"Summary: verdict NOT_APPLICABLE: {report.not_applicable}"
    devices = sum(len(u.devices) for u in report.units)
    preserved = sum(1 for u in report.units if u.preserved is not None)
    by_sev: dict[str, int] = {}
    for f in report.findings:
        by_sev[f.severity.value] = by_sev.get(f.severity.value, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(by_sev.items()))
    parts = [
        _plural(len(report.units), "DMAR unit"),
        _plural(devices, "device"),
        f"{len(report.wanted):,} to preserve",
        f"{preserved} unit(s) with a preserved record",
        _plural(len(report.findings), "finding") + (f" ({counts})" if counts else ""),
    ]
    return f"Summary: verdict {verdict.value}; " + ", ".join(parts)


def format_status(
    report: Report,
    root_label: str,
    colour: bool,
    *,
    command: str = "status",
    devices: bool = False,
    brief: bool = False,
) -> str:
    """The human report of ``vtdlud status`` (and of ``check``, ``command="check"``)."""
    snap = report.snapshot
    out = [
        f"vtdlud {command}: root {root_label}, kernel {snap.kernel_release or 'unknown'}"
        + (f", boot {snap.boot_id}" if snap.boot_id else ""),
        summary_line(report),
    ]
    shown = [f for f in report.findings if f.severity is not Severity.PASS]
    if brief:
        for f in shown:
            where = f.bdf or (f"{f.unit:#x}" if f.unit is not None else "host")
            out.append(f"  {f.code} {paint(f.severity.value, colour)} {where}: {f.message}")
        out.append(f"Verdict: {paint(report.verdict.value, colour)}")
        return "\n".join(out) + "\n"
    out += ["", "Tiers of visibility"]
    width = max([len(f"tier {t.value}") for t in snap.tiers] + [len("Intel VT-d")])
    for tier, st in snap.tiers.items():
        result = "PASS" if st.status is TierStatus.AVAILABLE else "UNKNOWN"
        label = st.status.value if result == "UNKNOWN" else "available"
        out.append(
            _check_line(f"tier {tier.value}", result, f"{label}: {st.reason}", colour, width)
        )
    if report.not_applicable is not None:
        out.append(
            _check_line("Intel VT-d", "NOT APPLICABLE", report.not_applicable, colour, width)
        )
    out.append("")
    if report.units:
        out += ["DMAR units", *_table(_unit_rows(report)), ""]
        n = sum(len(u.devices) for u in report.units)
        if devices:
            out += ["Devices", *_table(_device_rows(report)), ""]
        elif n:
            out += [f"Devices: {n:,} behind the DMAR units (`--devices` lists them)", ""]
    else:
        out += ["DMAR units: none", ""]
    if report.wanted:
        prows = [["TO PRESERVE", "DRIVER", "WHY", "HELD BY"]]
        for w in report.wanted:
            d = snap.pci_devices.get(w.bdf)
            why = ",".join(
                x for x, on in (("policy", w.by_policy), ("vmm-held", bool(w.holders))) if on
            )
            held = "; ".join(
                f"{h.name}[{h.pid}] {' '.join(h.cmdline)[:60]}".rstrip() for h in w.holders
            )
            prows.append([w.bdf, (d.driver if d else None) or "-", why, held or "-"])
        out += ["Devices to preserve", *_table(prows), ""]
    if snap.kho is not None:
        from vtdlud.output.handover import handover_lines  # noqa: PLC0415 - FDT parsing, lazily

        out += handover_lines(snap)
    if shown:
        out += ["Findings", *format_findings(shown, colour), ""]
    out.append(f"Verdict: {paint(report.verdict.value, colour)}")
    return "\n".join(out) + "\n"


def _unit_rows(report: Report) -> list[list[str]]:
    head = ["UNIT", "ADDRESS", "VER", "MODE", "TE", "ROOT TABLE", "DEVICES", "CONTEXT TABLES"]
    rows = [[*head, "PRESERVED"]]
    rows += [
        [
            u.name,
            _hex(u.address),
            u.version or "-",
            u.mode.value,
            _yn(u.translation_enabled),
            _hex(u.root_table),
            str(len(u.devices)),
            _ctx(u),
            _preserved(u),
        ]
        for u in report.units
    ]
    return rows


def _device_rows(report: Report) -> list[list[str]]:
    pci = report.snapshot.pci_devices
    rows = [["DEVICE", "UNIT", "DRIVER", "GROUP", "VFIO CDEV"]]
    for u in report.units:
        for bdf in u.devices:
            d = pci.get(bdf)
            rows.append(
                [
                    bdf,
                    u.name,
                    (d.driver if d else None) or "-",
                    str(d.iommu_group) if d and d.iommu_group is not None else "-",
                    ",".join(d.vfio_devs) if d and d.vfio_devs else "-",
                ]
            )
    return rows
