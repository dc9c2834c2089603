"""ACPI DMAR table decoder: every malformed table is one ParseError naming the byte offset and
the element; under Hypothesis, nothing but ParseError escapes and whatever parses renders."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import CAPTURE_NAMES
from tests.model.dmar_tables import (
    CaptureRoot,
    every_type_table,
    pack_scope,
    pack_structure,
    pack_table,
    real_dmar,
)
from vtdlud.errors import ParseError
from vtdlud.model.dmar import (
    Andd,
    Atsr,
    Drhd,
    Rhsa,
    Rmrr,
    Satc,
    Sidp,
    UnknownStructure,
)
from vtdlud.output.dmar import dmar_to_json, format_dmar_text
from vtdlud.parse.dmar import parse_dmar

# --- validation ----------------------------------------------------------------------------------


def parse_error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_dmar(data)
    err = info.value
    assert err.offset is not None
    assert f"offset {err.offset:#x}" in str(err)
    return err


def test_empty_input() -> None:
    err = parse_error(b"")
    assert err.offset == 0
    assert "48-byte DMAR header" in err.reason


def test_shorter_than_header(capture_root: CaptureRoot) -> None:
    err = parse_error(real_dmar(capture_root, "a_legacy")[:47])
    assert err.offset == 47
    assert "table is 0x2f bytes, shorter than the 48-byte DMAR header" in err.reason


def test_not_dmar_signature(capture_root: CaptureRoot) -> None:
    err = parse_error(b"APIC" + real_dmar(capture_root, "a_legacy")[4:])
    assert (err.offset, err.reason) == (0, "signature 'APIC' is not 'DMAR': not a DMAR table")
    err = parse_error(b"DMA")  # too short to hold a signature: only the length is judged
    assert (err.offset, err.reason) == (
        3,
        "table is 0x3 bytes, shorter than the 48-byte DMAR header (acpi_table_dmar)",
    )


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, "header length 0x0 is smaller than the 48-byte DMAR header"),
        (47, "header length 0x2f is smaller than the 48-byte DMAR header"),
        (0xA1, "header length 0xa1 is larger than the data (0xa0 bytes)"),
        (0xFFFFFFFF, "header length 0xffffffff is larger than the data (0xa0 bytes)"),
    ],
)
def test_header_length_lies(capture_root: CaptureRoot, length: int, expected: str) -> None:
    raw = bytearray(real_dmar(capture_root, "a_legacy"))
    struct.pack_into("<I", raw, 4, length)
    err = parse_error(bytes(raw))
    assert (err.offset, err.reason) == (4, expected)


@pytest.mark.parametrize(
    ("drhd_length", "expected"),
    [
        (0x90, "DRHD at 0x30: length 0x90 runs past the end of the table (0xa0)"),
        (0x71, "DRHD at 0x30: length 0x71 runs past the end of the table (0xa0)"),
        (0, "DRHD at 0x30: length 0x0 is less than 4 (acpi_dmar_header)"),
        (3, "DRHD at 0x30: length 0x3 is less than 4 (acpi_dmar_header)"),
        (12, "DRHD at 0x30: length 0xc is shorter than its fixed part (0x10 bytes)"),
    ],
)
def test_structure_length_lies(capture_root: CaptureRoot, drhd_length: int, expected: str) -> None:
    raw = bytearray(real_dmar(capture_root, "a_legacy"))
    struct.pack_into("<H", raw, 0x32, drhd_length)  # DRHD at 0x30, length at +2
    err = parse_error(bytes(raw))
    assert (err.offset, err.reason) == (0x30, expected)


def test_structure_header_runs_past_table() -> None:
    # a DRHD of 16 bytes (0x30..0x40), then 3 bytes that cannot hold a 4-byte header
    body = pack_structure(0, struct.pack("<BBHQ", 1, 0, 0, 0xFED90000)) + b"\0\0\0"
    err = parse_error(pack_table(body))
    assert err.offset == 0x40
    assert (
        err.reason == "structure at 0x40: its 4-byte header runs past the end of the table (0x43)"
    )


@pytest.mark.parametrize(
    ("type_", "name", "fixed"),
    # fixed parts: DRHD 4+12, RMRR 4+20, ATSR 4+4, RHSA 4+16, ANDD 4+4, SATC 4+4, SIDP 4+4
    [(0, "DRHD", 16), (1, "RMRR", 24), (2, "ATSR", 8), (3, "RHSA", 20), (4, "ANDD", 8),
     (5, "SATC", 8), (6, "SIDP", 8)],
)  # fmt: skip
def test_structure_shorter_than_fixed_part(type_: int, name: str, fixed: int) -> None:
    body = pack_structure(type_, bytes(fixed - 1 - 4))  # one byte short
    err = parse_error(pack_table(body))
    assert err.offset == 0x30
    assert err.reason == (
        f"{name} at 0x30: length {fixed - 1:#x} is shorter than its fixed part ({fixed:#x} bytes)"
    )
    parse_dmar(pack_table(pack_structure(type_, bytes(fixed - 4))))  # exactly fixed: fine


DRHD_FIXED = struct.pack("<BBHQ", 0, 0, 0, 0xFED90000)


@pytest.mark.parametrize(
    ("scopes", "expected_offset", "expected"),
    [
        # one good 8-byte scope at 0x40, then a scope claiming length 4
        (
            pack_scope(1, 0, 0, [(2, 0)]) + bytes([1, 4, 0, 0, 0, 0, 0, 0]),
            0x48,
            "DRHD at 0x30: device scope at 0x48: length 0x4 is less than 6 (acpi_dmar_device_scope)",
        ),
        (
            bytes([1, 0, 0, 0, 0, 0]),  # length 0 (would loop forever if accepted)
            0x40,
            "DRHD at 0x30: device scope at 0x40: length 0x0 is less than 6 (acpi_dmar_device_scope)",
        ),
        (
            bytes([1, 7, 0, 0, 0, 0, 2, 0]),
            0x40,
            "DRHD at 0x30: device scope at 0x40: length 0x7 is odd; expected 6 + 2 bytes per PCI path entry",
        ),
        (
            bytes([1, 10, 0, 0, 0, 0, 2, 0]),  # claims 10 bytes, the structure has 8 left
            0x40,
            "DRHD at 0x30: device scope at 0x40: length 0xa runs past the end of its structure (0x48)",
        ),
        (
            pack_scope(1, 0, 0, [(2, 0)]) + b"\x01",  # one stray byte after a good scope
            0x48,
            "DRHD at 0x30: device scope at 0x48 runs past the end of its structure (0x49): "
            "1 byte left, a device scope needs at least 6",
        ),
    ],
)
def test_device_scope_length_lies(scopes: bytes, expected_offset: int, expected: str) -> None:
    err = parse_error(pack_table(pack_structure(0, DRHD_FIXED + scopes)))
    assert (err.offset, err.reason) == (expected_offset, expected)


def test_scope_errors_name_their_structure() -> None:
    # RMRR at 0x30 (fixed part 24, scopes from 0x48) with a 4-byte scope
    body = pack_structure(1, struct.pack("<HHQQ", 0, 0, 0, 0xFFF) + bytes([1, 4, 0, 0]))
    err = parse_error(pack_table(body))
    assert err.offset == 0x48
    assert err.reason.startswith("RMRR at 0x30: device scope at 0x48: length 0x4 is less than 6")


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_every_prefix_of_a_real_table(capture_root: CaptureRoot, name: str) -> None:
    raw = real_dmar(capture_root, name)
    assert len(raw) == 0xA0
    for n in range(len(raw)):  # header.length stays 0xa0: every proper prefix is short
        err = parse_error(raw[:n])
        assert err.offset == (n if n < 48 else 4)
    parse_dmar(raw)


def test_every_prefix_with_consistent_lengths(capture_root: CaptureRoot) -> None:
    """Prefixes whose table and DRHD length fields say the prefix length: the walk must fail
    exactly where a structure or a scope is cut (the DRHD is at 0x30, 8-byte scopes from 0x40)."""
    raw = real_dmar(capture_root, "a_legacy")
    for n in range(48, len(raw) + 1):
        cut = bytearray(raw[:n])
        struct.pack_into("<I", cut, 4, n)
        if n >= 0x34:
            struct.pack_into("<H", cut, 0x32, n - 0x30)
        if n == 48:
            assert parse_dmar(bytes(cut)).structures == ()
        elif n < 0x34:  # 1..3 bytes: not even a structure header
            assert parse_error(bytes(cut)).offset == 0x30
        elif n < 0x40:  # DRHD shorter than its 16-byte fixed part
            assert "shorter than its fixed part" in parse_error(bytes(cut)).reason
        elif (n - 0x40) % 8:  # a scope is cut: the error is at that scope's start
            assert parse_error(bytes(cut)).offset == 0x40 + (n - 0x40) // 8 * 8
        else:
            table = parse_dmar(bytes(cut))
            assert len(table.drhds[0].scopes) == (n - 0x40) // 8


# --- Hypothesis: only ParseError may escape ------------------------------------------------------


def parse_or_parse_error(data: bytes) -> None:
    try:
        table = parse_dmar(data)
    except ParseError as err:
        assert err.offset is not None and 0 <= err.offset <= len(data)
        return
    # whatever parses must render too
    json.dumps(dmar_to_json(table))
    format_dmar_text(table)


FAST = settings(max_examples=300, deadline=None)


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    parse_or_parse_error(data)


@FAST
@given(st.binary(max_size=400), st.integers(0, 3))
def test_random_structures_after_a_valid_header(body: bytes, slack: int) -> None:
    # a DMAR header whose length covers the random body (minus up to 3 bytes of slack)
    parse_or_parse_error(pack_table(body, length=max(48, 48 + len(body) - slack)))


@FAST
@given(
    name=st.sampled_from(CAPTURE_NAMES),
    flips=st.lists(st.tuples(st.integers(0, 0x9F), st.integers(0, 0xFF)), max_size=8),
    table_length=st.one_of(st.none(), st.integers(0, 0x200)),
    drhd_length=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    resize=st.integers(-0xA0, 0x40),
)
def test_mutated_real_tables(
    capture_root: CaptureRoot,
    *,
    name: str,
    flips: list[tuple[int, int]],
    table_length: int | None,
    drhd_length: int | None,
    resize: int,
) -> None:
    """Flipped bytes, lying table/DRHD length fields, truncation or zero padding."""
    raw = bytearray(real_dmar(capture_root, name))
    for index, value in flips:
        raw[index] = value
    if table_length is not None:
        struct.pack_into("<I", raw, 4, table_length)
    if drhd_length is not None:
        struct.pack_into("<H", raw, 0x32, drhd_length)
    raw = raw[: len(raw) + resize] if resize < 0 else raw + bytes(resize)
    parse_or_parse_error(bytes(raw))


@FAST
@given(st.data())
def test_mutated_synthetic_table(data: st.DataObject) -> None:
    raw = bytearray(every_type_table())
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 0xFF))
    parse_or_parse_error(bytes(raw))


def test_structure_classes_are_frozen() -> None:
    t = parse_dmar(every_type_table())
    for s in t.structures:
        with pytest.raises(AttributeError):
            s.length = 0  # type: ignore[misc]
    assert isinstance(t.structures[0], Drhd)
    assert {type(s) for s in t.structures} == {
        Drhd, Rmrr, Atsr, Rhsa, Andd, Satc, Sidp, UnknownStructure,
    }  # fmt: skip
