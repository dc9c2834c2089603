"""``vtdlud abi``: the layouts of the IOMMU live-update records, as JSON or pahole-like text.

Both renderers read the same :class:`~vtdlud.model.abi.layout.StructLayout` objects that decode
the kernel's records, so what is printed is what vtdlud uses.

JSON (``abi --json``)::

    {"variant": "v1", "compatible": "iommu-liveupdate-v1", "version": null,
     "structs": {"iommu_hdr_ser": {"size": 8, "fields": [
         {"name": "ref_count", "offset": 0, "size": 4}, ...]}, ...}}

Fields are listed in declaration order; members of an anonymous union appear under their own
name (``intel``) at the union's offset; nested structs are one field of their size; flexible
arrays have size 0.  A bit-field's ``offset`` is the byte holding its first bit, ``bit_offset``
the first bit within that byte (least significant = 0), ``bit_size`` its width and ``size`` the
number of bytes its bits span (``sign_extend:1`` in ``iommu_domain_ser``: 28, 0, 1, 1).
"""

from __future__ import annotations

from vtdlud.frozen import frozen
from vtdlud.model.abi.layout import BITS_PER_BYTE, Field, Kind, StructLayout
from vtdlud.model.abi.variants import AbiVariant, capacity_of, get_variant

_TAB = 8  # display width of the leading tabs


def _field_json(f: Field) -> dict[str, object]:
    out: dict[str, object] = {"name": f.name, "offset": f.offset, "size": f.size}
    if f.kind is Kind.BITFIELD:
        out["bit_offset"] = f.bit_offset
        out["bit_size"] = f.bit_size
    return out


def abi_layout(variant: str) -> dict[str, object]:
    """The ``abi --json`` document of ``variant`` (``v1`` or ``v2``; ValueError otherwise)."""
    v = get_variant(variant)
    return {
        "variant": v.name,
        "compatible": v.compatible,
        "version": v.version,
        "structs": {
            layout.name: {"size": layout.size, "fields": [_field_json(f) for f in layout.fields]}
            for layout in v.layouts
        },
    }


def _where(f: Field) -> str:
    if f.kind is Kind.BITFIELD:
        return f"/* {f.offset:5}:{f.bit_offset:2} {f.size:5} */"
    return f"/* {f.offset:5} {f.size:5} */"


@frozen
class _Columns:
    """Type and declarator column widths over a whole listing (a tab counts 8 columns)."""

    type_width: int
    decl_width: int  # longest "name;" incl. the semicolon

    @property
    def comment_column(self) -> int:
        return _TAB + self.type_width + 1 + self.decl_width + 1

    def line(self, depth: int, text: str, comment: str) -> str:
        width = self.comment_column - depth * _TAB
        return "\t" * depth + (text.ljust(width) if len(text) < width else text + " ") + comment

    def member(self, depth: int, f: Field) -> str:
        return self.line(depth, f"{f.c_type.ljust(self.type_width)} {f.c_decl};", _where(f))

    @classmethod
    def of(cls, layouts: tuple[StructLayout, ...]) -> _Columns:
        fields = [f for layout in layouts for f in layout.fields]
        return cls(max(len(f.c_type) for f in fields), max(len(f.c_decl) + 1 for f in fields))


def _hole_text(start: int, bits: int, size: int) -> str:
    amount = (
        f"{bits // BITS_PER_BYTE} bytes"
        if start % BITS_PER_BYTE == 0 and bits % BITS_PER_BYTE == 0
        else f"{bits} bits"
    )
    tail = start + bits == size * BITS_PER_BYTE
    return f"/* XXX {amount} {'padding' if tail else 'hole'} */"


def _element_names(v: AbiVariant) -> dict[str, int]:
    """Array element struct name -> records per page."""
    out: dict[str, int] = {}
    for layout in v.layouts:
        flex = layout.flex
        if flex is not None and flex.struct is not None:
            out[flex.struct.LAYOUT.name] = capacity_of(flex.struct)
    return out


def _struct_text(layout: StructLayout, capacity: int | None, cols: _Columns) -> list[str]:
    lines = [f"{layout.c_name} {{"]
    holes = layout.holes()

    def emit_holes_before(bit: int | None) -> None:
        while holes and (bit is None or holes[0][0] + holes[0][1] <= bit):
            start, bits = holes.pop(0)
            lines.extend(["", "\t" + _hole_text(start, bits, layout.size), ""])

    for m in layout.members:
        emit_holes_before(m.bit_start)
        if m.kind is Kind.UNION:
            lines.append("\tunion {")
            lines.extend(cols.member(2, c) for c in m.children)
            lines.append(cols.line(1, "};", _where(m)))
        else:
            lines.append(cols.member(1, m))
    emit_holes_before(None)
    n_fields = len(layout.fields)
    lines += ["", f"\t/* size: {layout.size}, members: {n_fields} */"]
    hole_bits = sum(bits for _, bits in layout.holes())
    if hole_bits:
        lines.append(f"\t/* holes: {len(layout.holes())}, sum holes: {hole_bits} bits */")
    if capacity is not None:
        lines.append(f"\t/* records per array page: {capacity} */")
    lines.append("} __packed;" if layout.packed else "};")
    return lines


def format_abi_text(variant: str) -> str:
    """pahole-like listing of every struct of ``variant`` (ValueError for an unknown name)."""
    v = get_variant(variant)
    version = (
        f"IOMMU_LUO_FLB_VERSION {v.version}" if v.version is not None else "version in the string"
    )
    lines = [
        f"/* include/linux/kho/abi/iommu.h, ABI {v.name}: "
        f'IOMMU_LUO_FLB_COMPATIBLE "{v.compatible}", {version}',
        f" * {v.source}",
        " * x86-64 layout; columns: offset and size in bytes, bit-fields as offset:bit */",
    ]
    capacities = _element_names(v)
    cols = _Columns.of(v.layouts)
    for layout in v.layouts:
        lines.append("")
        lines.extend(_struct_text(layout, capacities.get(layout.name), cols))
    return "\n".join(lines) + "\n"
