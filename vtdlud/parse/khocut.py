"""A cut ``kho/out/fdt``: what its intact part says, and the whole FDT read back through kcore.

Why it is cut [C: Linux 7.2.13 kernel/liveupdate/kexec_handover.c, kexec_handover_debugfs.c]:
``kho_init()`` (fs_initcall) allocates the outgoing root FDT as one KHO-preserved page
(``kho_alloc_preserve(PAGE_SIZE)``), writes ``compatible`` and ``preserved-memory-map``, adds the
``kexec-metadata`` node, then registers the debugfs blob ``kho/out/fdt`` with
``fdt_totalsize()`` *of that moment*: the blob's length is fixed there, its data pointer is the
live page.  Every later ``kho_add_subtree()`` (LUO's, at late_initcall, when ``liveupdate=1``)
opens the FDT in place (``fdt_open_into(fdt, fdt, PAGE_SIZE)``), adds the node and packs it:
the structure block grows and the strings block moves behind it.  So the file shows the current
header (with the new ``totalsize``) and the first bytes of the current FDT: on a 7.2 guest 233
of 285 bytes, the structure block whole and the strings block (the property names) cut.  libfdt
rightly refuses that as FDT_ERR_TRUNCATED; it is not corrupt input.

What is sound:

* :func:`parse_cut_root` walks the structure block as far as the copy goes (tokens
  FDT_BEGIN_NODE 1, FDT_END_NODE 2, FDT_PROP 3 ``{u32 len, u32 nameoff}`` + value, FDT_NOP 4,
  FDT_END 9, big-endian, 4-byte aligned; devicetree specification v0.4 §5.4) and keeps node
  names and property values that lie wholly inside it.  A property name is read only where the
  strings block holds it inside the copy; the others are ``None``, never guessed from their
  position or value.
* :func:`recover_cut_root` reads the whole FDT from its page: the page is KHO-preserved and
  order 0, so it is among the preserved order-0 pages of the radix map.  The map's address is
  the ``preserved-memory-map`` value, whose name may be cut; every 8-byte root property inside
  the copy is tried as that address (on 7.2 there is one).  The page whose first bytes equal the
  debugfs copy byte for byte is the FDT (the copy holds the header and physical addresses, so an
  equal prefix is not a coincidence); the FDT read from it must then pass libfdt's full check,
  name a radix-map KHO compatible, and its ``preserved-memory-map``, now read by name, must be
  the address that was walked.  Anything else is a reason, and the caller reports the root as
  not readable (UNKNOWN), never a tree assembled from guesses.

Before the kexec there is no other copy: ``kho/in/fdt`` exists only after a KHO boot and is the
previous kernel's.  After a KHO boot Linux 7.2.13 publishes no ``kho/out/fdt`` at all
(``kho_init()`` returns right after ``kho_in_debugfs_init()``), which is normal, not an error.

Tested with cut copies built by the kernel model (vtdlud.sim, which builds the root the way
kho_init() and kho_add_subtree() do and reproduces the 233/285 bytes measured on Linux 7.2) and
by hand: no real capture of a cut root exists in the tests yet.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.model.khomem import (
    KHO_RADIX,
    KHO_V4,
    MemMapLimits,
    PreservedMemory,
    walk_preserved_memory,
)
from vtdlud.parse.kho import (
    FDT_HEADER_SIZE,
    FDT_MAGIC,
    KHO_MEMORY_MAP_PROP,
    KhoRoot,
    UnknownKho,
    parse_kho_root,
)

ReadPhys = Callable[[int, int], bytes]

KHO_ROOT_MAX_SIZE = 4096  # fdt_create()/fdt_open_into() with PAGE_SIZE: the root is one page
FDT_VERSION = 17  # what libfdt writes; version 16 has no size_dt_struct
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_NOP = 4
FDT_END = 9
MAX_TOKENS = 4096  # a root of one page holds far fewer; bounds the walk
PROBE_SIZE = 8  # read of every preserved page while looking for the root: magic + totalsize

_HEADER = struct.Struct(">10I")
_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")


@frozen
class FdtHeader:
    """``struct fdt_header`` (big-endian u32s)."""

    magic: int
    totalsize: int
    off_dt_struct: int
    off_dt_strings: int
    off_mem_rsvmap: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    size_dt_strings: int
    size_dt_struct: int


def parse_fdt_header(data: bytes) -> FdtHeader:
    """The header of an FDT whose blob may be cut; ParseError when the header itself is bad."""
    if len(data) < FDT_HEADER_SIZE:
        raise ParseError(f"{len(data)} bytes, shorter than an FDT header ({FDT_HEADER_SIZE})")
    h = FdtHeader(*_HEADER.unpack_from(data))
    if h.magic != FDT_MAGIC:
        raise ParseError(f"no FDT magic (0x{data[:4].hex()})", offset=0)
    if h.version < FDT_VERSION or h.last_comp_version > FDT_VERSION:
        raise ParseError(
            f"FDT version {h.version} (last compatible {h.last_comp_version}), expected "
            f"{FDT_VERSION}",
            offset=20,
        )
    blocks = (
        ("memory reservation map", h.off_mem_rsvmap, 16, 8),
        ("structure block", h.off_dt_struct, h.size_dt_struct, 4),
        ("strings block", h.off_dt_strings, h.size_dt_strings, 1),
    )
    for name, off, size, align in blocks:
        if off < FDT_HEADER_SIZE or off % align or off + size > h.totalsize:
            raise ParseError(
                f"FDT {name} at {off:#x}+{size:#x} is outside the {h.totalsize}-byte FDT",
                offset=8,
            )
    return h


@frozen
class CutProp:
    """A property inside the copy: ``name`` None when the strings block holding it is cut,
    ``value`` None when the value itself is cut."""

    name: str | None
    length: int
    value: bytes | None


@frozen
class CutNode:
    name: str
    props: tuple[CutProp, ...]
    complete: bool  # its FDT_END_NODE lies inside the copy


@frozen
class CutKhoRoot:
    """A ``kho/out/fdt`` copy shorter than the FDT it shows (not an error: see the module)."""

    size: int  # bytes in the copy
    totalsize: int  # the FDT's, from its header
    root_props: tuple[CutProp, ...]
    children: tuple[CutNode, ...]  # nodes whose name lies inside the copy
    struct_complete: bool  # the whole structure block lies inside the copy
    prefix: bytes = dataclasses.field(repr=False, compare=False, default=b"")

    @property
    def compatible(self) -> str | None:
        """The root ``compatible``, when its name and value both lie inside the copy."""
        for p in self.root_props:
            if p.name == "compatible" and p.value and p.value.endswith(b"\x00"):
                return p.value[:-1].split(b"\x00")[0].decode("ascii", "backslashreplace")
        return None

    @property
    def map_candidates(self) -> tuple[int, ...]:
        """Root properties that may be ``preserved-memory-map``: 8 bytes long, named so or with
        the name cut.  Only :func:`recover_cut_root` uses them, and it proves the one it keeps."""
        out = []
        for p in self.root_props:
            if p.value is not None and p.length == 8 and p.name in (None, KHO_MEMORY_MAP_PROP):
                out.append(int.from_bytes(p.value, "little"))
        return tuple(dict.fromkeys(out))

    @property
    def unnamed(self) -> int:
        """Properties whose name is cut."""
        return sum(p.name is None for n in self.children for p in n.props) + sum(
            p.name is None for p in self.root_props
        )

    @property
    def reason(self) -> str:
        what = "the structure block is whole" if self.struct_complete else "the structure "
        what += "" if self.struct_complete else "block is cut too"
        return (
            f"the debugfs copy is cut at {self.size} of {self.totalsize} bytes (the kernel sized "
            f"kho/out/fdt when it registered it, and later subsystems grew the FDT in place); "
            f"{what}, {self.unnamed} property name(s) lie in the cut part"
        )


def _name(data: bytes, h: FdtHeader, nameoff: int) -> str | None:
    if nameoff >= h.size_dt_strings:
        raise ParseError(f"FDT property nameoff {nameoff:#x} is outside the strings block")
    start = h.off_dt_strings + nameoff
    end = min(len(data), h.off_dt_strings + h.size_dt_strings)
    nul = data.find(b"\x00", start, end)
    if nul < 0:
        if end < h.off_dt_strings + h.size_dt_strings:
            return None  # the name runs into the cut part
        raise ParseError(f"FDT property name at nameoff {nameoff:#x} is not NUL-terminated")
    return data[start:nul].decode("ascii", "backslashreplace")


def parse_cut_root(data: bytes) -> CutKhoRoot:
    """Walk what the cut copy holds of the structure block (the module says what is kept)."""
    h = parse_fdt_header(data)
    if h.totalsize <= len(data):
        raise ParseError(f"the FDT is {h.totalsize} bytes and the copy {len(data)}: not cut")
    if h.totalsize > KHO_ROOT_MAX_SIZE:
        raise ParseError(
            f"FDT totalsize {h.totalsize} is larger than the one page a KHO root lives in",
            offset=4,
        )
    end = min(len(data), h.off_dt_struct + h.size_dt_struct)
    pos, depth, tokens = h.off_dt_struct, 0, 0
    root: list[CutProp] = []
    children: list[CutNode] = []
    current: tuple[str, list[CutProp]] | None = None
    finished = False
    while pos + 4 <= end and not finished:
        tokens += 1
        if tokens > MAX_TOKENS:
            raise ParseError(f"more than {MAX_TOKENS} FDT tokens")
        (token,) = _U32.unpack_from(data, pos)
        pos += 4
        if token == FDT_BEGIN_NODE:
            nul = data.find(b"\x00", pos, end)
            if nul < 0:
                break  # the name is cut
            name = data[pos:nul].decode("ascii", "backslashreplace")
            pos = (nul + 1 + 3) & ~3
            depth += 1
            if depth == 1 and name:
                raise ParseError(f"FDT root node is named {name!r}")
            if depth == 2:
                current = (name, [])
            elif depth > 2:
                raise ParseError("a KHO root has no nodes below its subsystem nodes")
        elif token == FDT_END_NODE:
            if depth == 0:
                raise ParseError("FDT_END_NODE without a node")
            if depth == 2 and current is not None:
                children.append(CutNode(current[0], tuple(current[1]), True))
                current = None
            depth -= 1
        elif token == FDT_PROP:
            if pos + 8 > end:
                break
            length, nameoff = _U32X2.unpack_from(data, pos)
            pos += 8
            value = data[pos : pos + length] if pos + length <= end else None
            prop = CutProp(_name(data, h, nameoff), length, value)
            if depth == 1:
                root.append(prop)
            elif depth == 2 and current is not None:
                current[1].append(prop)
            else:
                raise ParseError("FDT property outside a node")
            pos = (pos + length + 3) & ~3
        elif token == FDT_END:
            finished = True
        elif token != FDT_NOP:
            raise ParseError(f"FDT token {token:#x} at {pos - 4:#x} is not one of 1, 2, 3, 4, 9")
    if current is not None:
        children.append(CutNode(current[0], tuple(current[1]), False))
    names = [c.name for c in children]
    if len(set(names)) != len(names):
        raise ParseError("KHO root FDT: two subsystem nodes with the same name")
    complete = h.off_dt_struct + h.size_dt_struct <= len(data)
    if complete and not finished:
        raise ParseError("FDT structure block ends without FDT_END")
    return CutKhoRoot(len(data), h.totalsize, tuple(root), tuple(children), complete, data)


def parse_kho_debugfs_root(data: bytes) -> KhoRoot | UnknownKho | CutKhoRoot:
    """``kho/out/fdt``: a whole FDT is :func:`parse_kho_root`'s; a copy shorter than its
    header's ``totalsize`` is a :class:`CutKhoRoot`."""
    if len(data) >= FDT_HEADER_SIZE and _HEADER.unpack_from(data)[0] == FDT_MAGIC:
        totalsize = _HEADER.unpack_from(data)[1]
        if totalsize > len(data):
            return parse_cut_root(data)
    return parse_kho_root(data)


# --- the whole FDT through physical memory -------------------------------------------------


@frozen
class RecoveredRoot:
    """The whole root FDT read from its page.  ``root`` is a :class:`KhoRoot` (read_from
    "kcore", phys = the FDT page) with the map walked to find it, or an :class:`UnknownKho`
    when the page (proven by the copy's bytes) names a compatible this version does not know:
    that is VTD040, and its map is not used."""

    root: KhoRoot | UnknownKho
    memory_map: PreservedMemory | None
    page: int


def recover_cut_root(
    cut: CutKhoRoot,
    read_phys: ReadPhys,
    *,
    probe: ReadPhys | None = None,
    limits: MemMapLimits | None = None,
) -> RecoveredRoot | str:
    """The whole root FDT from its preserved page, proven as the module says; else the reason
    it could not be read.  ``probe`` reads the first bytes of each page (default
    ``read_phys``); ``read_phys`` errors are ParseError or OSError (both become reasons)."""
    probe = probe or read_phys
    compatible = cut.compatible
    if compatible is not None and compatible not in KHO_RADIX:
        return f"its compatible {compatible!r} has no radix memory map to find the page in"
    candidates = cut.map_candidates
    if not candidates:
        return "no 8-byte root property (the preserved-memory-map) lies inside the copy"
    reasons: list[str] = []
    for candidate in candidates:
        found = _search(cut, candidate, read_phys, probe, limits or MemMapLimits())
        if isinstance(found, RecoveredRoot):
            return found
        reasons.append(found)
    return "; ".join(reasons)


def _search(
    cut: CutKhoRoot, map_phys: int, read_phys: ReadPhys, probe: ReadPhys, limits: MemMapLimits
) -> RecoveredRoot | str:
    # The walk reads the radix format every radix compatible shares; the label is replaced by
    # the compatible the FDT names once it is read.
    pm = walk_preserved_memory(read_phys, KHO_V4, map_phys, limits=limits)
    where = f"preserved-memory map {map_phys:#x}"
    size = len(cut.prefix)
    hits: list[int] = []
    unreadable = 0
    magic = cut.prefix[:PROBE_SIZE]  # FDT magic and totalsize: 8 bytes a page, then the rest
    for page in pm.order0_pages():
        try:
            head = probe(page, PROBE_SIZE)
            if head != magic:
                continue
            head = probe(page, size)
        except (ParseError, OSError):
            unreadable += 1
            continue
        if head == cut.prefix:
            hits.append(page)
            if len(hits) > 1:
                break
    if not hits:
        state = (
            "" if not pm.problems else f" (the map is {pm.state.value}: {pm.problems[0].reason})"
        )
        skipped = f", {unreadable} unreadable" if unreadable else ""
        return (
            f"none of the {len(pm.order0_pages())} order-0 pages of the {where}{state} starts "
            f"with the {size} bytes of the copy{skipped}"
        )
    if len(hits) > 1:
        return f"{where}: pages {hits[0]:#x} and {hits[1]:#x} both start with the copy"
    page = hits[0]
    try:
        data = read_phys(page, cut.totalsize)
    except (ParseError, OSError) as exc:
        return f"FDT page {page:#x}: {exc}"
    if data[:size] != cut.prefix:
        return f"FDT page {page:#x} changed between two reads"
    try:
        root = parse_kho_root(data)
    except ParseError as exc:
        return f"FDT read from page {page:#x}: {exc}"
    if isinstance(root, UnknownKho):
        return RecoveredRoot(root, None, page)
    if root.compatible not in KHO_RADIX:
        return f"FDT read from page {page:#x} is {root.compatible!r}, not a radix-map KHO root"
    if root.preserved_memory_map != map_phys:
        have = root.preserved_memory_map
        shown = "none" if have is None else f"{have:#x}"
        return f"FDT read from page {page:#x} names preserved-memory-map {shown}, not {map_phys:#x}"
    root = dataclasses.replace(root, read_from="kcore", phys=page)
    return RecoveredRoot(root, dataclasses.replace(pm, compatible=root.compatible), page)


__all__ = [
    "CutKhoRoot",
    "CutNode",
    "CutProp",
    "FdtHeader",
    "RecoveredRoot",
    "parse_cut_root",
    "parse_fdt_header",
    "parse_kho_debugfs_root",
    "recover_cut_root",
]
