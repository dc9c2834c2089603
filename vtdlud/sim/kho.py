"""KHO and LUO as the simulated kernel writes them: root FDT, radix memory map, LUO blob, FLBs.

Layouts (reference/kernel-interfaces.md §2.3, §3, §13; the headers were read, not copied):

- KHO root FDT, ``compatible = "kho-v2"``: ``preserved-memory-map`` (u64, CPU-native = little
  endian) = physical address of the radix tracker's root, one child per subsystem with
  ``preserved-data`` (u64 LE) and, for a raw blob, ``blob-size``.  The tracker
  (``include/linux/kho/abi/kexec_handover.h``): six levels of one-page nodes, levels 5..1 tables
  of 512 physical addresses, level 0 a 32768-bit bitmap; the key of an order-0 page is
  ``1 << 52 | pa >> 12``, split 9 bits per table level above the bitmap's 15 bits.  The model
  preserves only order-0 pages.
- LUO, one generation per :class:`LuoGeneration`:
  ``FDT_V1`` — FDT ``"luo-v1"`` with ``liveupdate-number`` and a ``luo-session`` node
  (``"luo-session-v1"``, ``luo-session-header`` -> ``{u64 count}`` + ``char name[64]`` per
  session); no FLB node, so no IOMMU FLB reaches the next kernel.
  ``FDT_FLB`` — ``"luo-v1"`` with ``luo-session-v2`` (sessions name[64] + ``{files, count}``,
  files ``{char compatible[48], u64 data, u64 token}``) and a ``luo-flb`` node (``"luo-flb-v1"``,
  ``luo-flb-header`` -> ``{u64 pgcnt, u64 count}`` + ``{char name[48], u64 data, u64 count}``).
  ``LUO_SER`` — no FDT: the ``LUO`` entry is a packed ``struct luo_ser`` (feature header of 16
  u64, ``liveupdate_num``, ``sessions_pa``, ``flbs_pa``); sessions and files in
  ``kho_block_header_ser {next, count}`` blocks (none while empty: address 0), the FLB header
  as above.  ``LUO_V5`` — the same with ``char compatible[8] = "luo-v5"`` in place of the feature
  header (known from a secondary source only [I]).
- The FLB header page and the LUO blob are allocated and preserved at boot; the FLB entries
  (name = the FLB compatible, data = phys of ``iommu_flb_ser``, count = files depending on it)
  and the sessions are written only when the kexec starts (:meth:`KhoState.serialize`).
- ``kho_compatible="kho-v4"`` models Linux 7.2 (Linux 7.2.13 kernel/liveupdate/kexec_handover.c,
  luo_core.c; the writer code here is the model's own): the root FDT lives in a preserved page,
  built as ``kho_out_fdt_setup()`` does (``compatible``, ``preserved-memory-map``), then
  ``kho_add_subtree()`` adds ``kexec-metadata`` (``struct kho_kexec_metadata``, 73 bytes) and,
  later, ``LUO`` (``struct luo_ser``, 32 bytes), each opening the FDT in place and packing it.
  ``kho/out/fdt`` shows the page with the length the FDT had when it was registered, before
  LUO's node (:meth:`KhoState.debugfs_fdt`: 233 of 285 bytes, as measured on a 7.2 guest), and
  is not published at all after a KHO boot.  The new kernel frees the incoming ``luo_ser`` early
  in boot (``luo_early_startup()``) and the session blocks when it deserializes them; the model
  reuses those pages (:meth:`KhoState.consume_incoming`), so ``kho/in/sub_fdts/LUO`` shows other
  bytes, as on the real kernel.  The FLB header page and the IOMMU records stay where they were.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

import libfdt

from vtdlud.frozen import frozen
from vtdlud.sim.memory import PAGE_SIZE, PhysMemory

KHO_COMPATIBLE = "kho-v2"
KHO_MEMORY_MAP_PROP = "preserved-memory-map"
KHO_SUB_TREE_PROP = "preserved-data"
KHO_SUB_TREE_SIZE_PROP = "blob-size"
LUO_ENTRY = "LUO"
LUO_FDT_COMPATIBLE = "luo-v1"
LUO_LIVEUPDATE_NUM = "liveupdate-number"
LUO_SESSION_NODE = "luo-session"
LUO_SESSION_HEADER = "luo-session-header"
LUO_FLB_NODE = "luo-flb"
LUO_FLB_COMPATIBLE = "luo-flb-v1"
LUO_FLB_HEADER = "luo-flb-header"
SESSION_NAME_LEN = 64
COMPAT_LEN = 48  # LIVEUPDATE_HNDL_COMPAT_LENGTH / LIVEUPDATE_FLB_COMPAT_LENGTH
LUO_FEATURES = 0b111  # NUMBER | SESSIONS | FLBS
LUO_UNKNOWN_FEATURE = 1 << 8  # a required feature no known kernel defines (fault injection)
LUO_FEATURE_WORDS = 16  # supp, req, active, reserved[13]
LUO_V5_COMPATIBLE = "luo-v5"
KHO_V4 = "kho-v4"  # Linux 7.2
KEXEC_METADATA = "kexec-metadata"
KEXEC_METADATA_VERSION = 1
TEST_FLB_DATA = 0xFEEDF00DCAFEBEE0  # lib/tests/liveupdate.c: data = this + index
TEST_FLB_PREFIX = "liveupdate-test-flb-v"  # LIVEUPDATE_TEST_FLB_COMPATIBLE(i)

PAGE_SHIFT = 12
KHO_ORDER_0_BIT = 64 - PAGE_SHIFT  # 52
KHO_BITMAP_BITS_LOG2 = PAGE_SHIFT + 3  # 15
KHO_TABLE_BITS_LOG2 = 9
KHO_TREE_LEVELS = 6  # root at level 5, bitmap at level 0
SCRATCH_SIZE = 16 << 20


class LuoGeneration(Enum):
    FDT_V1 = "fdt-v1"  # luo-v1 FDT, luo-session-v1, no FLB node
    FDT_FLB = "fdt-flb"  # luo-v1 FDT, luo-session-v2, luo-flb-v1
    LUO_SER = "luo-ser"  # struct luo_ser with the feature header, kho blocks
    LUO_V5 = "luo-v5"  # struct luo_ser led by the "luo-v5" compatible string [I], kho blocks

    @property
    def blocks(self) -> bool:
        return self in (LuoGeneration.LUO_SER, LuoGeneration.LUO_V5)


@frozen
class LuoFile:
    compatible: str
    data: int
    token: int


@dataclass
class LuoSession:
    name: str
    files: list[LuoFile] = field(default_factory=list)


@frozen
class FlbEntry:
    name: str
    data: int
    count: int


def _cstr(text: str, size: int) -> bytes:
    raw = text.encode()
    if len(raw) >= size:
        raise ValueError(f"{text!r} does not fit in char[{size}]")
    return raw.ljust(size, b"\0")


def radix_key(pa: int, order: int = 0) -> int:
    return 1 << (KHO_ORDER_0_BIT - order) | pa >> (PAGE_SHIFT + order)


def _level_index(key: int, level: int) -> int:
    if level == 0:
        return key & ((1 << KHO_BITMAP_BITS_LOG2) - 1)
    shift = KHO_BITMAP_BITS_LOG2 + KHO_TABLE_BITS_LOG2 * (level - 1)
    return (key >> shift) & ((1 << KHO_TABLE_BITS_LOG2) - 1)


def build_radix(
    mem: PhysMemory, pages: set[int], reuse: list[int] | None = None
) -> tuple[int, list[int]]:
    """Build the tracker for ``pages`` (order 0): (root node address, every node page).  Node
    pages come from ``reuse`` (zeroed) before new ones are allocated, so rebuilding the same
    set twice gives the same tree."""
    nodes: list[int] = []
    spare = list(reuse or [])

    def new_node() -> int:
        node = spare.pop(0) if spare else mem.alloc()
        mem.zero_page(node)
        nodes.append(node)
        return node

    root = new_node()
    for pa in sorted(pages):
        key = radix_key(pa)
        node = root
        for level in range(KHO_TREE_LEVELS - 1, 0, -1):
            slot = node + _level_index(key, level) * 8
            child = mem.u64(slot)
            if not child:
                child = new_node()
                mem.set_u64(slot, child)
            node = child
        bit = _level_index(key, 0)
        byte = node + bit // 8
        mem.write(byte, bytes([mem.read(byte, 1)[0] | 1 << (bit % 8)]))
    return root, nodes


@frozen
class FdtNode:
    """A node to write: string properties, u64 properties (CPU-native, i.e. little-endian, as
    KHO and LUO store them) and children."""

    name: str
    strings: tuple[tuple[str, str], ...] = ()
    u64s: tuple[tuple[str, int], ...] = ()
    children: tuple[FdtNode, ...] = ()


def build_fdt(root: FdtNode) -> bytes:
    sw = libfdt.FdtSw()
    sw.finish_reservemap()

    def emit(node: FdtNode) -> None:
        sw.begin_node(node.name)
        for name, text in node.strings:
            sw.property_string(name, text)
        for name, value in node.u64s:
            sw.property(name, struct.pack("<Q", value))
        for child in node.children:
            emit(child)
        sw.end_node()

    emit(root)
    fdt = sw.as_fdt()
    fdt.pack()
    return bytes(fdt.as_bytearray())


class KhoState:
    """One kernel's outgoing KHO/LUO state."""

    def __init__(
        self,
        mem: PhysMemory,
        generation: LuoGeneration,
        liveupdate_num: int,
        *,
        kho_compatible: str = KHO_COMPATIBLE,
        luo_compatible: str = LUO_FDT_COMPATIBLE,
        release: str = "",
        kexec_count: int = 0,
        kho_boot: bool = False,
    ) -> None:
        self.mem = mem
        self.generation = generation
        self.liveupdate_num = liveupdate_num
        self.kho_compatible = kho_compatible
        self.luo_compatible = luo_compatible
        self.linux72 = kho_compatible == KHO_V4
        start, size = mem.ranges[-1]
        self.scratch = ((start + size - SCRATCH_SIZE, SCRATCH_SIZE),)
        mem.reserve(range(start + size - SCRATCH_SIZE, start + size, PAGE_SIZE))
        self.radix_root = 0
        self.fdt_page: int | None = None
        self.metadata_phys: int | None = None
        self.fdt_registered: int | None = None  # bytes kho/out/fdt shows (None: not published)
        if self.linux72:  # kho_init(): the FDT page, then kexec-metadata, then the debugfs blob
            self.fdt_page = self._preserved_page()
            self.metadata_phys = self._preserved_page()
            release_raw = release.encode()[:64].ljust(65, b"\0")
            meta = struct.pack("<I", KEXEC_METADATA_VERSION) + release_raw
            # kexec_count: the next kernel's, kho_in.kexec_count + 1
            self.mem.write(self.metadata_phys, meta + struct.pack("<I", kexec_count + 1))
            if not kho_boot:
                self.fdt_registered = len(self._build_root(with_luo=False))
        self.blob_phys = self._preserved_page()
        self.flb_header = self._preserved_page() if generation is not LuoGeneration.FDT_V1 else None
        self.sessions_phys = self._preserved_page()
        self.sessions: list[LuoSession] = []
        self.flbs: list[FlbEntry] = []
        self.radix_root = 0
        self.radix_nodes: list[int] = []
        self.extra_pages: list[int] = []  # session file blocks written at serialize
        self.serialize([], [])

    def _preserved_page(self) -> int:
        page = self.mem.alloc()
        self.mem.preserve(page)
        return page

    # -- serialisation ---------------------------------------------------------------------
    def serialize(self, sessions: list[LuoSession], flbs: list[FlbEntry]) -> None:
        """Write sessions, FLB entries and the LUO blob into their preserved pages."""
        for page in self.extra_pages:
            self.mem.free(page)
        self.extra_pages = []
        self.sessions = list(sessions)
        self.flbs = list(flbs)
        self._write_sessions()
        if self.flb_header is not None:
            body = struct.pack("<QQ", 1, len(flbs)) + b"".join(
                _cstr(f.name, COMPAT_LEN) + struct.pack("<QQ", f.data, f.count) for f in flbs
            )
            self.mem.zero_page(self.flb_header)
            self.mem.write(self.flb_header, body)
        self.mem.zero_page(self.blob_phys)
        self.mem.write(self.blob_phys, self.luo_blob())

    def _files_page(self, files: list[LuoFile]) -> int:
        if not files:
            return 0
        page = self._preserved_page()
        self.extra_pages.append(page)
        head = struct.pack("<QQ", 0, len(files)) if self.generation.blocks else b""
        body = b"".join(
            _cstr(f.compatible, COMPAT_LEN) + struct.pack("<QQ", f.data, f.token) for f in files
        )
        self.mem.write(page, head + body)
        return page

    def _write_sessions(self) -> None:
        out = bytearray()
        if self.generation.blocks:
            out += struct.pack("<QQ", 0, len(self.sessions))  # kho_block_header_ser
        else:
            out += struct.pack("<Q", len(self.sessions))  # luo_session_header_ser
        for session in self.sessions:
            out += _cstr(session.name, SESSION_NAME_LEN)
            if self.generation is not LuoGeneration.FDT_V1:
                out += struct.pack("<QQ", self._files_page(session.files), len(session.files))
        self.mem.zero_page(self.sessions_phys)
        self.mem.write(self.sessions_phys, bytes(out))

    @property
    def sessions_pa(self) -> int:
        """Block generations point at no block while there is no session."""
        return 0 if self.generation.blocks and not self.sessions else self.sessions_phys

    def luo_blob(self) -> bytes:
        """The ``LUO`` entry as the kernel hands it over (what ``sub_fdts/LUO`` shows)."""
        tail = struct.pack("<QQQ", self.liveupdate_num, self.sessions_pa, self.flb_header or 0)
        if self.generation is LuoGeneration.LUO_SER:
            req = LUO_FEATURES
            if self.luo_compatible != LUO_FDT_COMPATIBLE:  # no string to change: a feature
                req |= LUO_UNKNOWN_FEATURE
            features = [LUO_FEATURES | req, req, LUO_FEATURES] + [0] * 13
            return struct.pack(f"<{LUO_FEATURE_WORDS}Q", *features) + tail
        if self.generation is LuoGeneration.LUO_V5:
            name = LUO_V5_COMPATIBLE if self.luo_compatible == LUO_FDT_COMPATIBLE else "luo-v9"
            return _cstr(name, -(-(len(name) + 1) // 8) * 8) + tail
        session_compat = (
            "luo-session-v1" if self.generation is LuoGeneration.FDT_V1 else "luo-session-v2"
        )
        children = [
            FdtNode(
                LUO_SESSION_NODE,
                strings=(("compatible", session_compat),),
                u64s=((LUO_SESSION_HEADER, self.sessions_phys),),
            )
        ]
        if self.flb_header is not None:
            children.append(
                FdtNode(
                    LUO_FLB_NODE,
                    strings=(("compatible", LUO_FLB_COMPATIBLE),),
                    u64s=((LUO_FLB_HEADER, self.flb_header),),
                )
            )
        return build_fdt(
            FdtNode(
                "",
                strings=(("compatible", self.luo_compatible),),
                u64s=((LUO_LIVEUPDATE_NUM, self.liveupdate_num),),
                children=tuple(children),
            )
        )

    # -- the root FDT and the memory map -----------------------------------------------------
    def refresh_radix(self) -> None:
        """Rebuild the preserved-memory tracker from the pages preserved right now."""
        old = [p for p in self.radix_nodes if self.mem.allocated(p)]
        self.radix_root, self.radix_nodes = build_radix(self.mem, set(self.mem.preserved), old)
        for page in old[len(self.radix_nodes) :]:
            self.mem.free(page)

    def root_fdt(self) -> bytes:
        """The root FDT as it is now (Linux 7.2 model: also written into its preserved page)."""
        if self.linux72:
            fdt = self._build_root(with_luo=True)
            assert self.fdt_page is not None
            self.mem.zero_page(self.fdt_page)
            self.mem.write(self.fdt_page, fdt)
            return fdt
        props: tuple[tuple[str, int], ...] = ((KHO_SUB_TREE_PROP, self.blob_phys),)
        if self.generation.blocks:
            props += ((KHO_SUB_TREE_SIZE_PROP, len(self.luo_blob())),)
        return build_fdt(
            FdtNode(
                "",
                strings=(("compatible", self.kho_compatible),),
                u64s=((KHO_MEMORY_MAP_PROP, self.radix_root),),
                children=(FdtNode(LUO_ENTRY, u64s=props),),
            )
        )

    def _build_root(self, *, with_luo: bool) -> bytes:
        """``kho_out_fdt_setup()`` (sequential write), then one ``kho_add_subtree()`` per
        subsystem: open the FDT into its page, add the node and its two properties, pack."""
        sw = libfdt.FdtSw()
        sw.finish_reservemap()
        sw.begin_node("")
        sw.property_string("compatible", self.kho_compatible)
        sw.property(KHO_MEMORY_MAP_PROP, struct.pack("<Q", self.radix_root))
        sw.end_node()
        fdt = sw.as_fdt()
        subtrees = [(KEXEC_METADATA, self.metadata_phys or 0, 73)]
        if with_luo:
            subtrees.append((LUO_ENTRY, self.blob_phys, len(self.luo_blob())))
        for name, phys, size in subtrees:
            fdt.resize(PAGE_SIZE)
            off = fdt.add_subnode(0, name)
            fdt.setprop(off, KHO_SUB_TREE_PROP, struct.pack("<Q", phys))
            fdt.setprop(off, KHO_SUB_TREE_SIZE_PROP, struct.pack("<Q", size))
            fdt.pack()
        return bytes(fdt.as_bytearray())[: fdt.totalsize()]

    def debugfs_fdt(self) -> bytes | None:
        """What ``kho/out/fdt`` shows: the whole FDT, or (Linux 7.2) the first
        ``fdt_registered`` bytes of its live page, or None after a KHO boot (not published)."""
        fdt = self.root_fdt()
        if not self.linux72:
            return fdt
        if self.fdt_registered is None:
            return None
        assert self.fdt_page is not None
        return self.mem.read(self.fdt_page, self.fdt_registered)

    def subtrees(self) -> list[tuple[str, int, int]]:
        """(name, phys, size) of each blob in the root FDT, in FDT order."""
        out = []
        if self.linux72 and self.metadata_phys is not None:
            out.append((KEXEC_METADATA, self.metadata_phys, 73))
        out.append((LUO_ENTRY, self.blob_phys, len(self.luo_blob())))
        return out

    def consume_incoming(self, handed: HandedOver, rng_bytes: bytes) -> None:
        """Linux 7.2, the new kernel early in boot: ``luo_early_startup()`` reads the incoming
        ``luo_ser`` and frees it (``kho_restore_free``), and the session and file blocks are
        freed once deserialized; the pages are reused (``rng_bytes`` stand for what the
        allocator's next user wrote).  The FLB header page is kept."""
        for page in handed.freed_pages:
            if self.mem.allocated(page):
                self.mem.unpreserve(page)
                self.mem.write(page, rng_bytes[:PAGE_SIZE].ljust(PAGE_SIZE, b"\xa5"))

    def metadata_pages(self) -> list[int]:
        """Pages the next kernel needs besides the preserved ones (the tracker's nodes)."""
        return list(self.radix_nodes)


@frozen
class HandedOver:
    """What the new kernel received: the root FDT and the LUO blob, frozen at kexec."""

    root_fdt: bytes
    luo_blob: bytes
    generation: LuoGeneration
    flbs: tuple[FlbEntry, ...]  # the FLB list the new kernel can reach (none for FDT_V1)
    flb_header: int | None  # physical address of luo_flb_header_ser (none for FDT_V1)
    # Linux 7.2 model: (name, phys, size) of each sub blob (kho/in/sub_fdts shows the memory
    # there now), and the pages the new kernel frees early in boot (luo_ser, session blocks).
    subtrees: tuple[tuple[str, int, int], ...] = ()
    freed_pages: tuple[int, ...] = ()
    linux72: bool = False
