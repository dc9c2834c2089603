"""Find the kernel's IOMMU live-update records in physical memory (through kcore).

Before the kexec the FLB list does not exist yet (LUO writes it at kexec): the outgoing records
are found by signature among KHO's preserved order-0 pages (``located_by="signature"``,
DESIGN.md §2), and the same map says which pages are preserved (VTD013).

After a live-update kexec, the incoming LUO FLB names ``iommu_flb_ser`` (``located_by="flb"``)
while the incoming LUO state is intact.  On Linux 7.2 it is not by the time userspace runs:
the kernel frees the incoming ``luo_ser`` early in boot (:mod:`vtdlud.parse.luo`), so
``kho/in/sub_fdts/LUO`` is read as freed memory, and records reached through it count only
when every live hw record carries the signature of a DMAR unit
(:func:`~vtdlud.model.relocate.signature_problem`).  Otherwise, with the ledger's addresses
(``record_hints``: what the gate recorded), the records are walked again at those physical
addresses, which KHO kept (``located_by="ledger"``, :mod:`vtdlud.model.relocate`).  When
neither works the reason is kept (``incoming_reason``) for the checks that needed them.
"""

from __future__ import annotations

from dataclasses import replace

from vtdlud.host.kcore import PhysMem
from vtdlud.model.abi import AbiVariant
from vtdlud.model.kho import CutKhoRoot, KhoRoot, KhoSide, KhoState
from vtdlud.model.khomem import MapState, walk_preserved_memory
from vtdlud.model.luo import IommuFlb, StaleLuo
from vtdlud.model.pagetable import (
    PageTableLimits,
    PageTableWalk,
    PtProblem,
    PtProblemKind,
    walk_page_table,
)
from vtdlud.model.preserved import PreservedRecords
from vtdlud.model.records import PreservedState, walk_records
from vtdlud.model.relocate import RecordAddresses, locate_at, signature_problem
from vtdlud.model.signature import find_hw_records

MAX_PAGE_TABLE_PAGES = 1 << 17  # 512 MiB of page tables read, all domains together


def _stale_reasons(side: KhoSide) -> list[str]:
    parts: list[object] = [side.luo]
    if side.luo_state is not None:
        parts += [side.luo_state.sessions, side.luo_state.flbs, side.luo_state.iommu]
    return [f"kho/in/sub_fdts/LUO: {p.reason}" for p in parts if isinstance(p, StaleLuo)]


def find_incoming(
    mem: PhysMem, side: KhoSide | None, units: set[int], hints: RecordAddresses | None
) -> tuple[PreservedState | None, str | None, list[str]]:
    """The incoming records, the reason there are none, and notes (module doc)."""
    if side is None:
        return None, None, []
    notes: list[str] = []
    reasons: list[str] = []
    luo = side.luo_state
    if (
        luo is not None
        and isinstance(luo.iommu, IommuFlb)
        and isinstance(luo.iommu.variant, AbiVariant)
    ):
        state = walk_records(mem.read, luo.iommu.flb_ser_phys, luo.iommu.variant)
        why = signature_problem(state, units) if side.luo_freed else None
        if why is None:
            notes.append("incoming records located through the LUO FLB")
            if side.luo_freed:
                notes.append(
                    "the kernel had freed the incoming LUO state, but the records it leads to "
                    "carry the signature of this host's DMAR units"
                )
            return state, None, notes
        reasons.append(
            f"the IOMMU FLB named by the freed incoming LUO state leads to no valid records: {why}"
        )
    elif side.luo_freed:
        reasons += _stale_reasons(side) or [
            "kho/in/sub_fdts/LUO: the kernel freed the incoming LUO state at boot and what it "
            "reads as now names no IOMMU FLB (not proof that none was handed over)"
        ]
    if hints is None:
        if side.luo_freed:
            reasons.append("no ledger addresses to look for the records at (no gate ledger)")
        return None, "; ".join(reasons) or None, notes
    located = locate_at(mem.read, hints, units)
    if isinstance(located, PreservedState):
        notes += reasons
        notes.append("incoming records located at the physical addresses the gate's ledger holds")
        return located, None, notes
    reasons.append(f"ledger addresses: {located}")
    return None, "; ".join(reasons), notes


def find_preserved(
    mem: PhysMem,
    kho: KhoState,
    units: set[int],
    hints: RecordAddresses | None = None,
    *,
    bundle: bool = False,
) -> PreservedRecords:
    """The records (module doc).  ``bundle``: the memory is a ``collect --memory`` bundle's,
    which holds only the pages the collecting vtdlud read."""
    incoming_state, incoming_reason, notes = find_incoming(mem, kho.incoming, units, hints)
    notes += kho.notes
    if incoming_reason is not None:
        notes.append(incoming_reason)
    outgoing = kho.outgoing
    base = PreservedRecords(incoming=incoming_state, incoming_reason=incoming_reason)
    if outgoing is None or not isinstance(outgoing.root, KhoRoot):
        if outgoing is None or (outgoing.root is None and kho.incoming is None):
            notes.append("no outgoing KHO tree: nothing is being preserved for the next update")
        elif isinstance(outgoing.root, CutKhoRoot):
            notes.append(
                "the outgoing root FDT could not be read whole (kho/out/fdt is cut and its page "
                "was not found): without its preserved-memory map the records cannot be looked "
                "for by signature"
            )
        return replace(base, state=incoming_state, notes=tuple(notes))
    root = outgoing.root
    pm = outgoing.memory_map
    if pm is None or pm.map_phys != root.preserved_memory_map:
        pm = walk_preserved_memory(mem.read, root.compatible, root.preserved_memory_map)
    if pm.state is not MapState.COMPLETE:
        notes.append(pm.note or f"preserved-memory map {pm.state.value}")
        return replace(base, state=incoming_state, memory_map=pm, notes=tuple(notes))
    scan = find_hw_records(
        mem.read, pm.order0_pages(), units, probe=mem.peek, is_preserved=pm.contains
    )
    state = scan.state if scan.state is not None else incoming_state
    return replace(
        base,
        state=state,
        memory_map=pm,
        scan=scan,
        notes=(*notes, *scan.notes),
        page_tables=_page_tables(mem, scan.state, bundle=bundle),
    )


def _page_tables(
    mem: PhysMem, state: PreservedState | None, *, bundle: bool
) -> dict[int, PageTableWalk]:
    """Walk the page table of every live domain record of the outgoing records, bounded per
    domain (:class:`PageTableLimits`) and all together (:data:`MAX_PAGE_TABLE_PAGES`: a domain
    past it is not walked, and its pages are UNKNOWN).

    In a bundle a page the collecting vtdlud did not read is absent, not outside RAM (bundles
    made before page tables were walked hold none of them): there it is unreadable, UNKNOWN."""
    out: dict[int, PageTableWalk] = {}
    budget = MAX_PAGE_TABLE_PAGES
    for slot in state.live_domains() if state is not None else ():
        rec = slot.record
        if not rec.top_table_phys or budget <= 0:
            continue
        limits = PageTableLimits(max_pages=min(budget, PageTableLimits().max_pages))
        walk = walk_page_table(mem.read, rec.top_table_phys, rec.top_level, limits)
        if bundle and any(p.kind is PtProblemKind.OUTSIDE_RAM for p in walk.problems):
            walk = replace(walk, problems=tuple(_not_collected(p) for p in walk.problems))
        out[slot.phys] = walk
        budget -= len(walk.pages)
    return out


def _not_collected(p: PtProblem) -> PtProblem:
    if p.kind is not PtProblemKind.OUTSIDE_RAM:
        return p
    why = f"{p.message} (not in the bundle's memory: collected without the page tables?)"
    return PtProblem(PtProblemKind.UNREADABLE, p.addr, why)
