"""How much vtdlud reads of each kind of input, and how big a bundle may be.

Every input is capped by its kind (what the kernel can produce, with room to spare); a file
beyond its cap is a VTD051 finding naming it and the cap, read no further.  On the live host
the kernel bounds these files itself; the caps matter for a directory root or a bundle, where a
file can be anything (a 900 MiB "debugfs dump", a character device that never ends).

===================================  =============================================
input                                cap
===================================  =============================================
sysfs and procfs attributes          64 KiB (a text attribute is one PAGE_SIZE
                                     seq_file record; PCI ``config`` is 4 KiB)
ACPI tables (DMAR)                   1 MiB (real DMAR tables are a few KiB)
debugfs dumps and KHO blobs          4 MiB + 16 KiB per PCI device + 64 KiB per
                                     DMAR unit of the host being read
bundle's process facts, the ledger,  16 MiB
cached reports (JSON)
policy files (TOML)                  1 MiB
===================================  =============================================

A bundle may hold at most :data:`MAX_MEMBERS` members and :data:`MAX_BUNDLE_BYTES` bytes of
member data (declared sizes, counted while the archive is read, before any is written), and no
tar header (pax or GNU long-name data) larger than :data:`MAX_HEADER_BYTES`.
"""

from __future__ import annotations

import errno

KiB = 1 << 10
MiB = 1 << 20

ATTRIBUTE_CAP = 64 * KiB
ACPI_TABLE_CAP = 1 * MiB
DEBUGFS_BASE_CAP = 4 * MiB
DEBUGFS_PER_DEVICE = 16 * KiB
DEBUGFS_PER_UNIT = 64 * KiB
JSON_CAP = 16 * MiB
CONFIG_CAP = 1 * MiB

MAX_MEMBERS = 100_000
MAX_BUNDLE_BYTES = 256 * MiB
MAX_HEADER_BYTES = 1 * MiB
# The most a bundle member of each kind can usefully hold: one byte past the largest cap its
# kind can reach (a host of 65,536 devices per segment and 8 segments), so that reading it
# still reports the file as too large.  proc/kcore (the --memory core) has only the total cap.
MAX_DEVICES = 8 * 65536
MAX_UNITS = 1024


def debugfs_cap(units: int, devices: int) -> int:
    """The cap of a debugfs dump (dmar_translation_struct, iommu_regset) or KHO blob, scaled to
    the host: its lines grow with the DMAR units and the PCI devices behind them."""
    return DEBUGFS_BASE_CAP + DEBUGFS_PER_UNIT * units + DEBUGFS_PER_DEVICE * devices


def input_cap(rel: str, debugfs: int) -> int | None:
    """The cap of the root-relative input ``rel``; ``debugfs`` is the host's debugfs cap.
    None: read by other means, with bounds of its own (proc/kcore is pread page by page)."""
    if rel == "proc/kcore":
        return None
    if rel.startswith("sys/kernel/debug/"):
        return debugfs
    if rel.startswith("sys/firmware/acpi/tables/"):
        return ACPI_TABLE_CAP
    if rel.startswith(("sys/", "proc/", "dev/")):
        return ATTRIBUTE_CAP
    return JSON_CAP  # the bundle's own files (vtdlud-processes.json, the manifest)


def member_cap(rel: str) -> int | None:
    """The most of a bundle member worth unpacking (see :data:`MAX_DEVICES`)."""
    cap = input_cap(rel, debugfs_cap(MAX_UNITS, MAX_DEVICES))
    return None if cap is None else cap + 1


class InputTooLarge(OSError):
    """An input larger than its cap (EFBIG; ``strerror`` says the cap)."""

    def __init__(self, cap: int, path: str) -> None:
        super().__init__(
            errno.EFBIG, f"larger than {_size(cap)}, the most vtdlud reads of it", path
        )
        self.cap = cap


def _size(n: int) -> str:
    if n % MiB == 0:
        return f"{n // MiB} MiB"
    if n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} bytes"
