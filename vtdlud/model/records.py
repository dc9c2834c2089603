"""Walk the IOMMU live-update record chains in physical memory: FLB -> three page chains.

Pure: memory comes from a ``read_phys(addr, size) -> bytes`` callable that returns exactly
``size`` bytes or raises :class:`~vtdlud.errors.ParseError` (the kcore reader's
``PhysReadError`` is one) for a range that is not readable RAM; an ``OSError`` from it is taken
as unreadable too.  Nothing here raises on corrupt memory and every walk ends.

Layouts (reference/kernel-interfaces.md §1.3, §1.4; the structs are the ABI mirror's,
:mod:`vtdlud.model.abi`): ``iommu_flb_ser`` holds the first page of the hw, domain and device
arrays (v1: three u64; v2: ``version`` then the three); every array is one 4 KiB page,
``iommu_array_hdr_ser {next_array_phys, nr_objects}`` then ``nr_objects`` records, a record's
physical address being ``page + 16 + i * sizeof(record)`` (device records' ``iommu_phys`` and
``domain_phys`` point at those slots).  The kernel allocates the FLB and the three first pages
up front (all three pointers are non-zero), appends only, links a new page from the last one
when it is full, and never reuses a DELETED slot: DELETED records are kept here, flagged, as
the audit needs them (VTD027).

What breaks a chain is a :class:`ChainProblem` (VTD041) naming the chain, the address where it
broke and the page or FLB whose pointer led there: a null first page, a page address not 4 KiB
aligned, a page that cannot be read (outside RAM, truncated), ``nr_objects`` above the page
capacity, a page reached twice (loop), a page shared by two chains, or a chain longer than
:attr:`RecordLimits.max_pages_per_chain`.  The records read before the break are kept.

A v2 FLB whose first hw record says ``IOMMU_INTEL`` is decoded with v1's Intel unions
(:data:`~vtdlud.model.abi.V2_ASSUMED_INTEL`, ``PreservedState.assumed``); an unknown variant or
type gives a result with ``unknown`` set (VTD040) and no records.

These walkers are tested against chains built with the ABI mirror's ``pack()`` in a fake
memory: no real capture of the records exists.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Generic, TypeVar

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.model.abi import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_LUO_FLB_VERSION,
    PAGE_SIZE,
    AbiVariant,
    DeviceSer,
    FlbSer,
    HwSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuDomainSer,
    IommuFlbSerV2,
    IommuHwSerV1,
    IommuHwSerV2,
    IommuTypeSer,
    UnknownAbi,
    capacity_of,
    variant_for_hw_type,
)

ReadPhys = Callable[[int, int], bytes]

R = TypeVar("R", IommuHwSerV1, IommuHwSerV2, IommuDomainSer, IommuDeviceSerV1, IommuDeviceSerV2)

_U64 = struct.Struct("<Q")
_ARRAY_HDR = struct.Struct("<QQ")  # next_array_phys, nr_objects
HW_TYPE_OFFSET = 16  # iommu_hw_ser.type: after hdr (8) and token (8), in every variant
MAX_PAGES_PER_CHAIN = 1024  # 36 864 hw, 112 640 domain, 73 728 device records (v1)


class Chain(Enum):
    """The three record arrays of ``iommu_flb_ser`` (and the FLB itself, for problems)."""

    FLB = "flb"
    HW = "hw"
    DOMAIN = "domain"
    DEVICE = "device"


CHAINS: tuple[Chain, ...] = (Chain.HW, Chain.DOMAIN, Chain.DEVICE)


class ProblemKind(Enum):
    NULL = "null"  # a first-page pointer of 0
    MISALIGNED = "misaligned"  # a page address not 4 KiB aligned
    UNREADABLE = "unreadable"  # outside RAM, I/O error, truncated
    OVER_CAPACITY = "over-capacity"  # nr_objects above (PAGE_SIZE - 16) / sizeof(record)
    LOOP = "loop"  # a page reached twice in one chain
    SHARED = "shared"  # a page that is also a page of another chain
    TOO_LONG = "too-long"  # more pages than RecordLimits allows


@frozen
class ChainProblem:
    """Where and why a chain stopped (finding VTD041, reported at ``page_phys``)."""

    chain: Chain
    page_phys: int  # the address that could not be used
    reason: str
    kind: ProblemKind
    linked_from: int | None = None  # the page (or FLB) whose pointer led to page_phys


@frozen
class RecordLimits:
    max_pages_per_chain: int = MAX_PAGES_PER_CHAIN


@frozen
class SlotRecord(Generic[R]):
    """One decoded record and where it lives."""

    phys: int  # slot address: page + 16 + index * sizeof(record)
    page: int
    index: int
    record: R

    @property
    def deleted(self) -> bool:
        return self.record.hdr.deleted


class RefStatus(Enum):
    OK = "ok"
    NULL = "null"  # the pointer is 0
    DELETED = "deleted"  # it points at a record flagged IOMMU_SER_FLAG_DELETED
    NOT_A_SLOT = "not-a-slot"  # no record of the target chain starts at that address


HwSlot = SlotRecord[IommuHwSerV1] | SlotRecord[IommuHwSerV2]
DomainSlot = SlotRecord[IommuDomainSer]
DeviceSlot = SlotRecord[IommuDeviceSerV1] | SlotRecord[IommuDeviceSerV2]
S = TypeVar("S")


@frozen
class Ref(Generic[S]):
    """A resolved ``iommu_phys`` / ``domain_phys``."""

    phys: int
    status: RefStatus
    slot: S | None  # the record pointed at (also when it is DELETED)


@frozen
class ChainHeads:
    """First pages to walk, per chain (several only when found by signature)."""

    hw: tuple[int, ...]
    domain: tuple[int, ...]
    device: tuple[int, ...]

    def of(self, chain: Chain) -> tuple[int, ...]:
        return {Chain.HW: self.hw, Chain.DOMAIN: self.domain, Chain.DEVICE: self.device}[chain]


@frozen
class PreservedState:
    """The records found behind an FLB (``located_by="flb"``), by signature before a kexec
    (``"signature"``), or after it at the addresses the gate's ledger recorded (``"ledger"``,
    :mod:`vtdlud.model.relocate`)."""

    located_by: str  # "flb" | "signature" | "ledger"
    variant: AbiVariant | UnknownAbi  # the layout used (refined by the hw type)
    flb_phys: int | None
    flb: FlbSer | None
    hw: tuple[HwSlot, ...] = ()
    domains: tuple[DomainSlot, ...] = ()
    devices: tuple[DeviceSlot, ...] = ()
    pages: Mapping[Chain, tuple[int, ...]] = field(default_factory=dict)
    problems: tuple[ChainProblem, ...] = ()
    heads: ChainHeads | None = None  # where the chains were walked from

    @property
    def unknown(self) -> UnknownAbi | None:
        """The ABI could not be decoded (VTD040): no records were read."""
        return self.variant if isinstance(self.variant, UnknownAbi) else None

    @property
    def assumed(self) -> bool:
        """Records decoded with the assumed v2 + v1-Intel-union layout."""
        return isinstance(self.variant, AbiVariant) and self.variant.assumed

    @property
    def complete(self) -> bool:
        return self.unknown is None and not self.problems

    def live_hw(self) -> list[HwSlot]:
        return [s for s in self.hw if not s.deleted]

    def live_devices(self) -> list[DeviceSlot]:
        return [s for s in self.devices if not s.deleted]

    def live_domains(self) -> list[DomainSlot]:
        return [s for s in self.domains if not s.deleted]

    @cached_property
    def _hw_at(self) -> dict[int, HwSlot]:
        return {s.phys: s for s in self.hw}

    @cached_property
    def _domain_at(self) -> dict[int, DomainSlot]:
        return {s.phys: s for s in self.domains}

    def hw_at(self, phys: int) -> HwSlot | None:
        return self._hw_at.get(phys)

    def domain_at(self, phys: int) -> DomainSlot | None:
        return self._domain_at.get(phys)

    def find_hw(self, token: int, hw_type: int = IommuTypeSer.IOMMU_INTEL) -> list[HwSlot]:
        """Live hw records with this token and type, as ``iommu_get_preserved_data()`` searches
        (the kernel takes the first; more than one is itself a finding)."""
        return [s for s in self.live_hw() if s.record.token == token and s.record.type == hw_type]

    def iommu_ref(self, device: DeviceSlot) -> Ref[HwSlot]:
        """The hw record ``device``'s ``iommu_phys`` points at."""
        phys = device.record.domain_iommu_ser.iommu_phys
        slot = self.hw_at(phys)
        return Ref(phys, _status(phys, None if slot is None else slot.deleted), slot)

    def domain_ref(self, device: DeviceSlot) -> Ref[DomainSlot]:
        """The domain record ``device``'s ``domain_phys`` points at."""
        phys = device.record.domain_iommu_ser.domain_phys
        slot = self.domain_at(phys)
        return Ref(phys, _status(phys, None if slot is None else slot.deleted), slot)


def _status(phys: int, deleted: bool | None) -> RefStatus:
    if phys == 0:
        return RefStatus.NULL
    if deleted is None:
        return RefStatus.NOT_A_SLOT
    return RefStatus.DELETED if deleted else RefStatus.OK


# --- reading -------------------------------------------------------------------------------


class _Unreadable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read(read_phys: ReadPhys, addr: int, size: int) -> bytes:
    if addr < 0 or addr + size > 1 << 64:
        raise _Unreadable(f"{size} bytes at {addr:#x} are outside the 64-bit space")
    try:
        data = read_phys(addr, size)
    except ParseError as exc:
        raise _Unreadable(exc.reason) from exc
    except OSError as exc:
        raise _Unreadable(f"read error: {exc.strerror or exc}") from exc
    if len(data) != size:
        raise _Unreadable(f"read {len(data)} of {size} bytes (truncated)")
    return bytes(data)


def read_array_page(
    read_phys: ReadPhys, chain: Chain, page: int, element: type[R], linked_from: int | None
) -> tuple[int, list[SlotRecord[R]]] | ChainProblem:
    """Decode one array page: (next_array_phys, its records) or the problem with it."""

    def problem(kind: ProblemKind, reason: str) -> ChainProblem:
        return ChainProblem(
            chain, page, f"{chain.value} array page {page:#x}: {reason}", kind, linked_from
        )

    if page % PAGE_SIZE:
        return problem(ProblemKind.MISALIGNED, "not 4 KiB aligned")
    try:
        data = _read(read_phys, page, PAGE_SIZE)
    except _Unreadable as exc:
        return problem(ProblemKind.UNREADABLE, exc.reason)
    nxt, count = _ARRAY_HDR.unpack_from(data)
    capacity = capacity_of(element)
    if count > capacity:
        return problem(
            ProblemKind.OVER_CAPACITY,
            f"nr_objects {count} exceeds the capacity {capacity} of a page",
        )
    size = element.sizeof()
    out: list[SlotRecord[R]] = []
    for i in range(count):
        off = IOMMU_ARRAY_HDR_SER_SIZE + i * size
        out.append(SlotRecord(page + off, page, i, element.unpack(data, off)))
    return nxt, out


@dataclass
class _Walker:
    """Walks the record chains of one FLB, claiming each page for the chain that owns it."""

    read_phys: ReadPhys
    limits: RecordLimits
    linked_from: int | None  # the FLB (None when walking from signature-found heads)
    claimed: dict[int, Chain] = field(default_factory=dict)  # page -> the chain that owns it

    def walk(
        self, chain: Chain, heads: Sequence[int], element: type[R]
    ) -> tuple[list[int], list[SlotRecord[R]], list[ChainProblem]]:
        """Walk the chain from each of ``heads``.  ``claimed`` maps the pages already walked (by
        any chain) and is updated: a head that runs into pages of its own chain walked from an
        earlier head joins it (several heads come only from a signature scan), a page reached twice
        from one head is a loop, a page of another chain is shared."""
        pages: list[int] = []
        records: list[SlotRecord[R]] = []
        problems: list[ChainProblem] = []
        claimed, limits, linked_from = self.claimed, self.limits, self.linked_from
        for head in heads:
            page, prev = head, linked_from
            path: set[int] = set()
            if page == 0:
                reason = f"iommu_flb_ser has a null {chain.value} array address"
                problems.append(ChainProblem(chain, 0, reason, ProblemKind.NULL, linked_from))
                continue
            while page:
                owner = claimed.get(page)
                problem: ChainProblem | None = None
                if page in path:
                    problem = ChainProblem(
                        chain,
                        page,
                        f"{chain.value} array page {prev:#x} links back to page {page:#x} (loop)",
                        ProblemKind.LOOP,
                        prev,
                    )
                elif owner is chain:
                    break  # joins a chain walked from an earlier head
                elif owner is not None:
                    problem = ChainProblem(
                        chain,
                        page,
                        f"{chain.value} array page {page:#x} is also a {owner.value} array page",
                        ProblemKind.SHARED,
                        prev,
                    )
                elif len(pages) >= limits.max_pages_per_chain:
                    problem = ChainProblem(
                        chain,
                        page,
                        f"{chain.value} chain is longer than {limits.max_pages_per_chain} pages",
                        ProblemKind.TOO_LONG,
                        prev,
                    )
                if problem is not None:
                    problems.append(problem)
                    break
                result = read_array_page(self.read_phys, chain, page, element, prev)
                if isinstance(result, ChainProblem):
                    problems.append(result)
                    break
                claimed[page] = chain
                path.add(page)
                pages.append(page)
                nxt, found = result
                records.extend(found)
                page, prev = nxt, page
        return pages, records, problems


def walk_from_heads(
    read_phys: ReadPhys,
    heads: ChainHeads,
    variant: AbiVariant | UnknownAbi,
    *,
    located_by: str,
    flb_phys: int | None = None,
    flb: FlbSer | None = None,
    limits: RecordLimits | None = None,
) -> PreservedState:
    """Walk the chains from ``heads`` with ``variant``'s record layouts (refined by the type
    of the first hw record, see the module doc)."""
    limits = limits or RecordLimits()
    if isinstance(variant, UnknownAbi):
        return PreservedState(located_by, variant, flb_phys, flb)
    variant = _refine(read_phys, heads.hw, variant)
    if isinstance(variant, UnknownAbi):
        return PreservedState(located_by, variant, flb_phys, flb)
    walker = _Walker(read_phys, limits, flb_phys)
    hw: list[HwSlot]
    if issubclass(variant.hw, IommuHwSerV1):
        hw_pages, hw1, hw_problems = walker.walk(Chain.HW, heads.hw, variant.hw)
        hw = [*hw1]
    else:
        hw_pages, hw2, hw_problems = walker.walk(Chain.HW, heads.hw, variant.hw)
        hw = [*hw2]
    dom_pages, domains, dom_problems = walker.walk(Chain.DOMAIN, heads.domain, IommuDomainSer)
    devices: list[DeviceSlot]
    if issubclass(variant.device, IommuDeviceSerV1):
        dev_pages, dev1, dev_problems = walker.walk(Chain.DEVICE, heads.device, variant.device)
        devices = [*dev1]
    else:
        dev_pages, dev2, dev_problems = walker.walk(Chain.DEVICE, heads.device, variant.device)
        devices = [*dev2]
    return PreservedState(
        located_by=located_by,
        variant=variant,
        flb_phys=flb_phys,
        flb=flb,
        hw=tuple(hw),
        domains=tuple(domains),
        devices=tuple(devices),
        pages={
            Chain.HW: tuple(hw_pages),
            Chain.DOMAIN: tuple(dom_pages),
            Chain.DEVICE: tuple(dev_pages),
        },
        problems=tuple(hw_problems + dom_problems + dev_problems),
        heads=heads,
    )


def _refine(
    read_phys: ReadPhys, hw_heads: Sequence[int], variant: AbiVariant
) -> AbiVariant | UnknownAbi:
    """``variant_for_hw_type`` with the type of the first hw record; the variant unchanged when
    there is none to read (an empty or unreadable first page is the chain walk's problem)."""
    for head in hw_heads:
        if not head or head % PAGE_SIZE:
            continue
        try:
            hdr = _read(read_phys, head, IOMMU_ARRAY_HDR_SER_SIZE + HW_TYPE_OFFSET + 8)
        except _Unreadable:
            continue
        _nxt, count = _ARRAY_HDR.unpack_from(hdr)
        if count == 0:
            continue
        (hw_type,) = _U64.unpack_from(hdr, IOMMU_ARRAY_HDR_SER_SIZE + HW_TYPE_OFFSET)
        return variant_for_hw_type(variant, hw_type)
    return variant


def walk_records(
    read_phys: ReadPhys,
    flb_phys: int,
    variant: AbiVariant | UnknownAbi,
    *,
    limits: RecordLimits | None = None,
    located_by: str = "flb",
) -> PreservedState:
    """Read ``iommu_flb_ser`` at ``flb_phys`` with ``variant`` (from
    ``LuoState.iommu.variant``) and walk its three chains."""
    if isinstance(variant, UnknownAbi):
        return PreservedState(located_by, variant, flb_phys, None)
    if flb_phys == 0:
        problem = ChainProblem(
            Chain.FLB, 0, "the IOMMU FLB's iommu_flb_ser address is null", ProblemKind.NULL
        )
        return PreservedState(located_by, variant, flb_phys, None, problems=(problem,))
    try:
        raw = _read(read_phys, flb_phys, variant.flb.sizeof())
    except _Unreadable as exc:
        problem = ChainProblem(
            Chain.FLB,
            flb_phys,
            f"iommu_flb_ser at {flb_phys:#x}: {exc.reason}",
            ProblemKind.UNREADABLE,
        )
        return PreservedState(located_by, variant, flb_phys, None, problems=(problem,))
    flb = variant.flb.unpack(raw)
    if isinstance(flb, IommuFlbSerV2) and flb.version != IOMMU_LUO_FLB_VERSION:
        unknown = UnknownAbi(
            variant.compatible,
            flb.version,
            f"iommu_flb_ser.version {flb.version} is not {IOMMU_LUO_FLB_VERSION}",
        )
        return PreservedState(located_by, unknown, flb_phys, flb)
    heads = ChainHeads(
        (flb.iommu_array_phys,), (flb.iommu_domain_array_phys,), (flb.device_array_phys,)
    )
    return walk_from_heads(
        read_phys,
        heads,
        variant,
        located_by=located_by,
        flb_phys=flb_phys,
        flb=flb,
        limits=limits,
    )


__all__ = [
    "CHAINS",
    "Chain",
    "ChainHeads",
    "ChainProblem",
    "DeviceSer",
    "HwSer",
    "PreservedState",
    "ProblemKind",
    "ReadPhys",
    "RecordLimits",
    "Ref",
    "RefStatus",
    "SlotRecord",
    "read_array_page",
    "walk_from_heads",
    "walk_records",
]
