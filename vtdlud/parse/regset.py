"""``/sys/kernel/debug/iommu/intel/iommu_regset``: parser and byte-exact render-back.

The kernel (``iommu_regset_show()`` in drivers/iommu/intel/debugfs.c, reference §4.2) prints, for
each active unit::

    "IOMMU: %s Register Base Address: %llx\\n"     unit name (dmarN), DRHD base, no 0x
    "Name\\t\\t\\tOffset\\t\\tContents\\n"
    "%-16s\\t0x%02x\\t\\t0x%016llx\\n"                 one line per register (32-bit ones too)
    "\\n"

and, for a unit whose DRHD base address is 0, ``"IOMMU: Invalid base address\\n"`` and stops.  The
show function then returns -EINVAL, and seq_file discards the buffer of a failed show, so a
``read()`` of the file fails with EINVAL and that line should never reach userspace (inferred from
fs/seq_file.c); it is parsed anyway (:attr:`Regset.invalid_base_address`) so that a simulated host
can write it.

The register list is not fixed: Linux 6.12 (the real captures) prints no VCCAP/VCMD/VCRSP lines,
which older kernels (reference §4.2) do.  Any name shaped like a ``DMAR_<name>_REG`` macro is
accepted; the order of the lines is kept.

Text rules shared with :mod:`vtdlud.parse.translation` (see :func:`split_lines`):

- Empty text is legal and means zero units: the file is empty when no unit is active.
- The text must end with ``"\\n"``; a last line without one was cut short (ParseError on it).
- Every unit ends with its blank line.  So a text cut at any line boundary inside a unit fails with
  a ParseError naming its last line, and a text cut exactly after a unit's blank line parses as a
  shorter file with fewer units: nothing in the text can tell it from a host with fewer units.

Every accepted line is re-rendered and compared with the input, so anything the kernel's printf
formats would not produce (upper-case hex, wrong padding, a missing tab) is a ParseError, and
``render_iommu_regset(parse_iommu_regset(text)) == text`` holds for every accepted text.
"""

from __future__ import annotations

import re

from vtdlud.errors import ParseError
from vtdlud.model.debugfs import Register, Regset, RegsetUnit

U64_MAX = (1 << 64) - 1
REG_OFFSET_MAX = 0xFFFF  # MMIO offsets within the unit's register page(s); the largest is 0xe30

REGSET_HEADER = "Name\t\t\tOffset\t\tContents"
INVALID_BASE_LINE = "IOMMU: Invalid base address"
UNIT_NAME = r"dmar[0-9]+"  # iommu->name is "dmar%d"

_UNIT_RE = re.compile(rf"IOMMU: ({UNIT_NAME}) Register Base Address: ([0-9a-f]+)")
_UNIT_NAME_RE = re.compile(UNIT_NAME)
_REG_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")
_REG_RE = re.compile(r"([A-Z][A-Z0-9_]*) *\t0x([0-9a-f]+)\t\t0x([0-9a-f]+)")

_EXPECT_UNIT = "'IOMMU: dmarN Register Base Address: <hex>' or 'IOMMU: Invalid base address'"
_EXPECT_REG = "a register line '<NAME>\\t0x<offset>\\t\\t0x<16 hex digits>'"


def shown(line: str) -> str:
    """A line quoted for an error message (shortened)."""
    return repr(line[:60] + ("..." if len(line) > 60 else ""))


def split_lines(text: str) -> list[str]:
    """The lines of a seq_file text, without their ``\\n``.

    ``""`` gives no lines.  A text whose last line has no ``\\n`` was cut short: ParseError on that
    line.  Only ``\\n`` separates lines (``str.splitlines`` would also split on ``\\r``, ``\\x1c``
    and others and shift every line number after them).
    """
    if text == "":
        return []
    lines = text.split("\n")
    if lines[-1] != "":
        raise ParseError(
            f"the text ends without a newline, so its last line is cut short: {shown(lines[-1])}",
            line=len(lines),
        )
    return lines[:-1]


def hex_u64(digits: str, what: str, lineno: int) -> int:
    """``%llx`` digits (lower case, no leading zeros) -> int, ParseError otherwise."""
    value = int(digits, 16)
    if value > U64_MAX or f"{value:x}" != digits:
        raise ParseError(f"{what} {digits!r} is not in the kernel's '%llx' format", line=lineno)
    return value


def render_register(reg: Register) -> str:
    """``"%-16s\\t0x%02x\\t\\t0x%016llx"`` (without the newline)."""
    return f"{reg.name:<16s}\t0x{reg.offset:02x}\t\t0x{reg.value:016x}"


def _parse_register(line: str, lineno: int, unit: str) -> Register:
    m = _REG_RE.fullmatch(line)
    if m is None:
        raise ParseError(
            f"expected {_EXPECT_REG} or the blank line that ends unit {unit}, got {shown(line)}",
            line=lineno,
        )
    reg = Register(m[1], int(m[2], 16), int(m[3], 16))
    if reg.value > U64_MAX or reg.offset > REG_OFFSET_MAX or render_register(reg) != line:
        raise ParseError(
            f"register line not in the kernel's '%-16s\\t0x%02x\\t\\t0x%016llx' format: {shown(line)}",
            line=lineno,
        )
    return reg


def parse_iommu_regset(text: str) -> Regset:
    """Parse ``iommu_regset``; anything the kernel would not print raises :class:`ParseError`."""
    lines = split_lines(text)
    units: list[RegsetUnit] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == INVALID_BASE_LINE:
            if i + 1 < len(lines):
                raise ParseError(
                    f"text after {INVALID_BASE_LINE!r}: the kernel stops at that line",
                    line=i + 2,
                )
            return Regset(tuple(units), invalid_base_address=True)
        m = _UNIT_RE.fullmatch(line)
        if m is None:
            raise ParseError(f"expected {_EXPECT_UNIT}, got {shown(line)}", line=i + 1)
        name = m[1]
        base = hex_u64(m[2], "register base address", i + 1)
        if base == 0:
            raise ParseError(
                f"unit {name} has register base address 0: the kernel prints "
                f"{INVALID_BASE_LINE!r} instead",
                line=i + 1,
            )
        if any(u.name == name or u.reg_base_addr == base for u in units):
            raise ParseError(f"unit {name} / base {base:#x} listed twice", line=i + 1)
        i += 1
        if i >= len(lines):
            raise ParseError(f"text ends after the first line of unit {name}", line=i)
        if lines[i] != REGSET_HEADER:
            raise ParseError(
                f"expected the header line {REGSET_HEADER!r}, got {shown(lines[i])}", line=i + 1
            )
        i += 1
        regs: list[Register] = []
        while True:
            if i >= len(lines):
                raise ParseError(
                    f"text ends inside unit {name}: expected {_EXPECT_REG} or the blank line "
                    "that ends the unit",
                    line=i,
                )
            if lines[i] == "":
                break
            reg = _parse_register(lines[i], i + 1, name)
            if any(r.name == reg.name for r in regs):
                raise ParseError(f"register {reg.name} listed twice in unit {name}", line=i + 1)
            regs.append(reg)
            i += 1
        if not regs:
            raise ParseError(f"unit {name} lists no registers", line=i + 1)
        units.append(RegsetUnit(name, base, tuple(regs)))
        i += 1  # the blank line ending the unit
    return Regset(tuple(units))


def _check_unit(unit: RegsetUnit) -> None:
    if _UNIT_NAME_RE.fullmatch(unit.name) is None:
        raise ValueError(f"unit name {unit.name!r} is not dmarN")
    if not 0 < unit.reg_base_addr <= U64_MAX:
        raise ValueError(f"unit {unit.name}: base address {unit.reg_base_addr:#x} out of range")
    if not unit.registers:
        raise ValueError(f"unit {unit.name} has no registers")
    names = [r.name for r in unit.registers]
    if len(set(names)) != len(names):
        raise ValueError(f"unit {unit.name} lists a register twice")
    for reg in unit.registers:
        if _REG_NAME_RE.fullmatch(reg.name) is None:
            raise ValueError(f"unit {unit.name}: register name {reg.name!r} is not a DMAR name")
        if not 0 <= reg.offset <= REG_OFFSET_MAX or not 0 <= reg.value <= U64_MAX:
            raise ValueError(f"unit {unit.name}: register {reg.name} offset/value out of range")


def render_iommu_regset(regset: Regset) -> str:
    """The file exactly as the kernel prints ``regset`` (ValueError if it could not print it)."""
    out: list[str] = []
    seen: set[str | int] = set()
    for unit in regset.units:
        _check_unit(unit)
        if unit.name in seen or unit.reg_base_addr in seen:
            raise ValueError(f"unit {unit.name} / base {unit.reg_base_addr:#x} listed twice")
        seen |= {unit.name, unit.reg_base_addr}
        out.append(f"IOMMU: {unit.name} Register Base Address: {unit.reg_base_addr:x}\n")
        out.append(REGSET_HEADER + "\n")
        out.extend(render_register(reg) + "\n" for reg in unit.registers)
        out.append("\n")
    if regset.invalid_base_address:
        out.append(INVALID_BASE_LINE + "\n")
    return "".join(out)
