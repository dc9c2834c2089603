"""PCI configuration space (sysfs ``config``): the facts the live-update preconditions need.

Offsets and IDs are the kernel's ``include/uapi/linux/pci_regs.h`` names.  Reading ``config``
as a non-root user gives only the first 64 bytes (256 with CAP_SYS_ADMIN on some kernels): the
extended capabilities (PRI, ATS, PASID) are then unknown (None), never "absent".
"""

from __future__ import annotations

from vtdlud.errors import ParseError
from vtdlud.model.pci import (
    PCI_ATS_CTRL,
    PCI_ATS_CTRL_ENABLE,
    PCI_CAP_ID_EXP,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_TYPE_SHIFT,
    PCI_EXT_CAP_ID_ATS,
    PCI_EXT_CAP_ID_PASID,
    PCI_EXT_CAP_ID_PRI,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_MASK,
    PCI_PASID_CTRL,
    PCI_PASID_CTRL_ENABLE,
    PCI_PRI_CTRL,
    PCI_PRI_CTRL_ENABLE,
    PCI_SECONDARY_BUS,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PciConfig,
)

MAX_CAPS = 48  # bounds the capability-list walks (a looping list is a parse error)


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 2], "little")


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _standard_caps(data: bytes) -> dict[int, int]:
    caps: dict[int, int] = {}
    if not _u16(data, PCI_STATUS) & PCI_STATUS_CAP_LIST:
        return caps
    ptr = data[PCI_CAPABILITY_LIST] & ~3
    seen: set[int] = set()
    while ptr:
        if ptr in seen or len(seen) >= MAX_CAPS:
            raise ParseError(f"capability list loops at {ptr:#x}", offset=ptr)
        if ptr < 0x40 or ptr + 2 > min(len(data), PCI_CFG_SPACE_SIZE):
            raise ParseError(f"capability pointer {ptr:#x} outside the header space", offset=ptr)
        seen.add(ptr)
        caps.setdefault(data[ptr], ptr)
        ptr = data[ptr + 1] & ~3
    return caps


def _extended_caps(data: bytes) -> dict[int, int]:
    caps: dict[int, int] = {}
    ptr = PCI_CFG_SPACE_SIZE
    seen: set[int] = set()
    while ptr:
        if ptr in seen or len(seen) >= MAX_CAPS:
            raise ParseError(f"extended capability list loops at {ptr:#x}", offset=ptr)
        if ptr < PCI_CFG_SPACE_SIZE or ptr + 4 > len(data):
            raise ParseError(
                f"extended capability pointer {ptr:#x} outside config space", offset=ptr
            )
        seen.add(ptr)
        header = _u32(data, ptr)
        if header in (0, 0xFFFFFFFF):
            break
        caps.setdefault(header & 0xFFFF, ptr)
        ptr = (header >> 20) & 0xFFC
    return caps


def parse_pci_config(data: bytes) -> PciConfig:
    """Decode a device's ``config`` file (64, 256 or 4096 bytes)."""
    if len(data) < 64:
        raise ParseError(f"config space is {len(data)} bytes, expected at least 64", offset=0)
    if _u16(data, 0) == 0xFFFF:
        raise ParseError("vendor ID 0xffff: the device does not respond", offset=0)
    is_bridge = data[PCI_HEADER_TYPE] & PCI_HEADER_TYPE_MASK == PCI_HEADER_TYPE_BRIDGE
    caps = _standard_caps(data) if len(data) >= PCI_CFG_SPACE_SIZE else {}
    pcie_type = None
    if PCI_CAP_ID_EXP in caps:
        pcie_type = (
            _u16(data, caps[PCI_CAP_ID_EXP] + PCI_EXP_FLAGS) >> PCI_EXP_FLAGS_TYPE_SHIFT
        ) & 0xF
    pri = ats = pasid = None
    if pcie_type is None and len(data) >= PCI_CFG_SPACE_SIZE:
        pri = ats = pasid = False  # conventional PCI: no extended capabilities at all
    elif len(data) >= PCI_CFG_SPACE_EXP_SIZE and pcie_type is not None:
        ext = _extended_caps(data)
        pri = PCI_EXT_CAP_ID_PRI in ext and bool(
            _u16(data, ext[PCI_EXT_CAP_ID_PRI] + PCI_PRI_CTRL) & PCI_PRI_CTRL_ENABLE
        )
        ats = PCI_EXT_CAP_ID_ATS in ext and bool(
            _u16(data, ext[PCI_EXT_CAP_ID_ATS] + PCI_ATS_CTRL) & PCI_ATS_CTRL_ENABLE
        )
        pasid = PCI_EXT_CAP_ID_PASID in ext and bool(
            _u16(data, ext[PCI_EXT_CAP_ID_PASID] + PCI_PASID_CTRL) & PCI_PASID_CTRL_ENABLE
        )
    return PciConfig(
        is_bridge=is_bridge,
        secondary_bus=data[PCI_SECONDARY_BUS] if is_bridge else None,
        pcie_type=pcie_type,
        pri_enabled=pri,
        ats_enabled=ats,
        pasid_enabled=pasid,
        subsystem=None
        if is_bridge
        else (_u16(data, PCI_SUBSYSTEM_VENDOR_ID), _u16(data, PCI_SUBSYSTEM_ID)),
    )
