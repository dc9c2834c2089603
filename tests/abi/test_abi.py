"""The IOMMU live-update ABI mirror's helpers: round trips, constants, capacities, the bitmap,
array pages, variant selection and the ``vtdlud abi`` output.  Against gcc: test_abi_gcc.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.abi.samples import sample_device, sample_domain, sample_hw
from vtdlud.errors import ParseError
from vtdlud.model.abi import (
    IOMMU_ARRAY_HDR_SER_SIZE,
    IOMMU_SER_FLAG_DELETED,
    IOMMU_SER_FLAG_INCOMING,
    PAGE_SIZE,
    V1,
    V2,
    V2_ASSUMED_INTEL,
    AbiStruct,
    ArrayPage,
    IommuArrayHdrSer,
    IommuDeviceIntelSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuDevMapSer,
    IommuDomainSer,
    IommuFlbSerV1,
    IommuFlbSerV2,
    IommuHdrSer,
    IommuHwSerV1,
    IommuHwSerV2,
    IommuIntelSer,
    IommuTypeSer,
    Kind,
    UnknownAbi,
    array_capacity,
    capacity_of,
    flb_has_version,
    get_variant,
    select_variant,
    unpack_array_page,
    variant_for_hw_type,
)
from vtdlud.model.abi.layout import U8, U32, abi_struct, bitfield, flex, struct_layout
from vtdlud.model.abi.layout import field as c_field
from vtdlud.model.tables import (
    BITS_PER_U64,
    CONTEXT_TABLES_BITMAP_BITS,
    CONTEXT_TABLES_BITMAP_WORDS,
    bits_to_words,
    context_table_bit,
    words_to_bits,
)
from vtdlud.output.abi import abi_layout, format_abi_text

RECORD_CLASSES: tuple[type[AbiStruct], ...] = (
    IommuHdrSer,
    IommuDomainSer,
    IommuDevMapSer,
    IommuArrayHdrSer,
    IommuDeviceIntelSer,
    IommuIntelSer,
    IommuDeviceSerV1,
    IommuDeviceSerV2,
    IommuHwSerV1,
    IommuHwSerV2,
    IommuFlbSerV1,
    IommuFlbSerV2,
)


# --- round trips ------------------------------------------------------------------------------


def _values(cls: type[AbiStruct]) -> st.SearchStrategy[Any]:
    """Any valid value of every field of ``cls``, from its layout."""
    layout = cls.LAYOUT
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for f in layout.value_fields:
        if f.kind is Kind.STRUCT:
            assert f.struct is not None
            strategies[f.name] = _values(f.struct)
        elif f.kind is Kind.ARRAY and f.ctype is U8:
            strategies[f.name] = st.binary(min_size=f.count, max_size=f.count)
        elif f.kind is Kind.ARRAY:
            assert f.ctype is not None
            word = st.integers(0, (1 << f.ctype.bits) - 1)
            strategies[f.name] = st.lists(word, min_size=f.count, max_size=f.count).map(tuple)
        else:
            strategies[f.name] = st.integers(0, (1 << f.bit_width) - 1)
    if layout.hole_mask:
        mask = layout.hole_mask
        strategies["holes"] = st.integers(0, mask).map(lambda v: v & mask)
    return st.fixed_dictionaries(strategies).map(lambda kw: cls(**kw))


@pytest.mark.parametrize("cls", RECORD_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_bytes_round_trip(cls: type[AbiStruct], data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=cls.sizeof(), max_size=cls.sizeof()))
    record = cls.unpack(raw)
    assert record.pack() == raw
    assert cls.unpack(record.pack()) == record


@pytest.mark.parametrize("cls", RECORD_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_value_round_trip(cls: type[AbiStruct], data: st.DataObject) -> None:
    record = data.draw(_values(cls))
    raw = record.pack()
    assert len(raw) == cls.sizeof()
    assert cls.unpack(raw) == record


@pytest.mark.parametrize("cls", RECORD_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_unpack_raises_only_parse_error(cls: type[AbiStruct], data: st.DataObject) -> None:
    raw = data.draw(st.binary(max_size=2 * cls.sizeof()))
    offset = data.draw(st.integers(0, len(raw) + 1))
    try:
        record = cls.unpack(raw, offset)
    except ParseError as e:
        assert len(raw) - offset < cls.sizeof()
        assert e.offset == offset
    else:
        assert record.pack() == raw[offset : offset + cls.sizeof()]


@pytest.mark.parametrize("cls", RECORD_CLASSES, ids=lambda c: c.__name__)
def test_short_input(cls: type[AbiStruct]) -> None:
    size = cls.sizeof()
    with pytest.raises(ParseError) as exc:
        cls.unpack(bytes(size - 1))
    assert exc.value.offset == 0
    assert cls.LAYOUT.name in exc.value.reason
    with pytest.raises(ParseError) as exc:
        cls.unpack(bytes(size + 2), 3)
    assert exc.value.offset == 3


def test_pack_rejects_bad_values() -> None:
    domain = sample_domain(0, 0, 1)
    bad: list[AbiStruct] = [
        IommuHdrSer(1 << 32, 0),
        IommuHdrSer(-1, 0),
        replace(domain, sign_extend=2),
        replace(domain, holes=1),  # bit 0 is hdr.ref_count's, not a hole
        replace(domain, holes=0x1FE << (28 * 8)),  # bits 1-7 of byte 28 are; bit 8 is not
        replace(domain, restored_domain=1 << 64),
        IommuDeviceIntelSer(True, 0),
        IommuIntelSer(0, bytes(6), 0, 0, bits_to_words(set())),
        IommuIntelSer(0, bytes(7), 0, 0, bits_to_words(set())[:-1]),
        IommuHwSerV1(IommuHdrSer(0, 0), 0, 0, IommuDeviceIntelSer(0, 0)),  # type: ignore[arg-type]
    ]
    for record in bad:
        with pytest.raises(ValueError):
            record.pack()


def test_layout_engine_refuses_what_it_cannot_model() -> None:
    with pytest.raises(TypeError, match="do not match"):

        @abi_struct("mismatch", c_field("a", U32), c_field("b", U32), packed=True)
        @dataclass(frozen=True)
        class Mismatch(AbiStruct):
            b: int
            a: int

    with pytest.raises(TypeError, match="do not match"):
        # a layout with holes needs the holes field

        @abi_struct("holey", c_field("a", U32), bitfield("b", U32, 3), packed=True)
        @dataclass(frozen=True)
        class Holey(AbiStruct):
            a: int
            b: int

    with pytest.raises(ValueError, match="packed"):
        struct_layout("natural_bits", c_field("a", U8), bitfield("b", U32, 3), packed=False)
    with pytest.raises(ValueError, match="last"):
        struct_layout("flex_first", flex("x", IommuHdrSer), c_field("a", U32), packed=True)
    with pytest.raises(ValueError):
        bitfield("wide", U8, 9)


# --- constants, capacities, bitmap -------------------------------------------------------------


def test_constants() -> None:
    assert (IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING) == (1, 2)
    assert (IommuTypeSer.IOMMU_INVALID, IommuTypeSer.IOMMU_INTEL) == (0, 1)
    assert PAGE_SIZE == 4096 and IOMMU_ARRAY_HDR_SER_SIZE == 16
    assert (V1.compatible, V1.version) == ("iommu-liveupdate-v1", None)
    assert (V2.compatible, V2.version) == ("iommu-liveupdate", 1)
    assert V1.iommu_types == {IommuTypeSer.IOMMU_INVALID, IommuTypeSer.IOMMU_INTEL}
    assert V2.iommu_types == {IommuTypeSer.IOMMU_INVALID}
    hdr = IommuHdrSer(1, IOMMU_SER_FLAG_DELETED)
    assert hdr.deleted and not hdr.incoming


@pytest.mark.parametrize(
    ("variant", "struct", "capacity"),
    [
        ("v1", "iommu_hw_ser", 36),
        ("v1", "iommu_domain_ser", 110),
        ("v1", "iommu_device_ser", 72),
        ("v2", "iommu_hw_ser", 170),
        ("v2", "iommu_domain_ser", 110),
        ("v2", "iommu_device_ser", 102),
        ("v1", "iommu_hw_array_ser", 36),
        ("v2", "iommu_device_array_ser", 102),
    ],
)
def test_array_capacity(variant: str, struct: str, capacity: int) -> None:
    assert array_capacity(struct, variant) == capacity
    element = get_variant(variant).array_element(struct)
    assert capacity == (PAGE_SIZE - IOMMU_ARRAY_HDR_SER_SIZE) // element.sizeof()
    assert IOMMU_ARRAY_HDR_SER_SIZE + capacity * element.sizeof() <= PAGE_SIZE
    assert IOMMU_ARRAY_HDR_SER_SIZE + (capacity + 1) * element.sizeof() > PAGE_SIZE


def test_array_capacity_errors() -> None:
    with pytest.raises(ValueError, match="not a record array"):
        array_capacity("iommu_hdr_ser", "v1")
    with pytest.raises(ValueError, match="not a record array"):
        array_capacity("iommu_intel_ser", "v2")
    with pytest.raises(ValueError, match="v1, v2"):
        array_capacity("iommu_hw_ser", "v3")


def test_context_tables_bitmap_words() -> None:
    assert CONTEXT_TABLES_BITMAP_WORDS * BITS_PER_U64 == CONTEXT_TABLES_BITMAP_BITS
    f = IommuIntelSer.LAYOUT.field("context_tables_bitmap")
    assert f.count == CONTEXT_TABLES_BITMAP_WORDS
    assert f.size * 8 == CONTEXT_TABLES_BITMAP_BITS
    bits = {
        0,
        context_table_bit(0, 0x80),
        63,
        64,
        context_table_bit(0x80, 0x80),
        context_table_bit(0xFF, 0xFF),
    }
    assert context_table_bit(0xFF, 0xFF) == CONTEXT_TABLES_BITMAP_BITS - 1
    words = IommuIntelSer.bitmap_words(bits)
    assert words == bits_to_words(bits)
    intel = IommuIntelSer(0, bytes(7), 0xFED90000, 0x12345000, words)
    raw = intel.pack()
    bitmap = raw[f.offset : f.offset + f.size]
    assert int.from_bytes(bitmap, "little") == sum(1 << b for b in bits)
    assert bitmap[-1] == 0x80 and bitmap[0] == 0x03
    back = IommuIntelSer.unpack(raw)
    assert back.context_table_bits == sorted(bits) == words_to_bits(back.context_tables_bitmap)
    # in the hw record the bitmap sits after hdr, token, type and intel's first 24 bytes
    hw = IommuHwSerV1(IommuHdrSer(1, 0), 0xFED90000, IommuTypeSer.IOMMU_INTEL, intel)
    assert hw.pack()[24 + f.offset : 24 + f.offset + f.size] == bitmap


def test_device_devid() -> None:
    dev = sample_device(V1, 0)
    assert dev.bus_devfn == (0x81, 0x82)


# --- array pages ------------------------------------------------------------------------------


def test_array_page_bounds() -> None:
    cap = array_capacity("iommu_hw_ser", "v1")
    record = sample_hw(V1, 0)
    assert isinstance(record, IommuHwSerV1)
    full = ArrayPage(IommuArrayHdrSer(0, cap), (record,) * cap)
    raw = full.pack()
    assert len(raw) <= PAGE_SIZE
    assert unpack_array_page(raw, IommuHwSerV1) == full
    over = IommuArrayHdrSer(0, cap + 1).pack() + raw[IOMMU_ARRAY_HDR_SER_SIZE:]
    with pytest.raises(ParseError, match="exceeds the capacity") as exc:
        unpack_array_page(over.ljust(PAGE_SIZE, b"\0"), IommuHwSerV1)
    assert exc.value.offset == 8
    with pytest.raises(ParseError) as exc:
        unpack_array_page(raw[:-1], IommuHwSerV1)
    assert exc.value.offset == IOMMU_ARRAY_HDR_SER_SIZE + (cap - 1) * record.sizeof()
    with pytest.raises(ParseError):
        unpack_array_page(raw[:15], IommuHwSerV1)
    # at an offset inside a larger buffer
    assert unpack_array_page(b"\xff" * 5 + raw, IommuHwSerV1, 5) == full
    with pytest.raises(ParseError) as exc:
        unpack_array_page(b"\xff" * 5 + over, IommuHwSerV1, 5)
    assert exc.value.offset == 13
    # the same bytes read as v2 records: 36 is within v2's capacity, but the page is too short
    with pytest.raises(ParseError):
        unpack_array_page(raw[: IOMMU_ARRAY_HDR_SER_SIZE + 24], IommuHwSerV2)


def test_array_page_pack_checks() -> None:
    dom = sample_domain(0, 0, 0)
    with pytest.raises(ValueError, match="says 2"):
        ArrayPage(IommuArrayHdrSer(0, 2), (dom,)).pack()
    cap = capacity_of(IommuDomainSer)
    with pytest.raises(ValueError, match="capacity"):
        ArrayPage(IommuArrayHdrSer(0, cap + 1), (dom,) * (cap + 1)).pack()
    mixed: ArrayPage[Any] = ArrayPage(IommuArrayHdrSer(0, 2), (dom, sample_device(V2, 0)))
    with pytest.raises(ValueError, match="one class"):
        mixed.pack()
    empty: ArrayPage[IommuDomainSer] = ArrayPage(IommuArrayHdrSer(0, 0), ())
    assert empty.pack() == bytes(16)
    assert unpack_array_page(bytes(PAGE_SIZE), IommuDomainSer) == empty


def test_array_page_live_skips_deleted() -> None:
    alive = sample_domain(0, 0, 0)
    dead = replace(alive, hdr=IommuHdrSer(0, IOMMU_SER_FLAG_DELETED))
    page = ArrayPage(IommuArrayHdrSer(0, 3), (alive, dead, alive))
    assert page.live() == (alive, alive)
    assert unpack_array_page(page.pack(), IommuDomainSer).live() == (alive, alive)


# --- variant selection ------------------------------------------------------------------------


def test_select_known_variants() -> None:
    assert select_variant("iommu-liveupdate-v1", None) is V1
    assert select_variant("iommu-liveupdate", 1) is V2
    assert flb_has_version("iommu-liveupdate") and not flb_has_version("iommu-liveupdate-v1")
    assert not flb_has_version("something-else")


@pytest.mark.parametrize(
    ("compatible", "version", "why"),
    [
        ("iommu-liveupdate", 2, "version 2"),
        ("iommu-liveupdate", 0, "version 0"),
        ("iommu-liveupdate", None, "needs the iommu_flb_ser version"),
        ("iommu-liveupdate-v1", 1, "no version field"),
        ("iommu-liveupdate-v2", None, "unknown compatible"),
        ("iommu-liveupdate-v1\0", None, "unknown compatible"),
        ("", 1, "unknown compatible"),
    ],
)
def test_select_unknown(compatible: str, version: int | None, why: str) -> None:
    result = select_variant(compatible, version)
    assert isinstance(result, UnknownAbi)
    assert (result.compatible, result.version) == (compatible, version)
    assert why in result.reason


def test_variant_for_hw_type() -> None:
    assert variant_for_hw_type(V1, IommuTypeSer.IOMMU_INTEL) is V1
    assert variant_for_hw_type(V2, IommuTypeSer.IOMMU_INVALID) is V2
    assumed = variant_for_hw_type(V2, IommuTypeSer.IOMMU_INTEL)
    assert assumed is V2_ASSUMED_INTEL
    assert assumed.assumed and not V1.assumed and not V2.assumed
    assert (assumed.compatible, assumed.version) == (V2.compatible, V2.version)
    assert assumed.hw is IommuHwSerV1 and assumed.device is IommuDeviceSerV1
    assert assumed.flb is IommuFlbSerV2
    assert array_capacity("iommu_hw_ser", assumed) == 36
    for variant, hw_type in ((V1, 2), (V2, 7), (V2_ASSUMED_INTEL, 2)):
        result = variant_for_hw_type(variant, hw_type)
        assert isinstance(result, UnknownAbi)
        assert f"type {hw_type}" in result.reason
    # the type sits at the same offset in every hw layout, so it can be read before choosing
    assert IommuHwSerV1.LAYOUT.field("type").offset == IommuHwSerV2.LAYOUT.field("type").offset


# --- abi output -------------------------------------------------------------------------------

HDR_JSON = {
    "size": 8,
    "fields": [
        {"name": "ref_count", "offset": 0, "size": 4},
        {"name": "flags", "offset": 4, "size": 4},
    ],
}
DOMAIN_JSON = {
    "size": 37,
    "fields": [
        {"name": "hdr", "offset": 0, "size": 8},
        {"name": "top_table_phys", "offset": 8, "size": 8},
        {"name": "top_level", "offset": 16, "size": 8},
        {"name": "vasz", "offset": 24, "size": 4},
        {"name": "sign_extend", "offset": 28, "size": 1, "bit_offset": 0, "bit_size": 1},
        {"name": "restored_domain", "offset": 29, "size": 8},
    ],
}


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_abi_json_shape(variant: str) -> None:
    doc = abi_layout(variant)
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc) == ["variant", "compatible", "version", "structs"]
    assert doc["variant"] == variant
    structs = doc["structs"]
    assert isinstance(structs, dict)
    assert structs["iommu_hdr_ser"] == HDR_JSON
    assert structs["iommu_domain_ser"] == DOMAIN_JSON
    assert structs["iommu_domain_array_ser"] == {
        "size": 16,
        "fields": [
            {"name": "hdr", "offset": 0, "size": 16},
            {"name": "objects", "offset": 16, "size": 0},
        ],
    }


def test_abi_json_v1() -> None:
    doc = abi_layout("v1")
    assert (doc["compatible"], doc["version"]) == ("iommu-liveupdate-v1", None)
    structs = doc["structs"]
    assert isinstance(structs, dict)
    assert list(structs) == [
        "iommu_hdr_ser",
        "iommu_domain_ser",
        "iommu_dev_map_ser",
        "iommu_device_intel_ser",
        "iommu_device_ser",
        "iommu_intel_ser",
        "iommu_hw_ser",
        "iommu_array_hdr_ser",
        "iommu_hw_array_ser",
        "iommu_domain_array_ser",
        "iommu_device_array_ser",
        "iommu_flb_ser",
    ]
    assert structs["iommu_hw_ser"] == {
        "size": 112,
        "fields": [
            {"name": "hdr", "offset": 0, "size": 8},
            {"name": "token", "offset": 8, "size": 8},
            {"name": "type", "offset": 16, "size": 8},
            {"name": "intel", "offset": 24, "size": 88},
        ],
    }
    assert structs["iommu_device_ser"]["fields"][-1] == {"name": "intel", "offset": 40, "size": 16}
    assert structs["iommu_flb_ser"]["size"] == 24


def test_abi_json_v2() -> None:
    doc = abi_layout("v2")
    assert (doc["compatible"], doc["version"]) == ("iommu-liveupdate", 1)
    structs = doc["structs"]
    assert isinstance(structs, dict)
    assert "iommu_intel_ser" not in structs and "iommu_device_intel_ser" not in structs
    assert structs["iommu_hw_ser"]["size"] == 24
    assert structs["iommu_device_ser"]["size"] == 40
    assert structs["iommu_flb_ser"]["fields"][0] == {"name": "version", "offset": 0, "size": 8}


def test_abi_unknown_variant() -> None:
    for render in (abi_layout, format_abi_text):
        with pytest.raises(ValueError, match=r"'v3'.*v1, v2"):
            render("v3")


def _struct_block(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"struct {name} {{")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("}"))
    return lines[start : end + 1]


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_abi_text(variant: str) -> None:
    text = format_abi_text(variant)
    v = get_variant(variant)
    assert f'"{v.compatible}"' in text
    for layout in v.layouts:
        block = _struct_block(text, layout.name)
        assert f"/* size: {layout.size}," in "\n".join(block)
        assert block[-1] == ("} __packed;" if layout.packed else "};")
    domain = _struct_block(text, "iommu_domain_ser")
    sign = next(line for line in domain if "sign_extend:1;" in line)
    assert sign.startswith("\tu32") and sign.endswith("/*    28: 0     1 */")
    assert any("XXX 7 bits hole" in line for line in domain)
    pointer = next(line for line in domain if "restored_domain;" in line)
    assert "struct iommu_domain *" in pointer and pointer.endswith("/*    29     8 */")
    assert "\t/* records per array page: 110 */" in domain


def test_abi_text_v1_union() -> None:
    hw = _struct_block(format_abi_text("v1"), "iommu_hw_ser")
    assert "\tunion {" in hw
    intel = next(line for line in hw if " intel;" in line)
    assert intel.startswith("\t\tstruct iommu_intel_ser") and intel.endswith("/*    24    88 */")
    intel_ser = _struct_block(format_abi_text("v1"), "iommu_intel_ser")
    assert any("padding[7];" in line and line.endswith("/*     1     7 */") for line in intel_ser)
    assert any("context_tables_bitmap[8];" in line for line in intel_ser)
