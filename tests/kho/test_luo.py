"""vtdlud.parse.luo: the three LUO wire generations, walked through a fake physical memory.

No real capture of a LUO blob exists: every blob and every structure in memory here is built by
tests/kho/blobs.py from the layouts of include/linux/kho/abi/luo.h in torvalds/linux @0153094d03df
(FDT, luo-session-v1) and @cc4adab164b7 (luo-session-v2), kernel/liveupdate/luo_flb.c
@118c39082420 (luo-flb-v1), linux-mm/linux-mm @29a751073843 (struct luo_ser with a feature
header, include/linux/kho/abi/block.h block chains) and one posted luo.h with ``"luo-v5"``
(inferred).  The IOMMU FLB record is packed with vtdlud.model.abi (samikhawaja/linux
include/linux/kho/abi/iommu.h, both posted variants).
"""

from __future__ import annotations

import struct

import pytest

from tests.kho.blobs import (
    FakeMemory,
    Node,
    block,
    build_fdt,
    cstr,
    file_ser,
    flb_ser,
    luo_fdt,
    luo_ser_compatible,
    luo_ser_features,
    session_ser_v1,
    session_ser_v2,
    u64le,
)
from vtdlud.errors import ParseError
from vtdlud.model.abi import V1, V2, IommuFlbSerV1, IommuFlbSerV2, UnknownAbi
from vtdlud.model.luo import (
    FlbsRef,
    IommuFlb,
    LuoBlob,
    LuoCorrupt,
    LuoFeatures,
    LuoFile,
    LuoFlb,
    LuoGeneration,
    LuoSession,
    LuoState,
    SessionFormat,
    SessionsRef,
    UnknownLuo,
)
from vtdlud.parse import luo
from vtdlud.parse.luo import (
    find_iommu_flb,
    parse_luo,
    parse_luo_blob,
    read_flbs,
    read_sessions,
    walk_luo,
)


def iommu_flb_v2(mem: FakeMemory, version: int = 1) -> int:
    return mem.alloc(IommuFlbSerV2(version, 0xA000, 0xB000, 0xC000).pack())


def flb_header(mem: FakeMemory, entries: list[bytes], pgcnt: int = 1) -> int:
    return mem.alloc(struct.pack("<QQ", pgcnt, len(entries)) + b"".join(entries), pages=pgcnt)


def session_header(mem: FakeMemory, entries: list[bytes], count: int | None = None) -> int:
    n = len(entries) if count is None else count
    return mem.alloc(u64le(n) + b"".join(entries), pages=16)


# --- (a) the FDT ------------------------------------------------------------------------------


def test_fdt_v2_sessions_files_flbs_and_iommu() -> None:
    mem = FakeMemory()
    files = mem.alloc(
        file_ser("iommufd-v1", 0xF000, 0x123456) + file_ser("memfd-v1", 0xE000, 0x890123), pages=2
    )
    hdr = session_header(
        mem, [session_ser_v2("iommufd-test-cdev", files, 2), session_ser_v2("idle", 0, 0)]
    )
    flb_pa = iommu_flb_v2(mem)
    flbs = flb_header(mem, [flb_ser("iommu-liveupdate", flb_pa, 3), flb_ser("pci-v1", 0x77, 1)])
    blob = parse_luo_blob(luo_fdt(number=4, session_header=hdr, flb_header=flbs))
    assert blob == LuoBlob(
        LuoGeneration.FDT,
        "luo-v1",
        4,
        SessionsRef(SessionFormat.HEADER_V2, hdr),
        FlbsRef(flbs),
    )
    assert isinstance(blob, LuoBlob)
    state = walk_luo(blob, mem)
    assert state.liveupdate_num == 4
    assert state.sessions == (
        LuoSession(
            "iommufd-test-cdev",
            (LuoFile("iommufd-v1", 0x123456, 0xF000), LuoFile("memfd-v1", 0x890123, 0xE000)),
        ),
        LuoSession("idle", ()),
    )
    assert state.flbs == (LuoFlb("iommu-liveupdate", flb_pa, 3), LuoFlb("pci-v1", 0x77, 1))
    assert state.iommu == IommuFlb("iommu-liveupdate", flb_pa, 3, 1, V2)


def test_fdt_session_v1_has_names_only_and_no_flb_node() -> None:
    mem = FakeMemory()
    hdr = session_header(mem, [session_ser_v1("a"), session_ser_v1("b" * 63)])
    state = parse_luo(
        luo_fdt(session_compatible="luo-session-v1", session_header=hdr, flb_compatible=None), mem
    )
    assert isinstance(state, LuoState)
    assert state.blob.sessions == SessionsRef(SessionFormat.HEADER_V1, hdr)
    assert state.sessions == (LuoSession("a", None), LuoSession("b" * 63, None))
    assert state.flbs is None
    assert state.iommu is None


def test_fdt_v1_iommu_flb_needs_no_memory_read_for_version() -> None:
    mem = FakeMemory()
    flb_pa = mem.alloc(IommuFlbSerV1(1, 2, 3).pack())
    flbs = flb_header(mem, [flb_ser("iommu-liveupdate-v1", flb_pa, 1)])
    hdr = session_header(mem, [])
    state = parse_luo(luo_fdt(session_header=hdr, flb_header=flbs), mem)
    assert isinstance(state, LuoState)
    assert state.iommu == IommuFlb("iommu-liveupdate-v1", flb_pa, 1, None, V1)
    assert (flb_pa, 8) not in mem.reads


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"compatible": "luo-v2"}, "blob"),
        ({"compatible": "luo-v0"}, "blob"),
        ({"session_compatible": "luo-session-v3"}, "sessions"),
        ({"flb_compatible": "luo-flb-v2"}, "flbs"),
    ],
)
def test_fdt_unknown_compatibles(kwargs: dict[str, str], where: str) -> None:
    blob = parse_luo_blob(luo_fdt(**kwargs))  # type: ignore[arg-type]
    if where == "blob":
        assert isinstance(blob, UnknownLuo)
        assert blob.compatible == kwargs["compatible"]
        return
    assert isinstance(blob, LuoBlob)
    part = getattr(blob, where)
    assert isinstance(part, UnknownLuo)
    assert part.compatible == next(iter(kwargs.values()))
    # The other part is still decoded.
    other = blob.flbs if where == "sessions" else blob.sessions
    assert not isinstance(other, UnknownLuo)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"number": None}, "no 'liveupdate-number'"),
        ({"session_compatible": None}, "no 'luo-session' node"),
        ({"session_header": None}, "no 'luo-session-header'"),
        ({"flb_header": None}, "no 'luo-flb-header'"),
    ],
)
def test_fdt_missing_nodes_and_properties(kwargs: dict[str, None], match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_luo_blob(luo_fdt(**kwargs))  # type: ignore[arg-type]


def test_fdt_wrong_length_number() -> None:
    blob = build_fdt(
        Node("", [("compatible", cstr("luo-v1")), ("liveupdate-number", b"\x01\x00\x00\x00")])
    )
    with pytest.raises(ParseError, match="'liveupdate-number' is 4 bytes"):
        parse_luo_blob(blob)


def test_fdt_truncations() -> None:
    blob = luo_fdt()
    for cut in range(len(blob)):
        with pytest.raises(ParseError):
            parse_luo_blob(blob[:cut])


# --- bounds and corruption behind the FDT ----------------------------------------------------


def test_session_count_over_the_16_page_block() -> None:
    mem = FakeMemory()
    hdr = session_header(mem, [], count=820)  # (16 * 4096 - 8) // 80 = 819
    with pytest.raises(ParseError, match=r"luo_session_header_ser.count 820 exceeds the 819"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V2, hdr), mem)
    hdr1 = session_header(mem, [], count=1024)  # v1: 64-byte entries, 1023
    with pytest.raises(ParseError, match="count 1024 exceeds the 1023"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V1, hdr1), mem)


def test_absurd_count_never_reads_the_memory_it_claims() -> None:
    mem = FakeMemory()
    hdr = session_header(mem, [], count=2**63)
    with pytest.raises(ParseError, match=r"luo_session_header_ser\.count"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V2, hdr), mem)
    assert mem.reads == [(hdr, 8)]


def test_file_count_over_the_2_page_block() -> None:
    mem = FakeMemory()
    hdr = session_header(mem, [session_ser_v2("s", 0x5000, 129)])
    with pytest.raises(ParseError, match=r"luo_file_set_ser\.count 129 exceeds the 128"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V2, hdr), mem)


def test_files_null_with_a_count() -> None:
    mem = FakeMemory()
    hdr = session_header(mem, [session_ser_v2("s", 0, 2)])
    with pytest.raises(ParseError, match="count 2 with a null files address"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V2, hdr), mem)


def test_unterminated_names() -> None:
    mem = FakeMemory()
    hdr = session_header(mem, [b"x" * 64])
    with pytest.raises(ParseError, match=r"luo_session_ser\[0\].name: 64 bytes without"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V1, hdr), mem)
    files = mem.alloc(b"y" * 48 + struct.pack("<QQ", 1, 2))
    hdr2 = session_header(mem, [session_ser_v2("s", files, 1)])
    with pytest.raises(ParseError, match=r"luo_file_ser\[0\].compatible"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V2, hdr2), mem)


def test_pointer_outside_ram() -> None:
    mem = FakeMemory()
    with pytest.raises(ParseError, match=r"luo_session_header_ser at 0xdead000: 0xdead000 is not"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V2, 0xDEAD000), mem)
    with pytest.raises(ParseError, match="null physical address"):
        read_sessions(SessionsRef(SessionFormat.HEADER_V1, 0), mem)


@pytest.mark.parametrize(
    ("pgcnt", "count", "match"),
    [
        (0, 0, "pgcnt 0 is not 1..16"),
        (17, 0, "pgcnt 17 is not 1..16"),
        (2**64 - 1, 1, "pgcnt 18446744073709551615"),
        (1, 64, "count 64 exceeds the 63 entries of 1 page"),
        (2, 128, "count 128 exceeds the 127 entries of 2 page"),
    ],
)
def test_flb_header_bounds(pgcnt: int, count: int, match: str) -> None:
    mem = FakeMemory()
    pa = mem.alloc(struct.pack("<QQ", pgcnt, count), pages=2)
    with pytest.raises(ParseError, match=match):
        read_flbs(FlbsRef(pa), mem)


def test_flb_header_two_pages_holds_more() -> None:
    mem = FakeMemory()
    entries = [flb_ser(f"flb-{i}", i, 1) for i in range(100)]
    pa = flb_header(mem, entries, pgcnt=2)
    assert len(read_flbs(FlbsRef(pa), mem)) == 100


def test_walk_isolates_a_corrupt_part() -> None:
    mem = FakeMemory()
    flb_pa = iommu_flb_v2(mem)
    flbs = flb_header(mem, [flb_ser("iommu-liveupdate", flb_pa, 1)])
    state = parse_luo(luo_fdt(session_header=0xBAD000, flb_header=flbs), mem)
    assert isinstance(state, LuoState)
    assert isinstance(state.sessions, LuoCorrupt)
    assert state.sessions.what == "sessions"
    assert isinstance(state.iommu, IommuFlb)
    bad = parse_luo(luo_fdt(session_header=session_header(mem, []), flb_header=0xBAD000), mem)
    assert isinstance(bad, LuoState)
    assert bad.sessions == ()
    assert isinstance(bad.flbs, LuoCorrupt)
    assert bad.iommu is None


# --- the IOMMU FLB ---------------------------------------------------------------------------


def test_iommu_unknown_version_and_compatible() -> None:
    mem = FakeMemory()
    pa = iommu_flb_v2(mem, version=2)
    got = find_iommu_flb((LuoFlb("iommu-liveupdate", pa, 1),), mem)
    assert isinstance(got, IommuFlb)
    assert got.version == 2
    assert isinstance(got.variant, UnknownAbi)
    assert "version 2" in got.variant.reason
    got = find_iommu_flb((LuoFlb("iommu-liveupdate-v3", pa, 1),), mem)
    assert isinstance(got, IommuFlb)
    assert got.version is None
    assert isinstance(got.variant, UnknownAbi)
    assert got.variant.compatible == "iommu-liveupdate-v3"


def test_iommu_flb_corrupt_or_several() -> None:
    mem = FakeMemory()
    assert find_iommu_flb((LuoFlb("memfd-v1", 1, 1),), mem) is None
    null = find_iommu_flb((LuoFlb("iommu-liveupdate-v1", 0, 1),), mem)
    assert isinstance(null, LuoCorrupt)
    unreadable = find_iommu_flb((LuoFlb("iommu-liveupdate", 0xBAD000, 1),), mem)
    assert isinstance(unreadable, LuoCorrupt)
    assert "iommu_flb_ser.version" in unreadable.reason
    two = find_iommu_flb(
        (LuoFlb("iommu-liveupdate", 1, 1), LuoFlb("iommu-liveupdate-v1", 2, 1)), mem
    )
    assert isinstance(two, IommuFlb)
    assert isinstance(two.variant, UnknownAbi)
    assert "2 IOMMU FLB entries" in two.variant.reason


# --- (b) luo_ser with a feature header -------------------------------------------------------


def build_block_world(mem: FakeMemory) -> tuple[int, int, int]:
    """Sessions in two blocks, one session's 70 files in two blocks; FLB header.  Returns
    (sessions_pa, flbs_pa, iommu_flb_ser_pa)."""
    files = [file_ser(f"h{i}", i, 1000 + i) for i in range(70)]  # 63 per block
    f2 = mem.alloc(block(0, files[63:]))
    f1 = mem.alloc(block(f2, files[:63]))
    sessions = [session_ser_v2(f"s{i}") for i in range(52)]  # 51 per block
    sessions[51] = session_ser_v2("vm", f1, 70)
    s2 = mem.alloc(block(0, sessions[51:]))
    s1 = mem.alloc(block(s2, sessions[:51]))
    flb_pa = iommu_flb_v2(mem)
    return s1, flb_header(mem, [flb_ser("iommu-liveupdate", flb_pa, 2)]), flb_pa


def test_feature_struct_full_walk() -> None:
    mem = FakeMemory()
    s1, flbs, flb_pa = build_block_world(mem)
    state = parse_luo(luo_ser_features(number=9, sessions_pa=s1, flbs_pa=flbs), mem)
    assert isinstance(state, LuoState)
    assert state.blob.generation is LuoGeneration.STRUCT_FEATURES
    assert state.blob.compatible is None
    assert state.blob.features == LuoFeatures(7, 7, 7)
    assert state.liveupdate_num == 9
    assert isinstance(state.sessions, tuple)
    assert [s.name for s in state.sessions] == [f"s{i}" for i in range(51)] + ["vm"]
    vm = state.sessions[-1].files
    assert vm is not None
    assert len(vm) == 70
    assert vm[69] == LuoFile("h69", 1069, 69)
    assert state.iommu == IommuFlb("iommu-liveupdate", flb_pa, 2, 1, V2)


def test_feature_struct_inactive_features_and_trailing_bytes() -> None:
    blob = parse_luo_blob(luo_ser_features(supp=0b111, active=0b100, req=0) + b"\x00" * 16)
    assert isinstance(blob, LuoBlob)
    assert blob.liveupdate_num is None
    assert blob.sessions is None
    assert blob.flbs == FlbsRef(0x40_0000)
    empty = walk_luo(
        LuoBlob(
            LuoGeneration.STRUCT_FEATURES, None, 1, SessionsRef(SessionFormat.BLOCKS, 0), FlbsRef(0)
        ),
        FakeMemory(),
    )
    assert empty.sessions == ()
    assert empty.flbs == ()


def test_feature_struct_unknown_required_feature_is_unknown() -> None:
    result = parse_luo_blob(luo_ser_features(supp=0b1111, req=0b1000, active=0b1111))
    assert isinstance(result, UnknownLuo)
    assert "0x8" in result.reason
    # An optional (supported, not required) unknown feature is fine.
    ok = parse_luo_blob(luo_ser_features(supp=0b10111, req=0b111, active=0b10111))
    assert isinstance(ok, LuoBlob)


def test_feature_struct_errors() -> None:
    with pytest.raises(ParseError, match="too short"):
        parse_luo_blob(luo_ser_features()[:151])
    with pytest.raises(ParseError, match="active 0x7 has bits that supp 0x3 lacks"):
        parse_luo_blob(luo_ser_features(supp=0b011))


@pytest.mark.parametrize("count", [0, 52])
def test_block_count_out_of_range(count: int) -> None:
    mem = FakeMemory()
    s1 = mem.alloc(block(0, [], count=count))
    with pytest.raises(ParseError, match=rf"kho_block_header_ser.count {count} .* not 1..51"):
        read_sessions(SessionsRef(SessionFormat.BLOCKS, s1), mem)


def test_block_chain_loop() -> None:
    mem = FakeMemory()
    a = mem.alloc(b"")
    b = mem.alloc(block(a, [session_ser_v2("b")]))
    mem.write(a, block(b, [session_ser_v2("a")]))
    with pytest.raises(ParseError, match=f"loops back to {a:#x}"):
        read_sessions(SessionsRef(SessionFormat.BLOCKS, a), mem)
    selfloop = mem.alloc(b"")
    mem.write(selfloop, block(selfloop, [session_ser_v2("x")]))
    with pytest.raises(ParseError, match="loops back"):
        read_sessions(SessionsRef(SessionFormat.BLOCKS, selfloop), mem)


def test_block_chain_length_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(luo, "KHO_MAX_BLOCKS", 3)
    mem = FakeMemory()
    nxt = 0
    for i in range(4):
        nxt = mem.alloc(block(nxt, [session_ser_v2(f"s{i}")]))
    with pytest.raises(ParseError, match="longer than 3 blocks"):
        read_sessions(SessionsRef(SessionFormat.BLOCKS, nxt), mem)


def test_file_set_count_must_match_its_blocks() -> None:
    mem = FakeMemory()
    f1 = mem.alloc(block(0, [file_ser("a", 1, 1)]))
    s1 = mem.alloc(block(0, [session_ser_v2("s", f1, 2)]))
    with pytest.raises(ParseError, match="count 2 but its blocks hold 1 files"):
        read_sessions(SessionsRef(SessionFormat.BLOCKS, s1), mem)


# --- (c) luo_ser with a compatible string ----------------------------------------------------


def test_compatible_struct_v5() -> None:
    mem = FakeMemory()
    s1, flbs, _ = build_block_world(mem)
    data = luo_ser_compatible("luo-v5", number=11, sessions_pa=s1, flbs_pa=flbs)
    assert len(data) == 32
    state = parse_luo(data, mem)
    assert isinstance(state, LuoState)
    assert state.blob.generation is LuoGeneration.STRUCT_COMPATIBLE
    assert state.blob.compatible == "luo-v5"
    assert state.liveupdate_num == 11
    assert isinstance(state.sessions, tuple)
    assert len(state.sessions) == 52
    assert isinstance(state.iommu, IommuFlb)
    assert state.iommu.variant is V2


@pytest.mark.parametrize("compatible", ["luo-v3", "luo-v4", "luo-v3-kho-block-v1", "luo-v6"])
def test_compatible_struct_other_strings_are_unknown(compatible: str) -> None:
    result = parse_luo_blob(luo_ser_compatible(compatible))
    assert isinstance(result, UnknownLuo)
    assert result.compatible == compatible


def test_compatible_struct_errors() -> None:
    with pytest.raises(ParseError, match="needs 32 bytes"):
        parse_luo_blob(luo_ser_compatible("luo-v5")[:31])
    with pytest.raises(ParseError, match="no NUL"):
        parse_luo_blob(b"luo-" + b"v" * 80)
