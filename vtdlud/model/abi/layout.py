"""Declarative C struct layouts: one description drives offsets, ``sizeof``, pack and unpack.

A struct is declared once, as the kernel writes it, with :func:`abi_struct` (for records that
become frozen dataclasses) or :func:`struct_layout` (for the array structs, which end in a
flexible array and are only described).  Offsets follow what x86-64 gcc does:

* ``__packed`` structs: every member at byte alignment 1; a bit-field takes the next free bit and
  the member after it starts at the next byte (so ``u32 x:1`` followed by a pointer spends one
  byte, not four);
* natural structs: every member aligned to its type, the size rounded up to the largest alignment;
* an anonymous ``union`` is one region of the size of its largest member, every member at its
  start; its members are fields of the enclosing struct (``hw.intel``);
* a flexible array member has size 0 and must be last.

Values are read as one little-endian integer over the record, so a field at byte ``o`` with ``n``
bits is bits ``8*o .. 8*o+n-1`` of it: the same rule covers u8..u64, pointers and bit-fields
(gcc on x86-64 allocates bit-fields from the least significant bit).  Bits that belong to no
field (pahole's holes, e.g. the 7 bits after ``sign_extend:1``) are kept in the record's
``holes`` field so that ``pack(unpack(b)) == b`` for every ``b``.

The ABI is the x86-64 one (LP64, little-endian): pointers are 8 bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar, Self, TypeVar

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen, is_frozen

BITS_PER_BYTE = 8
POINTER_SIZE = 8  # x86-64
HOLES_FIELD = "holes"


@frozen
class CType:
    """A C scalar type as the kernel spells it (``u32``, ``struct iommu_domain *``)."""

    name: str
    size: int
    align: int

    @property
    def bits(self) -> int:
        return self.size * BITS_PER_BYTE


U8 = CType("u8", 1, 1)
U32 = CType("u32", 4, 4)
U64 = CType("u64", 8, 8)


def pointer(target: str) -> CType:
    """``<target> *``: a kernel virtual address, meaningless to userspace but kept bit-exact."""
    return CType(f"{target} *", POINTER_SIZE, POINTER_SIZE)


class Kind(Enum):
    SCALAR = "scalar"  # u8/u32/u64 or a pointer -> int
    ARRAY = "array"  # T name[N] -> bytes for u8, tuple[int, ...] otherwise
    STRUCT = "struct"  # a nested struct -> its dataclass
    BITFIELD = "bitfield"  # T name:bits -> int
    UNION = "union"  # anonymous union: its members are fields of the enclosing struct
    FLEX = "flex"  # flexible array member T name[] -> not a dataclass field (see arrays)


@frozen
class Member:
    """One member as declared, before placement.  Build with the helpers below."""

    name: str
    kind: Kind
    ctype: CType | None = None
    count: int = 1
    bits: int = 0
    struct: type[AbiStruct] | None = None
    members: tuple[Member, ...] = ()


def field(name: str, ctype: CType) -> Member:
    return Member(name, Kind.SCALAR, ctype=ctype)


def array(name: str, ctype: CType, count: int) -> Member:
    if count <= 0:
        raise ValueError(f"{name}: array count must be positive (use flex() for [])")
    return Member(name, Kind.ARRAY, ctype=ctype, count=count)


def nested(name: str, struct: type[AbiStruct]) -> Member:
    return Member(name, Kind.STRUCT, struct=struct)


def bitfield(name: str, ctype: CType, bits: int) -> Member:
    if not 0 < bits <= ctype.bits:
        raise ValueError(f"{name}: a {ctype.name} bit-field has 1..{ctype.bits} bits, not {bits}")
    return Member(name, Kind.BITFIELD, ctype=ctype, bits=bits)


def union(*members: Member) -> Member:
    """An anonymous ``union { ... };``."""
    if not members or any(m.kind in (Kind.BITFIELD, Kind.FLEX, Kind.UNION) for m in members):
        raise ValueError("an anonymous union here holds plain, array or struct members")
    return Member("", Kind.UNION, members=members)


def flex(name: str, struct: type[AbiStruct]) -> Member:
    return Member(name, Kind.FLEX, struct=struct)


@frozen
class Field:
    """A placed member.

    ``offset`` is the byte that holds the first bit.  ``size`` is in bytes: for a bit-field the
    bytes its bits span, for a flexible array 0.  ``bit_offset`` (bit-fields only) is the first
    bit within byte ``offset``, least significant first; ``bit_size`` its width.
    """

    name: str
    kind: Kind
    c_type: str  # "u64", "struct iommu_hdr_ser", "union" ...
    offset: int
    size: int
    bit_offset: int | None = None
    bit_size: int | None = None
    ctype: CType | None = None
    count: int = 1
    struct: type[AbiStruct] | None = None
    children: tuple[Field, ...] = ()  # UNION only

    @property
    def c_decl(self) -> str:
        """The declarator as the kernel writes it: ``padding[7]``, ``sign_extend:1``."""
        if self.kind is Kind.ARRAY:
            return f"{self.name}[{self.count}]"
        if self.kind is Kind.FLEX:
            return f"{self.name}[]"
        if self.kind is Kind.BITFIELD:
            return f"{self.name}:{self.bit_size}"
        return self.name

    @property
    def bit_start(self) -> int:
        """First bit of the field counted from the start of the struct."""
        return self.offset * BITS_PER_BYTE + (self.bit_offset or 0)

    @property
    def bit_width(self) -> int:
        if self.bit_size is not None:
            return self.bit_size
        return self.size * BITS_PER_BYTE

    @property
    def mask(self) -> int:
        """The field's bits in the struct-wide little-endian integer."""
        return ((1 << self.bit_width) - 1) << self.bit_start


@frozen
class StructLayout:
    """A placed struct: ``members`` as declared (unions grouped), ``fields`` flattened."""

    name: str
    packed: bool
    size: int
    align: int
    members: tuple[Field, ...]
    hole_mask: int  # bits of the struct no field covers

    @property
    def c_name(self) -> str:
        return f"struct {self.name}"

    @property
    def fields(self) -> tuple[Field, ...]:
        """Every field, anonymous-union members in place of their union."""
        out: list[Field] = []
        for m in self.members:
            out.extend(m.children if m.kind is Kind.UNION else (m,))
        return tuple(out)

    @property
    def value_fields(self) -> tuple[Field, ...]:
        """The fields that carry a value in the record (all but flexible arrays)."""
        return tuple(f for f in self.fields if f.kind is not Kind.FLEX)

    @property
    def flex(self) -> Field | None:
        return next((f for f in self.fields if f.kind is Kind.FLEX), None)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no field {name!r}")

    def holes(self) -> list[tuple[int, int]]:
        """Hole runs as (first bit, number of bits), counted from the start of the struct."""
        runs: list[tuple[int, int]] = []
        bit = 0
        mask = self.hole_mask
        while mask >> bit:
            if mask >> bit & 1:
                start = bit
                while mask >> bit & 1:
                    bit += 1
                runs.append((start, bit - start))
            else:
                bit += 1
        return runs


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _size_align(m: Member) -> tuple[int, int]:
    match m.kind:
        case Kind.SCALAR | Kind.ARRAY:
            assert m.ctype is not None
            return m.ctype.size * m.count, m.ctype.align
        case Kind.STRUCT | Kind.FLEX:
            assert m.struct is not None
            inner = m.struct.LAYOUT
            return (inner.size if m.kind is Kind.STRUCT else 0), inner.align
        case Kind.UNION:
            sizes = [_size_align(c) for c in m.members]
            align = max(a for _, a in sizes)
            return _round_up(max(s for s, _ in sizes), align), align
    raise ValueError(f"{m.name}: {m.kind} has no byte size")


def _c_type(m: Member) -> str:
    if m.struct is not None:
        return m.struct.LAYOUT.c_name
    if m.kind is Kind.UNION:
        return "union"
    assert m.ctype is not None
    return m.ctype.name


def _place(m: Member, offset: int) -> Field:
    size, _ = _size_align(m)
    children = tuple(_place(c, offset) for c in m.members)
    return Field(
        m.name, m.kind, _c_type(m), offset, size, None, None, m.ctype, m.count, m.struct, children
    )


def _covered(f: Field) -> int:
    if f.kind is Kind.UNION:
        # Bytes of the union beyond its members are holes of the enclosing struct.
        mask = 0
        for c in f.children:
            mask |= c.mask
        return mask
    return f.mask


def compute_layout(name: str, members: tuple[Member, ...], *, packed: bool) -> StructLayout:
    """Place ``members`` the way x86-64 gcc does (see the module docstring)."""
    placed: list[Field] = []
    bit = 0  # next free bit from the start of the struct
    struct_align = 1
    seen: set[str] = set()
    for i, m in enumerate(members):
        for n in [c.name for c in m.members] if m.kind is Kind.UNION else [m.name]:
            if n in seen or n == HOLES_FIELD:
                raise ValueError(f"struct {name}: duplicate or reserved field name {n!r}")
            seen.add(n)
        if m.kind is Kind.FLEX and i != len(members) - 1:
            raise ValueError(f"struct {name}: flexible array {m.name} must be the last member")
        if m.kind is Kind.BITFIELD:
            assert m.ctype is not None
            if not packed:
                # The SysV storage-unit rules for natural structs are not needed by this ABI and
                # would have no gcc test behind them.
                raise ValueError(f"struct {name}: bit-fields are only modelled in packed structs")
            offset, bit_offset = divmod(bit, BITS_PER_BYTE)
            span = _round_up(bit_offset + m.bits, BITS_PER_BYTE) // BITS_PER_BYTE
            placed.append(
                Field(m.name, m.kind, m.ctype.name, offset, span, bit_offset, m.bits, m.ctype)
            )
            bit += m.bits
            continue
        size, align = _size_align(m)
        if packed:
            align = 1
        offset = _round_up(_round_up(bit, BITS_PER_BYTE) // BITS_PER_BYTE, align)
        placed.append(_place(m, offset))
        bit = (offset + size) * BITS_PER_BYTE
        struct_align = max(struct_align, align)
    size = _round_up(_round_up(bit, BITS_PER_BYTE) // BITS_PER_BYTE, struct_align)
    covered = 0
    for f in placed:
        covered |= _covered(f)
    hole_mask = ((1 << (size * BITS_PER_BYTE)) - 1) & ~covered
    return StructLayout(name, packed, size, struct_align, tuple(placed), hole_mask)


def struct_layout(name: str, *members: Member, packed: bool) -> StructLayout:
    """A described-only struct (the array structs, which end in a flexible array)."""
    return compute_layout(name, members, packed=packed)


# --- values <-> bits -------------------------------------------------------------------------


def _from_raw(f: Field, raw: int) -> object:
    if f.kind is Kind.STRUCT:
        assert f.struct is not None
        return f.struct.from_int(raw)
    if f.kind is Kind.ARRAY:
        assert f.ctype is not None
        if f.ctype.size == 1:
            return raw.to_bytes(f.count, "little")
        elem = (1 << f.ctype.bits) - 1
        return tuple((raw >> (i * f.ctype.bits)) & elem for i in range(f.count))
    return raw


def _to_raw(struct: str, f: Field, value: object) -> int:
    where = f"{struct}.{f.name}"
    if f.kind is Kind.STRUCT:
        assert f.struct is not None
        if not isinstance(value, f.struct):
            raise ValueError(f"{where}: expected {f.struct.__name__}, got {type(value).__name__}")
        return value.to_int()
    if f.kind is Kind.ARRAY:
        assert f.ctype is not None
        if f.ctype.size == 1:
            if not isinstance(value, bytes) or len(value) != f.count:
                raise ValueError(f"{where}: expected {f.count} bytes, got {value!r}")
            return int.from_bytes(value, "little")
        if not isinstance(value, tuple) or len(value) != f.count:
            raise ValueError(
                f"{where}: expected a tuple of {f.count} {f.ctype.name}, got {value!r}"
            )
        raw = 0
        for i, v in enumerate(value):
            raw |= _check_int(f"{where}[{i}]", v, f.ctype.bits) << (i * f.ctype.bits)
        return raw
    return _check_int(where, value, f.bit_width)


def _check_int(where: str, value: object, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >> bits:
        raise ValueError(f"{where}: expected an unsigned {bits}-bit int, got {value!r}")
    return value


class AbiStruct:
    """Base of the record dataclasses; subclasses are made with :func:`abi_struct`."""

    LAYOUT: ClassVar[StructLayout]

    @classmethod
    def sizeof(cls) -> int:
        return cls.LAYOUT.size

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> Self:
        """Decode the record at ``data[offset:]`` (bytes after it are ignored).

        Raises :class:`~vtdlud.errors.ParseError` (with ``offset``) when fewer than
        ``sizeof()`` bytes are there.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        size = cls.LAYOUT.size
        if len(data) - offset < size:
            raise ParseError(
                f"struct {cls.LAYOUT.name} needs {size} bytes, "
                f"{max(len(data) - offset, 0)} available",
                offset=offset,
            )
        return cls.from_int(int.from_bytes(data[offset : offset + size], "little"))

    def pack(self) -> bytes:
        """The record's exact bytes (``sizeof()`` of them).  ValueError on out-of-range values."""
        return self.to_int().to_bytes(self.LAYOUT.size, "little")

    @classmethod
    def from_int(cls, value: int) -> Self:
        layout = cls.LAYOUT
        kwargs: dict[str, Any] = {
            f.name: _from_raw(f, (value >> f.bit_start) & ((1 << f.bit_width) - 1))
            for f in layout.value_fields
        }
        if layout.hole_mask:
            kwargs[HOLES_FIELD] = value & layout.hole_mask
        return cls(**kwargs)

    def to_int(self) -> int:
        layout = self.LAYOUT
        value = 0
        for f in layout.value_fields:
            # Overwrite, so that members of one union are written in declaration order.
            raw = _to_raw(layout.name, f, getattr(self, f.name))
            value = (value & ~f.mask) | (raw << f.bit_start)
        if layout.hole_mask:
            holes = getattr(self, HOLES_FIELD)
            if not isinstance(holes, int) or holes & ~layout.hole_mask or holes < 0:
                raise ValueError(
                    f"{layout.name}.{HOLES_FIELD}: {holes!r} has bits outside the holes "
                    f"({layout.hole_mask:#x})"
                )
            value |= holes
        return value


S = TypeVar("S", bound=AbiStruct)


def abi_struct(name: str, *members: Member, packed: bool) -> Callable[[type[S]], type[S]]:
    """Attach the layout of ``struct <name>`` to a frozen dataclass whose fields name its members.

    The dataclass must declare exactly the value fields, in order (members of an anonymous union
    under their own names), plus ``holes: int = 0`` if and only if the layout has holes.
    """

    def attach(cls: type[S]) -> type[S]:
        if not dataclasses.is_dataclass(cls) or not is_frozen(cls):
            raise TypeError(f"{cls.__name__}: apply @abi_struct over @frozen")
        layout = compute_layout(name, members, packed=packed)
        expected = [f.name for f in layout.value_fields]
        if layout.hole_mask:
            expected.append(HOLES_FIELD)
        got = [f.name for f in dataclasses.fields(cls)]
        if got != expected:
            raise TypeError(f"{cls.__name__}: fields {got} do not match struct {name} {expected}")
        cls.LAYOUT = layout
        return cls

    return attach
