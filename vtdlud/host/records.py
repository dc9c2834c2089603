"""Find the kernel's IOMMU live-update records in physical memory (through kcore).

After a live-update kexec the incoming LUO FLB names ``iommu_flb_ser`` (``located_by="flb"``).
Before the kexec the FLB list does not exist yet (LUO writes it at kexec): the outgoing records
are found by signature among KHO's preserved order-0 pages (``located_by="signature"``,
DESIGN.md §2), and the same map says which pages are preserved (VTD013).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from vtdlud.frozen import frozen
from vtdlud.host.kcore import PhysMem
from vtdlud.host.kho import KhoState
from vtdlud.model.abi import AbiVariant
from vtdlud.model.khomem import MapState, PreservedMemory, walk_preserved_memory
from vtdlud.model.pagetable import PageTableLimits, PageTableWalk, walk_page_table
from vtdlud.model.records import PreservedState, walk_records
from vtdlud.model.signature import SignatureScan, find_hw_records
from vtdlud.parse.kho import KhoRoot
from vtdlud.parse.luo import IommuFlb

MAX_PAGE_TABLE_PAGES = 1 << 17  # 512 MiB of page tables read, all domains together


@frozen
class PreservedRecords:
    """Where the records were looked for and what was found (all None: not looked for).

    ``state`` is what status and the gate judge: the outgoing records (found by signature) when
    this kernel has preserved anything for the next update, else the incoming ones (read
    through the LUO FLB after a live update).  ``incoming`` is always the latter, for the
    post-kexec verification."""

    state: PreservedState | None = None
    memory_map: PreservedMemory | None = None  # KHO's outgoing preserved pages
    scan: SignatureScan | None = None
    notes: tuple[str, ...] = field(default=())
    incoming: PreservedState | None = None
    # The page tables of the outgoing live domain records, by record address (the audit checks
    # every page is KHO-preserved: VTD017)
    page_tables: Mapping[int, PageTableWalk] = field(default_factory=dict)


def find_preserved(mem: PhysMem, kho: KhoState, units: set[int]) -> PreservedRecords:
    incoming_state: PreservedState | None = None
    notes: list[str] = []
    side = kho.incoming
    luo = side.luo_state if side is not None else None
    if (
        luo is not None
        and isinstance(luo.iommu, IommuFlb)
        and isinstance(luo.iommu.variant, AbiVariant)
    ):
        incoming_state = walk_records(mem.read, luo.iommu.flb_ser_phys, luo.iommu.variant)
        notes.append("incoming records located through the LUO FLB")
    outgoing = kho.outgoing
    if outgoing is None or not isinstance(outgoing.root, KhoRoot):
        notes.append("no outgoing KHO tree: nothing is being preserved for the next update")
        return PreservedRecords(state=incoming_state, notes=tuple(notes), incoming=incoming_state)
    pm = walk_preserved_memory(
        mem.read, outgoing.root.compatible, outgoing.root.preserved_memory_map
    )
    if pm.state is not MapState.COMPLETE:
        notes.append(pm.note or f"preserved-memory map {pm.state.value}")
        return PreservedRecords(
            state=incoming_state, memory_map=pm, notes=tuple(notes), incoming=incoming_state
        )
    scan = find_hw_records(
        mem.read, pm.order0_pages(), units, probe=mem.peek, is_preserved=pm.contains
    )
    state = scan.state if scan.state is not None else incoming_state
    return PreservedRecords(
        state=state,
        memory_map=pm,
        scan=scan,
        notes=(*notes, *scan.notes),
        incoming=incoming_state,
        page_tables=_page_tables(mem, scan.state),
    )


def _page_tables(mem: PhysMem, state: PreservedState | None) -> dict[int, PageTableWalk]:
    """Walk the page table of every live domain record of the outgoing records, bounded per
    domain (:class:`PageTableLimits`) and all together (:data:`MAX_PAGE_TABLE_PAGES`: a domain
    past it is not walked, and its pages are UNKNOWN)."""
    out: dict[int, PageTableWalk] = {}
    budget = MAX_PAGE_TABLE_PAGES
    for slot in state.live_domains() if state is not None else ():
        rec = slot.record
        if not rec.top_table_phys or budget <= 0:
            continue
        limits = PageTableLimits(max_pages=min(budget, PageTableLimits().max_pages))
        walk = walk_page_table(mem.read, rec.top_table_phys, rec.top_level, limits)
        out[slot.phys] = walk
        budget -= len(walk.pages)
    return out
