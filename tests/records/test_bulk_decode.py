"""The bulk paths of the KHO map decode and the signature scan against straightforward references.

``bitmap_pages`` (khomem) decodes a leaf through per-byte lookup tables and one int of lanes;
the reference reads bit ``i`` as bit ``i % 8`` of byte ``i // 8`` (the same little-endian
bitmap, read another way).  ``_probe_all`` (signature) probes pages in batches and tests their
headers together; the reference is the page-at-a-time scan it replaced, kept here verbatim in
substance.  Both must agree exactly: the same pages in the same order, the same probes made.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.records import UNIT_A, UNIT_B
from vtdlud.errors import ParseError
from vtdlud.model import signature
from vtdlud.model.abi import IOMMU_SER_FLAG_DELETED, PAGE_SIZE, V1, V2
from vtdlud.model.khomem import PRESERVE_BITS, bitmap_pages
from vtdlud.model.signature import (
    DEVICE_CAPACITY,
    HW_CAPACITY,
    HW_SIZE,
    INTEL,
    PROBE_SIZE,
    ScanLimits,
    _Candidates,
    _probe_all,
)

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U64 = (1 << 64) - 1
UNITS = frozenset({UNIT_A, UNIT_B})

# --- bitmaps -------------------------------------------------------------------------------


def _reference_pages(data: bytes, base: int, order: int) -> list[int]:
    shift = 12 + order
    return [base + (i << shift) for i in range(PRESERVE_BITS) if data[i >> 3] >> (i & 7) & 1]


_WORDS = st.one_of(
    st.integers(1, U64),
    st.integers(0, 63).map(lambda b: 1 << b),
    st.sampled_from([U64, 1 << 63, 1 | 1 << 63, 0x0101_0101_0101_0101, 0xFF00_FF00_FF00_FF00]),
)


@st.composite
def bitmaps(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A leaf's bitmap (a few words set, random bytes of some density, or every bit set), an
    order and an aligned base: the decoder's three ways (a step per bit where the longs have a
    bit or two, lanes from tables, a range for a full leaf) are all taken."""
    shape = draw(st.sampled_from(["words", "words", "random", "random", "full"]))
    if shape == "full":
        data = bytearray(b"\xff" * (PRESERVE_BITS // 8))
    elif shape == "words":
        data = bytearray(PRESERVE_BITS // 8)
        for index, word in draw(st.lists(st.tuples(st.integers(0, 511), _WORDS), max_size=40)):
            struct.pack_into("<Q", data, index * 8, word)
    else:
        rng = random.Random(draw(st.integers(0, 1 << 32)))
        density = draw(st.sampled_from([0.0, 0.001, 0.1, 0.5, 1.0]))
        data = bytearray(rng.randbytes(PRESERVE_BITS // 8))
        for i in range(len(data)):
            data[i] &= 0xFF if rng.random() < density else 0
    order = draw(st.integers(0, 18))
    span_log2 = 15 + 12 + order  # a base is a multiple of the bitmap's span, below 2**64
    base = draw(st.integers(0, (1 << (64 - span_log2)) - 1)) << span_log2
    return bytes(data), base, order


@EXAMPLES
@given(bitmaps())
def test_bitmap_pages_matches_bit_by_bit(case: tuple[bytes, int, int]) -> None:
    data, base, order = case
    assert list(bitmap_pages(data, base, order)) == _reference_pages(data, base, order)


def test_bitmap_pages_edges() -> None:
    full = b"\xff" * (PRESERVE_BITS // 8)
    top = (1 << 64) - (PRESERVE_BITS << 12)  # the last leaf of order 0 below 2**64
    assert list(bitmap_pages(full, top, 0)) == _reference_pages(full, top, 0)
    assert list(bitmap_pages(full, 0, 18)) == [i << 30 for i in range(PRESERVE_BITS)]
    assert len(bitmap_pages(bytes(PRESERVE_BITS // 8), 0, 0)) == 0
    last = bytes(PRESERVE_BITS // 8 - 1) + b"\x80"
    assert list(bitmap_pages(last, top, 0)) == [(1 << 64) - PAGE_SIZE]


# --- the scan's stage 1 --------------------------------------------------------------------


def _aligned_distinct(*words: int) -> bool:
    return all(w and not w & (PAGE_SIZE - 1) for w in words) and len(set(words)) == len(words)


def _reference_probe_all(
    probe: Callable[[int, int], bytes], pages: list[int], units: frozenset[int], cap: int
) -> _Candidates:
    """The page-at-a-time stage 1 (vtdlud before the batched scan)."""
    c = _Candidates([], [], [], [])
    low, kept = PAGE_SIZE - 1, 0
    for page in pages:
        c.scanned += 1
        try:
            raw = probe(page, PROBE_SIZE)
        except (ParseError, OSError):
            c.unreadable += 1
            continue
        if len(raw) != PROBE_SIZE:
            c.unreadable += 1
            continue
        w0, w1, w2, w3, w4, _restored, w6 = struct.unpack("<7Q", raw)
        if w0 & low:
            if w0 == 1 and _aligned_distinct(w1, w2, w3):
                c.flb.append((page, V2.name, w1, w2, w3))
                kept += 1
        elif w1 & low == 0:
            if _aligned_distinct(w0, w1, w2):
                c.flb.append((page, V1.name, w0, w1, w2))
                kept += 1
        else:
            if w1 <= HW_CAPACITY:
                if w3 in units and w4 == INTEL and w6 == w3:
                    c.hw.append(page)
                    kept += 1
                elif w2 & (IOMMU_SER_FLAG_DELETED << 32) and w1 > 1:
                    c.maybe_hw.append(page)
                    kept += 1
            off = (w6 & low) - 16
            if (
                w1 <= DEVICE_CAPACITY
                and w6
                and 0 <= off < HW_SIZE * HW_CAPACITY
                and not off % HW_SIZE
            ):
                c.device.append((page, w6))
                kept += 1
        if kept > cap:
            c.overflow = True
            break
    return c


_ALIGNED = st.one_of(
    st.integers(0, (1 << 52) - 1).map(lambda x: x << 12),
    st.integers(12, 63).map(lambda b: 1 << b),  # one byte non-zero, whichever
)
_ANY = st.integers(0, U64)


def _slot(k: int) -> int:
    return 16 + HW_SIZE * k


@st.composite
def headers(draw: st.DrawFn) -> bytes | Exception:
    """A probe's outcome: 56 bytes shaped as a header the scan keeps (an hw, DELETED hw or
    device array page, a v1 or v2 FLB) with one word perhaps changed, random or zero bytes, a
    short read, or an error."""
    kind = draw(st.sampled_from(["hw", "deleted", "device", "flb1", "flb2", "random", "zero"]))
    kind = draw(st.sampled_from([kind, kind, "error", "short"]))
    if kind == "error":
        return draw(st.sampled_from([ParseError("outside RAM"), OSError(5, "EIO")]))
    if kind == "short":
        return draw(st.binary(max_size=PROBE_SIZE + 8).filter(lambda b: len(b) != PROBE_SIZE))
    if kind in ("random", "zero"):
        return (
            draw(st.binary(min_size=PROBE_SIZE, max_size=PROBE_SIZE))
            if kind == "random"
            else bytes(PROBE_SIZE)
        )
    page = draw(_ALIGNED)
    unit = draw(st.sampled_from(sorted(UNITS)))
    deleted = 1 | IOMMU_SER_FLAG_DELETED << 32
    slot = page + _slot(draw(st.integers(0, HW_CAPACITY - 1)))
    device_too = draw(st.sampled_from([0, slot]))  # a DELETED hw page that looks a device page too
    words = {
        "hw": [page, draw(st.integers(1, HW_CAPACITY)), 1, unit, INTEL, 0, unit],
        "deleted": [0, draw(st.integers(2, HW_CAPACITY)), deleted, 0, 0, 0, device_too],
        "device": [
            0,
            draw(st.integers(1, DEVICE_CAPACITY)),
            1,
            0x300,
            0,
            0x5000,
            slot,
        ],
        "flb1": [draw(_ALIGNED), draw(_ALIGNED), draw(_ALIGNED), 0, 0, 0, 0],
        "flb2": [1, draw(_ALIGNED), draw(_ALIGNED), draw(_ALIGNED), 0, 0, 0],
    }[kind]
    if draw(st.booleans()):  # a near miss, or by chance still a keeper
        i = draw(st.integers(0, 6))
        words[i] = draw(
            st.one_of(
                st.sampled_from([0, 1, 2, 37, 73, 0x1001, 0x100]),
                _ALIGNED,
                _ANY,
                st.just(words[i] ^ 1 << draw(st.integers(0, 63))),
            )
        )
    return struct.pack("<7Q", *words)


class Probe:
    def __init__(self, outcomes: dict[int, bytes | Exception]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[int, int]] = []

    def __call__(self, addr: int, size: int) -> bytes:
        self.calls.append((addr, size))
        out = self.outcomes[addr]
        if isinstance(out, Exception):
            raise out
        return out


def _fields(c: _Candidates) -> tuple[object, ...]:
    return (c.hw, c.maybe_hw, c.device, c.flb, c.scanned, c.unreadable, c.overflow)


@EXAMPLES
@given(
    st.lists(headers(), min_size=20, max_size=150),
    st.sampled_from([0, 1, 2, 3, 7, 16384]),
    st.sampled_from([1, 2, 7, 64, 4096]),
    st.sampled_from([0, 7]),
)
def test_batched_probe_matches_page_at_a_time(
    outcomes: list[bytes | Exception], cap: int, batch: int, padding: int
) -> None:
    """``padding`` zero pages after each header: with 7, under an eighth of a batch passes
    the bulk test and only those are decoded; with none, most do and the batch is decoded
    whole."""
    padded = [o for out in outcomes for o in [out] + [bytes(PROBE_SIZE)] * padding]
    pages = [0x10_0000 + i * PAGE_SIZE for i in range(len(padded))]
    table = dict(zip(pages, padded, strict=True))
    old, new = Probe(table), Probe(table)
    expected = _reference_probe_all(old, pages, UNITS, cap)
    with patch.object(signature, "PROBE_BATCH", batch):
        got = _probe_all(new, iter(pages), UNITS, ScanLimits(max_candidates=cap))
    assert _fields(got) == _fields(expected)
    assert new.calls == old.calls  # the same pages probed, in order, and no more


def test_batched_probe_over_many_batches() -> None:
    """Ten thousand random headers with a kept one every few hundred pages, across the real
    batch size: the same candidates as page at a time."""
    rng = random.Random(15)
    pages = [0x1_0000_0000 + i * PAGE_SIZE for i in range(10_000)]
    table: dict[int, bytes | Exception] = {p: rng.randbytes(PROBE_SIZE) for p in pages}
    for page in rng.sample(pages, 40):
        table[page] = struct.pack("<7Q", 0, 2, 0, UNIT_A, INTEL, 0, UNIT_A)  # an hw page
    for page in rng.sample(pages, 20):
        table[page] = struct.pack("<7Q", 0x5000, 0x6000, 0x7000, 0, 0, 0, 0)  # a v1 FLB
    for page in rng.sample(pages, 20):
        table[page] = bytes(PROBE_SIZE)  # zeros: tested, not kept
    table[pages[77]] = OSError(5, "EIO")
    old, new = Probe(table), Probe(table)
    expected = _reference_probe_all(old, pages, UNITS, 16384)
    got = _probe_all(new, pages, UNITS, ScanLimits())
    assert _fields(got) == _fields(expected) and new.calls == old.calls
    assert len(got.hw) == 40 and got.unreadable == 1


def test_batches_stop_where_the_page_at_a_time_scan_stops() -> None:
    """Pages that join two lists each (a DELETED hw page whose first record also looks like a
    device's), against every small bound: the scan stops at the same page, probing no more."""
    both = struct.pack("<7Q", 0, 2, 1 | IOMMU_SER_FLAG_DELETED << 32, 0, 0, 0, 0x9000 + _slot(3))
    one = struct.pack("<7Q", 0, 2, 0, UNIT_B, INTEL, 0, UNIT_B)
    rng = random.Random(3)
    for cap in range(12):
        for _ in range(5):
            pages = [0x10_0000 + i * PAGE_SIZE for i in range(30)]
            table: dict[int, bytes | Exception] = {
                p: rng.choice([both, both, one, bytes(PROBE_SIZE)]) for p in pages
            }
            old, new = Probe(table), Probe(table)
            expected = _reference_probe_all(old, pages, UNITS, cap)
            got = _probe_all(new, pages, UNITS, ScanLimits(max_candidates=cap))
            assert _fields(got) == _fields(expected) and new.calls == old.calls
