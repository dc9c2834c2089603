"""Walk one unit's root, context and PASID tables in physical memory.

The comparison with debugfs (VTD015) is :mod:`vtdlud.model.crosscheck`.

Pure: memory comes from a ``read_phys(addr, size) -> bytes`` callable that returns exactly
``size`` bytes or raises :class:`PhysReadError` (``vtdlud.host.kcore.PhysMem.read`` reads
``/proc/kcore``; tests pass a dict of pages); any other ParseError or OSError it raises is
taken as an unreadable range too.  Layouts (reference §6.5-§6.7, the kernel's
``iommu_context_addr()`` and debugfs walk):

- root table: 4 KiB, 256 ``struct root_entry {u64 lo; u64 hi;}`` indexed by bus, little-endian.
  Legacy: ``lo`` bit 0 present, bits 63:12 the context table; ``hi`` is reserved and never
  followed.  Scalable: ``lo`` = lower table (devfn 0x00-0x7f), ``hi`` = upper table (0x80-0xff).
- legacy context table: 256 x 16-byte entries indexed by devfn; DID = ``hi`` bits 23:8.
- scalable context table: 128 x 32-byte entries (devfn & 0x7f); the low 128 bits are what
  debugfs prints, the upper 128 are kept apart.  PASID directory = ``lo & ~0xfff`` with
  ``1 << (PDTS + 7)`` 8-byte entries (present bit 0, table at bits 63:12); a PASID table holds 64
  x 64-byte entries, PASID = ``(dir_idx << 6) + idx``.  The device's DID is that of its
  RID_PASID entry (PASID 0, which the kernel always uses), like :class:`ContextInfo` from debugfs.

Unlike debugfs, the walk does not stop a bus at a missing lower table: both halves of every bus
are walked, so :attr:`WalkResult.context_table_bits` is exact.  Everything is bounded: one root
table, at most :attr:`WalkLimits.max_context_tables` context tables (512 possible), PASID
directories capped by PDTS and :attr:`WalkLimits.max_pasid_dir_entries`, and at most
:attr:`WalkLimits.max_pasid_tables` PASID tables.  A bad pointer (outside RAM, unreadable, or
aliasing the root table or another context table) is a :class:`WalkProblem` in the result,
never an exception; the structure below it is not decoded.  Note that ``/proc/kcore`` returns
zeros for pages it cannot read (reference §12), so "not present" and "unreadable" can look alike.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import field
from enum import Enum
from types import MappingProxyType

from vtdlud.errors import ParseError, PhysReadError
from vtdlud.frozen import frozen
from vtdlud.model.bitfield import field_named
from vtdlud.model.live import ContextInfo
from vtdlud.model.registers import VTD_PAGE_MASK, VTD_PAGE_SIZE
from vtdlud.model.tables import (
    CONTEXT_HI_FIELDS,
    CONTEXT_LO_FIELDS,
    PASID_PDE_SHIFT,
    PASID_VAL1_FIELDS,
    ROOT_ENTRY_NR,
    SM_CONTEXT_LO_FIELDS,
    SM_UPPER_DEVFN,
    Mode,
    PasidEntry,
    RootEntry,
    bdf_name,
    context_table_bit,
    table_half,
)

ReadPhys = Callable[[int, int], bytes]
DevKey = tuple[int, int]  # (bus, devfn)

ROOT_TABLE_SIZE = ROOT_ENTRY_NR * 16
CONTEXT_TABLE_SIZE = VTD_PAGE_SIZE
LEGACY_CONTEXT_ENTRY = 16
SM_CONTEXT_ENTRY = 32
PASID_DIR_ENTRY = 8
PASID_ENTRY = 64
PASID_TABLE_ENTRIES = 1 << PASID_PDE_SHIFT
PASID_TABLE_SIZE = PASID_TABLE_ENTRIES * PASID_ENTRY
MAX_PASID_DIR_ENTRIES = 1 << 14  # PDTS = 7: 2**20 PASIDs / 64 per table
RID_PASID = 0


@frozen
class WalkLimits:
    max_context_tables: int = 2 * ROOT_ENTRY_NR
    max_pasid_dir_entries: int = MAX_PASID_DIR_ENTRIES  # per device
    max_pasid_tables: int = 1024  # per walk (4 MiB); counts every table the walk tries
    max_pasid_dir_bytes: int = 32 << 20  # PASID directory bytes walked, all devices together
    max_problems: int = 256  # problems listed; the rest are counted in one last LIMIT problem


class ProblemKind(Enum):
    OUTSIDE_RAM = "outside_ram"  # a pointer to an address in no RAM segment
    UNREADABLE = "unreadable"  # the read failed (I/O error, short read, budget)
    ALIAS = "alias"  # a table pointer reuses the root table or another context table's page
    LIMIT = "limit"  # a WalkLimits bound stopped the walk


@frozen
class WalkProblem:
    kind: ProblemKind
    addr: int
    what: str  # "root table", "context table of bus 03 (upper)", "PASID directory of 00:02.0"
    message: str
    bus: int | None = None
    devfn: int | None = None


def _u64s(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(data) // 8}Q", data)


_CTX_DID = field_named(CONTEXT_HI_FIELDS, "did").raw
_CTX_TT = field_named(CONTEXT_LO_FIELDS, "tt").raw
_SM_PDTS = field_named(SM_CONTEXT_LO_FIELDS, "pdts").raw
_SM_PRE = field_named(SM_CONTEXT_LO_FIELDS, "pre").raw
_SM_PASIDDIRPTR = field_named(SM_CONTEXT_LO_FIELDS, "pasiddirptr").mask
_PASID_DID = field_named(PASID_VAL1_FIELDS, "did").raw
_PRESENT_BIT = bytes(b & 1 for b in range(256))  # a byte -> its bit 0, for bytes.translate
_LEGACY_CONTEXT = struct.Struct("<QQ")
_SM_CONTEXT = struct.Struct("<QQQQ")
_PASID_WORDS = struct.Struct("<QQQ")  # val[0..2]; the rest of the 64-byte entry is not kept
_PDE = struct.Struct("<Q")


def _present(data: bytes, stride: int, first: int = 0) -> list[int]:
    """Indexes of the ``stride``-byte entries of ``data`` whose byte at ``first`` has bit 0 set
    (the Present bit of a little-endian entry), ascending; the scan over the page is C code."""
    flags = data[first::stride].translate(_PRESENT_BIT)
    out: list[int] = []
    i = flags.find(1)
    while i >= 0:
        out.append(i)
        i = flags.find(1, i + 1)
    return out


What = str | Callable[[], str]  # a structure's name; a callable names it only for a problem


def _name(what: What) -> str:
    return what if isinstance(what, str) else what()


@frozen
class WalkResult:
    """One unit's tables as physical memory holds them.

    ``root_entries``: the 256 root entries, or () when the root table could not be read (then
    nothing else is known).  ``context_table_bits``: bits ``(bus << 1) | upper`` of every
    present root half (legacy: lower only) — exact; ``context_tables`` maps each bit to the
    table's address.  ``unwalked_tables``: bits whose table was not decoded (a problem names
    why).  ``devices``: every present context entry, keyed by (bus, devfn), as the same
    :class:`ContextInfo` debugfs gives (scalable: all present PASID entries, DID from PASID 0).
    ``sm_context_upper``: words 2 and 3 of scalable entries.  ``pasid_tables``: present PASID
    directory entries per device (dir index -> table address).  ``incomplete_devices``: scalable
    devices whose PASID walk stopped early.  ``table_pages``: every page the structures occupy
    (root, context tables, PASID directory pages walked, PASID tables), read or not.
    """

    root_table: int
    mode: Mode
    root_entries: tuple[RootEntry, ...]
    context_table_bits: frozenset[int]
    context_tables: Mapping[int, int]
    unwalked_tables: frozenset[int]
    devices: Mapping[DevKey, ContextInfo]
    sm_context_upper: Mapping[DevKey, tuple[int, int]]
    pasid_tables: Mapping[DevKey, Mapping[int, int]]
    incomplete_devices: frozenset[DevKey]
    table_pages: frozenset[int]
    problems: tuple[WalkProblem, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return not self.problems


class _Walker:
    def __init__(self, read_phys: ReadPhys, limits: WalkLimits) -> None:
        self.read_phys = read_phys
        self.limits = limits
        self.problems: list[WalkProblem] = []
        self.cache: dict[tuple[int, int], bytes] = {}
        self.owner: dict[int, str] = {}  # root and context table pages -> what they are
        self.pages: set[int] = set()
        self.pasid_tables_tried = 0
        self.pasid_dir_bytes = 0
        self.stopped: set[str] = set()  # walk-wide limits already reported
        self.dropped = 0

    def problem(
        self,
        kind: ProblemKind,
        addr: int,
        what: str,
        message: str,
        key: DevKey | None = None,
    ) -> None:
        if len(self.problems) >= self.limits.max_problems:
            self.dropped += 1
            return
        bus, devfn = key if key is not None else (None, None)
        self.problems.append(WalkProblem(kind, addr, what, message, bus, devfn))

    def stop_once(
        self, name: str, addr: int, what: str, message: str, key: DevKey | None = None
    ) -> None:
        """Report a walk-wide limit the first time it stops something."""
        if name not in self.stopped:
            self.stopped.add(name)
            self.problem(ProblemKind.LIMIT, addr, what, message, key)

    def final_problems(self) -> tuple[WalkProblem, ...]:
        if not self.dropped:
            return tuple(self.problems)
        more = WalkProblem(ProblemKind.LIMIT, 0, "walk", f"{self.dropped} more problems not listed")
        return (*self.problems, more)

    def claim(self, addr: int, size: int) -> None:
        first = addr & VTD_PAGE_MASK
        if addr + size <= first + VTD_PAGE_SIZE:
            self.pages.add(first)
        else:
            self.pages.update(range(first, addr + size, VTD_PAGE_SIZE))

    def read(self, addr: int, size: int, what: What, key: DevKey | None = None) -> bytes | None:
        self.claim(addr, size)
        hit = self.cache.get((addr, size))
        if hit is not None:
            return hit
        try:
            data = self.read_phys(addr, size)
        except PhysReadError as exc:
            kind = ProblemKind.OUTSIDE_RAM if exc.outside_ram else ProblemKind.UNREADABLE
            reason = exc.reason
        except (ParseError, OSError) as exc:  # a reader that does not raise PhysReadError
            kind, reason = ProblemKind.UNREADABLE, str(exc)
        else:
            if len(data) == size:
                self.cache[(addr, size)] = data
                return data
            kind, reason = ProblemKind.UNREADABLE, f"{len(data)} of {size} bytes read"
        name = _name(what)
        self.problem(kind, addr, name, f"{name} at {addr:#x}: {reason}", key)
        return None

    def aliased(self, addr: int, size: int, what: What, key: DevKey | None = None) -> bool:
        """True (and a problem) when ``[addr, addr + size)`` touches a root/context table."""
        first = addr & VTD_PAGE_MASK
        if addr + size <= first + VTD_PAGE_SIZE and first not in self.owner:
            return False  # the common case: one page, no table's
        for page in range(first, addr + size, VTD_PAGE_SIZE):
            other = self.owner.get(page)
            if other is not None:
                name = _name(what)
                self.problem(
                    ProblemKind.ALIAS,
                    addr,
                    name,
                    f"{name} at {addr:#x} lies in the page of the {other}; not decoded",
                    key,
                )
                return True
        return False

    # -- scalable mode: PASID directory and tables -----------------------------------------
    def pasid_walk(
        self, key: DevKey, context_lo: int
    ) -> tuple[dict[int, PasidEntry], dict[int, int], bool]:
        """Present PASID entries, present directory entries, and whether the walk completed
        (``context_lo``: the low word of the device's scalable context entry)."""
        entries: dict[int, PasidEntry] = {}
        tables: dict[int, int] = {}
        lim = self.limits
        dir_ptr = context_lo & _SM_PASIDDIRPTR
        n = 1 << (_SM_PDTS(context_lo) + 7)  # get_pasid_dir_size()
        complete = True

        def what() -> str:
            return f"PASID directory of {bdf_name(*key)}"

        if n > lim.max_pasid_dir_entries:
            self.problem(
                ProblemKind.LIMIT,
                dir_ptr,
                what(),
                f"{what()}: PDTS gives {n} entries; only the first {lim.max_pasid_dir_entries} "
                "are walked",
                key,
            )
            n = max(lim.max_pasid_dir_entries, 0)
            complete = False
        size = n * PASID_DIR_ENTRY
        if size == 0:
            return entries, tables, False
        if self.pasid_dir_bytes + size > lim.max_pasid_dir_bytes:
            self.stop_once(
                "dir_bytes",
                dir_ptr,
                what(),
                f"more than {lim.max_pasid_dir_bytes} bytes of PASID directories; "
                f"{what()} and later ones are not walked",
                key,
            )
            return entries, tables, False
        self.pasid_dir_bytes += size
        if self.aliased(dir_ptr, size, what, key):
            return entries, tables, False
        data = self.read(dir_ptr, size, what, key)
        if data is None:
            return entries, tables, False
        for dir_idx in _present(data, PASID_DIR_ENTRY):
            table = _PDE.unpack_from(data, dir_idx * PASID_DIR_ENTRY)[0] & VTD_PAGE_MASK
            tables[dir_idx] = table

            def twhat(dir_idx: int = dir_idx) -> str:
                return f"PASID table {dir_idx} of {bdf_name(*key)}"

            if (table, PASID_TABLE_SIZE) not in self.cache:
                if self.pasid_tables_tried >= lim.max_pasid_tables:
                    self.stop_once(
                        "pasid_tables",
                        table,
                        twhat(),
                        f"more than {lim.max_pasid_tables} PASID tables; {twhat()} and later "
                        "ones are not walked",
                        key,
                    )
                    return entries, tables, False
                self.pasid_tables_tried += 1
            if self.aliased(table, PASID_TABLE_SIZE, twhat, key):
                complete = False
                continue
            tdata = self.read(table, PASID_TABLE_SIZE, twhat, key)
            if tdata is None:
                complete = False
                continue
            base = dir_idx << PASID_PDE_SHIFT
            for idx in _present(tdata, PASID_ENTRY):
                entries[base + idx] = PasidEntry(
                    *_PASID_WORDS.unpack_from(tdata, idx * PASID_ENTRY)
                )
        return entries, tables, complete


def walk_unit_tables(
    read_phys: ReadPhys,
    root_table: int,
    scalable: bool,
    *,
    limits: WalkLimits | None = None,
) -> WalkResult:
    """Walk the tables of the unit whose root table is at ``root_table`` (RTADDR & ~0xfff).

    ``scalable`` is RTADDR_REG bit 10 (or what else proves the mode).  See the module docstring.
    """
    w = _Walker(read_phys, limits or WalkLimits())
    mode = Mode.SCALABLE if scalable else Mode.LEGACY
    devices: dict[DevKey, ContextInfo] = {}
    upper_words: dict[DevKey, tuple[int, int]] = {}
    pasid_tables: dict[DevKey, Mapping[int, int]] = {}
    incomplete: set[DevKey] = set()
    tables: dict[int, int] = {}
    unwalked: set[int] = set()

    def result(roots: tuple[RootEntry, ...]) -> WalkResult:
        return WalkResult(
            root_table=root_table,
            mode=mode,
            root_entries=roots,
            context_table_bits=frozenset(tables),
            context_tables=MappingProxyType(tables),
            unwalked_tables=frozenset(unwalked),
            devices=MappingProxyType(devices),
            sm_context_upper=MappingProxyType(upper_words),
            pasid_tables=MappingProxyType(pasid_tables),
            incomplete_devices=frozenset(incomplete),
            table_pages=frozenset(w.pages),
            problems=w.final_problems(),
        )

    data = w.read(root_table, ROOT_TABLE_SIZE, "root table")
    if data is None:
        return result(())
    words = _u64s(data)
    roots = tuple(map(RootEntry, words[0::2], words[1::2]))
    w.owner[root_table & VTD_PAGE_MASK] = "root table"

    # Bit (bus << 1) | upper of every present half, ascending: lo is the lower (legacy: the)
    # context table, hi the upper one in scalable mode only.
    present = [context_table_bit(bus, 0) for bus in _present(data, 16)]
    if scalable:
        present += [context_table_bit(bus, SM_UPPER_DEVFN) for bus in _present(data, 16, 8)]
        present.sort()
    for bit in present:
        tables[bit] = words[bit] & VTD_PAGE_MASK  # words[2 * bus + upper]

    # Claim every table page first, so that any later pointer into one of them is an alias.
    names: dict[int, str] = {}
    for n, bit in enumerate(tables):
        bus, ptr = bit >> 1, tables[bit]
        what = names[bit] = f"context table of bus {bus:02x}" + (
            f" ({table_half(bool(bit & 1))})" if scalable else ""
        )
        if n >= w.limits.max_context_tables:
            msg = f"more than {w.limits.max_context_tables} context tables; {what} and later "
            w.stop_once("context_tables", ptr, what, msg + "ones are not walked")
            unwalked.add(bit)
        elif w.aliased(ptr, CONTEXT_TABLE_SIZE, what):
            unwalked.add(bit)
        else:
            w.owner[ptr] = what

    for bit in [b for b in tables if b not in unwalked]:
        bus, ptr = bit >> 1, tables[bit]
        tdata = w.read(ptr, CONTEXT_TABLE_SIZE, names[bit])
        if tdata is None:
            unwalked.add(bit)
            continue
        if not scalable:
            for devfn in _present(tdata, LEGACY_CONTEXT_ENTRY):
                lo, hi = _LEGACY_CONTEXT.unpack_from(tdata, devfn * LEGACY_CONTEXT_ENTRY)
                devices[(bus, devfn)] = ContextInfo(
                    bus, devfn, Mode.LEGACY, hi, lo, did=_CTX_DID(hi), tt=_CTX_TT(lo)
                )
            continue
        base = SM_UPPER_DEVFN if bit & 1 else 0
        for idx in _present(tdata, SM_CONTEXT_ENTRY):
            lo, hi, w2, w3 = _SM_CONTEXT.unpack_from(tdata, idx * SM_CONTEXT_ENTRY)
            devfn = base + idx
            key = (bus, devfn)
            entries, dir_tables, done = w.pasid_walk(key, lo)
            if not done:
                incomplete.add(key)
            rid = entries.get(RID_PASID)
            devices[key] = ContextInfo(
                bus,
                devfn,
                Mode.SCALABLE,
                hi,
                lo,
                did=None if rid is None else _PASID_DID(rid.val1),
                pasid_dir=lo & _SM_PASIDDIRPTR,
                pdts=_SM_PDTS(lo),
                pre=bool(_SM_PRE(lo)),
                pasid_entries=MappingProxyType(entries),
            )
            upper_words[key] = (w2, w3)
            pasid_tables[key] = MappingProxyType(dir_tables)
    return result(roots)
