"""A pure-Python, read-only flattened device tree (FDT) reader with pylibfdt's interface.

vtdlud reads KHO and LUO blobs through pylibfdt (Debian/Fedora: python3-libfdt), which has no
wheel on PyPI: ``pip install`` would need swig and a C compiler.  When ``import libfdt`` fails,
:mod:`vtdlud.parse.kho` uses this module instead; it offers the subset of pylibfdt that
:class:`vtdlud.parse.kho.FdtView` calls, with the same results and the same error codes:

- ``fdt_check_full(buf, size)`` -> 0 or a negative ``FDT_ERR_*``;
- ``Fdt(buf)`` (``fdt_check_header``; raises :class:`FdtException`), and on it
  ``first_subnode``/``next_subnode``/``getprop`` (each with ``quiet=``) and ``get_name``;
- ``strerror(code)``, :class:`FdtException` (``.err``), ``NOTFOUND`` and the other codes.

It is a line-by-line port of dtc's libfdt (``fdt.c``, ``fdt_ro.c``, ``fdt_check.c``,
``fdt_strerror.c`` of dtc 1.6.1/1.7.x, ASSUME_* checks all enabled), 32-bit unsigned arithmetic
included, for every header version libfdt accepts (2 to 17).  tests/kho/test_fdt_fallback.py
holds it to the real binding on valid blobs and on mutated ones (Hypothesis).
"""

from __future__ import annotations

from typing import Any

# Error codes (libfdt.h).
NOTFOUND = 1
EXISTS = 2
NOSPACE = 3
BADOFFSET = 4
BADPATH = 5
BADPHANDLE = 6
BADSTATE = 7
TRUNCATED = 8
BADMAGIC = 9
BADVERSION = 10
BADSTRUCTURE = 11
BADLAYOUT = 12
INTERNAL = 13
BADNCELLS = 14
BADVALUE = 15
BADOVERLAY = 16
NOPHANDLES = 17
BADFLAGS = 18
ALIGNMENT = 19

_ERRTAB = {
    NOTFOUND: "FDT_ERR_NOTFOUND",
    EXISTS: "FDT_ERR_EXISTS",
    NOSPACE: "FDT_ERR_NOSPACE",
    BADOFFSET: "FDT_ERR_BADOFFSET",
    BADPATH: "FDT_ERR_BADPATH",
    BADPHANDLE: "FDT_ERR_BADPHANDLE",
    BADSTATE: "FDT_ERR_BADSTATE",
    TRUNCATED: "FDT_ERR_TRUNCATED",
    BADMAGIC: "FDT_ERR_BADMAGIC",
    BADVERSION: "FDT_ERR_BADVERSION",
    BADSTRUCTURE: "FDT_ERR_BADSTRUCTURE",
    BADLAYOUT: "FDT_ERR_BADLAYOUT",
    INTERNAL: "FDT_ERR_INTERNAL",
    BADNCELLS: "FDT_ERR_BADNCELLS",
    BADVALUE: "FDT_ERR_BADVALUE",
    BADOVERLAY: "FDT_ERR_BADOVERLAY",
    NOPHANDLES: "FDT_ERR_NOPHANDLES",
    BADFLAGS: "FDT_ERR_BADFLAGS",
    ALIGNMENT: "FDT_ERR_ALIGNMENT",
}

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
FDT_TAGSIZE = 4
FDT_V1_SIZE = 7 * 4
FDT_V2_SIZE = FDT_V1_SIZE + 4
FDT_V3_SIZE = FDT_V2_SIZE + 4
FDT_V16_SIZE = FDT_V3_SIZE
FDT_V17_SIZE = FDT_V16_SIZE + 4
FDT_FIRST_SUPPORTED_VERSION = 0x02
FDT_LAST_SUPPORTED_VERSION = 0x11
INT_MAX = 0x7FFFFFFF
U32 = 0xFFFFFFFF
PROP_HEADER = 12  # struct fdt_property: tag, len, nameoff
RSV_ENTRY = 16  # struct fdt_reserve_entry: address, size


def strerror(errval: int) -> str:
    """fdt_strerror()."""
    if errval > 0:
        return "<valid offset/length>"
    if errval == 0:
        return "<no error>"
    return _ERRTAB.get(-errval, "<unknown error>")


class FdtException(Exception):
    """A negative libfdt result (``err``), as pylibfdt raises it."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.err = err

    def __str__(self) -> str:
        return f"pylibfdt error {self.err}: {strerror(self.err)}"


def _s32(v: int) -> int:
    v &= U32
    return v - (1 << 32) if v & 0x80000000 else v


class _Blob:
    """The libfdt read functions over one buffer (header fields read on use, as libfdt does)."""

    def __init__(self, buf: bytes | bytearray) -> None:
        self.b = bytes(buf)

    def _u32(self, off: int) -> int:
        return int.from_bytes(self.b[off : off + 4], "big")

    # Header fields (fdt_magic() ... fdt_size_dt_struct()).
    def magic(self) -> int:
        return self._u32(0)

    def totalsize(self) -> int:
        return self._u32(4)

    def off_dt_struct(self) -> int:
        return self._u32(8)

    def off_dt_strings(self) -> int:
        return self._u32(12)

    def off_mem_rsvmap(self) -> int:
        return self._u32(16)

    def version(self) -> int:
        return self._u32(20)

    def last_comp_version(self) -> int:
        return self._u32(24)

    def size_dt_strings(self) -> int:
        return self._u32(32)

    def size_dt_struct(self) -> int:
        return self._u32(36)

    def header_size(self) -> int:
        version = self.version()
        if version <= 1:
            return FDT_V1_SIZE
        if version <= 2:
            return FDT_V2_SIZE
        if version <= 3:
            return FDT_V3_SIZE
        if version <= 16:
            return FDT_V16_SIZE
        return FDT_V17_SIZE

    # fdt.c
    def ro_probe(self) -> int:
        """fdt_ro_probe_(): the total size, or an error."""
        if self.magic() != FDT_MAGIC:
            return -BADMAGIC
        if (
            self.version() < FDT_FIRST_SUPPORTED_VERSION
            or self.last_comp_version() > FDT_LAST_SUPPORTED_VERSION
        ):
            return -BADVERSION
        totalsize = self.totalsize()
        if totalsize >= INT_MAX:
            return -TRUNCATED
        return totalsize

    @staticmethod
    def _check_off(hdrsize: int, totalsize: int, off: int) -> bool:
        return hdrsize <= off <= totalsize

    def _check_block(self, hdrsize: int, totalsize: int, base: int, size: int) -> bool:
        if not self._check_off(hdrsize, totalsize, base):
            return False
        if (base + size) & U32 < base:
            return False  # overflow
        return self._check_off(hdrsize, totalsize, (base + size) & U32)

    def check_header(self) -> int:
        """fdt_check_header()."""
        if self.magic() != FDT_MAGIC:
            return -BADMAGIC
        version = self.version()
        if (
            version < FDT_FIRST_SUPPORTED_VERSION
            or self.last_comp_version() > FDT_LAST_SUPPORTED_VERSION
        ):
            return -BADVERSION
        if version < self.last_comp_version():
            return -BADVERSION
        hdrsize = self.header_size()
        totalsize = self.totalsize()
        if totalsize < hdrsize or totalsize > INT_MAX:
            return -TRUNCATED
        if not self._check_off(hdrsize, totalsize, self.off_mem_rsvmap()):
            return -TRUNCATED
        if version < 17:
            if not self._check_off(hdrsize, totalsize, self.off_dt_struct()):
                return -TRUNCATED
        elif not self._check_block(hdrsize, totalsize, self.off_dt_struct(), self.size_dt_struct()):
            return -TRUNCATED
        if not self._check_block(hdrsize, totalsize, self.off_dt_strings(), self.size_dt_strings()):
            return -TRUNCATED
        return 0

    def offset_ptr(self, offset: int, length: int) -> int | None:
        """fdt_offset_ptr(): the absolute offset of [offset, offset+length) in the structure
        block, or None when it lies outside."""
        if offset < 0:
            return None
        uoffset = offset & U32
        absoffset = (offset + self.off_dt_struct()) & U32
        if absoffset < uoffset or (absoffset + length) & U32 < absoffset:
            return None
        if (absoffset + length) & U32 > self.totalsize():
            return None
        if self.version() >= 0x11 and (
            (uoffset + length) & U32 < uoffset or (uoffset + length) & U32 > self.size_dt_struct()
        ):
            return None
        return absoffset

    def next_tag(self, startoffset: int) -> tuple[int, int]:
        """fdt_next_tag(): (tag, nextoffset); nextoffset < 0 is an error."""
        offset = startoffset
        tagp = self.offset_ptr(offset, FDT_TAGSIZE)
        if tagp is None:
            return FDT_END, -TRUNCATED  # premature end
        tag = self._u32(tagp)
        offset += FDT_TAGSIZE
        if tag == FDT_BEGIN_NODE:
            while True:  # skip the name
                p = self.offset_ptr(offset, 1)
                offset += 1
                if p is None:
                    return FDT_END, -BADSTRUCTURE  # premature end
                if self.b[p] == 0:
                    break
        elif tag == FDT_PROP:
            lenp = self.offset_ptr(offset, 4)
            if lenp is None:
                return FDT_END, -BADSTRUCTURE
            length = self._u32(lenp)
            total = (length + offset) & U32
            if total >= INT_MAX or total < (offset & U32):
                return FDT_END, -BADSTRUCTURE
            offset += PROP_HEADER - FDT_TAGSIZE + length
            if self.version() < 0x10 and length >= 8 and (offset - length) % 8 != 0:
                offset += 4
        elif tag not in (FDT_END, FDT_END_NODE, FDT_NOP):
            return FDT_END, -BADSTRUCTURE
        if self.offset_ptr(startoffset, offset - startoffset) is None:
            return FDT_END, -BADSTRUCTURE  # premature end
        return tag, (offset + FDT_TAGSIZE - 1) & ~(FDT_TAGSIZE - 1)

    def check_node_offset(self, offset: int) -> int:
        """fdt_check_node_offset_(): the offset after the BEGIN_NODE tag, or an error."""
        if offset < 0 or offset % FDT_TAGSIZE:
            return -BADOFFSET
        tag, nxt = self.next_tag(offset)
        if tag != FDT_BEGIN_NODE:
            return -BADOFFSET
        return nxt

    def check_prop_offset(self, offset: int) -> int:
        """fdt_check_prop_offset_()."""
        if offset < 0 or offset % FDT_TAGSIZE:
            return -BADOFFSET
        tag, nxt = self.next_tag(offset)
        if tag != FDT_PROP:
            return -BADOFFSET
        return nxt

    def next_node(self, offset: int, depth: int | None) -> tuple[int, int | None]:
        """fdt_next_node(): (offset or error, depth)."""
        nextoffset = 0
        if offset >= 0:
            nextoffset = self.check_node_offset(offset)
            if nextoffset < 0:
                return nextoffset, depth
        while True:
            offset = nextoffset
            tag, nextoffset = self.next_tag(offset)
            if tag == FDT_BEGIN_NODE:
                if depth is not None:
                    depth += 1
                return offset, depth
            if tag == FDT_END_NODE:
                if depth is not None:
                    depth -= 1
                    if depth < 0:
                        return nextoffset, depth
            elif tag == FDT_END:
                if nextoffset >= 0 or (nextoffset == -TRUNCATED and depth is None):
                    return -NOTFOUND, depth
                return nextoffset, depth

    def first_subnode(self, offset: int) -> int:
        offset, depth = self.next_node(offset, 0)
        if offset < 0 or depth != 1:
            return -NOTFOUND
        return offset

    def next_subnode(self, offset: int) -> int:
        depth: int | None = 1
        while True:
            offset, depth = self.next_node(offset, depth)
            if offset < 0 or depth is None or depth < 1:
                return -NOTFOUND
            if depth <= 1:
                return offset

    # fdt_ro.c
    def get_string(self, stroffset: int) -> bytes | int:
        """fdt_get_string(): the NUL-terminated string (without its NUL), or an error."""
        totalsize = self.ro_probe()
        if totalsize < 0:
            return totalsize
        absoffset = (stroffset + self.off_dt_strings()) & U32
        if absoffset >= totalsize:
            return -BADOFFSET
        length = totalsize - absoffset
        if stroffset < 0:
            return -BADOFFSET
        if self.version() >= 17:
            if stroffset >= self.size_dt_strings():
                return -BADOFFSET
            length = min(length, self.size_dt_strings() - stroffset)
        end = self.b.find(b"\x00", absoffset, absoffset + length)
        if end < 0:
            return -TRUNCATED  # missing terminating NUL
        return self.b[absoffset:end]

    def get_name(self, nodeoffset: int) -> bytes | int:
        """fdt_get_name()."""
        err = self.ro_probe()
        if err >= 0:
            err = self.check_node_offset(nodeoffset)
        if err < 0:
            return err
        start = self.off_dt_struct() + nodeoffset + FDT_TAGSIZE
        name = self.b[start : self.b.index(b"\x00", start)]
        if self.version() < 0x10:
            leaf = name.rfind(b"/")
            if leaf < 0:
                return -BADSTRUCTURE
            name = name[leaf + 1 :]
        return name

    def _prop(self, offset: int) -> tuple[int, int, int]:
        """(len, nameoff, data offset) of the property at a checked offset."""
        base = self.off_dt_struct() + offset
        return self._u32(base + 4), _s32(self._u32(base + 8)), base + PROP_HEADER

    def getprop_by_offset(self, offset: int) -> tuple[bytes | None, int]:
        """fdt_getprop_by_offset() with a name: (data, len) or (None, error)."""
        err = self.check_prop_offset(offset)
        if err < 0:
            return None, err
        length, nameoff, data = self._prop(offset)
        name = self.get_string(nameoff)
        if isinstance(name, int):
            return None, name
        if self.version() < 0x10 and (offset + PROP_HEADER) % 8 and length >= 8:
            data += 4
        return self.b[data : data + length], length

    def _nextprop(self, offset: int) -> int:
        while True:
            tag, nextoffset = self.next_tag(offset)
            if tag == FDT_END:
                return -BADSTRUCTURE if nextoffset >= 0 else nextoffset
            if tag == FDT_PROP:
                return offset
            offset = nextoffset
            if tag != FDT_NOP:
                return -NOTFOUND

    def getprop(self, nodeoffset: int, name: bytes) -> tuple[bytes | None, int]:
        """fdt_getprop(): (data, len) or (None, error)."""
        offset = self.check_node_offset(nodeoffset)
        offset = self._nextprop(offset) if offset >= 0 else offset
        while offset >= 0:
            err = self.check_prop_offset(offset)
            if err < 0:
                offset = -INTERNAL
                break
            length, nameoff, data = self._prop(offset)
            if self.get_string(nameoff) == name:
                if self.version() < 0x10 and (offset + PROP_HEADER) % 8 and length >= 8:
                    data += 4
                return self.b[data : data + length], length
            nxt = self.check_prop_offset(offset)
            offset = self._nextprop(nxt) if nxt >= 0 else nxt
        return None, offset

    def num_mem_rsv(self) -> int:
        """fdt_num_mem_rsv()."""
        i = 0
        while True:
            absoffset = (self.off_mem_rsvmap() + i * RSV_ENTRY) & U32
            if absoffset < self.off_mem_rsvmap():
                return -TRUNCATED
            if absoffset > self.totalsize() - RSV_ENTRY:  # size_t arithmetic: no wrap
                return -TRUNCATED
            if int.from_bytes(self.b[absoffset + 8 : absoffset + 16], "big") == 0:
                return i
            i += 1

    # fdt_check.c
    def check_full(self, bufsize: int) -> int:
        """fdt_check_full()."""
        if bufsize < FDT_V1_SIZE or bufsize < self.header_size():
            return -TRUNCATED
        err = self.check_header()
        if err != 0:
            return err
        if bufsize < self.totalsize():
            return -TRUNCATED
        num = self.num_mem_rsv()
        if num < 0:
            return num
        nextoffset, depth, expect_end = 0, 0, False
        while True:
            offset = nextoffset
            tag, nextoffset = self.next_tag(offset)
            if nextoffset < 0:
                return nextoffset
            if expect_end and tag != FDT_END:
                return -BADSTRUCTURE  # two root nodes
            if tag == FDT_END:
                return 0 if depth == 0 else -BADSTRUCTURE
            if tag == FDT_BEGIN_NODE:
                depth += 1
                if depth > INT_MAX:
                    return -BADSTRUCTURE
                if depth == 1:  # the root node must have an empty name
                    name = self.get_name(offset)
                    if isinstance(name, int):
                        return name
                    if name:
                        return -BADSTRUCTURE
            elif tag == FDT_END_NODE:
                if depth == 0:
                    return -BADSTRUCTURE
                depth -= 1
                if depth == 0:
                    expect_end = True
            elif tag == FDT_PROP:
                value, err = self.getprop_by_offset(offset)
                if value is None:
                    return err
            elif tag != FDT_NOP:
                return -INTERNAL


def fdt_check_full(buf: bytes | bytearray, bufsize: int) -> int:
    """0 when the blob is a complete, well-formed FDT, else a negative ``FDT_ERR_*``."""
    if len(buf) < FDT_V1_SIZE:
        return -TRUNCATED
    return _Blob(buf).check_full(min(bufsize, len(buf)))


def _check(val: int, quiet: tuple[int, ...]) -> int:
    if val < 0 and -val not in quiet:
        raise FdtException(val)
    return val


class Fdt:
    """pylibfdt's ``Fdt``, read-only, over a copy of ``data``."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._blob = _Blob(data)
        _check(self._blob.check_header(), ())

    def first_subnode(self, nodeoffset: int, quiet: tuple[int, ...] = ()) -> int:
        return _check(self._blob.first_subnode(nodeoffset), quiet)

    def next_subnode(self, nodeoffset: int, quiet: tuple[int, ...] = ()) -> int:
        return _check(self._blob.next_subnode(nodeoffset), quiet)

    def get_name(self, nodeoffset: int) -> str:
        name = self._blob.get_name(nodeoffset)
        if isinstance(name, int):
            raise FdtException(name)
        return name.decode("utf-8", "surrogateescape")  # as SWIG converts a char *

    def getprop(self, nodeoffset: int, prop_name: str, quiet: tuple[int, ...] = ()) -> Any:
        """The value as a bytearray, or the negative error code when it is in ``quiet``."""
        data, code = self._blob.getprop(nodeoffset, prop_name.encode())
        if data is None:
            return _check(code, quiet)
        return bytearray(data)
