"""Record fields the kernel relies on but the mirror does not derive from the live tables:
each value the next kernel would misread is a finding (issue #11 item 7).

- ``hdr.flags``: only ``IOMMU_SER_FLAG_DELETED`` and ``IOMMU_SER_FLAG_INCOMING`` exist; other
  bits are no record the kernel wrote (VTD003).
- ``devid`` = ``pci_dev_id()`` = bus << 8 | devfn, 16 bits in a u32: a larger value names no PCI
  device, and read as a BDF it would be another one (VTD003).
- ``hdr.ref_count`` of a device record: created at 1 and never counted up, a device being
  preserved once [I]; a domain record's count is at least 1 while live (the kernel deletes a
  record whose count drops to 0) and at most the live device records that point at it [I]
  (VTD003: a count the next unpreserve never brings to 0, or one that frees it while in use).
- ``intel.restored`` of a hw record before the kexec: 0 (the new kernel sets it once it has
  reclaimed the root and context table pages, and skips reclaiming them when it is already 1:
  VTD003, checked through the mirror).
- ``vasz`` of a domain record: the VA size of its page table, 12 + 9 x levels, levels =
  ``top_level`` + 1 [I] (VTD027: the restored domain's geometry would not be its table's).
- ``intel.max_pasid`` of a device record (scalable mode): ``intel_pasid_restore_table()``
  BUG()s when it differs from the restored device's, which is the size its PASID directory
  covers, 64 PASIDs per directory entry: 1 << (PDTS + 13) from the live context entry; in any
  case a power of two of at most 2^20 PASIDs when there is a PASID directory (VTD024).
"""

from __future__ import annotations

from vtdlud.model.abi import (
    IOMMU_SER_FLAG_DELETED,
    IOMMU_SER_FLAG_INCOMING,
    IommuDeviceSerV1,
    IommuDomainSer,
    IommuHdrSer,
)

KNOWN_FLAGS = IOMMU_SER_FLAG_DELETED | IOMMU_SER_FLAG_INCOMING
MAX_DEVID = 0xFFFF  # bus << 8 | devfn
PASID_BITS = 20
PASIDS_PER_DIR_ENTRY_SHIFT = 6  # PASID_PDE_SHIFT
PDTS_BASE = 7  # a PASID directory has 1 << (PDTS + 7) entries
VA_PAGE_SHIFT, VA_LEVEL_BITS = 12, 9


def flags_problem(hdr: IommuHdrSer) -> str | None:
    unknown = hdr.flags & ~KNOWN_FLAGS
    if unknown:
        return (
            f"hdr.flags {hdr.flags:#x} has bits no kernel sets ({unknown:#x}; only DELETED 0x1 "
            "and INCOMING 0x2 exist)"
        )
    return None


def devid_problem(devid: int) -> str | None:
    if devid > MAX_DEVID:
        return (
            f"devid {devid:#x} is wider than bus << 8 | devfn (16 bits): it names no PCI device, "
            f"and read as one it would be {devid >> 8 & 0xFF:02x}:{devid >> 3 & 0x1F:02x}."
            f"{devid & 7:x}"
        )
    return None


def device_ref_problem(hdr: IommuHdrSer) -> str | None:
    if hdr.ref_count != 1:
        return f"hdr.ref_count {hdr.ref_count}, expected 1 (a device is preserved once [I]): " + (
            "a live record nothing counts"
            if hdr.ref_count == 0
            else "unpreserving it would leave the record live"
        )
    return None


def domain_ref_problem(hdr: IommuHdrSer, users: int) -> str | None:
    if hdr.ref_count == 0:
        return "hdr.ref_count 0 on a live record: the kernel deletes a record at 0"
    if users and hdr.ref_count > users:
        return (
            f"hdr.ref_count {hdr.ref_count}, more than the {users} live device record(s) "
            "pointing at it [I]: unpreserving them all would never delete it"
        )
    return None


def vasz_problem(rec: IommuDomainSer) -> tuple[int, int] | None:
    """(actual, expected) when ``vasz`` is not the VA size of a ``top_level`` + 1 level table."""
    if rec.top_table_phys == 0:
        return None  # no second-level table (identity or first-level): nothing to compare
    expected = VA_PAGE_SHIFT + VA_LEVEL_BITS * (rec.top_level + 1)
    return None if rec.vasz == expected else (rec.vasz, expected)


def max_pasid_problem(rec: IommuDeviceSerV1, pdts: int | None) -> str | None:
    """Why ``intel.max_pasid`` is wrong (``pdts``: the live context entry's, None: unseen)."""
    pasid_table, max_pasid = rec.intel.pasid_table, rec.intel.max_pasid
    if pasid_table == 0:
        return None  # legacy mode, or no PASID directory: nothing the kernel restores
    if max_pasid == 0 or max_pasid & (max_pasid - 1) or max_pasid > 1 << PASID_BITS:
        return (
            f"intel.max_pasid {max_pasid:#x} is no PASID directory's size (a power of two of "
            f"at most {1 << PASID_BITS:#x})"
        )
    if pdts is not None:
        covered = 1 << (pdts + PDTS_BASE + PASIDS_PER_DIR_ENTRY_SHIFT)
        if max_pasid != covered:
            return (
                f"intel.max_pasid {max_pasid:#x}, but the live PASID directory (PDTS {pdts}) "
                f"covers {covered:#x}: intel_pasid_restore_table() BUG()s on the difference"
            )
    return None
