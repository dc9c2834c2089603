"""Builders for KHO and LUO blobs and a fake physical memory, for the tests in tests/kho.

No real capture of a KHO or LUO blob exists: every blob here is built from the layouts the
kernel sources describe (named in vtdlud/parse/kho.py and vtdlud/parse/luo.py).  FDTs are built
with pylibfdt's ``FdtSw``, the way the kernel builds them with ``fdt_create()``/``fdt_property()``;
u64 properties are written as the kernel writes them, CPU-native little-endian bytes.  Structs are
packed by hand with ``struct`` (all of them are ``__packed`` in the kernel).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import libfdt

from vtdlud.errors import ParseError

PAGE = 4096

Props = Sequence[tuple[str, bytes]]


def u64le(value: int) -> bytes:
    return value.to_bytes(8, "little")


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def fixed(text: str | bytes, size: int) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    assert len(raw) <= size
    return raw + b"\x00" * (size - len(raw))


@dataclass
class Node:
    name: str
    props: list[tuple[str, bytes]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)


def build_fdt(root: Node) -> bytes:
    """An FDT blob of ``root`` (whose name is ignored: the root node is "")."""
    sw = libfdt.FdtSw()
    sw.finish_reservemap()

    def emit(node: Node, name: str) -> None:
        sw.begin_node(name)
        for key, value in node.props:
            sw.property(key, value)
        for child in node.children:
            emit(child, child.name)
        sw.end_node()

    emit(root, "")
    fdt = sw.as_fdt()
    # The buffer keeps FdtSw's slack; debugfs shows fdt_totalsize() bytes.
    return bytes(fdt.as_bytearray())[: fdt.totalsize()]


# --- KHO root FDT ---------------------------------------------------------------------------


def kho_root(
    compatible: str | bytes,
    subsystems: Iterable[tuple[str, Props]] = (),
    *,
    memory_map: int | None = None,
) -> bytes:
    compat = compatible if isinstance(compatible, bytes) else cstr(compatible)
    props: list[tuple[str, bytes]] = [("compatible", compat)]
    if memory_map is not None:
        props.append(("preserved-memory-map", u64le(memory_map)))
    return build_fdt(Node("", props, [Node(name, list(p)) for name, p in subsystems]))


def kho_v1(subsystems: dict[str, int], memory_map: int | None = 0x1234_5000) -> bytes:
    """kho-v1: ``fdt`` = phys of the subsystem FDT."""
    subs = [(name, [("fdt", u64le(phys))]) for name, phys in subsystems.items()]
    return kho_root("kho-v1", subs, memory_map=memory_map)


def kho_v2(
    subsystems: dict[str, tuple[int, int | None]], memory_map: int | None = 0x2345_6000
) -> bytes:
    """kho-v2: ``preserved-data`` = phys, optionally ``blob-size``."""
    subs: list[tuple[str, Props]] = []
    for name, (phys, size) in subsystems.items():
        props = [("preserved-data", u64le(phys))]
        if size is not None:
            props.append(("blob-size", u64le(size)))
        subs.append((name, props))
    return kho_root("kho-v2", subs, memory_map=memory_map)


# --- LUO -------------------------------------------------------------------------------------


def luo_fdt(
    *,
    compatible: str = "luo-v1",
    number: int | None = 3,
    session_compatible: str | None = "luo-session-v2",
    session_header: int | None = 0x10_0000,
    flb_compatible: str | None = "luo-flb-v1",
    flb_header: int | None = 0x20_0000,
) -> bytes:
    """The LUO FDT of generation (a); ``None`` leaves a node or property out."""
    props = [("compatible", cstr(compatible))]
    if number is not None:
        props.append(("liveupdate-number", u64le(number)))
    children: list[Node] = []
    if session_compatible is not None:
        sp = [("compatible", cstr(session_compatible))]
        if session_header is not None:
            sp.append(("luo-session-header", u64le(session_header)))
        children.append(Node("luo-session", sp))
    if flb_compatible is not None:
        fp = [("compatible", cstr(flb_compatible))]
        if flb_header is not None:
            fp.append(("luo-flb-header", u64le(flb_header)))
        children.append(Node("luo-flb", fp))
    return build_fdt(Node("", props, children))


def luo_ser_features(
    *,
    supp: int = 0b111,
    req: int = 0b111,
    active: int = 0b111,
    number: int = 5,
    sessions_pa: int = 0x30_0000,
    flbs_pa: int = 0x40_0000,
    reserved: bytes = b"\x00" * 104,
) -> bytes:
    """``struct luo_ser`` of generation (b): feature header (128 bytes) + three u64."""
    assert len(reserved) == 104
    return (
        struct.pack("<QQQ", supp, req, active)
        + reserved
        + struct.pack("<QQQ", number, sessions_pa, flbs_pa)
    )


def luo_ser_compatible(
    compatible: str = "luo-v5", *, number: int = 7, sessions_pa: int = 0, flbs_pa: int = 0
) -> bytes:
    """``struct luo_ser`` of generation (c): ``char compatible[ALIGN(len + 1, 8)]`` + three u64."""
    raw = cstr(compatible)
    raw += b"\x00" * (-len(raw) % 8)
    return raw + struct.pack("<QQQ", number, sessions_pa, flbs_pa)


def session_ser_v1(name: str) -> bytes:
    return fixed(name, 64)


def session_ser_v2(name: str, files: int = 0, count: int = 0) -> bytes:
    return fixed(name, 64) + struct.pack("<QQ", files, count)


def file_ser(compatible: str, data: int, token: int) -> bytes:
    return fixed(compatible, 48) + struct.pack("<QQ", data, token)


def flb_ser(name: str, data: int, count: int) -> bytes:
    return fixed(name, 48) + struct.pack("<QQ", data, count)


def block(next_pa: int, entries: Sequence[bytes], *, count: int | None = None) -> bytes:
    """One ``kho_block_header_ser`` block: {next, count} + entries."""
    n = len(entries) if count is None else count
    return struct.pack("<QQ", next_pa, n) + b"".join(entries)


# --- fake physical memory -------------------------------------------------------------------


class FakeMemory:
    """Physical memory as a dict of 4 KiB pages; reading an absent page raises ParseError, as the
    kcore reader does for an address outside RAM."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.reads: list[tuple[int, int]] = []
        self._next = 0x100_0000

    def write(self, addr: int, data: bytes) -> int:
        for i, byte in enumerate(data):
            page = self.pages.setdefault((addr + i) // PAGE, bytearray(PAGE))
            page[(addr + i) % PAGE] = byte
        return addr

    def alloc(self, data: bytes, pages: int | None = None) -> int:
        """Place ``data`` at fresh page-aligned memory (``pages`` reserved) and return its address."""
        addr = self._next
        n = pages if pages is not None else max(1, -(-len(data) // PAGE))
        self._next += n * PAGE
        for p in range(n):
            self.pages.setdefault(addr // PAGE + p, bytearray(PAGE))
        self.write(addr, data)
        return addr

    def __call__(self, addr: int, size: int) -> bytes:
        self.reads.append((addr, size))
        out = bytearray()
        a = addr
        while a < addr + size:
            page = self.pages.get(a // PAGE)
            if page is None:
                raise ParseError(f"{a:#x} is not in RAM")
            take = min(PAGE - a % PAGE, addr + size - a)
            out += page[a % PAGE : a % PAGE + take]
            a += take
        return bytes(out)
