"""KHO's preserved-memory map, decoded through physical memory: which (phys, order) are preserved.

Pure: memory comes from ``read_phys(addr, size) -> bytes`` (exactly ``size`` bytes, or
:class:`~vtdlud.errors.ParseError` / ``OSError`` for a range that cannot be read).  The root
FDT's ``preserved-memory-map`` (``KhoRoot.preserved_memory_map``) is the entry point; its
format follows the root ``compatible``.  Layouts read from the kernel sources (nothing copied):

``"kho-v2"``, ``"kho-v3"``, ``"kho-v4"`` — a radix tree, live from boot [C: torvalds/linux
    include/linux/kho/abi/kexec_handover.h @3f2ad90060f6 (``kho_radix_node``, ``kho_radix_leaf``,
    ``enum kho_radix_consts``) and kernel/liveupdate/kexec_handover.c @019fc3687237
    (``kho_radix_encode_key``/``decode_key``, ``__kho_radix_walk_tree``, ``kho_out_fdt_setup``);
    unchanged in Linux 7.2.13 (kho-v4): same header structs and walk in
    include/linux/kho/abi/kexec_handover.h and kernel/liveupdate/kexec_handover.c].
    Every node is one page.  The root is a level-5 table; levels 5..1 are ``u64 table[512]`` of
    child physical addresses (0 = none), level 1's children are leaves, ``bitmap[32768 bits]``
    (little-endian ``unsigned long`` words).  The key of a page of order ``o`` at ``pa`` is
    ``1 << (52 - o) | pa >> (12 + o)``; the table index at level L is bits
    ``[15 + 9 (L - 1), +9)`` of the key and the leaf bit is bits ``[0, 15)``.  Decoding: ``o =
    52 - (fls64(key) - 1)``, ``pa = key << (12 + o)`` truncated to 64 bits.  The property holds
    the root's address from ``kho_init()`` on, so the map is readable before any kexec; 0 is
    refused by the next kernel (``kho_mem_retrieve()``) and is a problem here.
``"kho-v1"`` — a list of chunks, built only at finalize [C: torvalds/linux
    kernel/kexec_handover.c @00c010e130e5 (``khoser_mem_chunk``, ``kho_mem_serialize``,
    ``kho_finalize``, ``deserialize_bitmap``); linux-mm/linux-mm kernel/liveupdate/
    kexec_handover.c @04b9e51555d3 (same structs; the property is 0 until ``kho_finalize()``)].
    A chunk is one page: ``{u64 next; u32 order; u32 num_elms}`` then ``num_elms`` (at most
    255) ``{u64 phys_start; u64 bitmap}``, ``bitmap`` pointing at a 4096-byte bitmap of 32768
    pages of that order, page ``i`` at ``phys_start + (i << (12 + order))``.  Before finalize
    the property is absent or 0: the result is then ``NOT_FINALIZED``, empty, and says so; that
    is a state of the kernel, not corruption.  [I: chunk and bitmap pages are page aligned —
    they come from ``kzalloc(PAGE_SIZE)`` / ``get_zeroed_page()``, and ``phys_start`` is a
    multiple of ``32768 << (12 + order)`` by construction; a violation is reported.]

Everything is bounded (:class:`MemMapLimits`): pages read (nodes, leaves, chunks, bitmaps),
ranges and total preserved pages, the largest order; a page reached twice, an unreadable or
misaligned pointer, a count over capacity or an impossible key is a :class:`MemMapProblem`
and the walk goes on with the rest (state ``INCOMPLETE``), never an exception.

Tested against trees and chunk lists built from these layouts in a fake memory (and against
the simulator's tree writer): no real capture of a preserved-memory map exists.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from itertools import compress
from types import MappingProxyType
from typing import NamedTuple

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen

ReadPhys = Callable[[int, int], bytes]

KHO_V1 = "kho-v1"
KHO_V2 = "kho-v2"
KHO_V3 = "kho-v3"
KHO_V4 = "kho-v4"
# The radix tracker: kho-v3 added blob-size to the sub-nodes, kho-v4 the block ABI; the map
# itself did not change.
KHO_RADIX = frozenset({KHO_V2, KHO_V3, KHO_V4})

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
U64_MASK = (1 << 64) - 1

# kho-v2 radix tree (enum kho_radix_consts with 4 KiB pages)
KHO_ORDER_0_LOG2 = 64 - PAGE_SHIFT  # 52: the order bit of an order-0 key
KHO_TABLE_SIZE_LOG2 = 9  # 512 u64 per node
KHO_BITMAP_SIZE_LOG2 = PAGE_SHIFT + 3  # 15: 32768 bits per leaf
KHO_TREE_MAX_DEPTH = -(-(KHO_ORDER_0_LOG2 - KHO_BITMAP_SIZE_LOG2) // KHO_TABLE_SIZE_LOG2) + 1  # 6
KHO_TABLE_ENTRIES = 1 << KHO_TABLE_SIZE_LOG2

# kho-v1 chunk list
KHOSER_CHUNK_HDR = struct.Struct("<QII")  # next, order, num_elms
KHOSER_BITMAP_PTR = struct.Struct("<QQ")  # phys_start, bitmap
KHOSER_BITMAP_SIZE = (PAGE_SIZE - KHOSER_CHUNK_HDR.size) // KHOSER_BITMAP_PTR.size  # 255
PRESERVE_BITS = PAGE_SIZE * 8  # 32768

MAX_ORDER = 18  # [I] 1 GiB folios; x86's MAX_PAGE_ORDER is 10, hugetlb folios reach 18

_TABLE = struct.Struct(f"<{KHO_TABLE_ENTRIES}Q")


class MapState(Enum):
    COMPLETE = "complete"
    NOT_FINALIZED = "not-finalized"  # kho-v1 before finalize: no map yet (empty, not corrupt)
    INCOMPLETE = "incomplete"  # problems or bounds: the ranges are those that could be read
    UNKNOWN = "unknown"  # a KHO compatible this version does not decode (VTD040)


class MemMapProblemKind(Enum):
    NULL = "null"
    MISALIGNED = "misaligned"
    UNREADABLE = "unreadable"
    REVISITED = "revisited"  # a node, chunk or bitmap page reached twice (loop or sharing)
    BAD_COUNT = "bad-count"  # num_elms over the chunk capacity
    BAD_ORDER = "bad-order"  # an order above MemMapLimits.max_order (or no order bit)
    BAD_START = "bad-start"  # kho-v1 phys_start not aligned to its bitmap's span
    LIMIT = "limit"  # a MemMapLimits bound stopped the walk


@frozen
class MemMapProblem:
    phys: int  # the node/chunk/bitmap address concerned
    reason: str
    kind: MemMapProblemKind


@frozen
class MemMapLimits:
    max_pages_read: int = 1 << 16  # tree nodes + leaves, or chunks + bitmaps (256 MiB)
    max_ranges: int = 1 << 24  # preserved (phys, order) entries
    max_preserved_pages: int = 1 << 34  # their total size in 4 KiB pages (64 TiB)
    max_order: int = MAX_ORDER


class PreservedRange(NamedTuple):
    phys: int
    order: int

    @property
    def size(self) -> int:
        return PAGE_SIZE << self.order

    @property
    def end(self) -> int:
        return self.phys + self.size


@frozen
class PreservedMemory:
    """The decoded map: preserved physical addresses per order, ascending."""

    compatible: str
    map_phys: int | None
    state: MapState
    by_order: Mapping[int, array[int]] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[MemMapProblem, ...] = ()
    note: str | None = None
    pages_read: int = 0

    def ranges(self) -> Iterator[PreservedRange]:
        """Every preserved (phys, order), by order then address."""
        for order in sorted(self.by_order):
            for phys in self.by_order[order]:
                yield PreservedRange(phys, order)

    def order0_pages(self) -> array[int]:
        """The preserved order-0 pages (what the signature scan looks at), ascending."""
        return self.by_order.get(0, array("Q"))

    @property
    def range_count(self) -> int:
        return sum(len(v) for v in self.by_order.values())

    @property
    def page_count(self) -> int:
        """Preserved memory in 4 KiB pages."""
        return sum(len(v) << order for order, v in self.by_order.items())

    def find(self, addr: int) -> PreservedRange | None:
        """The preserved range holding ``addr``, if any."""
        for order, phys in self.by_order.items():
            i = bisect_right(phys, addr) - 1
            if i >= 0 and addr < phys[i] + (PAGE_SIZE << order):
                return PreservedRange(phys[i], order)
        return None

    def contains(self, addr: int, size: int = PAGE_SIZE) -> bool:
        """Whether ``[addr, addr + size)`` lies in one preserved range (a table page is)."""
        found = self.find(addr)
        return found is not None and addr + size <= found.end


# --- bitmaps, decoded in bulk ----------------------------------------------------------------
# A kho-v2..v4 leaf and a kho-v1 bitmap are the same page: 1 << KHO_BITMAP_SIZE_LOG2 (=
# PRESERVE_BITS) bits in BITS_TO_LONGS(...) = 512 little-endian unsigned longs, bit i = bit
# i % 64 of word i / 64 [C: include/linux/kho/abi/kexec_handover.h @3f2ad90060f6 ``struct
# kho_radix_leaf { DECLARE_BITMAP(bitmap, 1 << KHO_BITMAP_SIZE_LOG2); }``, unchanged in Linux
# 7.2.13; kernel/kexec_handover.c @00c010e130e5 ``struct kho_mem_phys_bits {
# DECLARE_BITMAP(preserve, PRESERVE_BITS); }``, PRESERVE_BITS = PAGE_SIZE * 8; x86-64].
# The set bits come out as 8-byte little-endian lanes of one int, built from lookups per byte
# of the non-zero longs: the Python work is per leaf and per non-zero long, none per bit.  Two
# shapes go another way: a full bitmap is a range, and where the non-zero longs hold under
# three bits each on average, a step per bit over those longs costs less than the lookups.

_BITMAP_LONGS = (1 << KHO_BITMAP_SIZE_LOG2) // 64
_BITMAP = struct.Struct(f"<{_BITMAP_LONGS}Q")
_LONG_INDEX = tuple(range(_BITMAP_LONGS))
_LITTLE = sys.byteorder == "little"


@cache
def _bit_lanes() -> tuple[list[bytes], list[bytes], bytes]:
    """Lookup tables, built on first use: ``byte[k * 256 + v]`` is the lanes ``8 k + b`` of
    the bits ``b`` set in ``v`` as byte ``k`` of a long; ``long[w]`` is the lane ``64 w``; and
    the byte index ``k`` of every byte of a bitmap (0..7 repeated)."""
    lane = struct.Struct("<Q").pack
    byte = [
        b"".join(lane(8 * k + b) for b in range(8) if v >> b & 1)
        for k in range(8)
        for v in range(256)
    ]
    long = [lane(64 * w) for w in range(_BITMAP_LONGS)]
    return byte, long, bytes(range(8)) * _BITMAP_LONGS


def bitmap_pages(data: bytes, base: int, order: int) -> array[int]:
    """The pages of a leaf's (or kho-v1) bitmap, ascending: bit ``i`` set is the page at
    ``base + (i << (12 + order))``.  ``base`` is a multiple of the bitmap's span, ``(1 <<
    KHO_BITMAP_SIZE_LOG2) << (12 + order)`` (a leaf's first key shifted, a kho-v1
    ``phys_start``), so the lanes take it by OR."""
    shift = PAGE_SHIFT + order
    longs = _BITMAP.unpack(data)
    nonzero = list(compress(_LONG_INDEX, longs))
    values = [longs[w] for w in nonzero]
    count = sum(map(int.bit_count, values))
    if count == 1 << KHO_BITMAP_SIZE_LOG2:  # every page of the span
        return array("Q", range(base, base + (count << shift), 1 << shift))
    if count < 3 * len(values):  # a bit or two per long: a step per bit costs less than the
        return _few_bits(nonzero, values, base, shift)  # lookups of a long's eight bytes
    packed = struct.pack(f"<{len(values)}Q", *values)
    byte_lanes, long_lanes, byte_index = _bit_lanes()
    keys = bytearray(2 * len(packed))  # u16 k * 256 + v for each byte v (k its index in a long)
    keys[0 if _LITTLE else 1 :: 2] = packed
    keys[1 if _LITTLE else 0 :: 2] = byte_index[: len(packed)]
    bits = b"".join(map(byte_lanes.__getitem__, array("H", keys)))  # 8 k + b, per set bit
    longs_of_bits = b"".join(  # 64 w, once per set bit of long w
        map(bytes.__mul__, map(long_lanes.__getitem__, nonzero), map(int.bit_count, values))
    )
    lanes = int.from_bytes(bits, "little") | int.from_bytes(longs_of_bits, "little")
    lanes <<= shift  # lane-wise: every lane is below 1 << KHO_BITMAP_SIZE_LOG2
    lanes |= int.from_bytes(base.to_bytes(8, "little") * count, "little")
    out = array("Q")
    out.frombytes(lanes.to_bytes(8 * count, "little"))
    if not _LITTLE:
        out.byteswap()
    return out


def _few_bits(nonzero: list[int], values: list[int], base: int, shift: int) -> array[int]:
    out = array("Q")
    append = out.append
    for w, value in zip(nonzero, values, strict=True):
        first = base + (w << (6 + shift))
        rest = value
        while rest:
            low = rest & -rest
            append(first + ((low.bit_length() - 1) << shift))
            rest ^= low
    return out


# --- reading -------------------------------------------------------------------------------


class _Budget(Exception):
    """A MemMapLimits bound was reached (the walk stops)."""


@dataclass
class _Walk:
    """One decode of the preserved-memory map: what it found and the problems on the way."""

    read_phys: ReadPhys
    limits: MemMapLimits
    problems: list[MemMapProblem] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    out: dict[int, array[int]] = field(default_factory=dict)
    ranges: int = 0
    pages: int = 0

    def problem(self, phys: int, kind: MemMapProblemKind, reason: str) -> None:
        self.problems.append(MemMapProblem(phys, reason, kind))

    def page(self, addr: int, what: str) -> bytes | None:
        """One page of the map's own structure, read once; None (and a problem) if it cannot."""
        if addr % PAGE_SIZE:
            self.problem(
                addr, MemMapProblemKind.MISALIGNED, f"{what} {addr:#x} is not 4 KiB aligned"
            )
            return None
        if addr in self.seen:
            self.problem(addr, MemMapProblemKind.REVISITED, f"{what} {addr:#x} is reached twice")
            return None
        if len(self.seen) >= self.limits.max_pages_read:
            self.problem(
                addr,
                MemMapProblemKind.LIMIT,
                f"more than {self.limits.max_pages_read} map pages; stopped before {what} {addr:#x}",
            )
            raise _Budget
        self.seen.add(addr)
        try:
            data = self.read_phys(addr, PAGE_SIZE)
        except ParseError as exc:
            reason = exc.reason
        except OSError as exc:
            reason = f"read error: {exc.strerror or exc}"
        else:
            if len(data) == PAGE_SIZE:
                return bytes(data)
            reason = f"read {len(data)} of {PAGE_SIZE} bytes (truncated)"
        self.problem(addr, MemMapProblemKind.UNREADABLE, f"{what} {addr:#x}: {reason}")
        return None

    def bitmap(self, data: bytes, base: int, order: int, where: int) -> None:
        """Add every set bit of a 32768-bit bitmap: page ``i`` at ``base + (i << (12 + order))``."""
        found = bitmap_pages(data, base, order)
        self.out.setdefault(order, array("Q")).extend(found)
        added = len(found)
        self.ranges += added
        self.pages += added << order
        if self.ranges > self.limits.max_ranges or self.pages > self.limits.max_preserved_pages:
            self.problem(
                where,
                MemMapProblemKind.LIMIT,
                f"more than {self.limits.max_ranges} ranges or {self.limits.max_preserved_pages} "
                "preserved pages; the map is cut here",
            )
            raise _Budget

    def order_ok(self, order: int, where: int, what: str) -> bool:
        if 0 <= order <= self.limits.max_order:
            return True
        self.problem(
            where,
            MemMapProblemKind.BAD_ORDER,
            f"{what}: order {order} is outside 0..{self.limits.max_order}",
        )
        return False

    # -- kho-v2 --------------------------------------------------------------------------
    def radix(self, node: int, level: int, start: int) -> None:
        """Depth-first in index order, so each order's addresses come out ascending."""
        data = self.page(node, f"radix level-{level} node")
        if data is None:
            return
        shift = (level - 1) * KHO_TABLE_SIZE_LOG2 + KHO_BITMAP_SIZE_LOG2
        for i, child in enumerate(_TABLE.unpack(data)):
            if not child:
                continue
            key = start | (i << shift)
            if key >> (KHO_ORDER_0_LOG2 + 1):
                self.problem(
                    child,
                    MemMapProblemKind.BAD_ORDER,
                    f"radix level-{level} node {node:#x} entry {i}: keys from {key:#x} have no "
                    "valid order bit (above bit 52)",
                )
                continue
            if level > 1:
                self.radix(child, level - 1, key)
            else:
                self.leaf(child, key)

    def leaf(self, leaf: int, key: int) -> None:
        # The order bit of every key in a leaf is above bit 15, so one order per leaf [I: an
        # order above 37 would put it inside the bitmap; no such order exists].
        order = KHO_ORDER_0_LOG2 - (key.bit_length() - 1) if key else -1
        if not self.order_ok(order, leaf, f"radix leaf {leaf:#x} (key {key:#x})"):
            return
        data = self.page(leaf, "radix leaf")
        if data is not None:
            self.bitmap(data, (key << (PAGE_SHIFT + order)) & U64_MASK, order, leaf)

    # -- kho-v1 --------------------------------------------------------------------------
    def chunks(self, head: int) -> None:
        chunk = head
        while chunk:
            data = self.page(chunk, "khoser_mem_chunk")
            if data is None:
                return
            nxt, order, count = KHOSER_CHUNK_HDR.unpack_from(data)
            if count > KHOSER_BITMAP_SIZE:
                self.problem(
                    chunk,
                    MemMapProblemKind.BAD_COUNT,
                    f"khoser_mem_chunk {chunk:#x}: num_elms {count} exceeds {KHOSER_BITMAP_SIZE}",
                )
            elif self.order_ok(order, chunk, f"khoser_mem_chunk {chunk:#x}"):
                for i in range(count):
                    off = KHOSER_CHUNK_HDR.size + i * KHOSER_BITMAP_PTR.size
                    start, bitmap = KHOSER_BITMAP_PTR.unpack_from(data, off)
                    self.chunk_bitmap(start, bitmap, order, chunk)
            chunk = nxt

    def chunk_bitmap(self, start: int, bitmap: int, order: int, chunk: int) -> None:
        span = PRESERVE_BITS << (PAGE_SHIFT + order)
        if start % span:
            self.problem(
                chunk,
                MemMapProblemKind.BAD_START,
                f"khoser_mem_chunk {chunk:#x}: phys_start {start:#x} is not a multiple of "
                f"{span:#x} (order {order})",
            )
            return
        if bitmap == 0:
            self.problem(
                chunk,
                MemMapProblemKind.NULL,
                f"khoser_mem_chunk {chunk:#x}: null bitmap for phys_start {start:#x}",
            )
            return
        data = self.page(bitmap, "kho_mem_phys_bits bitmap")
        if data is not None:
            self.bitmap(data, start, order, bitmap)


def walk_preserved_memory(
    read_phys: ReadPhys,
    compatible: str,
    map_phys: int | None,
    *,
    limits: MemMapLimits | None = None,
) -> PreservedMemory:
    """Decode the ``preserved-memory-map`` at ``map_phys`` of a KHO root FDT with
    ``compatible`` (``KhoRoot.compatible``, ``KhoRoot.preserved_memory_map``)."""
    limits = limits or MemMapLimits()
    if compatible != KHO_V1 and compatible not in KHO_RADIX:
        return PreservedMemory(
            compatible,
            map_phys,
            MapState.UNKNOWN,
            note=f"unknown KHO compatible {compatible!r}: its preserved-memory map is not decoded",
        )
    if not map_phys:
        if compatible == KHO_V1:
            return PreservedMemory(
                compatible,
                map_phys,
                MapState.NOT_FINALIZED,
                note="kho-v1 builds its preserved-memory map only at finalize; before it the map "
                "is empty and no preserved page can be listed",
            )
        problem = MemMapProblem(
            0,
            f"{compatible} preserved-memory-map is null (the kernel sets it at boot)",
            MemMapProblemKind.NULL,
        )
        return PreservedMemory(compatible, map_phys, MapState.INCOMPLETE, problems=(problem,))
    walk = _Walk(read_phys, limits)
    try:
        if compatible in KHO_RADIX:
            walk.radix(map_phys, KHO_TREE_MAX_DEPTH - 1, 0)
        else:
            walk.chunks(map_phys)
    except _Budget:
        pass
    by_order: dict[int, array[int]] = {}
    for order, found in sorted(walk.out.items()):
        # The radix walk is in key order (ascending per order); kho-v1 chunks need not be.
        by_order[order] = array("Q", sorted(set(found))) if compatible == KHO_V1 else found
    return PreservedMemory(
        compatible,
        map_phys,
        MapState.INCOMPLETE if walk.problems else MapState.COMPLETE,
        MappingProxyType(by_order),
        tuple(walk.problems),
        pages_read=len(walk.seen),
    )


__all__ = [
    "KHO_RADIX",
    "KHO_V1",
    "KHO_V2",
    "KHO_V3",
    "KHO_V4",
    "MapState",
    "MemMapLimits",
    "MemMapProblem",
    "MemMapProblemKind",
    "PreservedMemory",
    "PreservedRange",
    "ReadPhys",
    "walk_preserved_memory",
]
