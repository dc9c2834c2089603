"""intel-iommu debugfs texts cut at every offset, rendered back from parsed values, and fuzzed:
only ParseError may escape, and what parses renders back to the same text."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CAPTURE_NAMES
from tests.parse.debugfs_texts import (
    LEG_00_02,
    THREE_UNITS,
    TWO_REGSET_UNITS,
    CaptureRoot,
    texts,
    unit_text,
)
from vtdlud.errors import ParseError
from vtdlud.model.debugfs import (
    Register,
    Regset,
    RegsetUnit,
    TranslationRow,
    TranslationStruct,
    TranslationUnit,
)
from vtdlud.model.tables import PasidEntry, RootEntry
from vtdlud.parse.regset import parse_iommu_regset, render_iommu_regset
from vtdlud.parse.translation import parse_dmar_translation_struct, render_dmar_translation_struct

# --- truncation --------------------------------------------------------------------------------


def check_truncations(
    text: str, parse: Callable[[str], Any], render: Callable[[Any], str]
) -> set[int]:
    """Cut ``text`` at every line boundary and inside every line; return the line counts whose
    prefix parses (each must be the first units of the full parse)."""
    full = parse(text)
    lines = text.split("\n")[:-1]
    valid: set[int] = set()
    for k in range(len(lines) + 1):
        prefix = "".join(line + "\n" for line in lines[:k])
        try:
            got = parse(prefix)
        except ParseError as err:
            assert err.line is not None and 1 <= err.line <= k
            continue
        assert got.units == full.units[: len(got.units)] and render(got) == prefix
        valid.add(k)
    for k, line in enumerate(lines):
        head = "".join(x + "\n" for x in lines[:k])
        for cut in {c for c in (1, len(line) // 2, len(line) - 1) if 0 < c < len(line)}:
            with pytest.raises(ParseError, match="without a newline") as exc:
                parse(head + line[:cut])
            assert exc.value.line == k + 1
    return valid


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_capture_truncated_everywhere(capture_root: CaptureRoot, name: str) -> None:
    rtext, ttext = texts(capture_root, name)
    assert check_truncations(rtext, parse_iommu_regset, render_iommu_regset) == {0, 67}
    n = ttext.count("\n")
    assert check_truncations(
        ttext, parse_dmar_translation_struct, render_dmar_translation_struct
    ) == {0, n}


def test_multi_unit_truncated_everywhere() -> None:
    # dmar0 = 4 lines, the "not enabled" line = 1, dmar2 = 5 lines
    got = check_truncations(
        THREE_UNITS, parse_dmar_translation_struct, render_dmar_translation_struct
    )
    assert got == {0, 4, 5, 10}
    # each regset unit: unit line, header, registers, blank = 7 and 6 lines
    assert check_truncations(TWO_REGSET_UNITS, parse_iommu_regset, render_iommu_regset) == {
        0,
        7,
        13,
    }


# --- render side -------------------------------------------------------------------------------


def test_render_rejects_what_the_kernel_cannot_print() -> None:
    row = parse_dmar_translation_struct(unit_text([LEG_00_02])).units[0].rows[0]
    bad_units = [
        TranslationUnit("dmar0", False, 0x1000, ()),
        TranslationUnit("dmar0", False, None, (row,)),
        TranslationUnit("dmar0", True, None, ()),
        TranslationUnit("iommu0", True, 0x1000, ()),
        TranslationUnit("dmar0", True, 0x1000, (row, row)),
        TranslationUnit("dmar0", True, 0x1000, (TranslationRow(0, 0, RootEntry(1, 0), 0, 0, -1, PasidEntry(0, 0, 0)),)),
    ]  # fmt: skip
    for unit in bad_units:
        with pytest.raises(ValueError):
            render_dmar_translation_struct(TranslationStruct((unit,)))
    good = TranslationUnit("dmar0", True, 0x1000, ())
    with pytest.raises(ValueError, match="twice"):
        render_dmar_translation_struct(TranslationStruct((good, good)))
    reg = Register("VER", 0, 0x10)
    bad_regsets = [
        Regset((RegsetUnit("dmar0", 0, (reg,)),)),
        Regset((RegsetUnit("dmar0", 0xFED90000, ()),)),
        Regset((RegsetUnit("dmar0", 0xFED90000, (reg, reg)),)),
        Regset((RegsetUnit("dmar0", 0xFED90000, (Register("VER", 0, 1 << 64),)),)),
        Regset((RegsetUnit("dmar0", 0xFED90000, (Register("ver", 0, 0),)),)),
        Regset((RegsetUnit("dmar 0", 0xFED90000, (reg,)),)),
        Regset((RegsetUnit("dmar0", 0xFED90000, (reg,)), RegsetUnit("dmar1", 0xFED90000, (reg,)))),
    ]
    for regset in bad_regsets:
        with pytest.raises(ValueError):
            render_iommu_regset(regset)


@st.composite
def translation_structs(draw: st.DrawFn) -> TranslationStruct:
    """Random models the kernel could print: sorted BDFs, one root entry per bus, present
    entries, PASIDs inside the directory, the upper root half present under devfn >= 0x80."""
    units: list[TranslationUnit] = []
    for n in range(draw(st.integers(0, 3))):
        if not draw(st.booleans()):
            units.append(TranslationUnit(f"dmar{n}", False, None, ()))
            continue
        scalable = draw(st.booleans())
        u64 = st.integers(0, (1 << 64) - 1)
        keys = sorted(
            draw(st.sets(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=6))
        )
        roots: dict[int, RootEntry] = {}
        rows: list[TranslationRow] = []
        for bus, devfn in keys:
            if bus not in roots:
                upper = scalable and any(b == bus and d >= 0x80 for b, d in keys)
                roots[bus] = RootEntry(lo=draw(u64) | 1, hi=draw(u64) | (1 if upper else 0))
            ctx_lo, ctx_hi = draw(u64) | 1, draw(u64)
            if not scalable:
                rows.append(
                    TranslationRow(bus, devfn, roots[bus], ctx_hi, ctx_lo, -1, PasidEntry(0, 0, 0))
                )
                continue
            limit = (1 << ((ctx_lo >> 9 & 7) + 7)) * 64  # PDTS -> directory entries * 64 PASIDs
            for pasid in sorted(draw(st.sets(st.integers(0, limit - 1), min_size=1, max_size=3))):
                entry = PasidEntry(val0=draw(u64) | 1, val1=draw(u64), val2=draw(u64))
                rows.append(TranslationRow(bus, devfn, roots[bus], ctx_hi, ctx_lo, pasid, entry))
        units.append(TranslationUnit(f"dmar{n}", True, draw(u64), tuple(rows)))
    return TranslationStruct(tuple(units))


REG_NAMES = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_uppercase),
    st.text(string.ascii_uppercase + string.digits + "_", max_size=20),
)


@st.composite
def regsets(draw: st.DrawFn) -> Regset:
    units = []
    for n in range(draw(st.integers(0, 3))):
        names = draw(st.lists(REG_NAMES, min_size=1, max_size=5, unique=True))
        regs = tuple(
            Register(nm, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, (1 << 64) - 1)))
            for nm in names
        )
        units.append(RegsetUnit(f"dmar{n}", 0xFED90000 + n * 0x1000, regs))
    return Regset(tuple(units), invalid_base_address=draw(st.booleans()))  # fmt: skip


@given(translation_structs())
def test_render_then_parse_is_identity_translation(ts: TranslationStruct) -> None:
    text = render_dmar_translation_struct(ts)
    assert parse_dmar_translation_struct(text) == ts


@given(regsets())
def test_render_then_parse_is_identity_regset(regset: Regset) -> None:
    text = render_iommu_regset(regset)
    assert parse_iommu_regset(text) == regset


# --- fuzzing: only ParseError may escape, and what parses renders back to the same text --------

PAIRS: list[tuple[Callable[[str], Any], Callable[[Any], str]]] = [
    (parse_iommu_regset, render_iommu_regset),
    (parse_dmar_translation_struct, render_dmar_translation_struct),
]
KERNELISH = st.sampled_from(list("\t\n :.-x0123456789abcdefABCDEFz ")) | st.characters()


def only_parse_error(text: str) -> None:
    for parse, render in PAIRS:
        try:
            parsed = parse(text)
        except ParseError as err:
            assert err.line is not None
            continue
        assert render(parsed) == text


@given(st.text(KERNELISH, max_size=300) | st.text(max_size=300))
def test_random_text(text: str) -> None:
    only_parse_error(text)


MUTATIONS = ("replace", "delete", "insert", "drop_line", "dup_line", "swap_lines", "cut")


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_capture_lines(capture_root: CaptureRoot, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(CAPTURE_NAMES))
    text = data.draw(st.sampled_from([*texts(capture_root, name), THREE_UNITS, TWO_REGSET_UNITS]))
    lines = text.split("\n")
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(MUTATIONS))
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines) - 1))
        pos = data.draw(st.integers(0, 200)) % (len(lines[i]) + 1)
        char = data.draw(KERNELISH)
        if op == "replace":
            lines[i] = lines[i][:pos] + char + lines[i][pos + 1 :]
        elif op == "delete":
            lines[i] = lines[i][:pos] + lines[i][pos + 1 :]
        elif op == "insert":
            lines[i] = lines[i][:pos] + char + lines[i][pos:]
        elif op == "drop_line" and len(lines) > 1:
            del lines[i]
        elif op == "dup_line":
            lines.insert(i, lines[i])
        elif op == "swap_lines":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut":
            lines = [*lines[:i], lines[i][:pos]]
    only_parse_error("\n".join(lines))
