"""vtdlud.parse.fdt, the pure-Python FDT reader a `pip install` without pylibfdt falls back to,
held to the real binding (pylibfdt, libfdt from dtc) on the same inputs: every libfdt call
FdtView makes gives the same result or the same error code, and the KHO/LUO parsers give the
same results or the same one-line errors with either reader.

The inputs are the synthetic KHO/LUO blobs of tests/kho/blobs.py (no real capture exists),
variants libfdt allows (reservation entries, NOP tags, older header versions, deeper trees),
and Hypothesis mutations of them: random bytes, header fields, truncation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import libfdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kho.blobs import Node, build_fdt, cstr, kho_v1, kho_v2, luo_fdt, u64le
from vtdlud.errors import ParseError
from vtdlud.parse import fdt as pure
from vtdlud.parse import kho as kho_module
from vtdlud.parse.kho import parse_kho_root
from vtdlud.parse.luo import parse_luo_blob

FUZZ = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
NAMES = (
    "compatible",
    "fdt",
    "preserved-data",
    "blob-size",
    "preserved-memory-map",
    "liveupdate-number",
    "luo-session-header",
    "luo-flb-header",
    "absent",
)
FDT_NOP = 4
MAX_NODES = 64


def _with_reservations() -> bytes:
    sw = libfdt.FdtSw()
    sw.add_reservemap_entry(0x1000, 0x2000)
    sw.add_reservemap_entry(0x8000_0000, 0x10)
    sw.finish_reservemap()
    sw.begin_node("")
    sw.property("compatible", cstr("kho-v2"))
    sw.begin_node("LUO")
    sw.property("preserved-data", u64le(0x5000))
    sw.end_node()
    sw.end_node()
    fdt = sw.as_fdt()
    return bytes(fdt.as_bytearray())[: fdt.totalsize()]


def _nop_first_property_of(blob: bytes, name: str) -> bytes:
    """Overwrite the child ``name``'s first property (tag, len, nameoff, value) with NOP tags."""
    f = libfdt.Fdt(blob)
    node = f.subnode_offset(0, name)
    prop = f.first_property_offset(node)
    length = struct.unpack_from(">I", blob, f.off_dt_struct() + prop + 4)[0]
    words = (12 + length + 3) // 4
    out = bytearray(blob)
    start = f.off_dt_struct() + prop
    out[start : start + 4 * words] = struct.pack(">I", FDT_NOP) * words
    return bytes(out)


def _version(blob: bytes, version: int, last_comp: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(">II", out, 20, version, last_comp)
    return bytes(out)


DEEP = build_fdt(
    Node(
        "",
        [("compatible", cstr("kho-v2")), ("preserved-memory-map", u64le(0x42000))],
        [
            Node("a", [("preserved-data", u64le(1)), ("blob-size", u64le(8))]),
            Node("b", [], [Node("c", [("x", b"")], [Node("d", [("fdt", u64le(7))])])]),
            Node("e", [("compatible", cstr("one") + cstr("two"))]),
        ],
    )
)
SEEDS = [
    kho_v1({"LUO": 0x1000, "memblock": 0x2000}, 0xABC000),
    kho_v2({"LUO": (0x3000, 152), "x": (0x4000, None)}, 0x42000),
    luo_fdt(),
    luo_fdt(session_compatible=None),
    DEEP,
    _with_reservations(),
    _nop_first_property_of(DEEP, "a"),
    _version(DEEP, 16, 16),
    _version(DEEP, 17, 2),
]


@contextmanager
def reader(module: Any) -> Iterator[None]:
    """parse/kho.py's FdtView reading through ``module`` (what its fallback import does)."""
    saved = vars(kho_module)["libfdt"]
    setattr(kho_module, "libfdt", module)  # noqa: B010 - not an exported name
    try:
        yield
    finally:
        setattr(kho_module, "libfdt", saved)  # noqa: B010


def api_trace(mod: Any, data: bytes) -> list[tuple[object, ...]]:
    """Every call FdtView makes, on every node reachable from the root and on every word
    offset of the structure block: results and error codes."""
    buf = bytearray(data)
    rc = mod.fdt_check_full(buf, len(buf))
    trace: list[tuple[object, ...]] = [("check_full", rc)]
    if rc != 0:
        return trace
    fdt = mod.Fdt(buf)
    quiet = (mod.NOTFOUND,)

    def call(what: str, f: Any, *args: Any) -> None:
        try:
            value = f(*args)
        except mod.FdtException as exc:
            trace.append((what, *args[:2], "raise", exc.err))
            return
        trace.append((what, *args[:2], bytes(value) if isinstance(value, bytearray) else value))

    todo, seen = [0], 0
    while todo and seen < MAX_NODES:
        node = todo.pop(0)
        seen += 1
        call("get_name", fdt.get_name, node)
        for name in NAMES:
            call("getprop", fdt.getprop, node, name, quiet)
        child = fdt.first_subnode(node, quiet)
        trace.append(("first_subnode", node, child))
        while isinstance(child, int) and child >= 0 and len(todo) < MAX_NODES:
            todo.append(child)
            child = fdt.next_subnode(child, quiet)
            trace.append(("next_subnode", child))
    size = struct.unpack_from(">I", data, 36)[0] if len(data) >= 40 else 0
    for off in [*range(0, min(size, 512), 4), 1, 2, -4, size, size + 4]:
        call("get_name", fdt.get_name, off)
        call("getprop", fdt.getprop, off, "compatible", quiet)
        call("first_subnode", fdt.first_subnode, off, quiet)
        call("next_subnode", fdt.next_subnode, off, quiet)
    return trace


def parsed(module: Any, data: bytes) -> list[object]:
    out: list[object] = []
    with reader(module):
        for parse in (parse_kho_root, parse_luo_blob):
            try:
                out.append(parse(data))
            except ParseError as exc:
                out.append(("ParseError", str(exc)))
    return out


def same(data: bytes) -> None:
    assert api_trace(pure, data) == api_trace(libfdt, data)
    assert parsed(pure, data) == parsed(libfdt, data)


@pytest.mark.parametrize("blob", SEEDS, ids=range(len(SEEDS)))
def test_valid_blobs_read_the_same(blob: bytes) -> None:
    assert libfdt.fdt_check_full(bytearray(blob), len(blob)) == 0
    same(blob)


def test_strerror_and_exceptions_match() -> None:
    for code in range(-25, 3):
        assert pure.strerror(code) == libfdt.strerror(code)
    assert str(pure.FdtException(-8)) == str(libfdt.FdtException(-8))
    for name, value in vars(pure).items():
        if name.isupper() and hasattr(libfdt, f"FDT_ERR_{name}"):
            assert value == getattr(libfdt, f"FDT_ERR_{name}"), name


def test_a_wrong_reading_would_be_caught() -> None:
    """Control: the comparison sees a reader that differs in one property."""
    blob = SEEDS[1]

    class Off:
        NOTFOUND = pure.NOTFOUND
        FdtException = pure.FdtException
        fdt_check_full = staticmethod(pure.fdt_check_full)
        strerror = staticmethod(pure.strerror)

        class Fdt(pure.Fdt):
            def getprop(self, node: int, name: str, quiet: tuple[int, ...] = ()) -> Any:
                value = super().getprop(node, name, quiet)
                return value[:-1] if name == "blob-size" and isinstance(value, bytearray) else value

    assert api_trace(Off, blob) != api_trace(libfdt, blob)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):  # a byte anywhere (most land in the structure)
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:  # a header field (sizes, offsets, versions), a bit off
        field = draw(st.integers(1, 9))
        old = struct.unpack_from(">I", data, 4 * field)[0]
        value = draw(st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(old - 16, old + 16)))
        struct.pack_into(">I", data, 4 * field, value & 0xFFFFFFFF)
    if draw(st.integers(0, 3)) == 0:  # truncated, or with trailing bytes
        cut = draw(st.integers(0, len(data) + 16))
        return bytes(data[:cut]) + (draw(st.binary(max_size=16)) if cut > len(data) else b"")
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_blobs_read_the_same(data: bytes) -> None:
    same(data)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_read_the_same(data: bytes) -> None:
    same(b"\xd0\x0d\xfe\xed" + data)
