"""The kernel log as ``/dev/kmsg`` gives it: records into text lines, and the DMA remapping
fault lines among them (the post-kexec check's VTD063)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vtdlud.model.snapshot import DmarFault

# "DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0x... [fault reason 0x..] ..."
# (older kernels: "[DMA Write] Request device [...] fault addr ...").  INTR-REMAP is no DMA.
_FAULT = re.compile(
    r"DMAR: \[(DMA Read|DMA Write)[^\]]*\] Request device "
    r"\[([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])\]"
)


def kmsg_lines(data: bytes) -> tuple[str, ...]:
    """The text of each record (after ``prefix;``); the records' dictionaries (`` KEY=value``
    continuation lines) are dropped."""
    lines = []
    for record in data.decode("utf-8", "replace").split("\n"):
        if record and not record.startswith(" "):  # " KEY=value": a record's dictionary
            lines.append(record.partition(";")[2] if ";" in record else record)
    return tuple(lines)


def parse_dmar_faults(lines: Sequence[str]) -> list[DmarFault]:
    """The DMA remapping fault lines of a kernel log (format of ``dmar_fault_do_one()`` in
    drivers/iommu/intel/dmar.c)."""
    out = []
    for line in lines:
        m = _FAULT.search(line)
        if m is not None:
            bus, dev, fn = int(m.group(2), 16), int(m.group(3), 16), int(m.group(4))
            out.append(DmarFault(bus, dev << 3 | fn, line.strip()))
    return out
