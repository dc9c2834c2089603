"""The kernel's IOMMU live-update records as one look at the host found them (``host/records.py``
looks for them; ``Snapshot.preserved``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from vtdlud.frozen import frozen
from vtdlud.model.khomem import PreservedMemory
from vtdlud.model.pagetable import PageTableWalk
from vtdlud.model.records import PreservedState
from vtdlud.model.signature import SignatureScan


@frozen
class PreservedRecords:
    """Where the records were looked for and what was found (all None: not looked for).

    ``state`` is what status and the gate judge: the outgoing records (found by signature) when
    this kernel has preserved anything for the next update, else the incoming ones (read
    through the LUO FLB, or at the ledger's addresses, after a live update).  ``incoming`` is
    always the latter, for the post-kexec verification; ``incoming_reason`` says why it is None
    on a live-update boot."""

    state: PreservedState | None = None
    memory_map: PreservedMemory | None = None  # KHO's outgoing preserved pages
    scan: SignatureScan | None = None
    notes: tuple[str, ...] = field(default=())
    incoming: PreservedState | None = None
    incoming_reason: str | None = None
    # The page tables of the outgoing live domain records, by record address (the audit checks
    # every page is KHO-preserved: VTD017)
    page_tables: Mapping[int, PageTableWalk] = field(default_factory=dict)
