"""After a live update, the IOMMU records at the physical addresses the gate recorded.

Why [C: Linux 7.2.13 kernel/liveupdate/luo_core.c, luo_session.c, kho_block.c]: the incoming
LUO chain (``luo_ser`` -> FLB list -> ``iommu_flb_ser``) is not dependable by the time userspace
runs.  ``luo_early_startup()`` reads the incoming ``luo_ser`` and frees it (``kho_restore_free``)
early in boot, and the session blocks are freed once deserialized, so ``kho/in/sub_fdts/LUO``
shows reused memory.  But KHO preserves *physical pages*: the record arrays are where they were
before the kexec, and the pages the IOMMU FLB's ``retrieve`` kept stay in use by the new kernel.
So the pre-kexec gate records, in the ledger, where it found the records (:class:`RecordAddresses`:
the chains' first pages, the ``iommu_flb_ser`` and, per unit, its hw record slot and the array
pages it needs), and after the kexec :func:`locate_at` walks the chains again from those
addresses through kcore (``located_by="ledger"``).

Nothing found there is taken on trust: every unit the ledger names must have, at the ledger's
slot, a live hw record with the signature (``token`` = the unit's register base, ``type`` =
IOMMU_INTEL, ``intel.phys_addr`` = ``token``; DESIGN.md §2), and the pages the walk reaches must
hold the ledger's.  Otherwise the result is the reason, which the audit reports as UNKNOWN: the
memory may have been reused, or the new kernel did not keep the records.
:func:`signature_problem` applies the same proof to records reached through a LUO blob the
kernel had already freed (:mod:`vtdlud.host.records`).

Tested on the kernel model (vtdlud.sim) only: no real capture of a live update with IOMMU
records exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from vtdlud.frozen import frozen
from vtdlud.model.abi import (
    PAGE_SIZE,
    V1,
    V2,
    V2_ASSUMED_INTEL,
    AbiVariant,
    IommuHwSerV1,
    IommuTypeSer,
)
from vtdlud.model.records import ChainHeads, PreservedState, ReadPhys, walk_from_heads

LOCATED_BY = "ledger"
PAGE_MASK = ~(PAGE_SIZE - 1)
KNOWN_VARIANTS = {v.name: v for v in (V1, V2, V2_ASSUMED_INTEL)}


@frozen
class UnitRecordAddress:
    """Where one unit's records were: its hw record slot and every array page holding its hw
    record, its device records and the domain records they point at."""

    unit: int  # register base
    hw_record: int
    pages: tuple[int, ...]


@frozen
class RecordAddresses:
    """Where the gate found the records (written to the ledger)."""

    variant: str  # AbiVariant.name of the layout they were decoded with
    flb_phys: int | None  # iommu_flb_ser, when the gate found it
    heads: ChainHeads
    units: tuple[UnitRecordAddress, ...]


def record_addresses(state: PreservedState, units: Iterable[int]) -> RecordAddresses | None:
    """The addresses of ``state``'s records of ``units`` (None: nothing to record: the ABI is
    unknown, the chains' heads are not known, or no unit has a record)."""
    if not isinstance(state.variant, AbiVariant) or state.heads is None:
        return None
    out = []
    for unit in sorted(set(units)):
        hw = state.find_hw(unit)
        if not hw:
            continue
        slot = hw[0]
        pages = {slot.phys & PAGE_MASK}
        for dev in state.live_devices():
            if dev.record.domain_iommu_ser.iommu_phys != slot.phys:
                continue
            pages.add(dev.phys & PAGE_MASK)
            domain = dev.record.domain_iommu_ser.domain_phys
            if state.domain_at(domain) is not None:
                pages.add(domain & PAGE_MASK)
        out.append(UnitRecordAddress(unit, slot.phys, tuple(sorted(pages))))
    if not out:
        return None
    return RecordAddresses(state.variant.name, state.flb_phys, state.heads, tuple(out))


def signature_problem(state: PreservedState, units: Iterable[int]) -> str | None:
    """Why the records of ``state`` are not to be trusted (None: they are): an unknown ABI, a
    broken chain, a live hw record without the signature of one of ``units``, or no hw record."""
    if state.unknown is not None:
        return f"their ABI is unknown ({state.unknown.reason})"
    if state.problems:
        p = state.problems[0]
        return f"the {p.chain.value} chain is broken at {p.page_phys:#x}: {p.reason}"
    known = set(units)
    live = state.live_hw()
    if not live:
        return "the hw chain holds no live record"
    for hw in live:
        why = _unsigned(hw.record, known)
        if why is not None:
            return f"the hw record at {hw.phys:#x} {why}"
    return None


def _unsigned(rec: object, units: set[int]) -> str | None:
    if not isinstance(rec, IommuHwSerV1):
        return "has no Intel part"
    if rec.token not in units:
        return f"has token {rec.token:#x}, no DMAR unit's register base"
    if rec.type != IommuTypeSer.IOMMU_INTEL:
        return f"has type {rec.type}, not IOMMU_INTEL"
    if rec.intel.phys_addr != rec.token:
        return f"has intel.phys_addr {rec.intel.phys_addr:#x} != token {rec.token:#x}"
    return None


def locate_at(
    read_phys: ReadPhys, addresses: RecordAddresses, units: Iterable[int]
) -> PreservedState | str:
    """Walk the chains from the ledger's heads with the ledger's layout and prove, unit by unit,
    that the records are the ones the gate saw (module doc); the state, or why not."""
    variant = KNOWN_VARIANTS.get(addresses.variant)
    if variant is None:
        return f"the ledger names record layout {addresses.variant!r}, which this version lacks"
    if variant.assumed:
        variant = V2  # walk_from_heads refines v2 to the assumed layout from the hw type
    state = walk_from_heads(
        read_phys,
        addresses.heads,
        variant,
        located_by=LOCATED_BY,
        flb_phys=addresses.flb_phys,
    )
    at = f"at the ledger's addresses (hw chain from {_heads(addresses.heads.hw)})"
    if state.unknown is not None:
        return f"the records {at} do not decode: {state.unknown.reason}"
    if state.problems:
        p = state.problems[0]
        return f"the {p.chain.value} chain {at} is broken at {p.page_phys:#x}: {p.reason}"
    live = set(units)
    walked = {page for pages in state.pages.values() for page in pages}
    for u in addresses.units:
        slot = state.hw_at(u.hw_record)
        where = f"unit {u.unit:#x}: the ledger's hw record {u.hw_record:#x}"
        if slot is None:
            return f"{where} is not a slot of the hw chain walked {at}"
        if slot.deleted:
            return f"{where} is marked DELETED"
        if u.unit not in live:
            return f"{where}: the unit is not in this kernel"
        why = _unsigned(slot.record, {u.unit})
        if why is not None:
            return f"{where} {why} (the memory was reused, or the records were not kept)"
        missing = sorted(set(u.pages) - walked)
        if missing:
            pages = ", ".join(f"{p:#x}" for p in missing)
            return f"unit {u.unit:#x}: the ledger's record pages {pages} are not in the chains"
    return state


def _heads(pages: tuple[int, ...]) -> str:
    return ", ".join(f"{p:#x}" for p in pages) or "nowhere"


__all__ = [
    "LOCATED_BY",
    "RecordAddresses",
    "UnitRecordAddress",
    "locate_at",
    "record_addresses",
    "signature_problem",
]
