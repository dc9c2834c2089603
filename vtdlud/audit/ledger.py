"""What a passing gate records in the ledger (:mod:`vtdlud.model.ledger`), from its report."""

from __future__ import annotations

import time
from dataclasses import replace

from vtdlud import __version__
from vtdlud.audit.report import Report
from vtdlud.model.ledger import Ledger, LedgerRecords
from vtdlud.model.luo import LuoBlob
from vtdlud.model.relocate import record_addresses
from vtdlud.model.snapshot import Snapshot


def liveupdate_count(snapshot: Snapshot) -> int | None:
    """The LUO live-update number this kernel reports (outgoing blob first, else incoming)."""
    kho = snapshot.kho
    for side in (kho.outgoing, kho.incoming) if kho is not None else ():
        if (
            side is not None
            and isinstance(side.luo, LuoBlob)
            and side.luo.liveupdate_num is not None
        ):
            return side.luo.liveupdate_num
    return None


def ledger_from_report(report: Report) -> Ledger:
    """What the passing gate promises: the preserved units as the audit saw them, and where
    their records are when the gate found this kernel's outgoing records (by signature)."""
    snap = report.snapshot
    units = [u.ledger for u in report.units if u.ledger is not None]
    state = snap.preserved.state if snap.preserved is not None else None
    found = (
        record_addresses(state, (u.address for u in units))
        if state is not None and state.located_by == "signature"
        else None
    )
    records = None
    if found is not None:
        h = found.heads
        records = LedgerRecords(found.variant, found.flb_phys, h.hw, h.domain, h.device)
        at = {a.unit: a for a in found.units}
        units = [
            replace(u, hw_record=at[u.address].hw_record, record_pages=at[u.address].pages)
            if u.address in at
            else u
            for u in units
        ]
    return Ledger(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        vtdlud_version=__version__,
        kernel_release=snap.kernel_release,
        boot_id=snap.boot_id,
        liveupdate_count=liveupdate_count(snap),
        units=tuple(units),
        records=records,
    )
