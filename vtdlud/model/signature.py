"""Find the outgoing IOMMU records before kexec, by their signature among KHO-preserved pages.

Before kexec the LUO FLB list (which names ``iommu_flb_ser``) is not written yet, but every
record page is already a KHO-preserved order-0 page: the FLB and the first page of each array
come from ``kho_alloc_preserve()`` (a zeroed, preserved ``folio_alloc()`` of order
``get_order(size)`` = 0 [C: kernel/liveupdate/kexec_handover.c @019fc3687237], reference §1.4).
So, for each preserved order-0 page (:meth:`PreservedMemory.order0_pages`), this reads only the
first :data:`PROBE_SIZE` bytes and keeps the page when they look like

* an ``iommu_hw_ser`` array page: ``next_array_phys`` 0 or page aligned, ``1 <= nr_objects <=
  36``, and the first record has ``token`` in the DMAR register bases, ``type == IOMMU_INTEL``
  and ``intel.phys_addr == token`` (DESIGN.md §2).  The ``intel`` union exists only in the v1
  record layout (shared by the assumed v2 + Intel variant), so that is the layout used;
* an ``iommu_device_ser`` array page whose first record's ``iommu_phys`` falls on a hw slot
  boundary (``page + 16 + k * 112``): kept until the hw slots are known, then checked;
* an ``iommu_flb_ser``: three distinct non-zero page-aligned words (v1), or ``1`` and then three
  (v2).

The probes are made a page at a time and tested :data:`PROBE_BATCH` at a time: byte columns of
the batch, translated to 0/1 flags, pick the probes whose first word is 1 or page aligned and
whose second is not zero (true of every page kept above), and only those are decoded.

Then it reads the candidate pages whole: hw pages whose records carry the signature; the FLB
whose hw array pointer is one of them (its 3- or 4-word shape gives the FLB layout, and the
chains are walked from it, :func:`~vtdlud.model.records.walk_records`); without a single such
FLB, device pages whose records point at found hw slots, domain pages that device records
point into, and the chains walked from the pages no other found page links to.  The result
says ``located_by="signature"`` and lists what the scan read.

Byte offsets inside a page used by the probe (v1 layouts, reference §1.3): array header
``next``@0, ``nr_objects``@8; first hw record @16: ``hdr``@16, ``token``@24, ``type``@32,
``intel.restored``+padding@40, ``intel.phys_addr``@48; first device record @16:
``domain_iommu_ser.domain_phys``@40, ``.iommu_phys``@48.

Tested on records built with the ABI mirror among decoy pages in a fake memory and on the
simulator's kernel model: no real capture of preserved records exists.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress, islice, repeat

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.model.abi import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_SER_FLAG_DELETED,
    PAGE_SIZE,
    V1,
    V2,
    IommuDeviceSerV1,
    IommuDomainSer,
    IommuHwSerV1,
    IommuTypeSer,
    capacity_of,
)
from vtdlud.model.records import (
    Chain,
    ChainHeads,
    ChainProblem,
    PreservedState,
    R,
    ReadPhys,
    SlotRecord,
    read_array_page,
    walk_from_heads,
    walk_records,
)

LOCATED_BY = "signature"
PROBE_SIZE = 56  # array header + the first record up to intel.phys_addr / iommu_phys
_PROBE = struct.Struct("<7Q")
PAGE_MASK = ~(PAGE_SIZE - 1)
HW_SIZE = IommuHwSerV1.sizeof()  # 112
DOMAIN_SIZE = IommuDomainSer.sizeof()  # 37
HW_CAPACITY = capacity_of(IommuHwSerV1)  # 36
DEVICE_CAPACITY = capacity_of(IommuDeviceSerV1)  # 72
DOMAIN_CAPACITY = capacity_of(IommuDomainSer)  # 110
INTEL = int(IommuTypeSer.IOMMU_INTEL)
DELETED_IN_HDR_WORD = IOMMU_SER_FLAG_DELETED << 32  # hdr = u32 ref_count | u32 flags << 32


@frozen
class ScanLimits:
    max_candidates: int = 16384  # pages kept after the probe (all kinds)
    max_full_reads: int = 4096  # whole pages read to confirm candidates


@frozen
class SignatureScan:
    """What the scan found; ``state`` is None when no hw record carries the signature."""

    state: PreservedState | None
    flb_phys: int | None  # iommu_flb_ser found through its hw array pointer
    flb_layout: str | None  # "v1" (3 words) or "v2" (version + 3 words)
    hw_pages: tuple[int, ...]  # pages holding records with the signature
    orphan_hw_pages: tuple[int, ...]  # such pages outside the walked hw chain
    not_preserved: tuple[int, ...]  # chain pages (or the FLB) the preserved map lacks
    pages_scanned: int
    bytes_probed: int
    unreadable: int  # pages whose probe failed
    full_reads: int
    notes: tuple[str, ...] = ()
    located_by: str = LOCATED_BY


def _slot_offset(addr: int, size: int, capacity: int) -> bool:
    off = (addr & (PAGE_SIZE - 1)) - IOMMU_ARRAY_HDR_SER_SIZE
    return addr != 0 and off >= 0 and off % size == 0 and off // size < capacity


def _aligned_distinct(*words: int) -> bool:
    return all(w and not w & (PAGE_SIZE - 1) for w in words) and len(set(words)) == len(words)


def _has_signature(rec: IommuHwSerV1, units: frozenset[int]) -> bool:
    return rec.token in units and rec.type == INTEL and rec.intel.phys_addr == rec.token


@dataclass
class _Candidates:
    """The pages whose headers look like each kind of record, as the scan finds them."""

    hw: list[int]
    maybe_hw: list[int]  # sane header, first record DELETED without the signature
    device: list[tuple[int, int]]  # (page, first record's iommu_phys)
    flb: list[tuple[int, str, int, int, int]]  # (page, layout, hw, domain, device)
    scanned: int = 0
    unreadable: int = 0
    overflow: bool = False


PROBE_BATCH = 4096  # pages probed before their headers are tested together
# Per byte value: 1 where a probe's byte can belong to a header _classify may keep, else 0.
# w0 (@0) is iommu_array_hdr_ser.next_array_phys, 0 or page aligned, or iommu_flb_ser's first
# word, a page-aligned array pointer (v1) or the version 1 (v2): byte 0 is 0 or 1 and byte 1's
# low nibble 0.  w1 (@8) is nr_objects (1..72) or the FLB's next pointer: not zero.  Layouts as
# the module doc: include/linux/kho/abi/iommu.h v1 (samikhawaja/linux @ef754267767f), and the
# v2 FLB (@07a493131c2b), as vtdlud/model/abi/iommu.py mirrors them.
_W0_BYTE0 = bytes(int(v <= 1) for v in range(256))
_W0_BYTE1 = bytes(int(not v & 0x0F) for v in range(256))
_NONZERO = bytes(int(v != 0) for v in range(256))


def _classify(
    c: _Candidates,
    pages: Iterable[int],
    headers: Iterable[tuple[int, ...]],
    units: frozenset[int],
) -> int:
    """Keep each page as the candidate its first seven words say it may be; returns how many
    list entries that made (a page makes at most two: an hw page whose first record also looks
    like a device's).

    Every page kept has w0 == 1 or a page-aligned w0, and a non-zero w1 (:func:`_maybe_kept`
    passes just the probes that do)."""
    low = PAGE_SIZE - 1
    hw_span = HW_SIZE * HW_CAPACITY
    kept = 0
    for page, (w0, w1, w2, w3, w4, _restored, w6) in zip(pages, headers, strict=True):
        if w0 & low:  # not an array header: maybe a v2 FLB (version 1)
            if w0 == 1 and _aligned_distinct(w1, w2, w3):
                c.flb.append((page, V2.name, w1, w2, w3))
                kept += 1
        elif w1 & low == 0:  # nr_objects 0 or a multiple of 4096: maybe a v1 FLB
            if _aligned_distinct(w0, w1, w2):
                c.flb.append((page, V1.name, w0, w1, w2))
                kept += 1
        else:
            if w1 <= HW_CAPACITY:
                if w3 in units and w4 == INTEL and w6 == w3:
                    c.hw.append(page)
                    kept += 1
                elif w2 & DELETED_IN_HDR_WORD and w1 > 1:
                    c.maybe_hw.append(page)
                    kept += 1
            off = (w6 & low) - IOMMU_ARRAY_HDR_SER_SIZE
            if w1 <= DEVICE_CAPACITY and w6 and 0 <= off < hw_span and off % HW_SIZE == 0:
                c.device.append((page, w6))
                kept += 1
    return kept


def _maybe_kept(joined: bytes, n: int) -> bytes:
    """For ``n`` probes of PROBE_SIZE bytes back to back, one byte each: 1 where w0 is 1 or
    page aligned and w1 is not zero (the pages :func:`_classify` may keep), else 0.  Each test
    is a strided slice translated to 0/1 per probe; the ints are byte-wise ANDs and ORs (no
    carries), so a million probes cost a few dozen C passes, not a million Python steps."""
    size = PROBE_SIZE
    flags = int.from_bytes(joined[0::size].translate(_W0_BYTE0), "little")
    flags &= int.from_bytes(joined[1::size].translate(_W0_BYTE1), "little")
    if flags:
        w1 = 0
        for k in range(8, 16):  # nr_objects (or the FLB's second word): any byte non-zero
            w1 |= int.from_bytes(joined[k::size], "little")
        flags &= int.from_bytes(w1.to_bytes(n, "little").translate(_NONZERO), "little")
    return flags.to_bytes(n, "little")


def _probe_batch(probe: ReadPhys, pages: list[int]) -> list[bytes]:
    """Each page's probe, in order, one call a page; a probe that failed is ``b""`` (then
    counted unreadable, as a short one is)."""
    raws: list[bytes] = []
    append = raws.append
    pending = iter(pages)
    while True:
        try:
            for page in pending:
                append(probe(page, PROBE_SIZE))
        except (ParseError, OSError):
            append(b"")
            continue
        return raws


def _probe_all(
    probe: ReadPhys, pages: Iterable[int], units: frozenset[int], limits: ScanLimits
) -> _Candidates:
    """Stage 1: PROBE_SIZE bytes of every page; keep what might be a record page or the FLB.

    Pages are probed in batches and each batch's headers tested together (:func:`_maybe_kept`);
    only the few that pass are decoded.  A page joins at most two candidate lists, so a batch
    of at most half the room left under ``max_candidates`` cannot pass it before its last
    page: the pages probed, and the candidates kept, are those of a page-at-a-time scan that
    stops at the page which passes the bound."""
    c = _Candidates([], [], [], [])
    pending = iter(pages)
    kept, cap = 0, limits.max_candidates
    while not c.overflow:
        batch = list(islice(pending, max(1, min(PROBE_BATCH, (cap - kept) // 2))))
        if not batch:
            break
        raws = _probe_batch(probe, batch)
        c.scanned += len(batch)
        joined = b"".join(raws)
        if len(joined) != PROBE_SIZE * len(raws) or min(map(len, raws)) != PROBE_SIZE:
            whole = [i for i, raw in enumerate(raws) if len(raw) == PROBE_SIZE]
            c.unreadable += len(batch) - len(whole)
            batch = [batch[i] for i in whole]
            joined = b"".join([raws[i] for i in whole])
        flags = _maybe_kept(joined, len(batch))
        passed = flags.count(1)
        if not passed:  # the common batch: no header worth decoding
            continue
        if passed > len(batch) // 2:  # mostly headers of that shape: decode them all
            kept += _classify(c, batch, _PROBE.iter_unpack(joined), units)
        else:
            hits = list(compress(range(len(batch)), flags))
            offsets = map(PROBE_SIZE.__mul__, hits)
            headers = map(_PROBE.unpack_from, repeat(joined), offsets)
            kept += _classify(c, map(batch.__getitem__, hits), headers, units)
        c.overflow = kept > cap
    return c


class _Reader:
    """Stage 2: whole pages, bounded by ScanLimits.max_full_reads."""

    def __init__(self, read_phys: ReadPhys, limits: ScanLimits) -> None:
        self.read_phys = read_phys
        self.limits = limits
        self.count = 0
        self.exhausted = False

    def records(self, chain: Chain, page: int, element: type[R]) -> list[SlotRecord[R]] | None:
        if self.count >= self.limits.max_full_reads:
            self.exhausted = True
            return None
        self.count += 1
        result = read_array_page(self.read_phys, chain, page, element, None)
        return None if isinstance(result, ChainProblem) else result[1]


def _heads(pages: set[int], read_phys: ReadPhys) -> tuple[int, ...]:
    """Pages no other page of the set links to (``next_array_phys``), ascending."""
    linked: set[int] = set()
    for page in pages:
        try:
            (nxt,) = struct.unpack("<Q", read_phys(page, 8))
        except (ParseError, OSError, struct.error):
            continue
        if nxt != page:
            linked.add(nxt)
    heads = sorted(pages - linked)
    return tuple(heads) if heads else tuple(sorted(pages))[:1]


def find_hw_records(
    read_phys: ReadPhys,
    preserved_pages: Iterable[int],
    dmar_units: set[int] | frozenset[int],
    *,
    probe: ReadPhys | None = None,
    is_preserved: Callable[[int], bool] | None = None,
    limits: ScanLimits | None = None,
) -> SignatureScan:
    """Scan ``preserved_pages`` (preserved order-0 page addresses) for the IOMMU records of the
    units at ``dmar_units`` (register bases).  ``probe`` reads the first bytes of each page
    (default ``read_phys``; a non-caching small read on a live host); ``is_preserved``
    (``PreservedMemory.contains``) lets the result list chain pages the map does not preserve."""
    limits = limits or ScanLimits()
    units = frozenset(dmar_units)
    notes: list[str] = []
    if not units:
        notes.append("no DMAR unit register base is known: no record can carry the signature")
    cands = _probe_all(probe or read_phys, preserved_pages if units else (), units, limits)
    if cands.overflow:
        notes.append(
            f"more than {limits.max_candidates} candidate pages: the scan stopped "
            f"after {cands.scanned} pages"
        )
    reader = _Reader(read_phys, limits)

    hw_pages: set[int] = set()
    hw_slots: set[int] = set()
    for page in dict.fromkeys(cands.hw + cands.maybe_hw):
        found = reader.records(Chain.HW, page, IommuHwSerV1)
        if found and any(_has_signature(s.record, units) for s in found):
            hw_pages.add(page)
            hw_slots.update(s.phys for s in found)

    state: PreservedState | None = None
    flb_phys: int | None = None
    flb_layout: str | None = None
    if hw_pages:
        flbs = [f for f in cands.flb if f[2] in hw_pages]
        device_pages = {p for p, _ in cands.device}
        if len(flbs) > 1:  # prefer the one whose device pointer is a device-looking page
            flbs = [f for f in flbs if f[4] in device_pages] or flbs
        if len(flbs) == 1:
            flb_phys, flb_layout = flbs[0][0], flbs[0][1]
            variant = V1 if flb_layout == V1.name else V2
            state = walk_records(read_phys, flb_phys, variant, located_by=LOCATED_BY)
        else:
            if flbs:
                where = ", ".join(f"{f[0]:#x}" for f in flbs)
                notes.append(f"several iommu_flb_ser candidates point at the hw records: {where}")
            else:
                notes.append(
                    "no iommu_flb_ser found pointing at the hw records: chains walked from the "
                    "pages found by signature; the FLB layout (v1 or v2) is not known"
                )
            state, found_notes = _walk_found(read_phys, reader, cands, hw_pages, hw_slots)
            notes += found_notes
    elif units and cands.scanned:
        notes.append("no preserved page holds an iommu_hw_ser with the signature")
    if reader.exhausted:
        notes.append(f"more than {limits.max_full_reads} candidate pages to confirm: some skipped")

    orphans: tuple[int, ...] = ()
    not_preserved: tuple[int, ...] = ()
    if state is not None:
        walked = set(state.pages.get(Chain.HW, ()))
        orphans = tuple(sorted(hw_pages - walked))
        if orphans:
            notes.append(
                "pages with hw records outside the walked hw chain: "
                + ", ".join(f"{p:#x}" for p in orphans)
            )
        if is_preserved is not None:
            pages = {p for chain_pages in state.pages.values() for p in chain_pages}
            if flb_phys is not None:
                pages.add(flb_phys & PAGE_MASK)
            not_preserved = tuple(sorted(p for p in pages if not is_preserved(p)))
    return SignatureScan(
        state=state,
        flb_phys=flb_phys,
        flb_layout=flb_layout,
        hw_pages=tuple(sorted(hw_pages)),
        orphan_hw_pages=orphans,
        not_preserved=not_preserved,
        pages_scanned=cands.scanned,
        bytes_probed=(cands.scanned - cands.unreadable) * PROBE_SIZE,
        unreadable=cands.unreadable,
        full_reads=reader.count,
        notes=tuple(notes),
    )


def _walk_found(
    read_phys: ReadPhys,
    reader: _Reader,
    cands: _Candidates,
    hw_pages: set[int],
    hw_slots: set[int],
) -> tuple[PreservedState, list[str]]:
    """No FLB: device pages pointing at the found hw slots, the domain pages their records
    point into, and each chain walked from its unlinked pages (several unlinked pages of one
    chain are named in a note: only the FLB could say which chain is current)."""
    device_pages: set[int] = set()
    domain_pages: set[int] = set()
    for page, iommu_phys in cands.device:
        if iommu_phys not in hw_slots:
            continue
        found = reader.records(Chain.DEVICE, page, IommuDeviceSerV1)
        if not found:
            continue
        device_pages.add(page)
        for s in found:
            domain = s.record.domain_iommu_ser.domain_phys
            if _slot_offset(domain, DOMAIN_SIZE, DOMAIN_CAPACITY):
                domain_pages.add(domain & PAGE_MASK)
    domain_pages = {
        p for p in domain_pages if reader.records(Chain.DOMAIN, p, IommuDomainSer) is not None
    }
    heads = ChainHeads(
        _heads(hw_pages, read_phys),
        _heads(domain_pages, read_phys) if domain_pages else (),
        _heads(device_pages, read_phys) if device_pages else (),
    )
    notes = [
        f"{len(heads.of(chain))} {chain.value} chains found by signature, starting at "
        + ", ".join(f"{p:#x}" for p in heads.of(chain))
        for chain in (Chain.HW, Chain.DOMAIN, Chain.DEVICE)
        if len(heads.of(chain)) > 1
    ]
    return walk_from_heads(read_phys, heads, V1, located_by=LOCATED_BY), notes


__all__ = [
    "LOCATED_BY",
    "PROBE_SIZE",
    "ScanLimits",
    "SignatureScan",
    "find_hw_records",
]
