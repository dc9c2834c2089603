"""vtdlud.parse.kho: the KHO root FDT, ``scratch_phys``/``scratch_len`` and ``finalize``.

No real capture of KHO debugfs exists: every blob here is built by tests/kho/blobs.py from the
layouts in torvalds/linux include/linux/kho/abi/kexec_handover.h (kho-v1 @c17ee635fd3a, kho-v2
@3f2ad90060f6), kho_add_subtree()/kho_finalize() in kernel/kexec_handover.c and
kernel/liveupdate/kexec_handover.c (u64 properties stored CPU-native, little-endian), and the
``"0x%llx\\n"`` / ``"%llu\\n"`` formats of the debugfs show functions.
"""

from __future__ import annotations

import pytest

from tests.kho.blobs import Node, build_fdt, cstr, kho_root, kho_v1, kho_v2, u64le
from vtdlud.errors import ParseError
from vtdlud.parse.kho import (
    FdtView,
    KexecMetadata,
    KhoRoot,
    KhoSubsystem,
    ScratchRegion,
    UnknownKho,
    is_fdt,
    parse_finalize,
    parse_kexec_metadata,
    parse_kho_root,
    parse_scratch,
)


def test_kho_v1_subsystems_and_memory_map() -> None:
    root = parse_kho_root(kho_v1({"LUO": 0x1_2345_6000, "memblock": 0x7000}, 0xABC000))
    assert root == KhoRoot(
        "kho-v1",
        0xABC000,
        {"LUO": KhoSubsystem(0x1_2345_6000, None), "memblock": KhoSubsystem(0x7000, None)},
    )
    assert root.sub_tree_prop == "fdt"


def test_kho_v2_with_and_without_blob_size() -> None:
    root = parse_kho_root(kho_v2({"LUO": (0x5000, 152), "old": (0x9000, None)}, 0x42000))
    assert isinstance(root, KhoRoot)
    assert root.compatible == "kho-v2"
    assert root.preserved_memory_map == 0x42000
    assert root.subsystems["LUO"] == (0x5000, 152)
    assert root.subsystems["old"] == (0x9000, None)
    assert root.sub_tree_prop == "preserved-data"


def test_values_are_little_endian_not_fdt64() -> None:
    # 0x0102030405060708 read big-endian would be 0x0807060504030201.
    root = parse_kho_root(kho_v2({"LUO": (0x0102030405060708, None)}, 0x11))
    assert isinstance(root, KhoRoot)
    assert root.subsystems["LUO"].phys == 0x0102030405060708
    assert root.preserved_memory_map == 0x11


def test_memory_map_absent_is_none() -> None:
    root = parse_kho_root(kho_v1({}, memory_map=None))
    assert isinstance(root, KhoRoot)
    assert root.preserved_memory_map is None
    assert root.subsystems == {}


def test_v1_ignores_blob_size_and_v2_does_not_accept_fdt_prop() -> None:
    blob = kho_root("kho-v1", [("a", [("fdt", u64le(1)), ("blob-size", u64le(9))])])
    root = parse_kho_root(blob)
    assert isinstance(root, KhoRoot)
    assert root.subsystems["a"] == (1, None)
    with pytest.raises(ParseError, match="no 'preserved-data'"):
        parse_kho_root(kho_root("kho-v2", [("a", [("fdt", u64le(1))])]))


@pytest.mark.parametrize("compatible", ["kho-v3", "kho-v4"])
def test_kho_v3_v4_require_blob_size(compatible: str) -> None:
    """Linux 7.2.13 (kho-v4; kho-v3 has the same tree): every child has preserved-data and
    blob-size, and kho_retrieve_subtree() refuses a child without blob-size."""
    subs = [
        ("kexec-metadata", [("preserved-data", u64le(0x7000)), ("blob-size", u64le(73))]),
        ("LUO", [("preserved-data", u64le(0x8000)), ("blob-size", u64le(32))]),
    ]
    root = parse_kho_root(kho_root(compatible, subs, memory_map=0x9000))
    assert root == KhoRoot(
        compatible,
        0x9000,
        {"kexec-metadata": KhoSubsystem(0x7000, 73), "LUO": KhoSubsystem(0x8000, 32)},
    )
    assert root.sub_tree_prop == "preserved-data"
    assert root.read_from == "debugfs" and root.phys is None
    with pytest.raises(ParseError, match="LUO: no 'blob-size'"):
        parse_kho_root(kho_root(compatible, [("LUO", [("preserved-data", u64le(1))])]))


def test_kexec_metadata() -> None:
    """struct kho_kexec_metadata of Linux 7.2.13, packed: u32 version, char[65], u32 count."""
    raw = (1).to_bytes(4, "little") + b"7.2.13-amd64".ljust(65, b"\x00") + (3).to_bytes(4, "little")
    assert len(raw) == 73
    assert parse_kexec_metadata(raw) == KexecMetadata(1, "7.2.13-amd64", 3)
    assert parse_kexec_metadata((2).to_bytes(4, "little")) == KexecMetadata(2, None, None)
    with pytest.raises(ParseError, match="too short"):
        parse_kexec_metadata(b"\x01")
    with pytest.raises(ParseError, match="shorter than the struct"):
        parse_kexec_metadata(raw[:72])
    with pytest.raises(ParseError, match="NUL"):
        parse_kexec_metadata(raw[:4] + b"x" * 65 + raw[69:])


@pytest.mark.parametrize("compatible", ["kho-v5", "kho-v5;kho-radix-v1", "kho-v0", "KHO-V2"])
def test_unknown_compatible_is_a_result(compatible: str) -> None:
    result = parse_kho_root(kho_root(compatible, [("LUO", [("whatever", b"x")])]))
    assert isinstance(result, UnknownKho)
    assert result.compatible == compatible
    assert "unknown KHO compatible" in result.reason


def test_compatible_list_containing_a_known_abi() -> None:
    result = parse_kho_root(kho_root(b"vendor-kho\x00kho-v2\x00", []))
    assert isinstance(result, KhoRoot)
    assert result.compatible == "kho-v2"
    unknown = parse_kho_root(kho_root(b"a\x00b\x00", []))
    assert isinstance(unknown, UnknownKho)
    assert unknown.compatible == "a;b"


@pytest.mark.parametrize(
    ("compat", "match"),
    [
        (b"kho-v2", "NUL-terminated"),  # no NUL
        (b"", "NUL-terminated"),
        (b"\x00", "empty or unprintable"),
        (b"kho-\xff2\x00", "ASCII"),
        (b"kho\tv2\x00", "unprintable"),
    ],
)
def test_malformed_compatible(compat: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_kho_root(kho_root(compat, []))


def test_missing_compatible() -> None:
    with pytest.raises(ParseError, match="no 'compatible'"):
        parse_kho_root(build_fdt(Node("", [("preserved-memory-map", u64le(1))])))


@pytest.mark.parametrize(
    ("subsystems", "memory_map", "match"),
    [
        ([("LUO", [])], b"", "LUO: no 'preserved-data'"),
        ([("LUO", [("preserved-data", b"\x01\x02\x03\x04")])], b"", "is 4 bytes"),
        ([("LUO", [("preserved-data", u64le(1) + b"\x00")])], b"", "is 9 bytes"),
        ([("LUO", [("preserved-data", u64le(1)), ("blob-size", b"\x01")])], b"", "'blob-size'"),
        ([], b"\x00" * 4, "'preserved-memory-map' is 4 bytes"),
    ],
)
def test_missing_or_wrong_length_properties(
    subsystems: list[tuple[str, list[tuple[str, bytes]]]], memory_map: bytes, match: str
) -> None:
    props = [("compatible", cstr("kho-v2"))]
    if memory_map:
        props.append(("preserved-memory-map", memory_map))
    blob = build_fdt(Node("", props, [Node(n, p) for n, p in subsystems]))
    with pytest.raises(ParseError, match=match):
        parse_kho_root(blob)


def test_duplicate_subsystem_names() -> None:
    blob = kho_root("kho-v2", [("LUO", [("preserved-data", u64le(1))])] * 2)
    with pytest.raises(ParseError, match="two subsystem nodes named 'LUO'"):
        parse_kho_root(blob)


def test_every_truncation_is_a_parse_error() -> None:
    blob = kho_v2({"LUO": (0x5000, 152), "memblock": (0x6000, 64)})
    for cut in range(len(blob)):
        with pytest.raises(ParseError):
            parse_kho_root(blob[:cut])


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xd0\x0d\xfe",
        b"\x00" * 64,
        b"\xd0\x0d\xfe\xed" + b"\xff" * 60,
        bytes(range(256)),
    ],
)
def test_garbage(blob: bytes) -> None:
    with pytest.raises(ParseError):
        parse_kho_root(blob)


def test_header_claiming_more_than_the_buffer() -> None:
    blob = bytearray(kho_v2({"LUO": (1, 2)}))
    blob[4:8] = (len(blob) + 4096).to_bytes(4, "big")  # totalsize
    with pytest.raises(ParseError, match="not a valid FDT"):
        parse_kho_root(bytes(blob))


def test_is_fdt() -> None:
    assert is_fdt(kho_v1({}))
    assert not is_fdt(b"\xd0\x0d\xfe")
    assert not is_fdt(b"luo-v5\x00\x00")


def test_fdt_view_children_and_props() -> None:
    view = FdtView(kho_v2({"A": (1, None), "B": (2, 3)}))
    assert [name for name, _ in view.children(0)] == ["A", "B"]
    b = view.child("B")
    assert b is not None
    assert view.u64(b, "blob-size", required=True) == 3
    assert view.child("C") is None
    assert view.prop(0, "nope") is None
    assert view.strings(0, "nope") is None


# --- scratch and finalize ---------------------------------------------------------------------


def test_scratch_regions() -> None:
    regions = parse_scratch("0x1000000\n0x100000000\n0x7f000000\n", "0x1000000\n0x20000000\n0x0\n")
    assert regions == (
        ScratchRegion(0x1000000, 0x1000000),
        ScratchRegion(0x100000000, 0x20000000),
        ScratchRegion(0x7F000000, 0),
    )


def test_scratch_empty_files_are_no_regions() -> None:
    assert parse_scratch("", "") == ()


@pytest.mark.parametrize(
    ("phys", "size", "match"),
    [
        ("0x1\n0x2\n", "0x1\n", "2 regions but scratch_len has 1"),
        ("", "0x1\n", "0 regions"),
        ("0x1\n", "0x1", "scratch_len: last line has no newline"),
        ("1000\n", "0x1\n", "scratch_phys: '1000' is not"),
        ("0x1\n\n", "0x1\n0x2\n", "scratch_phys: '' is not"),
        ("0x1 \n", "0x1\n", "is not"),
        ("0x10000000000000000\n", "0x1\n", "is not"),
        ("0x1\x00\n", "0x1\n", "binary"),
    ],
)
def test_scratch_errors(phys: str, size: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_scratch(phys, size)


def test_scratch_error_line_numbers() -> None:
    with pytest.raises(ParseError) as info:
        parse_scratch("0x1\n0x2\nzz\n", "0x1\n0x2\n0x3\n")
    assert info.value.line == 3


def test_finalize() -> None:
    assert parse_finalize("1\n") is True
    assert parse_finalize("0\n") is False
    for bad in ("", "1", "2\n", "yes\n", "1\n1\n", " 1\n"):
        with pytest.raises(ParseError):
            parse_finalize(bad)
