"""sysfs and procfs attribute parsers: text in, values out, :class:`ParseError` on anything else.

Formats (reference/kernel-interfaces.md §5): intel-iommu ``address``/``cap``/``ecap`` are
``"%llx\\n"`` (no 0x), ``version`` is ``"%d:%d\\n"``, ``domains_*`` are decimal;
iommu_groups ``reserved_regions`` lines are ``"0x%016llx 0x%016llx %s\\n"``.
"""

from __future__ import annotations

import re

from vtdlud.errors import ParseError
from vtdlud.model.pci import Bdf
from vtdlud.model.snapshot import ReservedRegion

_HEX = re.compile(r"(?:0x)?([0-9a-fA-F]{1,16})")
_DEC = re.compile(r"-?[0-9]+")
_VERSION = re.compile(r"([0-9]+):([0-9]+)")
_BDF = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])")
_REGION = re.compile(r"0x([0-9a-f]{16}) 0x([0-9a-f]{16}) (\S+)")

RESERVED_REGION_TYPES = ("direct", "direct-relaxable", "reserved", "msi")
IOMMU_GROUP_TYPES = ("blocked", "identity", "unmanaged", "DMA", "DMA-FQ", "DMA-SQ", "unknown")


def _one_line(text: str, what: str) -> str:
    if not text:
        raise ParseError(f"empty file, expected {what}", line=1)
    if "\x00" in text:
        raise ParseError(f"binary data, expected {what}", line=1)
    lines = text.split("\n")
    if len(lines) > 2 or (len(lines) == 2 and lines[1] != ""):
        raise ParseError(f"more than one line, expected {what}", line=2)
    return lines[0]


def parse_hex(text: str, what: str = "a hexadecimal value") -> int:
    """``"%llx\\n"`` (sysfs address/cap/ecap); a 0x prefix is accepted."""
    line = _one_line(text, what)
    m = _HEX.fullmatch(line.strip())
    if m is None:
        raise ParseError(f"{line.strip()[:40]!r} is not {what}", line=1)
    return int(m.group(1), 16)


def parse_dec(text: str, what: str = "a decimal integer") -> int:
    line = _one_line(text, what)
    if _DEC.fullmatch(line.strip()) is None:
        raise ParseError(f"{line.strip()[:40]!r} is not {what}", line=1)
    return int(line.strip())


def parse_version(text: str) -> str:
    """intel-iommu ``version``: ``"%d:%d\\n"`` (DMAR_VER_MAJOR:DMAR_VER_MINOR)."""
    line = _one_line(text, "a version 'major:minor'").strip()
    if _VERSION.fullmatch(line) is None:
        raise ParseError(f"{line[:40]!r} is not a version 'major:minor'", line=1)
    return line


def parse_bool01(text: str, what: str) -> bool:
    value = parse_dec(text, what)
    if value not in (0, 1):
        raise ParseError(f"{value} is not 0 or 1 ({what})", line=1)
    return bool(value)


def parse_word(text: str, what: str) -> str:
    line = _one_line(text, what).strip()
    if not line or any(c.isspace() for c in line):
        raise ParseError(f"{line[:40]!r} is not {what}", line=1)
    return line


def parse_cmdline(text: str) -> tuple[str, ...]:
    """/proc/cmdline -> the parameters (the kernel's own quoting is kept as-is)."""
    if "\x00" in text:
        raise ParseError("binary data, expected the kernel command line", line=1)
    return tuple(text.split())


def cmdline_value(params: tuple[str, ...], key: str) -> str | None:
    """Last value of ``key=`` (the kernel takes the last); ``""`` for a bare ``key``."""
    value: str | None = None
    for p in params:
        name, eq, val = p.partition("=")
        if name == key:
            value = val if eq else ""
    return value


def kstrtobool(value: str | None) -> bool | None:
    """The kernel's ``kstrtobool()`` on a boot parameter value: None when it does not parse."""
    if not value:
        return None
    v = value.lower()
    if v[0] in "y1" or v.startswith("on"):
        return True
    if v[0] in "n0" or v.startswith("of"):
        return False
    return None


def parse_bdf(name: str) -> Bdf:
    """A PCI device name as sysfs spells it: ``0000:00:02.0``."""
    m = _BDF.fullmatch(name)
    if m is None:
        raise ParseError(f"{name[:40]!r} is not a PCI device name (expected DDDD:BB:DD.F)")
    return Bdf(int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4)))


def parse_reserved_regions(text: str) -> tuple[ReservedRegion, ...]:
    out = []
    if "\x00" in text:
        raise ParseError("binary data, expected reserved regions", line=1)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        m = _REGION.fullmatch(line)
        if m is None or m.group(3) not in RESERVED_REGION_TYPES:
            raise ParseError(
                f"{line[:60]!r} is not '0x<start> 0x<end> direct|direct-relaxable|reserved|msi'",
                line=n,
            )
        out.append(ReservedRegion(int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    return tuple(out)


def parse_group_type(text: str) -> str:
    value = parse_word(text, "an iommu group type")
    if value not in IOMMU_GROUP_TYPES:
        raise ParseError(f"{value!r} is not one of {', '.join(IOMMU_GROUP_TYPES)}", line=1)
    return value


def parse_lockdown(text: str) -> str:
    """/sys/kernel/security/lockdown: ``none [integrity] confidentiality`` -> ``integrity``."""
    m = re.search(r"\[(\w+)\]", text)
    if m is None:
        raise ParseError("no [selected] lockdown mode", line=1)
    return m.group(1)
