"""The pages below a preserved device's context entry (issue #14 items 3 and 4).

The root and context tables are the bitmap's (VTD013).  Below them the series preserves, per
device, in scalable mode the PASID directory and every PASID table it points to (``intel``
``liveupdate.c``: ``pasid_lu_handle_pd`` over ``max_pasid >> PASID_PDE_SHIFT`` directory
entries) and, per domain, every page-table page (``iommupt`` preserve callbacks); the new kernel
``kho_restore_folio()``s them and BUG_ONs on one it does not get.  The test driver of
tests/guest (a second, independent reading of the series) preserves the same.

- VTD017 (FAIL): a PASID directory page, a PASID table or a page-table page the live tables use
  for a preserved device is not in KHO's preserved-memory map.  UNKNOWN when that map, the
  walk of the tables (kcore) or the page-table walk is not complete.
- (``intel.max_pasid`` against the entry's PDTS is :mod:`vtdlud.audit.recfields`'s, VTD024.)
- VTD024 (FAIL), legacy mode: a device record with a non-zero ``intel.pasid_table`` or
  ``max_pasid``: legacy mode has no PASID table (the series and the test driver leave both 0),
  so the new kernel would take pages that are none for one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vtdlud.audit.mirror import LIVE_TIERS, LiveView, Sink
from vtdlud.model.abi import IommuDeviceSerV1
from vtdlud.model.khomem import MapState, PreservedMemory
from vtdlud.model.live import ContextInfo
from vtdlud.model.pagetable import PageTableWalk, PtProblemKind
from vtdlud.model.tables import Mode

PAGE = 4096
PASID_DIR_ENTRY = 8
PDTS_SHIFT = 7  # get_pasid_dir_size(): 1 << (PDTS + 7) directory entries
SHOWN = 4  # addresses named in one message


def directory_pages(pasid_dir: int, pdts: int) -> list[int]:
    """The pages the PASID directory occupies."""
    size = (1 << (pdts + PDTS_SHIFT)) * PASID_DIR_ENTRY
    return list(range(pasid_dir & ~(PAGE - 1), pasid_dir + size, PAGE))


def _addresses(pages: Sequence[int]) -> str:
    shown = ", ".join(f"{p:#x}" for p in pages[:SHOWN])
    return shown + (f" and {len(pages) - SHOWN} more" if len(pages) > SHOWN else "")


def missing_pages(pm: PreservedMemory | None, pages: Iterable[int]) -> list[int] | None:
    """The pages not in the preserved-memory map, ascending; None when the map is not
    complete (not known)."""
    if pm is None or pm.state is not MapState.COMPLETE:
        return None
    return sorted({p for p in pages if not pm.contains(p)})


def pasid_findings(
    sink: Sink,
    *,
    at: str,
    unit: int,
    bdf: str,
    rec: IommuDeviceSerV1,
    mode: Mode,
    info: ContextInfo | None,
    live: LiveView,
    pm: PreservedMemory | None,
) -> None:
    """VTD024 (max_pasid, legacy PASID fields) and VTD017 (PASID pages) for one device."""
    intel = rec.intel
    if mode is Mode.LEGACY:
        if intel.pasid_table or intel.max_pasid:
            msg = f"{at}: intel.pasid_table {intel.pasid_table:#x}, max_pasid {intel.max_pasid} "
            msg += "on a legacy-mode unit, which has no PASID table: the next kernel would "
            msg += "take pages that are none for one"
            cmp = {"expected": "0", "actual": f"{intel.pasid_table:#x}"}
            sink.add("VTD024", msg, unit=unit, bdf=bdf, details=cmp)
        return
    if mode is not Mode.SCALABLE or info is None or info.pdts is None or info.pasid_dir is None:
        return
    key = (info.bus, info.devfn)
    if not live.exact:
        msg = f"{at}: whether its PASID directory and tables are KHO-preserved is not known "
        msg += f"(no kcore walk; {live.source})"
        sink.add("VTD017", msg, unit=unit, bdf=bdf, unknown=LIVE_TIERS)
        return
    pages = directory_pages(info.pasid_dir, info.pdts)
    tables = sorted(set(live.pasid_tables.get(key, {}).values()))
    missing = missing_pages(pm, [*pages, *tables])
    if missing is None:
        msg = f"{at}: whether its PASID directory and {len(tables)} PASID table(s) are "
        msg += "KHO-preserved is not known (no complete preserved-memory map)"
        sink.add("VTD017", msg, unit=unit, bdf=bdf, unknown=())
        return
    if missing:
        what = [("PASID directory page" if p in pages else "PASID table") for p in missing]
        kinds = ", ".join(sorted(set(what)))
        msg = f"{at}: {len(missing)} page(s) of its PASID structures ({kinds}) are not "
        msg += f"KHO-preserved: {_addresses(missing)}; the next kernel cannot restore them"
        sink.add("VTD017", msg, unit=unit, bdf=bdf, details={"actual": f"{missing[0]:#x}"})
    if key in live.incomplete:
        msg = f"{at}: the walk of its PASID directory stopped early: the PASID tables not "
        sink.add("VTD017", msg + "walked are not checked", unit=unit, bdf=bdf, unknown=())


def page_table_findings(
    sink: Sink,
    *,
    at: str,
    unit: int,
    bdf: str,
    walk: PageTableWalk | None,
    pm: PreservedMemory | None,
) -> None:
    """VTD017 (and VTD016/VTD051 for a broken walk) for the page table of one domain record."""
    if walk is None:
        msg = f"{at}: its page-table pages are not checked: the page table was not walked "
        msg += "(the budget of page-table pages read was spent on other domains)"
        sink.add("VTD017", msg, unit=unit, bdf=bdf, unknown=())
        return
    for p in walk.problems:
        if p.kind is PtProblemKind.OUTSIDE_RAM:
            msg = f"{at}: its page table has a pointer outside RAM: {p.message}"
            sink.add("VTD016", msg, unit=unit, bdf=bdf, details={"actual": f"{p.addr:#x}"})
        elif p.kind is PtProblemKind.UNREADABLE:
            sink.add("VTD051", f"{at}: page table: {p.message}", unit=unit, bdf=bdf, unknown=())
        elif p.kind is PtProblemKind.LIMIT:
            msg = f"{at}: page table: {p.message}; those pages are not checked"
            sink.add("VTD017", msg, unit=unit, bdf=bdf, unknown=())
    missing = missing_pages(pm, walk.pages)
    if missing is None:
        msg = f"{at}: whether its {len(walk.pages)} page-table page(s) are KHO-preserved is not "
        msg += "known (no complete preserved-memory map)"
        sink.add("VTD017", msg, unit=unit, bdf=bdf, unknown=())
    elif missing:
        msg = f"{at}: {len(missing)} of its {len(walk.pages)} page-table pages (top table "
        msg += f"{walk.top:#x}, {walk.levels} levels) are not KHO-preserved: "
        msg += f"{_addresses(missing)}; the next kernel cannot restore the domain"
        sink.add("VTD017", msg, unit=unit, bdf=bdf, details={"actual": f"{missing[0]:#x}"})
