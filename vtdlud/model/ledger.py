"""The ledger: what the gate promised would survive the kexec (DESIGN.md §3).

Written when ``vtdlud check`` passes (:func:`vtdlud.audit.ledger.ledger_from_report` makes it
from the report, :mod:`vtdlud.service.ledger` stores it), read back by :mod:`vtdlud.host.ledger`
(in the JSON of :mod:`vtdlud.parse.ledger`) and compared with the new kernel after the kexec by
:mod:`vtdlud.audit.postkexec`: per unit the register base, the root table, the bitmap bits and the
preserved devices with their DIDs, plus the kernel release, boot id and live-update count.

Where the records were (when the gate found them by signature): ``records`` holds the layout
they were decoded with, the ``iommu_flb_ser`` address and the first page of each chain, and each
unit its ``hw_record`` slot and ``record_pages`` (the array pages holding its hw record, its
device records and their domain records).  After the kexec, ``vtdlud check --post-kexec`` looks
for the incoming records at these physical addresses (:mod:`vtdlud.model.relocate`): on Linux
7.2 the incoming LUO chain is gone by the time userspace runs.  These members are optional: a
ledger without them (an older vtdlud's) still loads, and then only the incoming LUO chain can
locate the records.
"""

from __future__ import annotations

from vtdlud.frozen import frozen
from vtdlud.model.records import ChainHeads
from vtdlud.model.relocate import RecordAddresses, UnitRecordAddress

LEDGER_FORMAT = 1


@frozen
class LedgerDevice:
    bdf: str
    did: int
    pasid_table: int | None = None  # scalable mode: the PASID directory


@frozen
class LedgerUnit:
    address: int
    root_table: int
    bits: tuple[int, ...]
    devices: tuple[LedgerDevice, ...]
    hw_record: int | None = None  # physical address of its iommu_hw_ser slot
    record_pages: tuple[int, ...] = ()  # the array pages its records are in


@frozen
class LedgerRecords:
    """Where the gate found the records, beyond each unit's own addresses."""

    variant: str  # the ABI layout's name (vtdlud.model.abi)
    flb: int | None  # iommu_flb_ser
    hw: tuple[int, ...]  # first page of each chain walked
    domain: tuple[int, ...]
    device: tuple[int, ...]


@frozen
class Ledger:
    created_at: str
    vtdlud_version: str
    kernel_release: str | None
    boot_id: str | None
    liveupdate_count: int | None
    units: tuple[LedgerUnit, ...]
    consumed_by_boot_id: str | None = None  # set by the first evaluation after the kexec
    records: LedgerRecords | None = None

    @property
    def consumed(self) -> bool:
        return self.consumed_by_boot_id is not None

    def record_addresses(self) -> RecordAddresses | None:
        """Where to look for the records after the kexec (None: the ledger does not say)."""
        r = self.records
        units = tuple(
            UnitRecordAddress(u.address, u.hw_record, u.record_pages)
            for u in self.units
            if u.hw_record is not None
        )
        if r is None or not units:
            return None
        return RecordAddresses(r.variant, r.flb, ChainHeads(r.hw, r.domain, r.device), units)


@frozen
class LedgerInput:
    """The ledger as found in the state directory (``error``: it exists but cannot be used)."""

    path: str
    ledger: Ledger | None
    error: str | None = None
