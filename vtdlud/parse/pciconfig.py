"""PCI configuration space (sysfs ``config``): the facts the live-update preconditions need.

Offsets and IDs are the kernel's ``include/uapi/linux/pci_regs.h`` names.  Reading ``config``
as a non-root user gives only the first 64 bytes (256 with CAP_SYS_ADMIN on some kernels): the
extended capabilities (PRI, ATS, PASID) are then unknown (None), never "absent".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from vtdlud.errors import ParseError
from vtdlud.model.pci import (
    PCI_ATS_CTRL,
    PCI_ATS_CTRL_ENABLE,
    PCI_CAP_ID_EXP,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_CLASS_REVISION,
    PCI_DEVICE_ID,
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
    PCI_VENDOR_ID,
    PciConfig,
)

MAX_CAPS = 48  # bounds the capability-list walks (a looping list is a parse error)
PCI_HEADER_SIZE = 64  # the type 0/1 header: what an unprivileged reader of ``config`` gets
# What the first read takes: the header and the dword after it, where a first capability most
# often sits (0x40 is the lowest offset one may have: its ID, next pointer and, for the PCI
# Express capability, PCI_EXP_FLAGS), so the common walk needs no second read.
PCI_HEADER_READ = PCI_HEADER_SIZE + 4


class ConfigSpace(Protocol):
    """A device's configuration space, read where the decoder asks: the sysfs ``config`` file
    read with pread(2) at the offsets (:mod:`vtdlud.host.pcicfg`), or the bytes of a bundle."""

    def read(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes at ``offset``; fewer past the readable end (as slicing)."""
        ...

    def holds(self, size: int) -> bool:
        """Whether at least ``size`` bytes are readable."""
        ...


class _Prefixed:
    """``space`` with its first bytes already read (``prefix``): reads inside them are served
    from them, the rest from ``space``."""

    __slots__ = ("prefix", "space")

    def __init__(self, space: ConfigSpace, prefix: bytes) -> None:
        self.space, self.prefix = space, prefix

    def read(self, offset: int, count: int) -> bytes:
        if offset + count <= len(self.prefix):
            return self.prefix[offset : offset + count]
        return self.space.read(offset, count)

    def holds(self, size: int) -> bool:
        return self.space.holds(size)


class BytesConfig:
    """Configuration space held whole (a bundle's ``config``, a test's bytes)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, count: int) -> bytes:
        return self.data[offset : offset + count]

    def holds(self, size: int) -> bool:
        return len(self.data) >= size


def _u16(data: bytes, off: int = 0) -> int:
    return int.from_bytes(data[off : off + 2], "little")


def _u32(data: bytes, off: int = 0) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _standard_caps(space: ConfigSpace, header: bytes) -> dict[int, int]:
    """The capability list, walked capability by capability (two bytes each: ID and next)."""
    caps: dict[int, int] = {}
    if not _u16(header, PCI_STATUS) & PCI_STATUS_CAP_LIST:
        return caps
    ptr = header[PCI_CAPABILITY_LIST] & ~3
    seen: set[int] = set()
    while ptr:
        if ptr in seen or len(seen) >= MAX_CAPS:
            raise ParseError(f"capability list loops at {ptr:#x}", offset=ptr)
        if ptr < 0x40 or ptr + 2 > PCI_CFG_SPACE_SIZE:
            raise ParseError(f"capability pointer {ptr:#x} outside the header space", offset=ptr)
        seen.add(ptr)
        cap = space.read(ptr, 2)
        caps.setdefault(cap[0], ptr)
        ptr = cap[1] & ~3
    return caps


def _extended_caps(space: ConfigSpace) -> dict[int, int]:
    """The extended capability list from 0x100 (four bytes a header); the caller has checked
    that all 4 KiB are readable, so every pointer the walk accepts is."""
    caps: dict[int, int] = {}
    ptr = PCI_CFG_SPACE_SIZE
    seen: set[int] = set()
    while ptr:
        if ptr in seen or len(seen) >= MAX_CAPS:
            raise ParseError(f"extended capability list loops at {ptr:#x}", offset=ptr)
        if ptr < PCI_CFG_SPACE_SIZE:
            raise ParseError(
                f"extended capability pointer {ptr:#x} outside config space", offset=ptr
            )
        seen.add(ptr)
        header = _u32(space.read(ptr, 4))
        if header in (0, 0xFFFFFFFF):
            break
        caps.setdefault(header & 0xFFFF, ptr)
        ptr = (header >> 20) & 0xFFC
    return caps


def _enabled(space: ConfigSpace, caps: dict[int, int], cap_id: int, ctrl: int, bit: int) -> bool:
    return cap_id in caps and bool(_u16(space.read(caps[cap_id] + ctrl, 2)) & bit)


def pci_ids(header: bytes) -> tuple[int, int, int] | None:
    """(vendor, device, class) from a header as the kernel's ``pci_setup_device()`` takes
    them (``class`` is PCI_CLASS_REVISION >> 8), or None where the header does not give them:
    shorter than 64 bytes, or vendor ID 0xffff (no response, or an SR-IOV VF, whose Vendor and
    Device ID fields read 0xffff: the kernel takes a VF's from its PF's SR-IOV capability)."""
    if len(header) < PCI_HEADER_SIZE or _u16(header, PCI_VENDOR_ID) == 0xFFFF:
        return None
    return (
        _u16(header, PCI_VENDOR_ID),
        _u16(header, PCI_DEVICE_ID),
        _u32(header, PCI_CLASS_REVISION) >> 8,
    )


def decode_pci_config(
    space: ConfigSpace,
    header: bytes | None = None,
    *,
    extended: bool = True,
    virtfn: bool = False,
) -> PciConfig:
    """Decode configuration space: the 64-byte header (``header``: the first bytes, already
    read, at least the header when there is one; more are used as read), the
    capability list (the PCI Express capability's port type) and, with ``extended``, the
    extended capabilities PRI, ATS and PASID (None when not read).  Reads only those bytes.

    What a whole ``config`` file of L bytes would give: L < 64 is an error; the capability list
    needs L >= 256 (a non-root reader gets 64 bytes); the extended list needs all 4 KiB.
    ``virtfn``: an SR-IOV VF (sysfs ``physfn``), whose Vendor and Device ID fields read 0xffff
    (SR-IOV 1.1 §3.4.1.1-2) while the rest of its header and capabilities are its own."""
    if header is None:
        header = space.read(0, PCI_HEADER_READ)
    if len(header) > PCI_HEADER_SIZE:
        space = _Prefixed(space, header)
    if len(header) < PCI_HEADER_SIZE:
        raise ParseError(f"config space is {len(header)} bytes, expected at least 64", offset=0)
    if _u16(header, PCI_VENDOR_ID) == 0xFFFF and not virtfn:
        raise ParseError("vendor ID 0xffff: the device does not respond", offset=0)
    is_bridge = header[PCI_HEADER_TYPE] & PCI_HEADER_TYPE_MASK == PCI_HEADER_TYPE_BRIDGE
    standard = space.holds(PCI_CFG_SPACE_SIZE)
    caps = _standard_caps(space, header) if standard else {}
    pcie_type = None
    if PCI_CAP_ID_EXP in caps:
        flags = _u16(space.read(caps[PCI_CAP_ID_EXP] + PCI_EXP_FLAGS, 2))
        pcie_type = (flags >> PCI_EXP_FLAGS_TYPE_SHIFT) & 0xF
    # conventional PCI has no extended capabilities at all
    none = False if pcie_type is None and standard else None
    config = PciConfig(
        is_bridge=is_bridge,
        secondary_bus=header[PCI_SECONDARY_BUS] if is_bridge else None,
        pcie_type=pcie_type,
        pri_enabled=none,
        ats_enabled=none,
        pasid_enabled=none,
        subsystem=None
        if is_bridge
        else (_u16(header, PCI_SUBSYSTEM_VENDOR_ID), _u16(header, PCI_SUBSYSTEM_ID)),
    )
    return decode_extended(space, config) if extended else config


def decode_extended(space: ConfigSpace, config: PciConfig) -> PciConfig:
    """``config``, decoded without its extended capabilities, with PRI, ATS and PASID read from
    the extended list of ``space`` (a PCI Express function whose 4 KiB are readable); reads
    nothing else, so a device whose header and capability list were decoded already is not
    read twice."""
    if (
        config.pcie_type is None
        or config.pri_enabled is not None
        or not space.holds(PCI_CFG_SPACE_EXP_SIZE)
    ):
        return config
    ext = _extended_caps(space)
    return replace(
        config,
        pri_enabled=_enabled(space, ext, PCI_EXT_CAP_ID_PRI, PCI_PRI_CTRL, PCI_PRI_CTRL_ENABLE),
        ats_enabled=_enabled(space, ext, PCI_EXT_CAP_ID_ATS, PCI_ATS_CTRL, PCI_ATS_CTRL_ENABLE),
        pasid_enabled=_enabled(
            space, ext, PCI_EXT_CAP_ID_PASID, PCI_PASID_CTRL, PCI_PASID_CTRL_ENABLE
        ),
    )


def parse_pci_config(data: bytes, *, extended: bool = True, virtfn: bool = False) -> PciConfig:
    """Decode a whole ``config`` file (64, 256 or 4096 bytes)."""
    return decode_pci_config(BytesConfig(data), extended=extended, virtfn=virtfn)
