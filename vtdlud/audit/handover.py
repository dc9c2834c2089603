"""Findings about the KHO/LUO hand-over itself: formats this version does not know (VTD040)
and corrupt structures behind physical addresses (VTD041).

Not findings: a cut ``kho/out/fdt`` (Linux 7.2 sizes the debugfs copy before LUO adds its node;
read whole through kcore, or the kcore tier's VTD050 stands, or host/kho reported why not as an
input problem), and an incoming LUO blob the running kernel freed at boot (:class:`StaleLuo`:
its reason goes to the checks that needed the records, see vtdlud.host.records)."""

from __future__ import annotations

from vtdlud.audit.report import Finding, finding
from vtdlud.host.kho import KhoSide
from vtdlud.model.abi import UnknownAbi
from vtdlud.model.snapshot import Snapshot
from vtdlud.parse.kho import UnknownKho
from vtdlud.parse.luo import IommuFlb, LuoCorrupt, UnknownLuo


def _side_findings(side: KhoSide) -> list[Finding]:
    where = f"kho/{side.side}"
    out = []
    if isinstance(side.root, UnknownKho):
        out.append(
            finding(
                "VTD040",
                f"{where}/fdt: KHO compatible {side.root.compatible!r}: {side.root.reason}",
            )
        )
    if isinstance(side.luo, UnknownLuo):
        out.append(
            finding(
                "VTD040",
                f"{where}/sub_fdts/LUO: LUO format {side.luo.compatible!r}: {side.luo.reason}",
            )
        )
    state = side.luo_state
    if state is None:
        return out
    for part, value in (
        ("sessions", state.sessions),
        ("FLBs", state.flbs),
        ("IOMMU FLB", state.iommu),
    ):
        if isinstance(value, UnknownLuo):
            out.append(
                finding(
                    "VTD040", f"{where}: LUO {part} in format {value.compatible!r}: {value.reason}"
                )
            )
        elif isinstance(value, LuoCorrupt):
            code = "VTD051" if value.unreadable else "VTD041"
            out.append(finding(code, f"{where}: LUO {part}: {value.what}: {value.reason}"))
    iommu = state.iommu
    if isinstance(iommu, IommuFlb) and isinstance(iommu.variant, UnknownAbi):
        version = "" if iommu.version is None else f" version {iommu.version}"
        out.append(
            finding(
                "VTD040",
                f"{where}: IOMMU FLB {iommu.compatible!r}{version}: {iommu.variant.reason}",
            )
        )
    return out


def handover_findings(snapshot: Snapshot) -> list[Finding]:
    kho = snapshot.kho
    if kho is None:
        return []
    out = []
    for side in (kho.outgoing, kho.incoming):
        if side is not None:
            out += _side_findings(side)
    return out
