"""The LUO (Live Update Orchestrator) KHO entry ``"LUO"`` → pure data.

Two steps.  :func:`parse_luo_blob` decodes the blob itself (``kho/{out,in}/sub_fdts/LUO``) and
reads no memory.  :func:`walk_luo` follows its physical addresses through a ``read_phys(addr,
size) -> bytes`` callable (the kcore reader; a dict of pages in tests) to the sessions, their
files and the FLBs, and picks out the IOMMU FLB.

Three wire generations (reference/kernel-interfaces.md §2.3), each re-read from the source:

(a) an FDT (torvalds/linux include/linux/kho/abi/luo.h @0153094d03df and @cc4adab164b7,
    kernel/liveupdate/luo_flb.c @118c39082420; linux-mm/linux-mm kernel/liveupdate/luo_core.c
    @47d3a14539bb for the FDT's construction and checks): root compatible
    ``"luo-v1"``, ``liveupdate-number`` u64; child ``luo-session`` (``"luo-session-v1"``: the
    ``luo-session-header`` u64 points at ``luo_session_header_ser {u64 count}`` followed by
    ``luo_session_ser {char name[64]}``; ``"luo-session-v2"``: ``luo_session_ser`` adds
    ``luo_file_set_ser {u64 files, u64 count}``, ``files`` pointing at an array of
    ``luo_file_ser {char compatible[48]; u64 data; u64 token}``); child ``luo-flb``
    (``"luo-flb-v1"``, absent before FLBs were merged): ``luo-flb-header`` u64 points at
    ``luo_flb_header_ser {u64 pgcnt, u64 count}`` followed by ``luo_flb_ser {char name[48];
    u64 data; u64 count}``.  The u64 properties are CPU-native (``fdt_property(&pa, sizeof)``,
    read back with ``get_unaligned()``): little-endian here, not fdt64.  [C]
(b) a packed ``struct luo_ser`` (linux-mm/linux-mm include/linux/kho/abi/luo.h @29a751073843):
    ``luo_feature_hdr {u64 supp, req, active, reserved[13]}`` (128 bytes), ``liveupdate_num``,
    ``sessions_pa``, ``flbs_pa`` (152 bytes).  Sessions and each session's files live in chains
    of one-page blocks, ``kho_block_header_ser {u64 next, u64 count}`` + entries
    (include/linux/kho/abi/block.h, kernel/liveupdate/kho_block.c @637315cb400e); the FLB header
    is as in (a).  [C]
(c) ``"luo-v5"``, Linux 7.2 [C: Linux 7.2.13 include/linux/kho/abi/luo.h, block.h,
    kernel/liveupdate/luo_core.c, luo_session.c, luo_file.c, luo_flb.c, kho_block.c].  The KHO
    entry ``"LUO"`` (``blob-size`` 32) is a packed ``struct luo_ser``: ``char compatible[8]``
    (``ALIGN(sizeof("luo-v5"), 8)``) @0, ``u64 liveupdate_num`` @8, ``u64 sessions_pa`` @16,
    ``u64 flbs_pa`` @24.  The kernel accepts it when ``strncmp(compatible, "luo-v5", 8)`` is 0.
    ``sessions_pa``: the first block of a chain of one-page blocks (``struct
    kho_block_header_ser {u64 next @0; u64 count @8}`` then ``count`` entries from @16, at most
    ``(4096 - 16) / entry size`` per block) of ``struct luo_session_ser {char name[64] @0; u64
    files @64; u64 count @72}`` (80 bytes, 51 a block); 0 until the kexec serializes the
    sessions, and 0 when there is none.  ``files``: the first block of a chain of ``struct
    luo_file_ser {char compatible[48] @0; u64 data @48; u64 token @56}`` (64 bytes, 63 a block),
    ``count`` the files of the session.  ``flbs_pa``: one page allocated at boot,
    ``struct luo_flb_header_ser {u64 pgcnt @0; u64 count @8}`` (``pgcnt`` 1, ``count`` 0 until
    the kexec writes the list) then ``count`` ``struct luo_flb_ser {char name[48] @0; u64 data
    @48; u64 count @56}`` (64 bytes).  A block with 0 entries or more than a block holds, or a
    chain with a loop or more than 10000 blocks, is refused (``kho_block_set_restore()``); a
    file set whose blocks hold another number of files than its ``count`` too.  The posted
    revisions that used ``"luo-v3"``/``"luo-v4"`` and other layouts are not read: their strings
    differ, so they are :class:`UnknownLuo`; the reader checked before 7.2 landed for
    ``"luo-v5"`` had the layout above, which 7.2 confirms byte for byte.
    Test FLBs (``CONFIG_LIVEUPDATE_TEST``, lib/tests/liveupdate.c): ``"liveupdate-test-flb-v0"``
    to ``-v2``, registered on every file handler (memfd's in 7.2), data ``0xfeedf00dcafebee0`` +
    index: :func:`flb_role` says ``"test"``, reported, never a finding.

What the kernel does with the incoming blob on Linux 7.2, and how vtdlud reads it then:
:mod:`vtdlud.parse.luofreed` (:class:`StaleLuo`).

Block sizes are not on the wire except the FLB ``pgcnt``; the bounds below are the kernel's
allocation constants (``LUO_SESSION_PGCNT`` 16, ``LUO_FILE_PGCNT`` 2, ``KHO_BLOCK_SIZE`` =
PAGE_SIZE, ``KHO_MAX_BLOCKS`` 10000), so a count above them is corruption, never a reason to
read more memory.  [C for the luo-session-v2 and block kernels; that luo-session-v1 used the
same 16-page session block is inferred.]  Like ``kho_block_set_restore()``, a block holding 0
entries is corrupt.

Results: :class:`UnknownLuo` (an unknown compatible, required feature or part) is for VTD040;
:class:`StaleLuo` (freed memory, see above) is for no finding;
:class:`LuoCorrupt` (a count over capacity, a loop, a null or unreadable pointer, an
unterminated string behind a pointer) is for VTD041; a ParseError from
:func:`parse_luo_blob` is an unreadable input (VTD051).

``read_phys`` must return exactly ``size`` bytes or raise :class:`ParseError` (an address that is
not readable RAM); an ``OSError`` from it propagates unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import Enum

from vtdlud.errors import ParseError, PhysReadError
from vtdlud.frozen import frozen
from vtdlud.model.abi import (
    PAGE_SIZE,
    AbiVariant,
    UnknownAbi,
    flb_has_version,
    select_variant,
)
from vtdlud.parse.kho import FdtView, compatible_text, is_fdt

ReadPhys = Callable[[int, int], bytes]

LUO_KHO_ENTRY_NAME = "LUO"

# (a) the FDT
LUO_FDT_COMPATIBLE = "luo-v1"
LUO_FDT_LIVEUPDATE_NUM = "liveupdate-number"
LUO_FDT_SESSION_NODE = "luo-session"
LUO_SESSION_COMPATIBLE_V1 = "luo-session-v1"
LUO_SESSION_COMPATIBLE_V2 = "luo-session-v2"
LUO_FDT_SESSION_HEADER = "luo-session-header"
LUO_FDT_FLB_NODE = "luo-flb"
LUO_FLB_COMPATIBLE_V1 = "luo-flb-v1"
LUO_FDT_FLB_HEADER = "luo-flb-header"

# (b) the feature header
LUO_FEATURE_NUMBER = 1 << 0
LUO_FEATURE_SESSIONS = 1 << 1
LUO_FEATURE_FLBS = 1 << 2
LUO_FEATURES_KNOWN = LUO_FEATURE_NUMBER | LUO_FEATURE_SESSIONS | LUO_FEATURE_FLBS
LUO_FEATURE_HDR_SIZE = 128  # supp, req, active, reserved[13]
LUO_SER_FEATURES_SIZE = LUO_FEATURE_HDR_SIZE + 24
LUO_SER_FEATURES = "luo_ser+features"  # how an unknown (b) blob is named: it has no string

# (c) the compatible string
LUO_ABI_COMPATIBLE_V5 = "luo-v5"
LUO_ABI_COMPATIBLE_PREFIX = b"luo-"
LUO_ABI_COMPAT_MAX = 64  # where to look for the NUL ending the string
LUO_V5_COMPAT_LEN = 8  # LUO_ABI_COMPAT_LEN of "luo-v5": ALIGN(sizeof("luo-v5"), 8)

# struct sizes (all __packed)
LIVEUPDATE_SESSION_NAME_LENGTH = 64
LIVEUPDATE_HNDL_COMPAT_LENGTH = 48
LIVEUPDATE_FLB_COMPAT_LENGTH = 48
SESSION_HEADER_SER_SIZE = 8  # luo_session_header_ser {count}
SESSION_SER_V1_SIZE = LIVEUPDATE_SESSION_NAME_LENGTH
SESSION_SER_V2_SIZE = LIVEUPDATE_SESSION_NAME_LENGTH + 16  # + luo_file_set_ser
FILE_SER_SIZE = LIVEUPDATE_HNDL_COMPAT_LENGTH + 16
FLB_HEADER_SER_SIZE = 16
FLB_SER_SIZE = LIVEUPDATE_FLB_COMPAT_LENGTH + 16
KHO_BLOCK_HEADER_SER_SIZE = 16

# kernel allocation constants used as bounds
LUO_SESSION_PGCNT = 16
LUO_FILE_PGCNT = 2
KHO_BLOCK_SIZE = PAGE_SIZE
KHO_MAX_BLOCKS = 10000
MAX_FLB_PGCNT = 16  # [I] the kernel writes LUO_FLB_PGCNT = 1; more than 16 pages is corrupt

# Both posted IOMMU FLB compatibles start with this; a renamed later one is then still found
# (and reported as an unknown ABI) rather than silently missed.  [I]
IOMMU_FLB_PREFIX = "iommu-liveupdate"
# LIVEUPDATE_TEST_FLB_COMPATIBLE(i) of Linux 7.2.13 include/linux/kho/abi/luo.h
TEST_FLB_PREFIX = "liveupdate-test-flb-v"

_U64 = struct.Struct("<Q")
_U64X2 = struct.Struct("<QQ")
_U64X3 = struct.Struct("<QQQ")


class LuoGeneration(Enum):
    FDT = "fdt"  # (a)
    STRUCT_FEATURES = "struct-features"  # (b)
    STRUCT_COMPATIBLE = "struct-compatible"  # (c)


class SessionFormat(Enum):
    HEADER_V1 = LUO_SESSION_COMPATIBLE_V1  # contiguous, names only
    HEADER_V2 = LUO_SESSION_COMPATIBLE_V2  # contiguous, with contiguous file arrays
    BLOCKS = "kho-blocks"  # chained kho blocks, for the sessions and each file set


@frozen
class UnknownLuo:
    """A LUO blob, or one of its parts, in a format this version does not decode (VTD040)."""

    compatible: str
    reason: str


@frozen
class StaleLuo:
    """An incoming LUO blob (or a part behind it) that the running kernel consumed and freed at
    boot and that no longer reads as what the previous kernel wrote: no finding, a reason."""

    what: str  # "blob", "sessions", "FLBs", "IOMMU FLB"
    reason: str


@frozen
class LuoFeatures:
    supp: int
    req: int
    active: int


@frozen
class SessionsRef:
    format: SessionFormat
    phys: int  # the session header (a) or the first block (b, c); 0 = none (b, c)


@frozen
class FlbsRef:
    phys: int  # luo_flb_header_ser; 0 = none (b, c)


@frozen
class LuoBlob:
    """What the LUO blob itself says; no memory has been read."""

    generation: LuoGeneration
    compatible: str | None  # "luo-v1" (a), "luo-v5" (c); None for (b)
    liveupdate_num: int | None  # None when (b) has LUO_FEATURE_NUMBER inactive
    sessions: SessionsRef | UnknownLuo | None
    flbs: FlbsRef | UnknownLuo | None  # None: no FLB node (a, before FLBs) or feature inactive
    features: LuoFeatures | None = None


@frozen
class LuoFile:
    compatible: str  # the file handler's, e.g. "iommufd-v1", "memfd-v1"
    token: int
    data: int  # opaque to LUO; for most handlers a physical address


@frozen
class LuoSession:
    name: str
    files: tuple[LuoFile, ...] | None  # None: luo-session-v1 records no files


@frozen
class LuoFlb:
    name: str  # the FLB's compatible string
    data: int  # what its .preserve() returned; for the IOMMU FLB, phys of iommu_flb_ser
    count: int  # preserved files depending on it

    @property
    def role(self) -> str:
        return flb_role(self.name)


def flb_role(name: str) -> str:
    """``"iommu"`` (an IOMMU FLB, known or not: :func:`find_iommu_flb` decides), ``"test"``
    (the kernel's own test FLBs, ``liveupdate-test-flb-v<N>``), else ``"other"``."""
    if name.startswith(IOMMU_FLB_PREFIX):
        return "iommu"
    rest = name[len(TEST_FLB_PREFIX) :]
    if name.startswith(TEST_FLB_PREFIX) and rest.isdigit():
        return "test"
    return "other"


@frozen
class LuoCorrupt:
    """A structure behind a physical address is corrupt (VTD041), or could not be read at all
    (``unreadable``: an I/O error, not a bad pointer; VTD051)."""

    what: str
    reason: str
    unreadable: bool = False


def _corrupt(what: str, exc: ParseError) -> LuoCorrupt:
    unreadable = isinstance(exc, PhysReadError) and not exc.outside_ram
    return LuoCorrupt(what, exc.reason, unreadable)


@frozen
class IommuFlb:
    """The IOMMU FLB entry and the ABI variant its records use."""

    compatible: str
    flb_ser_phys: int  # struct iommu_flb_ser
    count: int
    version: int | None  # iommu_flb_ser.version, read only for compatibles that have one
    variant: AbiVariant | UnknownAbi


@frozen
class LuoState:
    """A walked LUO blob."""

    blob: LuoBlob
    sessions: tuple[LuoSession, ...] | UnknownLuo | LuoCorrupt | StaleLuo | None
    flbs: tuple[LuoFlb, ...] | UnknownLuo | LuoCorrupt | StaleLuo | None
    iommu: IommuFlb | LuoCorrupt | StaleLuo | None  # None: no IOMMU FLB (or FLBs not readable)

    @property
    def liveupdate_num(self) -> int | None:
        return self.blob.liveupdate_num


# --- the blob ----------------------------------------------------------------------------------


def parse_luo_blob(data: bytes) -> LuoBlob | UnknownLuo:
    """Decode ``sub_fdts/LUO``: an FDT (a), else a ``luo_ser`` with a compatible string (c) when it
    starts with ``"luo-"``, else a ``luo_ser`` with a feature header (b)."""
    if is_fdt(data):
        return _parse_fdt(data)
    if data.startswith(LUO_ABI_COMPATIBLE_PREFIX):
        return _parse_compatible_struct(data)
    return _parse_feature_struct(data)


def _first_known(values: tuple[str, ...], known: tuple[str, ...]) -> str | None:
    return next((v for v in values if v in known), None)


def _parse_fdt(data: bytes) -> LuoBlob | UnknownLuo:
    fdt = FdtView(data, "LUO FDT")
    compatible = fdt.compatible(0)
    if LUO_FDT_COMPATIBLE not in compatible:
        text = compatible_text(compatible)
        return UnknownLuo(text, f"unknown LUO FDT compatible {text!r} (known: 'luo-v1')")
    number = fdt.u64(0, LUO_FDT_LIVEUPDATE_NUM, required=True)

    node = fdt.child(LUO_FDT_SESSION_NODE)
    if node is None:
        raise ParseError(f"LUO FDT: no {LUO_FDT_SESSION_NODE!r} node")
    session_compat = fdt.compatible(node)
    known_session = _first_known(
        session_compat, (LUO_SESSION_COMPATIBLE_V1, LUO_SESSION_COMPATIBLE_V2)
    )
    sessions: SessionsRef | UnknownLuo
    if known_session is None:
        text = compatible_text(session_compat)
        sessions = UnknownLuo(text, f"unknown LUO session compatible {text!r}")
    else:
        header = fdt.u64(node, LUO_FDT_SESSION_HEADER, required=True)
        assert header is not None
        sessions = SessionsRef(SessionFormat(known_session), header)

    flbs: FlbsRef | UnknownLuo | None = None
    node = fdt.child(LUO_FDT_FLB_NODE)
    if node is not None:
        flb_compat = fdt.compatible(node)
        if LUO_FLB_COMPATIBLE_V1 in flb_compat:
            header = fdt.u64(node, LUO_FDT_FLB_HEADER, required=True)
            assert header is not None
            flbs = FlbsRef(header)
        else:
            text = compatible_text(flb_compat)
            flbs = UnknownLuo(text, f"unknown LUO FLB compatible {text!r}")
    return LuoBlob(LuoGeneration.FDT, LUO_FDT_COMPATIBLE, number, sessions, flbs)


def _parse_compatible_struct(data: bytes) -> LuoBlob | UnknownLuo:
    nul = data.find(b"\x00", 0, LUO_ABI_COMPAT_MAX)
    if nul < 0:
        raise ParseError(
            f"luo_ser.compatible: no NUL in the first {LUO_ABI_COMPAT_MAX} bytes", offset=0
        )
    text = data[:nul].decode("ascii", errors="backslashreplace")
    if text != LUO_ABI_COMPATIBLE_V5:
        return UnknownLuo(text, f"unknown LUO compatible {text!r} (known: 'luo-v1', 'luo-v5')")
    start = (nul + 1 + 7) // 8 * 8  # char compatible[ALIGN(sizeof(LUO_ABI_COMPATIBLE), 8)]
    if len(data) < start + _U64X3.size:
        raise ParseError(
            f"luo_ser ({text}) needs {start + _U64X3.size} bytes, {len(data)} available",
            offset=len(data),
        )
    number, sessions_pa, flbs_pa = _U64X3.unpack_from(data, start)
    return LuoBlob(
        LuoGeneration.STRUCT_COMPATIBLE,
        text,
        number,
        SessionsRef(SessionFormat.BLOCKS, sessions_pa),
        FlbsRef(flbs_pa),
    )


def _parse_feature_struct(data: bytes) -> LuoBlob | UnknownLuo:
    if len(data) < LUO_SER_FEATURES_SIZE:
        raise ParseError(
            f"not an FDT, and {len(data)} bytes is too short for a luo_ser with a feature "
            f"header ({LUO_SER_FEATURES_SIZE})",
            offset=len(data),
        )
    supp, req, active = _U64X3.unpack_from(data, 0)
    if active & ~supp:
        raise ParseError(
            f"luo_ser.features: active {active:#x} has bits that supp {supp:#x} lacks", offset=16
        )
    unknown = req & ~LUO_FEATURES_KNOWN
    if unknown:
        return UnknownLuo(
            LUO_SER_FEATURES,
            f"luo_ser requires feature bits {unknown:#x} this version does not know "
            f"(req {req:#x}, known {LUO_FEATURES_KNOWN:#x})",
        )
    number, sessions_pa, flbs_pa = _U64X3.unpack_from(data, LUO_FEATURE_HDR_SIZE)
    return LuoBlob(
        LuoGeneration.STRUCT_FEATURES,
        None,
        number if active & LUO_FEATURE_NUMBER else None,
        SessionsRef(SessionFormat.BLOCKS, sessions_pa) if active & LUO_FEATURE_SESSIONS else None,
        FlbsRef(flbs_pa) if active & LUO_FEATURE_FLBS else None,
        LuoFeatures(supp, req, active),
    )


# --- memory behind the blob --------------------------------------------------------------------


def _read(read_phys: ReadPhys, addr: int, size: int, what: str) -> bytes:
    if addr == 0:
        raise ParseError(f"{what}: null physical address")
    if addr + size > 1 << 64:
        raise ParseError(f"{what}: {size} bytes at {addr:#x} run past the 64-bit space")
    if size == 0:
        return b""
    try:
        data = read_phys(addr, size)
    except PhysReadError as exc:  # keep "unreadable" apart from "points nowhere"
        raise PhysReadError(
            addr, size, f"{what} at {addr:#x}: {exc.reason}", outside_ram=exc.outside_ram
        ) from exc
    except ParseError as exc:
        raise ParseError(f"{what} at {addr:#x}: {exc.reason}") from exc
    if len(data) != size:
        raise ParseError(f"{what} at {addr:#x}: read {len(data)} of {size} bytes")
    return bytes(data)


def _cstr(raw: bytes, what: str) -> str:
    nul = raw.find(b"\x00")
    if nul < 0:
        raise ParseError(f"{what}: {len(raw)} bytes without a terminating NUL")
    return raw[:nul].decode("utf-8", errors="backslashreplace")


def _entries(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def _block_chain(read_phys: ReadPhys, head: int, entry_size: int, what: str) -> list[bytes]:
    """The entries of a ``kho_block_header_ser`` chain, checked as kho_block_set_restore() does:
    every block holds 1..capacity entries, the chain is acyclic and at most KHO_MAX_BLOCKS long."""
    capacity = (KHO_BLOCK_SIZE - KHO_BLOCK_HEADER_SER_SIZE) // entry_size
    seen: set[int] = set()
    entries: list[bytes] = []
    addr = head
    while addr:
        if addr in seen:
            raise ParseError(f"{what}: block chain loops back to {addr:#x}")
        if len(seen) >= KHO_MAX_BLOCKS:
            raise ParseError(f"{what}: block chain longer than {KHO_MAX_BLOCKS} blocks")
        seen.add(addr)
        nxt, count = _U64X2.unpack(_read(read_phys, addr, 16, f"{what} kho_block_header_ser"))
        if not 1 <= count <= capacity:
            raise ParseError(
                f"{what}: kho_block_header_ser.count {count} at {addr:#x} is not 1..{capacity}"
            )
        raw = _read(read_phys, addr + 16, count * entry_size, f"{what} block entries")
        entries.extend(_entries(raw, entry_size))
        addr = nxt
    return entries


def _file(raw: bytes, what: str) -> LuoFile:
    data, token = _U64X2.unpack_from(raw, LIVEUPDATE_HNDL_COMPAT_LENGTH)
    compatible = _cstr(raw[:LIVEUPDATE_HNDL_COMPAT_LENGTH], f"{what}.compatible")
    return LuoFile(compatible, token, data)


def _files(
    read_phys: ReadPhys, files: int, count: int, blocks: bool, what: str
) -> tuple[LuoFile, ...]:
    """One ``luo_file_set_ser``: a contiguous array (a) or a block chain (b, c)."""
    if files == 0:
        if count:
            raise ParseError(f"{what}: luo_file_set_ser.count {count} with a null files address")
        return ()
    if blocks:
        raws = _block_chain(read_phys, files, FILE_SER_SIZE, f"{what} files")
        if len(raws) != count:
            raise ParseError(
                f"{what}: luo_file_set_ser.count {count} but its blocks hold {len(raws)} files"
            )
    else:
        capacity = LUO_FILE_PGCNT * PAGE_SIZE // FILE_SER_SIZE
        if count > capacity:
            raise ParseError(
                f"{what}: luo_file_set_ser.count {count} exceeds the {capacity} files of "
                f"the {LUO_FILE_PGCNT}-page file block"
            )
        raw = _read(read_phys, files, count * FILE_SER_SIZE, f"{what} files")
        raws = _entries(raw, FILE_SER_SIZE)
    return tuple(_file(raw, f"{what} luo_file_ser[{i}]") for i, raw in enumerate(raws))


def read_sessions(ref: SessionsRef, read_phys: ReadPhys) -> tuple[LuoSession, ...]:
    """The sessions behind ``ref``; ParseError naming the field on anything corrupt."""
    if ref.format is SessionFormat.BLOCKS:
        if ref.phys == 0:
            return ()
        raws = _block_chain(read_phys, ref.phys, SESSION_SER_V2_SIZE, "sessions")
    else:
        size = SESSION_SER_V1_SIZE if ref.format is SessionFormat.HEADER_V1 else SESSION_SER_V2_SIZE
        (count,) = _U64.unpack(_read(read_phys, ref.phys, 8, "luo_session_header_ser"))
        capacity = (LUO_SESSION_PGCNT * PAGE_SIZE - SESSION_HEADER_SER_SIZE) // size
        if count > capacity:
            raise ParseError(
                f"luo_session_header_ser.count {count} exceeds the {capacity} sessions of "
                f"the {LUO_SESSION_PGCNT}-page session block"
            )
        raw = _read(read_phys, ref.phys + 8, count * size, "luo_session_ser array")
        raws = _entries(raw, size)
    sessions: list[LuoSession] = []
    for i, raw in enumerate(raws):
        what = f"luo_session_ser[{i}]"
        name = _cstr(raw[:LIVEUPDATE_SESSION_NAME_LENGTH], f"{what}.name")
        files: tuple[LuoFile, ...] | None = None
        if ref.format is not SessionFormat.HEADER_V1:
            pa, count = _U64X2.unpack_from(raw, LIVEUPDATE_SESSION_NAME_LENGTH)
            blocks = ref.format is SessionFormat.BLOCKS
            files = _files(read_phys, pa, count, blocks, f"session {name!r}")
        sessions.append(LuoSession(name, files))
    return tuple(sessions)


def read_flbs(ref: FlbsRef, read_phys: ReadPhys) -> tuple[LuoFlb, ...]:
    """The FLB entries behind ``ref``: header ``{pgcnt, count}`` and ``count`` entries."""
    if ref.phys == 0:
        return ()
    pgcnt, count = _U64X2.unpack(_read(read_phys, ref.phys, 16, "luo_flb_header_ser"))
    if not 1 <= pgcnt <= MAX_FLB_PGCNT:
        raise ParseError(f"luo_flb_header_ser.pgcnt {pgcnt} is not 1..{MAX_FLB_PGCNT}")
    capacity = (pgcnt * PAGE_SIZE - FLB_HEADER_SER_SIZE) // FLB_SER_SIZE
    if count > capacity:
        raise ParseError(
            f"luo_flb_header_ser.count {count} exceeds the {capacity} entries of {pgcnt} page(s)"
        )
    raw = _read(read_phys, ref.phys + 16, count * FLB_SER_SIZE, "luo_flb_ser array")
    flbs: list[LuoFlb] = []
    for i, entry in enumerate(_entries(raw, FLB_SER_SIZE)):
        name = _cstr(entry[:LIVEUPDATE_FLB_COMPAT_LENGTH], f"luo_flb_ser[{i}].name")
        data, refs = _U64X2.unpack_from(entry, LIVEUPDATE_FLB_COMPAT_LENGTH)
        flbs.append(LuoFlb(name, data, refs))
    return tuple(flbs)


def find_iommu_flb(flbs: tuple[LuoFlb, ...], read_phys: ReadPhys) -> IommuFlb | LuoCorrupt | None:
    """The IOMMU FLB among ``flbs`` and its ABI variant: ``select_variant(compatible, version)``,
    the version being the first u64 of ``iommu_flb_ser`` for compatibles that carry one.
    Several IOMMU-looking entries give an unknown variant naming them all."""
    candidates = [f for f in flbs if f.name.startswith(IOMMU_FLB_PREFIX)]
    if not candidates:
        return None
    flb = candidates[0]
    if len(candidates) > 1:
        names = ", ".join(repr(f.name) for f in candidates)
        reason = f"{len(candidates)} IOMMU FLB entries ({names}); the kernel registers one"
        return IommuFlb(flb.name, flb.data, flb.count, None, UnknownAbi(flb.name, None, reason))
    if flb.data == 0:
        return LuoCorrupt("IOMMU FLB", f"{flb.name!r}: null iommu_flb_ser address")
    version: int | None = None
    if flb_has_version(flb.name):
        try:
            (version,) = _U64.unpack(_read(read_phys, flb.data, 8, "iommu_flb_ser.version"))
        except ParseError as exc:
            return _corrupt("IOMMU FLB", exc)
    return IommuFlb(flb.name, flb.data, flb.count, version, select_variant(flb.name, version))


def walk_luo(blob: LuoBlob, read_phys: ReadPhys) -> LuoState:
    """Follow ``blob`` through memory.  Sessions and FLBs are walked independently: a corrupt part
    becomes a :class:`LuoCorrupt` and the other part is still read."""
    sessions: tuple[LuoSession, ...] | UnknownLuo | LuoCorrupt | None
    if isinstance(blob.sessions, SessionsRef):
        try:
            sessions = read_sessions(blob.sessions, read_phys)
        except ParseError as exc:
            sessions = _corrupt("sessions", exc)
    else:
        sessions = blob.sessions
    flbs: tuple[LuoFlb, ...] | UnknownLuo | LuoCorrupt | None
    if isinstance(blob.flbs, FlbsRef):
        try:
            flbs = read_flbs(blob.flbs, read_phys)
        except ParseError as exc:
            flbs = _corrupt("FLBs", exc)
    else:
        flbs = blob.flbs
    iommu = find_iommu_flb(flbs, read_phys) if isinstance(flbs, tuple) else None
    return LuoState(blob, sessions, flbs, iommu)


def parse_luo(data: bytes, read_phys: ReadPhys) -> LuoState | UnknownLuo:
    """:func:`parse_luo_blob` then :func:`walk_luo`."""
    blob = parse_luo_blob(data)
    return blob if isinstance(blob, UnknownLuo) else walk_luo(blob, read_phys)
