"""KHO (Kexec HandOver) debugfs blobs and text → pure data; bytes/str in, ParseError out.

Layouts (reference/kernel-interfaces.md §3 and §13, re-read from the kernel):

* the root FDT's ``compatible`` names the KHO ABI.  ``"kho-v1"``
  (torvalds/linux include/linux/kho/abi/kexec_handover.h @c17ee635fd3a, kernel/kexec_handover.c
  of 6.16): one child node per subsystem holding ``fdt`` = u64 physical address of that
  subsystem's FDT, and ``preserved-memory-map`` on the root (written at finalize).
  ``"kho-v2"`` (@3f2ad90060f6): the child property is ``preserved-data`` and
  ``preserved-memory-map`` is the physical address of the radix tracker's root; some kho-v2
  trees add a ``blob-size`` u64 next to ``preserved-data``, optional there.
  ``"kho-v3"``: the same tree with ``blob-size`` on every child, required: the kernel's
  ``kho_retrieve_subtree()`` refuses a child without it, and ``kho/in`` lists only children
  that have it [C: Linux 7.2.13 include/linux/kho/abi/kexec_handover.h (its DOC block still
  draws the kho-v3 tree), kernel/liveupdate/kexec_handover.c, kexec_handover_debugfs.c].
  ``"kho-v4"`` (Linux 7.2): the root FDT is unchanged from kho-v3; the version moved because
  the KHO serialization-block ABI (include/linux/kho/abi/block.h, ``struct
  kho_block_header_ser {u64 next; u64 count}`` heading each one-page block) is versioned by
  ``KHO_FDT_COMPATIBLE`` too [C: Linux 7.2.13 include/linux/kho/abi/block.h; the bump came with
  "kho: add support for linked-block serialization", posted as v7 07/13, June 2026].  LUO's
  sessions and files use those blocks (:mod:`vtdlud.parse.luo`).  Any other compatible is
  returned as :class:`UnknownKho`: the audit reports VTD040 and nothing is guessed.
* every u64 property is stored with ``fdt_property(root, name, &phys, sizeof(phys))``: the raw
  bytes of the CPU's ``u64``, i.e. **little-endian on x86-64, not the big-endian fdt64** of
  ordinary device trees [C: written by kho_add_subtree() and kho_finalize(), read back with
  ``get_unaligned((const u64 *)prop)`` / ``*(const phys_addr_t *)prop`` by
  kho_get_mem_map_phys() and kho_mem_retrieve(), in kho-v1 to kho-v4 kernels].  A
  ``preserved-memory-map`` of 0 is returned as 0: kho-v1 reads it as "no map", the radix
  kernels refuse it.
* the root FDT of kho-v2 and later lives in one KHO-preserved page and grows when a subsystem
  adds its node, but ``kho/out/fdt`` shows it with the length it had when it was registered:
  :mod:`vtdlud.parse.khocut` reads such a cut copy.
* ``sub_fdts/kexec-metadata`` (Linux 7.2): ``struct kho_kexec_metadata {u32 version; char
  previous_release[65]; u32 kexec_count} __packed``, version 1 [C: Linux 7.2.13
  include/linux/kho/abi/kexec_metadata.h]: :func:`parse_kexec_metadata`.
* ``out/scratch_phys`` and ``out/scratch_len``: one ``"0x%llx\\n"`` line per scratch region
  [C: scratch_phys_show()/scratch_len_show()].
* ``out/finalize`` (older debugfs only): ``"%llu\\n"`` of a bool [C: DEFINE_DEBUGFS_ATTRIBUTE].

pylibfdt (``libfdt``) is untyped: it is used only through :class:`FdtView`, which validates a
blob completely with ``fdt_check_full`` before any other call (libfdt trusts a header's sizes
otherwise) and turns every ``FdtException`` into :class:`ParseError`.  It works with
pylibfdt 1.6.1 (Debian) and 1.7.x.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

try:
    import libfdt
except ImportError:  # pip install without the C binding: the pure-Python reader (same results)
    from vtdlud.parse import fdt as libfdt

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen

FDT_MAGIC = 0xD00DFEED  # big-endian at offset 0 of every FDT
FDT_HEADER_SIZE = 40  # struct fdt_header, version 17
MAX_FDT_SIZE = 16 << 20  # far above LUO_FDT_SIZE/KHO's one-page root; bounds the copy
MAX_CHILDREN = 4096  # a root FDT lists a handful of subsystems; bounds the walk

KHO_COMPATIBLE_V1 = "kho-v1"
KHO_COMPATIBLE_V2 = "kho-v2"
KHO_COMPATIBLE_V3 = "kho-v3"
KHO_COMPATIBLE_V4 = "kho-v4"  # Linux 7.2
KHO_MEMORY_MAP_PROP = "preserved-memory-map"
# The sub-tree property by ABI: "fdt" (kho-v1) became "preserved-data" (kho-v2 on).
KHO_SUB_TREE_PROP = {
    KHO_COMPATIBLE_V1: "fdt",
    KHO_COMPATIBLE_V2: "preserved-data",
    KHO_COMPATIBLE_V3: "preserved-data",
    KHO_COMPATIBLE_V4: "preserved-data",
}
KHO_SUB_TREE_SIZE_PROP = "blob-size"  # optional in kho-v2, required from kho-v3 on
# blob-size by ABI: None = not part of the ABI, False = optional, True = required
KHO_SUB_TREE_SIZE_REQUIRED: dict[str, bool | None] = {
    KHO_COMPATIBLE_V1: None,
    KHO_COMPATIBLE_V2: False,
    KHO_COMPATIBLE_V3: True,
    KHO_COMPATIBLE_V4: True,
}
# The ABIs whose preserved-memory-map is the radix tree (kho-v1: a chunk list at finalize).
KHO_RADIX_COMPATIBLES = frozenset({KHO_COMPATIBLE_V2, KHO_COMPATIBLE_V3, KHO_COMPATIBLE_V4})
KHO_METADATA_NODE_NAME = "kexec-metadata"
KHO_KEXEC_METADATA_VERSION = 1
NEW_UTS_LEN = 64  # __NEW_UTS_LEN; previous_release is char[__NEW_UTS_LEN + 1]
KEXEC_METADATA_SIZE = 4 + NEW_UTS_LEN + 1 + 4  # 73, __packed

_SCRATCH_LINE = re.compile(r"0x([0-9a-fA-F]{1,16})")


# --- pylibfdt, typed ---------------------------------------------------------------------------


def is_fdt(data: bytes) -> bool:
    """Whether ``data`` starts with the FDT magic 0xd00dfeed (big-endian)."""
    return len(data) >= 4 and int.from_bytes(data[:4], "big") == FDT_MAGIC


def _fdt_error(exc: Exception, what: str) -> ParseError:
    if isinstance(exc, libfdt.FdtException):
        return ParseError(f"{what}: {libfdt.strerror(exc.err)}")
    return ParseError(f"{what}: {exc}")


class FdtView:
    """A fully validated, read-only FDT; every method raises only :class:`ParseError`."""

    def __init__(self, data: bytes, what: str = "FDT") -> None:
        self.what = what
        if len(data) < FDT_HEADER_SIZE:
            raise ParseError(
                f"{what}: {len(data)} bytes, shorter than an FDT header ({FDT_HEADER_SIZE})",
                offset=len(data),
            )
        if not is_fdt(data):
            raise ParseError(f"{what}: no FDT magic (0x{data[:4].hex()})", offset=0)
        if len(data) > MAX_FDT_SIZE:
            raise ParseError(f"{what}: {len(data)} bytes, larger than {MAX_FDT_SIZE}")
        buf = bytearray(data)
        err = libfdt.fdt_check_full(buf, len(buf))
        if not isinstance(err, int) or err != 0:
            code = err if isinstance(err, int) else -1
            raise ParseError(f"{what}: not a valid FDT ({libfdt.strerror(code)})")
        try:
            self._fdt: Any = libfdt.Fdt(buf)
        except (libfdt.FdtException, ValueError, TypeError) as exc:
            raise _fdt_error(exc, what) from exc

    def children(self, node: int = 0) -> list[tuple[str, int]]:
        """(name, offset) of each direct child of ``node``, in blob order."""
        out: list[tuple[str, int]] = []
        try:
            off = self._fdt.first_subnode(node, quiet=(libfdt.NOTFOUND,))
            while isinstance(off, int) and off >= 0:
                if len(out) >= MAX_CHILDREN:
                    raise ParseError(f"{self.what}: more than {MAX_CHILDREN} child nodes")
                out.append((str(self._fdt.get_name(off)), off))
                off = self._fdt.next_subnode(off, quiet=(libfdt.NOTFOUND,))
        except (libfdt.FdtException, UnicodeError, ValueError, TypeError) as exc:
            raise _fdt_error(exc, f"{self.what}: walking the nodes") from exc
        return out

    def child(self, name: str, node: int = 0) -> int | None:
        """Offset of the child ``name`` of ``node``, None when there is none."""
        for child_name, off in self.children(node):
            if child_name == name:
                return off
        return None

    def prop(self, node: int, name: str) -> bytes | None:
        """The raw value of property ``name``, None when the node has no such property."""
        try:
            value = self._fdt.getprop(node, name, quiet=(libfdt.NOTFOUND,))
        except (libfdt.FdtException, UnicodeError, ValueError, TypeError) as exc:
            raise _fdt_error(exc, f"{self.what}: property {name!r}") from exc
        if isinstance(value, int):
            return None
        return bytes(value)

    def node_path(self, node: int) -> str:
        if node == 0:
            return "/"
        try:
            return "/" + str(self._fdt.get_name(node))
        except (libfdt.FdtException, UnicodeError) as exc:
            raise _fdt_error(exc, self.what) from exc

    def u64(self, node: int, name: str, *, required: bool) -> int | None:
        """A u64 property stored CPU-native (little-endian on x86-64), as KHO and LUO store them.

        Missing: ParseError when ``required``, else None.  Any length but 8: ParseError.
        """
        raw = self.prop(node, name)
        where = f"{self.what} {self.node_path(node)}"
        if raw is None:
            if required:
                raise ParseError(f"{where}: no {name!r} property")
            return None
        if len(raw) != 8:
            raise ParseError(f"{where}: {name!r} is {len(raw)} bytes, expected a u64 (8)")
        return int.from_bytes(raw, "little")

    def strings(self, node: int, name: str) -> tuple[str, ...] | None:
        """A string-list property (``compatible``); None when absent, ParseError when malformed."""
        raw = self.prop(node, name)
        if raw is None:
            return None
        where = f"{self.what} {self.node_path(node)}"
        if not raw or raw[-1] != 0:
            raise ParseError(f"{where}: {name!r} is not a NUL-terminated string")
        try:
            items = tuple(part.decode("ascii") for part in raw[:-1].split(b"\x00"))
        except UnicodeDecodeError:
            raise ParseError(f"{where}: {name!r} is not ASCII text") from None
        if any(not item or not item.isprintable() for item in items):
            raise ParseError(f"{where}: {name!r} holds an empty or unprintable string")
        return items

    def compatible(self, node: int = 0) -> tuple[str, ...]:
        """The node's ``compatible`` list; ParseError when it has none."""
        value = self.strings(node, "compatible")
        if value is None:
            raise ParseError(f"{self.what} {self.node_path(node)}: no 'compatible' property")
        return value


def compatible_text(values: tuple[str, ...]) -> str:
    """A compatible list as one string, for messages and unknown results."""
    return values[0] if len(values) == 1 else ";".join(values)


# --- the KHO root FDT --------------------------------------------------------------------------


class KhoSubsystem(NamedTuple):
    """A root child: the physical address of the subsystem's preserved blob and its size
    (``blob-size``; None where the ABI has no size: kho-v1 and the first kho-v2)."""

    phys: int
    size: int | None


@frozen
class KhoRoot:
    """A KHO root FDT of a known ABI."""

    compatible: str  # "kho-v1" .. "kho-v4"
    preserved_memory_map: int | None  # phys of the tracker (kho-v1: absent before finalize)
    subsystems: dict[str, KhoSubsystem]  # child node name -> (phys, size)
    # Where the bytes came from: "debugfs", or "kcore" when the debugfs copy was cut and the
    # whole FDT was read from its preserved page at ``phys`` (vtdlud.parse.khocut).
    read_from: str = "debugfs"
    phys: int | None = None

    @property
    def sub_tree_prop(self) -> str:
        return KHO_SUB_TREE_PROP[self.compatible]


@frozen
class UnknownKho:
    """A KHO root FDT whose ``compatible`` this version does not decode (VTD040)."""

    compatible: str
    reason: str


def parse_kho_root(data: bytes) -> KhoRoot | UnknownKho:
    """Decode ``kho/{out,in}/fdt``.

    Like ``fdt_node_check_compatible()``, a root whose compatible list contains a known ABI is
    that ABI.  A child node without the sub-tree property, or with a property of the wrong
    length, raises ParseError naming it (the kernel skips such nodes with a warning; for an
    audit they mean a blob it cannot trust).
    """
    fdt = FdtView(data, "KHO root FDT")
    compatible = fdt.compatible(0)
    known = [c for c in compatible if c in KHO_SUB_TREE_PROP]
    if not known:
        text = compatible_text(compatible)
        return UnknownKho(
            text,
            f"unknown KHO compatible {text!r} (known: {', '.join(map(repr, KHO_SUB_TREE_PROP))})",
        )
    abi = known[0]
    memory_map = fdt.u64(0, KHO_MEMORY_MAP_PROP, required=False)
    prop = KHO_SUB_TREE_PROP[abi]
    size_rule = KHO_SUB_TREE_SIZE_REQUIRED[abi]
    subsystems: dict[str, KhoSubsystem] = {}
    for name, off in fdt.children(0):
        if name in subsystems:
            raise ParseError(f"KHO root FDT: two subsystem nodes named {name!r}")
        phys = fdt.u64(off, prop, required=True)
        assert phys is not None  # required=True
        size = (
            None if size_rule is None else fdt.u64(off, KHO_SUB_TREE_SIZE_PROP, required=size_rule)
        )
        subsystems[name] = KhoSubsystem(phys, size)
    return KhoRoot(abi, memory_map, subsystems)


@frozen
class KexecMetadata:
    """``sub_fdts/kexec-metadata``: the kernel that wrote it and its kexec count."""

    version: int
    previous_release: str | None  # None: a version this parser does not decode
    kexec_count: int | None


def parse_kexec_metadata(data: bytes) -> KexecMetadata:
    """Decode ``struct kho_kexec_metadata`` (Linux 7.2.13 include/linux/kho/abi/kexec_metadata.h):
    ``u32 version`` @0, ``char previous_release[65]`` @4, ``u32 kexec_count`` @69, packed, 73
    bytes.  Another version keeps only ``version`` (the kernel ignores it too)."""
    if len(data) < 4:
        raise ParseError(f"kexec-metadata: {len(data)} bytes, too short for its version (4)")
    version = int.from_bytes(data[:4], "little")
    if version != KHO_KEXEC_METADATA_VERSION:
        return KexecMetadata(version, None, None)
    if len(data) < KEXEC_METADATA_SIZE:
        raise ParseError(
            f"kexec-metadata v1: {len(data)} bytes, shorter than the struct ({KEXEC_METADATA_SIZE})"
        )
    raw = data[4 : 4 + NEW_UTS_LEN + 1]
    nul = raw.find(b"\x00")
    if nul < 0:
        raise ParseError("kexec-metadata: previous_release is not NUL-terminated", offset=4)
    release = raw[:nul].decode("utf-8", errors="backslashreplace")
    count = int.from_bytes(data[69:73], "little")
    return KexecMetadata(version, release, count)


# --- text files --------------------------------------------------------------------------------


class ScratchRegion(NamedTuple):
    phys: int
    size: int


def _hex_lines(text: str, what: str) -> list[int]:
    if "\x00" in text:
        raise ParseError(f"{what}: binary data, expected '0x%llx' lines", line=1)
    if text and not text.endswith("\n"):
        raise ParseError(f"{what}: last line has no newline", line=text.count("\n") + 1)
    values: list[int] = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        m = _SCRATCH_LINE.fullmatch(line)
        if m is None:
            raise ParseError(f"{what}: {line[:40]!r} is not '0x%llx'", line=number)
        values.append(int(m.group(1), 16))
    return values


def parse_scratch(phys_text: str, len_text: str) -> tuple[ScratchRegion, ...]:
    """``out/scratch_phys`` and ``out/scratch_len``: region i is line i of each file."""
    phys = _hex_lines(phys_text, "scratch_phys")
    sizes = _hex_lines(len_text, "scratch_len")
    if len(phys) != len(sizes):
        raise ParseError(
            f"scratch_phys has {len(phys)} regions but scratch_len has {len(sizes)}",
            line=min(len(phys), len(sizes)) + 1,
        )
    return tuple(ScratchRegion(p, s) for p, s in zip(phys, sizes, strict=True))


def parse_finalize(text: str) -> bool:
    """``out/finalize`` of the older debugfs: ``"0\\n"`` or ``"1\\n"``."""
    if text in ("0\n", "1\n"):
        return text == "1\n"
    raise ParseError(f"finalize: {text[:40]!r} is not '0' or '1' and a newline", line=1)
