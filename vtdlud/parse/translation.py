"""``/sys/kernel/debug/iommu/intel/dmar_translation_struct``: parser and byte-exact render-back.

Current format (since the 2019 rework that added scalable mode; ``dmar_translation_struct_show()``
in drivers/iommu/intel/debugfs.c, reference §4.3), per active unit, either the single line
``"DMA Remapping is not enabled on %s\\n"`` (GSTS.TES clear; **no** blank line follows it: the
kernel ``continue``s before its ``'\\n'``) or::

    "IOMMU %s: Root Table Address: 0x%llx\\n"
    "B.D.F\\tRoot_entry\\t\\t\\t\\tContext_entry\\t\\t\\t\\tPASID\\tPASID_table_entry\\n"
    "%02x:%02x.%x\\t0x%016llx:0x%016llx\\t0x%016llx:0x%016llx\\t"   bus:dev.fn, root hi:lo, context hi:lo
        "%-6d\\t0x%016llx:0x%016llx:0x%016llx\\n"                     PASID, PASID entry val[2]:val[1]:val[0]
    "\\n"

The kernel walks bus 0..255, devfn 0..255, and stops a bus at the first devfn whose context table
is missing.  A present context entry gives one row with PASID -1 and three zero qwords when
RTADDR_REG.SMT is clear (legacy mode), and one row per *present* PASID entry, in PASID order, when
it is set (scalable mode; a device without a present PASID entry gives no row).  The walk holds
``iommu->lock``, so all rows of a bus show the same root entry and all rows of a device the same
context entry.  The parser checks all of this; a text that breaks it is not kernel output and
raises :class:`ParseError` at the offending row (e.g. rows out of walk order, a non-present entry,
legacy and scalable rows in one unit).

Older formats raise :class:`UnsupportedFormat`: the per-bus format of Linux <= 5.1 (``Root Table
Address:%llx``, ``Root Table Entries:``, `` Bus: %d H: %llx L: %llx``, ``Context Table Entries for
Bus:``, ``Extended Root Table``) and the intermediate format without PASID columns (header
``B.D.F\\tRoot_entry\\t\\t\\t\\tContext_entry``), a step of the 2019 patch series that apparently
never reached a release.

Text rules (empty text = zero units, final newline, truncation) are those of
:mod:`vtdlud.parse.regset`; here a ``DMA Remapping is not enabled`` line is a complete unit by
itself, so a text cut right after it is also a valid shorter file.  Every accepted line is
re-rendered and compared, so ``render(parse(text)) == text`` for every accepted text.
"""

from __future__ import annotations

import re

from vtdlud.errors import ParseError, UnsupportedFormat
from vtdlud.model.debugfs import NO_PASID, TranslationRow, TranslationStruct, TranslationUnit
from vtdlud.model.tables import (
    PASID_PDE_SHIFT,
    SM_UPPER_DEVFN,
    PasidEntry,
    RootEntry,
)
from vtdlud.parse.regset import U64_MAX, UNIT_NAME, hex_u64, shown, split_lines

TRANSLATION_HEADER = "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry"
_HEADER_NO_PASID = "B.D.F\tRoot_entry\t\t\t\tContext_entry"  # 2019 patch series: no PASID columns
PRE_5_2_REASON = "dmar_translation_struct in the pre-5.2 per-bus format is not supported"
NO_PASID_COLUMNS_REASON = "dmar_translation_struct without PASID columns is not supported"

_ROOT_RE = re.compile(rf"IOMMU ({UNIT_NAME}): Root Table Address: 0x([0-9a-f]+)")
_DISABLED_RE = re.compile(rf"DMA Remapping is not enabled on ({UNIT_NAME})")
_UNIT_NAME_RE = re.compile(UNIT_NAME)
_Q = "0x([0-9a-f]{16})"
_ROW_RE = re.compile(
    rf"([0-9a-f]{{2}}):([0-9a-f]{{2}})\.([0-7])\t{_Q}:{_Q}\t{_Q}:{_Q}\t(-?[0-9]{{1,10}}) *\t{_Q}:{_Q}:{_Q}"
)
# Lines only the <= 5.1 formats print (4.20-5.1 and the earlier extended-root variant).
_PRE_5_2_RE = re.compile(
    r"IOMMU [^ ]+: .*Root Table Addr(?:ess)?:[0-9a-f]"
    r"|(?:Extended )?Root Table Entries:"
    r"| ?Bus:? [0-9]+ [HL]: "
    r"|.*[Cc]ontext [Tt]able [Ee]ntries for Bus: "
    r"|  Entry\tB:D\.F\tHigh\tLow"
    r"|\[entry\]\t"
    r"|.*Extended Root Table"
)

_EXPECT_UNIT = (
    "'IOMMU dmarN: Root Table Address: 0x<hex>' or 'DMA Remapping is not enabled on dmarN'"
)
_EXPECT_ROW = (
    "a row 'bus:dev.fn\\t0xROOT_HI:0xROOT_LO\\t0xCTX_HI:0xCTX_LO\\tPASID\\t0xVAL2:0xVAL1:0xVAL0'"
)


def render_row(row: TranslationRow) -> str:
    """One row as ``print_tbl_walk()`` prints it (without the newline)."""
    pe = row.pasid_entry
    return (
        f"{row.bdf}"
        f"\t0x{row.root.hi:016x}:0x{row.root.lo:016x}"
        f"\t0x{row.context_hi:016x}:0x{row.context_lo:016x}"
        f"\t{row.pasid:<6d}\t0x{pe.val2:016x}:0x{pe.val1:016x}:0x{pe.val0:016x}"
    )


def row_problem(row: TranslationRow, prev: TranslationRow | None) -> str | None:
    """Why the kernel could not have printed ``row`` after ``prev`` (same unit), or None."""
    qwords = (row.root.lo, row.root.hi, row.context_lo, row.context_hi)
    pe = row.pasid_entry
    if not (0 <= row.bus <= 0xFF and 0 <= row.devfn <= 0xFF):
        return "bus or devfn out of range"
    if not all(0 <= q <= U64_MAX for q in (*qwords, pe.val0, pe.val1, pe.val2)):
        return "an entry qword is out of the u64 range"
    if not row.context.present:
        return f"{row.bdf}: the context entry is not present (the kernel prints present ones only)"
    if not row.root.lctp_present:
        return f"{row.bdf}: root lo bit 0 clear, but the kernel stops a bus at a missing table"
    if row.pasid == NO_PASID:
        if pe != PasidEntry(0, 0, 0):
            return f"{row.bdf}: a legacy row (PASID -1) with a non-zero PASID entry"
    else:
        if row.pasid < 0:
            return f"{row.bdf}: PASID {row.pasid} is negative and not -1"
        if row.pasid >= row.sm_context.pasid_dir_entries << PASID_PDE_SHIFT:
            return f"{row.bdf}: PASID {row.pasid} lies beyond the PASID directory size (PDTS)"
        if not pe.present:
            return f"{row.bdf}: PASID {row.pasid} entry not present (only present ones print)"
        if row.devfn >= SM_UPPER_DEVFN and not row.root.uctp_present:
            return f"{row.bdf}: devfn >= 0x80 but root hi bit 0 (upper table present) is clear"
    if prev is None:
        return None
    if prev.is_scalable != row.is_scalable:
        return "legacy rows (PASID -1) and scalable rows mixed in one unit"
    if (row.bus, row.devfn, row.pasid) <= (prev.bus, prev.devfn, prev.pasid):
        return f"{row.bdf}: rows out of the kernel's walk order (bus, devfn, PASID ascending)"
    if row.bus == prev.bus and row.root != prev.root:
        return f"{row.bdf}: root entry differs from the previous row on bus {row.bus:02x}"
    same_dev = (row.bus, row.devfn) == (prev.bus, prev.devfn)
    if same_dev and (row.context_lo, row.context_hi) != (prev.context_lo, prev.context_hi):
        return f"{row.bdf}: context entry differs between rows of the same device"
    return None


def _parse_row(line: str, lineno: int, unit: str) -> TranslationRow:
    m = _ROW_RE.fullmatch(line)
    if m is None:
        raise ParseError(
            f"expected {_EXPECT_ROW} or the blank line that ends unit {unit}, got {shown(line)}",
            line=lineno,
        )
    slot = int(m[2], 16)
    if slot > 0x1F:
        raise ParseError(f"device number {m[2]} > 0x1f in {shown(line)}", line=lineno)
    q = [int(m[g], 16) for g in (4, 5, 6, 7, 9, 10, 11)]
    row = TranslationRow(
        bus=int(m[1], 16),
        devfn=slot << 3 | int(m[3]),
        root=RootEntry(lo=q[1], hi=q[0]),
        context_hi=q[2],
        context_lo=q[3],
        pasid=int(m[8]),
        pasid_entry=PasidEntry(val0=q[6], val1=q[5], val2=q[4]),
    )
    if render_row(row) != line:
        raise ParseError(f"row not in the kernel's printf format: {shown(line)}", line=lineno)
    return row


def _parse(lines: list[str]) -> TranslationStruct:
    units: list[TranslationUnit] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _DISABLED_RE.fullmatch(line) or _ROOT_RE.fullmatch(line)
        if m is None:
            raise ParseError(f"expected {_EXPECT_UNIT}, got {shown(line)}", line=i + 1)
        name = m[1]
        if any(u.name == name for u in units):
            raise ParseError(f"unit {name} listed twice", line=i + 1)
        i += 1
        if m.re is _DISABLED_RE:
            units.append(TranslationUnit(name, False, None, ()))
            continue
        root_table = hex_u64(m[2], "root table address", i)
        if i >= len(lines):
            raise ParseError(f"text ends after the first line of unit {name}", line=i)
        if lines[i] == _HEADER_NO_PASID:
            raise UnsupportedFormat(NO_PASID_COLUMNS_REASON, line=i + 1)
        if lines[i] != TRANSLATION_HEADER:
            raise ParseError(
                f"expected the header line {TRANSLATION_HEADER!r}, got {shown(lines[i])}",
                line=i + 1,
            )
        i += 1
        rows: list[TranslationRow] = []
        while True:
            if i >= len(lines):
                raise ParseError(
                    f"text ends inside unit {name}: expected {_EXPECT_ROW} or the blank line "
                    "that ends the unit",
                    line=i,
                )
            if lines[i] == "":
                break
            row = _parse_row(lines[i], i + 1, name)
            problem = row_problem(row, rows[-1] if rows else None)
            if problem is not None:
                raise ParseError(f"unit {name}: {problem}", line=i + 1)
            rows.append(row)
            i += 1
        units.append(TranslationUnit(name, True, root_table, tuple(rows)))
        i += 1  # the blank line ending the unit
    return TranslationStruct(tuple(units))


def parse_dmar_translation_struct(text: str) -> TranslationStruct:
    """Parse ``dmar_translation_struct`` (current format); see the module docstring.

    A text that fails to parse and contains a line only the <= 5.1 formats print raises
    :class:`UnsupportedFormat` on the first such line, whichever line the failure was on (the
    oldest variant even starts with a blank line).
    """
    try:
        return _parse(split_lines(text))
    except UnsupportedFormat:
        raise
    except ParseError as err:
        for n, line in enumerate(text.split("\n"), 1):
            if _PRE_5_2_RE.match(line):
                raise UnsupportedFormat(PRE_5_2_REASON, line=n) from err
        raise


def render_dmar_translation_struct(ts: TranslationStruct) -> str:
    """The file exactly as the kernel prints ``ts`` (ValueError if it could not print it)."""
    out: list[str] = []
    names: set[str] = set()
    for unit in ts.units:
        if _UNIT_NAME_RE.fullmatch(unit.name) is None or unit.name in names:
            raise ValueError(f"unit name {unit.name!r} is not dmarN or is listed twice")
        names.add(unit.name)
        if not unit.enabled:
            if unit.root_table is not None or unit.rows:
                raise ValueError(f"unit {unit.name}: not enabled, yet a root table or rows")
            out.append(f"DMA Remapping is not enabled on {unit.name}\n")
            continue
        if unit.root_table is None or not 0 <= unit.root_table <= U64_MAX:
            raise ValueError(f"unit {unit.name}: enabled needs a root table address in u64 range")
        out.append(f"IOMMU {unit.name}: Root Table Address: 0x{unit.root_table:x}\n")
        out.append(TRANSLATION_HEADER + "\n")
        prev: TranslationRow | None = None
        for row in unit.rows:
            problem = row_problem(row, prev)
            if problem is not None:
                raise ValueError(f"unit {unit.name}: {problem}")
            out.append(render_row(row) + "\n")
            prev = row
        out.append("\n")
    return "".join(out)
