"""Linux 7.2's KHO/LUO as vtdlud reads it: the cut ``kho/out/fdt``, the FDT read whole through
kcore, ``kexec-metadata`` and the incoming LUO blob the kernel frees at boot.

Model-backed until real captures land in tests/data/captures: the blobs come from the kernel
model (vtdlud.sim, its own writer: it builds the root FDT as Linux 7.2.13's kho_init() and
kho_add_subtree() do, and reproduces the 233 of 285 bytes measured on a 7.2 guest) and from
bytes written by hand below from Linux 7.2.13 include/linux/kho/abi/{kexec_handover,luo,block,
kexec_metadata}.h and the devicetree specification's FDT layout.
"""

from __future__ import annotations

import struct

import pytest

from tests.kho.blobs import FakeMemory, block, fixed, flb_ser, session_ser_v2
from vtdlud.errors import ParseError
from vtdlud.parse.kho import KhoRoot, KhoSubsystem, UnknownKho
from vtdlud.parse.khocut import (
    CutKhoRoot,
    RecoveredRoot,
    parse_cut_root,
    parse_fdt_header,
    parse_kho_debugfs_root,
    recover_cut_root,
)
from vtdlud.parse.luo import LuoBlob, StaleLuo, flb_role
from vtdlud.parse.luofreed import read_freed_luo
from vtdlud.sim.scenarios import linux72_host

# --- an FDT by hand ---------------------------------------------------------------------------


def _pad(raw: bytes) -> bytes:
    return raw + b"\x00" * (-len(raw) % 4)


def hand_fdt(
    props: list[tuple[str, bytes]],
    children: list[tuple[str, list[tuple[str, bytes]]]],
    strings_order: list[str],
) -> bytes:
    """An FDT v17 the long way: header, empty reservation map, structure block, strings."""
    strings = b"".join(name.encode() + b"\x00" for name in strings_order)
    offs = {name: strings.index(name.encode() + b"\x00") for name in strings_order}

    def prop(name: str, value: bytes) -> bytes:
        return struct.pack(">III", 3, len(value), offs[name]) + _pad(value)

    body = struct.pack(">I", 1) + _pad(b"\x00")
    body += b"".join(prop(n, v) for n, v in props)
    for name, cprops in children:
        body += struct.pack(">I", 1) + _pad(name.encode() + b"\x00")
        body += b"".join(prop(n, v) for n, v in cprops) + struct.pack(">I", 2)
    body += struct.pack(">II", 2, 9)
    off_rsv = 40
    off_struct = off_rsv + 16
    off_strings = off_struct + len(body)
    total = off_strings + len(strings)
    header = struct.pack(
        ">10I",
        0xD00DFEED,
        total,
        off_struct,
        off_strings,
        off_rsv,
        17,
        16,
        0,
        len(strings),
        len(body),
    )
    return header + b"\x00" * 16 + body + strings


def le(v: int) -> bytes:
    return v.to_bytes(8, "little")


ROOT_PROPS = [("compatible", b"kho-v4\x00"), ("preserved-memory-map", le(0x4000_0000))]
CHILDREN = [
    ("LUO", [("preserved-data", le(0x4100_0000)), ("blob-size", le(32))]),
    ("kexec-metadata", [("preserved-data", le(0x4200_0000)), ("blob-size", le(73))]),
]
# sequential-write order (last added first), then fdt_setprop()'s appends: as libfdt lays them
KERNEL_STRINGS = ["preserved-memory-map", "compatible", "preserved-data", "blob-size"]


def test_hand_written_fdt_cut_in_its_strings_block() -> None:
    whole = hand_fdt(ROOT_PROPS, CHILDREN, KERNEL_STRINGS)
    assert len(whole) == 285  # what the 7.2 guest showed: the layout matches the kernel's
    h = parse_fdt_header(whole)
    cut = parse_kho_debugfs_root(whole[:233])
    assert isinstance(cut, CutKhoRoot)
    assert (cut.size, cut.totalsize, cut.struct_complete) == (233, h.totalsize, True)
    assert [c.name for c in cut.children] == ["LUO", "kexec-metadata"]
    assert all(p.name is None for c in cut.children for p in c.props)
    assert cut.compatible is None  # its name is cut: never read from the value's look
    assert cut.map_candidates == (0x4000_0000,)
    assert cut.unnamed == 6 and "cut at 233 of 285 bytes" in cut.reason
    assert isinstance(parse_kho_debugfs_root(whole), KhoRoot)


def test_hand_written_fdt_with_readable_names() -> None:
    order = ["compatible", "preserved-memory-map", "preserved-data", "blob-size"]
    whole = hand_fdt(ROOT_PROPS, CHILDREN, order)
    h = parse_fdt_header(whole)
    cut = parse_cut_root(whole[: h.off_dt_strings + len("compatible\x00preserved-memory-map\x00")])
    assert cut.compatible == "kho-v4"
    assert [p.name for p in cut.root_props] == ["compatible", "preserved-memory-map"]
    assert cut.map_candidates == (0x4000_0000,)
    # the struct block cut in the middle of the second child
    short = parse_cut_root(whole[: h.off_dt_struct + 120])
    assert not short.struct_complete
    assert [(c.name, c.complete) for c in short.children] == [
        ("LUO", True),
        ("kexec-metadata", False),
    ]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b[:30], "shorter than an FDT header"),
        (lambda b: b[:12] + (5000).to_bytes(4, "big") + b[16:200], "outside the"),
        (lambda b: b[:4] + (8192).to_bytes(4, "big") + b[8:200], "one page"),
        (lambda b: b"\x00" + b[1:200], "no FDT magic"),
        (lambda b: b[:20] + (16).to_bytes(4, "big") + b[24:200], "FDT version 16"),
    ],
)
def test_bad_headers(edit: object, match: str) -> None:
    whole = hand_fdt(ROOT_PROPS, CHILDREN, KERNEL_STRINGS)
    with pytest.raises(ParseError, match=match):
        parse_cut_root(edit(whole))  # type: ignore[operator]


def test_bad_structure_blocks() -> None:
    whole = bytearray(hand_fdt(ROOT_PROPS, CHILDREN, KERNEL_STRINGS))
    h = parse_fdt_header(bytes(whole))
    bad_token = bytearray(whole)
    bad_token[h.off_dt_struct + 8 : h.off_dt_struct + 12] = (7).to_bytes(4, "big")
    with pytest.raises(ParseError, match="token 0x7"):
        parse_cut_root(bytes(bad_token[:233]))
    bad_name = bytearray(whole)  # first property's nameoff far outside the strings block
    bad_name[h.off_dt_struct + 16 : h.off_dt_struct + 20] = (999).to_bytes(4, "big")
    with pytest.raises(ParseError, match="outside the strings block"):
        parse_cut_root(bytes(bad_name[:233]))
    big = hand_fdt(
        ROOT_PROPS, [*CHILDREN] + [(f"n{i}", CHILDREN[0][1]) for i in range(90)], KERNEL_STRINGS
    )
    with pytest.raises(ParseError, match="one page"):
        parse_cut_root(big[:233])
    with pytest.raises(ParseError, match="not cut"):
        parse_cut_root(bytes(whole))


# --- the kernel model -------------------------------------------------------------------------


def test_model_reproduces_the_measured_cut_and_kcore_reads_the_whole_root() -> None:
    host = linux72_host(seed=5)
    kho = host.kho
    kho.refresh_radix()
    whole = kho.root_fdt()
    copy = kho.debugfs_fdt()
    assert copy is not None and (len(copy), len(whole)) == (233, 285)
    cut = parse_kho_debugfs_root(copy)
    assert isinstance(cut, CutKhoRoot) and cut.map_candidates == (kho.radix_root,)
    found = recover_cut_root(cut, host.mem.read_phys)
    assert isinstance(found, RecoveredRoot)
    assert found.page == kho.fdt_page and found.memory_map is not None
    assert found.root == KhoRoot(
        "kho-v4",
        kho.radix_root,
        {
            "LUO": KhoSubsystem(kho.blob_phys, 32),
            "kexec-metadata": KhoSubsystem(kho.metadata_phys or 0, 73),
        },
        read_from="kcore",
        phys=kho.fdt_page,
    )
    assert kho.fdt_page in found.memory_map.order0_pages()


def test_recovery_fails_with_a_reason_never_a_guess() -> None:
    host = linux72_host(seed=5)
    host.kho.refresh_radix()
    copy = host.kho.debugfs_fdt()
    assert copy is not None
    cut = parse_cut_root(copy)
    assert isinstance(cut, CutKhoRoot)
    # The page changed under the copy (or the copy is not this kernel's): no page matches.
    assert host.kho.fdt_page is not None
    host.mem.write(host.kho.fdt_page + 100, b"\xff\xff")
    why = recover_cut_root(cut, host.mem.read_phys)
    assert isinstance(why, str) and "starts with the 233 bytes of the copy" in why
    # The map itself unreadable.
    empty = FakeMemory()
    why = recover_cut_root(cut, empty)
    assert isinstance(why, str) and "none of the 0 order-0 pages" in why and "incomplete" in why
    # No 8-byte root property inside the copy.
    tiny = parse_cut_root(copy[:80])
    assert recover_cut_root(tiny, host.mem.read_phys) == (
        "no 8-byte root property (the preserved-memory-map) lies inside the copy"
    )


def test_recovered_unknown_compatible_is_vtd040_material() -> None:
    host = linux72_host(seed=6)
    host.kho.kho_compatible = "kho-v9"
    host.kho.refresh_radix()
    copy = host.kho.debugfs_fdt()
    assert copy is not None
    found = recover_cut_root(parse_cut_root(copy), host.mem.read_phys)
    assert isinstance(found, RecoveredRoot) and isinstance(found.root, UnknownKho)
    assert found.root.compatible == "kho-v9" and found.memory_map is None


# --- the incoming LUO blob, freed at boot ------------------------------------------------------


def luo_v5(number: int, sessions_pa: int, flbs_pa: int) -> bytes:
    """struct luo_ser of Linux 7.2.13: char compatible[8] @0, then three u64 @8, @16, @24."""
    return fixed("luo-v5", 8) + struct.pack("<QQQ", number, sessions_pa, flbs_pa)


def test_freed_blob_still_intact_reads_with_roles() -> None:
    mem = FakeMemory()
    files = mem.alloc(block(0, [fixed("memfd-v2", 48) + struct.pack("<QQ", 0x1000, 7)]))
    sessions = mem.alloc(block(0, [session_ser_v2("vmm", files, 1)]))
    flbs = mem.alloc(
        struct.pack("<QQ", 1, 2)
        + flb_ser("liveupdate-test-flb-v0", 0xFEEDF00DCAFEBEE0, 1)
        + flb_ser("iommu-liveupdate-v1", 0x5000, 1)
    )
    blob, state = read_freed_luo(luo_v5(1, sessions, flbs), mem)
    assert isinstance(blob, LuoBlob) and blob.liveupdate_num == 1
    assert state is not None and isinstance(state.flbs, tuple)
    assert [f.role for f in state.flbs] == ["test", "iommu"]
    assert isinstance(state.sessions, tuple) and state.sessions[0].name == "vmm"
    blob, state = read_freed_luo(luo_v5(1, sessions, flbs), None)
    assert isinstance(blob, LuoBlob) and state is None


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(32)),
        b"luo-v5xy" + bytes(24),  # strncmp(compatible, "luo-v5", 8) fails at the 7th byte
        b"luo-v4\x00\x00" + bytes(24),
        b"\x00" * 32,
        b"luo",
    ],
)
def test_freed_blob_that_is_other_memory_is_stale(data: bytes) -> None:
    blob, state = read_freed_luo(data, FakeMemory())
    assert isinstance(blob, StaleLuo) and state is None
    assert "freed the incoming LUO state at boot" in blob.reason
    assert "are not the 'luo-v5' compatible" in blob.reason


def test_freed_blob_whose_lists_are_gone_is_stale_not_corrupt() -> None:
    mem = FakeMemory()
    blob, state = read_freed_luo(luo_v5(1, 0x7777_0000, 0x8888_0000), mem)
    assert isinstance(blob, LuoBlob) and state is not None
    assert isinstance(state.sessions, StaleLuo) and isinstance(state.flbs, StaleLuo)
    assert "not in RAM" in state.flbs.reason and state.iommu is None
    short = luo_v5(1, 0, 0)[:20]
    blob, _ = read_freed_luo(short, mem)
    assert isinstance(blob, StaleLuo) and "not a luo_ser" in blob.reason


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("liveupdate-test-flb-v0", "test"),
        ("liveupdate-test-flb-v12", "test"),
        ("liveupdate-test-flb-vx", "other"),
        ("iommu-liveupdate-v1", "iommu"),
        ("iommu-liveupdate", "iommu"),
        ("iommu-liveupdate-v7", "iommu"),  # found, then refused as an unknown ABI (VTD040)
        ("memfd-flb", "other"),
    ],
)
def test_flb_roles(name: str, role: str) -> None:
    assert flb_role(name) == role
