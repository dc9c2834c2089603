"""``vtdlud decode``: registers and translation-table entries, the way debugfs prints them."""

from __future__ import annotations

import re
from typing import Any

from vtdlud.errors import UsageError
from vtdlud.frozen import frozen
from vtdlud.model.bitfield import BitField, Scale, decode_fields
from vtdlud.model.registers import CAP_FIELDS, ECAP_FIELDS, FSTS_FIELDS, GSTS_FIELDS, RTADDR_FIELDS
from vtdlud.model.tables import (
    CONTEXT_HI_FIELDS,
    CONTEXT_LO_FIELDS,
    LEGACY_ROOT_HI_FIELDS,
    LEGACY_ROOT_LO_FIELDS,
    PASID_VAL0_FIELDS,
    PASID_VAL1_FIELDS,
    PASID_VAL2_FIELDS,
    PGTT_NAMES,
    ROOT_HI_FIELDS,
    ROOT_LO_FIELDS,
    SM_CONTEXT_HI_FIELDS,
    SM_CONTEXT_LO_FIELDS,
    TT_NAMES,
)

U64_MAX = (1 << 64) - 1
_HEXWORD = re.compile(r"(?:0x)?([0-9a-fA-F]{1,16})")

REGISTERS: dict[str, tuple[str, tuple[BitField, ...]]] = {
    "cap": ("CAP_REG", CAP_FIELDS),
    "ecap": ("ECAP_REG", ECAP_FIELDS),
    "gsts": ("GSTS_REG", GSTS_FIELDS),
    "rtaddr": ("RTADDR_REG", RTADDR_FIELDS),
    "fsts": ("FSTS_REG", FSTS_FIELDS),
}
ENTRIES = ("root-entry", "context-entry", "pasid-entry")
KINDS = (*REGISTERS, *ENTRIES)


@frozen
class Word:
    """One 64-bit word of the value and the fields decoded from it."""

    name: str
    value: int
    fields: tuple[BitField, ...]


@frozen
class Decoded:
    kind: str
    title: str
    mode: str | None
    words: tuple[Word, ...]


def _words(kind: str, text: str, count: int, example: str) -> list[int]:
    parts = text.strip().split(":")
    if len(parts) != count:
        raise UsageError(
            f"decode {kind}: {text!r} has {len(parts)} word(s), expected {count} ({example})"
        )
    out = []
    for p in parts:
        m = _HEXWORD.fullmatch(p.strip())
        if m is None:
            raise UsageError(f"decode {kind}: {p!r} is not a 64-bit hexadecimal word ({example})")
        out.append(int(m.group(1), 16))
    return out


def decode(kind: str, value: str, mode: str = "legacy") -> Decoded:
    if kind in REGISTERS:
        title, table = REGISTERS[kind]
        (v,) = _words(kind, value, 1, "e.g. 0xd2008c22260286")
        return Decoded(kind, title, None, (Word(title, v, table),))
    if kind == "root-entry":
        hi, lo = _words(kind, value, 2, "0xHI:0xLO as dmar_translation_struct prints it")
        if mode == "scalable":
            root = (Word("lo", lo, ROOT_LO_FIELDS), Word("hi", hi, ROOT_HI_FIELDS))
        else:
            root = (Word("lo", lo, LEGACY_ROOT_LO_FIELDS), Word("hi", hi, LEGACY_ROOT_HI_FIELDS))
        return Decoded(kind, "root entry", mode, root)
    if kind == "context-entry":
        hi, lo = _words(kind, value, 2, "0xHI:0xLO as dmar_translation_struct prints it")
        if mode == "scalable":
            words = (Word("lo", lo, SM_CONTEXT_LO_FIELDS), Word("hi", hi, SM_CONTEXT_HI_FIELDS))
            return Decoded(kind, "context entry (low 128 bits)", mode, words)
        words = (Word("lo", lo, CONTEXT_LO_FIELDS), Word("hi", hi, CONTEXT_HI_FIELDS))
        return Decoded(kind, "context entry", mode, words)
    if kind == "pasid-entry":
        v2, v1, v0 = _words(kind, value, 3, "val2:val1:val0 as dmar_translation_struct prints it")
        pasid_words = (
            Word("val[0]", v0, PASID_VAL0_FIELDS),
            Word("val[1]", v1, PASID_VAL1_FIELDS),
            Word("val[2]", v2, PASID_VAL2_FIELDS),
        )
        return Decoded(kind, "PASID entry (val[2:0])", "scalable", pasid_words)
    raise UsageError(f"decode: unknown kind {kind!r}; expected one of {', '.join(KINDS)} or dmar")


def _meaning(f: BitField, v: int | bool) -> str:
    if f.name == "tt" and isinstance(v, int):
        return TT_NAMES.get(v, "reserved")
    if f.name == "pgtt" and isinstance(v, int):
        return PGTT_NAMES.get(v, "reserved")
    return ""


def _show(f: BitField, v: int | bool) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if f.scale is Scale.PAGE_ADDR:
        return f"{v:#x}"
    return str(v) if v < 10 else f"{v} ({v:#x})"


def format_text(d: Decoded) -> str:
    lines = [f"{d.title}" + (f" [{d.mode} mode]" if d.mode else "")]
    for w in d.words:
        lines.append(f"  {w.name} = 0x{w.value:016x}")
        for f in w.fields:
            v = f.decode(w.value)
            meaning = _meaning(f, v)
            doc = f"{meaning}; {f.doc}" if meaning and f.doc else meaning or f.doc
            lines.append(f"    {f.name:<18} [{f.bits():>5}] = {_show(f, v):<22} {doc}".rstrip())
    return "\n".join(lines) + "\n"


def to_json(d: Decoded) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for w in d.words:
        fields.update(decode_fields(w.fields, w.value))
    return {
        "kind": d.kind,
        "mode": d.mode,
        "raw": {w.name: f"{w.value:#x}" for w in d.words},
        "fields": fields,
    }
