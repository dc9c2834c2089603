"""Hypothesis: random and mutated KHO/LUO inputs through every parser; only ParseError (or an
explicit unknown result) may come out, and a walk through corrupted memory always ends.

No real capture exists: the seeds are the synthetic blobs of tests/kho/blobs.py (layouts named
there and in vtdlud/parse/kho.py and vtdlud/parse/luo.py).
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kho.blobs import (
    FakeMemory,
    block,
    file_ser,
    flb_ser,
    kho_v1,
    kho_v2,
    luo_fdt,
    luo_ser_compatible,
    luo_ser_features,
    session_ser_v2,
    u64le,
)
from vtdlud.errors import ParseError
from vtdlud.model.abi import IommuFlbSerV2
from vtdlud.parse.kho import KhoRoot, UnknownKho, parse_finalize, parse_kho_root, parse_scratch
from vtdlud.parse.khocut import CutKhoRoot, parse_kho_debugfs_root, recover_cut_root
from vtdlud.parse.luo import (
    LuoBlob,
    LuoCorrupt,
    LuoState,
    StaleLuo,
    UnknownLuo,
    parse_luo_blob,
    walk_luo,
)
from vtdlud.parse.luofreed import read_freed_luo

FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

KHO_SEEDS = [
    kho_v1({"LUO": 0x1000, "memblock": 0x2000}),
    kho_v2({"LUO": (0x3000, 152), "x": (0x4000, None)}),
]
LUO_SEEDS = [
    luo_fdt(),
    luo_fdt(session_compatible="luo-session-v1", flb_compatible=None),
    luo_ser_features(),
    luo_ser_compatible("luo-v5", sessions_pa=0x1000, flbs_pa=0x2000),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data) + 16))
    return (
        bytes(data[:cut]) + draw(st.binary(max_size=16)) if cut > len(data) else bytes(data[:cut])
    )


def check_kho(data: bytes) -> None:
    try:
        result = parse_kho_root(data)
    except ParseError:
        return
    assert isinstance(result, KhoRoot | UnknownKho)


def check_luo(data: bytes) -> None:
    try:
        result = parse_luo_blob(data)
    except ParseError:
        return
    assert isinstance(result, LuoBlob | UnknownLuo)


@FUZZ
@given(st.binary(max_size=512))
def test_kho_random(data: bytes) -> None:
    check_kho(data)
    check_kho(b"\xd0\x0d\xfe\xed" + data)


@FUZZ
@given(mutated(KHO_SEEDS))
def test_kho_mutated(data: bytes) -> None:
    check_kho(data)


@FUZZ
@given(st.binary(max_size=512))
def test_luo_random(data: bytes) -> None:
    check_luo(data)
    check_luo(b"\xd0\x0d\xfe\xed" + data)
    check_luo(b"luo-" + data)


@FUZZ
@given(mutated(LUO_SEEDS))
def test_luo_mutated(data: bytes) -> None:
    check_luo(data)


@FUZZ
@given(st.text(max_size=80), st.text(max_size=80))
def test_scratch_and_finalize_random(a: str, b: str) -> None:
    for call in (lambda: parse_scratch(a, b), lambda: parse_finalize(a)):
        with contextlib.suppress(ParseError):
            call()


def world() -> tuple[FakeMemory, list[LuoBlob]]:
    """Memory holding every structure a walk follows, and blobs of each generation over it."""
    mem = FakeMemory()
    f2 = mem.alloc(block(0, [file_ser("b", 2, 2)]))
    f1 = mem.alloc(block(f2, [file_ser("a", 1, 1)]))
    s1 = mem.alloc(block(0, [session_ser_v2("s", f1, 2), session_ser_v2("t")]))
    flat_files = mem.alloc(file_ser("c", 3, 3), pages=2)
    hdr = mem.alloc(u64le(1) + session_ser_v2("u", flat_files, 1), pages=16)
    flb_pa = mem.alloc(IommuFlbSerV2(1, 1, 2, 3).pack())
    flbs = mem.alloc(
        struct.pack("<QQ", 1, 2) + flb_ser("iommu-liveupdate", flb_pa, 1) + flb_ser("z", 9, 1)
    )
    blobs = [
        parse_luo_blob(luo_fdt(session_header=hdr, flb_header=flbs)),
        parse_luo_blob(luo_ser_features(sessions_pa=s1, flbs_pa=flbs)),
        parse_luo_blob(luo_ser_compatible("luo-v5", sessions_pa=s1, flbs_pa=flbs)),
    ]
    assert all(isinstance(b, LuoBlob) for b in blobs)
    return mem, [b for b in blobs if isinstance(b, LuoBlob)]


@FUZZ
@given(st.data())
def test_walk_through_corrupted_memory(data: st.DataObject) -> None:
    mem, blobs = world()
    for blob in blobs:  # intact first: every part decodes
        state = walk_luo(blob, mem)
        assert not isinstance(state.sessions, LuoCorrupt)
        assert not isinstance(state.flbs, LuoCorrupt)
    pages = sorted(mem.pages)
    addresses = [p * 4096 for p in pages]
    for _ in range(data.draw(st.integers(1, 12))):
        page = data.draw(st.sampled_from(pages))
        # Corrupt where headers and pointers live, the first 96 bytes of a page: a byte, or a
        # u64 turned into another structure's address (cross links and loops).
        if data.draw(st.booleans()):
            offset = data.draw(st.integers(0, 95))
            mem.pages[page][offset] = data.draw(st.sampled_from([0, 1, 0x41, 0xFF]))
        else:
            offset = data.draw(st.integers(0, 11)) * 8
            target = data.draw(st.sampled_from([*addresses, 0, 2**64 - 8]))
            mem.pages[page][offset : offset + 8] = target.to_bytes(8, "little")
    for page in data.draw(st.lists(st.sampled_from(pages), max_size=2)):
        mem.pages.pop(page, None)
    for blob in blobs:
        state = walk_luo(blob, mem)  # never raises: corruption is a LuoCorrupt part
        assert isinstance(state, LuoState)


@FUZZ
@given(
    st.dictionaries(st.integers(0, 8), st.binary(min_size=4096, max_size=4096), max_size=9),
    st.integers(0, 9 * 4096),
    st.integers(0, 9 * 4096),
)
def test_walk_through_random_memory(pages: dict[int, bytes], spa: int, fpa: int) -> None:
    mem = FakeMemory()
    mem.pages = {p: bytearray(b) for p, b in pages.items()}
    for blob in (
        parse_luo_blob(luo_ser_features(sessions_pa=spa, flbs_pa=fpa)),
        parse_luo_blob(luo_fdt(session_header=spa or 1, flb_header=fpa or 1)),
    ):
        assert isinstance(blob, LuoBlob)
        assert isinstance(walk_luo(blob, mem), LuoState)


# --- Linux 7.2: the cut root FDT and the freed incoming LUO blob -------------------------------


def _cut_seed() -> bytes:
    from vtdlud.sim.scenarios import linux72_host  # noqa: PLC0415 - the model, only here

    host = linux72_host(seed=11)
    host.kho.refresh_radix()
    copy = host.kho.debugfs_fdt()
    assert copy is not None
    return copy


CUT_SEEDS = [_cut_seed()]


def check_cut(data: bytes) -> None:
    try:
        result = parse_kho_debugfs_root(data)
    except ParseError:
        return
    assert isinstance(result, KhoRoot | UnknownKho | CutKhoRoot)
    if isinstance(result, CutKhoRoot):
        assert result.size == len(data) < result.totalsize <= 4096
        _ = (result.compatible, result.map_candidates, result.reason)
        found = recover_cut_root(result, FakeMemory())
        assert isinstance(found, str)  # empty memory: a reason, never a root


@FUZZ
@given(mutated(CUT_SEEDS))
def test_cut_root_mutated(data: bytes) -> None:
    check_cut(data)


@FUZZ
@given(st.binary(max_size=512))
def test_cut_root_random(data: bytes) -> None:
    check_cut(b"\xd0\x0d\xfe\xed" + data)


@FUZZ
@given(st.binary(max_size=64), st.data())
def test_freed_luo_never_raises(data: bytes, draw: st.DataObject) -> None:
    mem, _ = world()
    raw = draw.draw(st.sampled_from([data, b"luo-v5\x00\x00" + data]))
    blob, state = read_freed_luo(raw, mem)
    assert isinstance(blob, LuoBlob | StaleLuo)
    if state is not None:
        # a freed blob's parts are stale, never corrupt (no VTD041 from freed memory)
        assert not isinstance(state.sessions, LuoCorrupt | UnknownLuo)
        assert not isinstance(state.flbs, LuoCorrupt | UnknownLuo)
        assert not isinstance(state.iommu, LuoCorrupt)
