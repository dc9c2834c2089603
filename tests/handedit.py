"""Bytes edited by hand in a written host tree, the way a kernel bug leaves them.

The kernel model writes a consistent host; a test then changes one thing in the files vtdlud
reads, with nothing but ELF64 arithmetic (``proc/kcore``) and text edits (debugfs): no model
code and no vtdlud code, so what the test proves does not depend on either reading the kernel
the same way.  Physical addresses are found the way an engineer with a debugger would: RTADDR
from ``iommu_regset``, then the root entry, the context entry, and so on.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

KCORE = "proc/kcore"
REGSET = "sys/kernel/debug/iommu/intel/iommu_regset"
PT_LOAD = 1
NO_PADDR = (1 << 64) - 1


def _segments(path: Path) -> list[tuple[int, int, int]]:
    """(p_paddr, p_filesz, p_offset) of every PT_LOAD segment with a physical address."""
    with path.open("rb") as f:
        head = f.read(64)
        assert head[:4] == b"\x7fELF" and head[4] == 2, "not an ELF64 core"
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    out = []
    for i in range(phnum):
        p_type, _flags, off, _vaddr, paddr, filesz = struct.unpack_from(
            "<IIQQQQ", table, i * phentsize
        )
        if p_type == PT_LOAD and paddr != NO_PADDR:
            out.append((paddr, filesz, off))
    return out


def _offset(root: Path, phys: int, size: int) -> int:
    for paddr, filesz, off in _segments(root / KCORE):
        if paddr <= phys and phys + size <= paddr + filesz:
            return off + phys - paddr
    raise ValueError(f"{phys:#x} is in no RAM segment of {root / KCORE}")


def peek(root: Path, phys: int, size: int) -> bytes:
    with (root / KCORE).open("rb") as f:
        f.seek(_offset(root, phys, size))
        return f.read(size)


def poke(root: Path, phys: int, data: bytes) -> None:
    with (root / KCORE).open("r+b") as f:
        f.seek(_offset(root, phys, len(data)))
        f.write(data)


def u64(root: Path, phys: int) -> int:
    value: int = struct.unpack("<Q", peek(root, phys, 8))[0]
    return value


def set_u64(root: Path, phys: int, value: int) -> None:
    poke(root, phys, struct.pack("<Q", value))


def rtaddr(root: Path, unit: str = "dmar0") -> int:
    """RTADDR of ``unit`` as iommu_regset prints it (with the SMT bit, bit 10)."""
    text = (root / REGSET).read_text()
    block = text.split(f"IOMMU: {unit} ", 1)[1]
    m = re.search(r"^RTADDR\s+0x[0-9a-f]+\s+0x([0-9a-f]{16})$", block, re.MULTILINE)
    assert m is not None, f"no RTADDR line for {unit}"
    return int(m.group(1), 16)


def set_rtaddr(root: Path, value: int, unit: str = "dmar0") -> None:
    """Rewrite ``unit``'s RTADDR line of iommu_regset."""
    path = root / REGSET
    head, block = path.read_text().split(f"IOMMU: {unit} ", 1)
    block = re.sub(
        r"^(RTADDR\s+0x[0-9a-f]+\s+)0x[0-9a-f]{16}$",
        lambda m: f"{m.group(1)}0x{value:016x}",
        block,
        count=1,
        flags=re.MULTILINE,
    )
    path.write_text(f"{head}IOMMU: {unit} {block}")


def root_table(root: Path, unit: str = "dmar0") -> int:
    return rtaddr(root, unit) & ~0xFFF


def scalable(root: Path, unit: str = "dmar0") -> bool:
    return bool(rtaddr(root, unit) & 1 << 10)


def context_entry(root: Path, bus: int, devfn: int, unit: str = "dmar0") -> int:
    """Physical address of the context entry of ``bus:devfn`` (legacy 16 bytes, scalable 32:
    the upper root half for devfn >= 0x80)."""
    table_root = root_table(root, unit)
    if scalable(root, unit):
        half = u64(root, table_root + bus * 16 + (8 if devfn >= 0x80 else 0))
        assert half & 1, f"bus {bus:#x} has no context table"
        return (half & ~0xFFF) + (devfn & 0x7F) * 32
    lo = u64(root, table_root + bus * 16)
    assert lo & 1, f"bus {bus:#x} has no context table"
    return (lo & ~0xFFF) + devfn * 16


# -- sysfs ------------------------------------------------------------------------------------


def pci_dir(root: Path, bdf: str) -> Path:
    """The device's directory under sys/devices (resolving the sys/bus/pci/devices link)."""
    link = root / "sys/bus/pci/devices" / bdf
    return (link.parent / link.readlink()).resolve()


def set_ids(root: Path, bdf: str, vendor: int, device: int) -> None:
    """Vendor and device ID, in the sysfs attributes and in config space."""
    d = pci_dir(root, bdf)
    (d / "vendor").write_text(f"0x{vendor:04x}\n")
    (d / "device").write_text(f"0x{device:04x}\n")
    cfg = bytearray((d / "config").read_bytes())
    cfg[0:4] = struct.pack("<HH", vendor, device)
    (d / "config").write_bytes(bytes(cfg))


def set_group(root: Path, bdf: str, group: int) -> None:
    """Move the device into IOMMU group ``group`` (its iommu_group link and the group's
    devices/ entry)."""
    d = pci_dir(root, bdf)
    old = (d / "iommu_group").resolve()
    (old / "devices" / bdf).unlink()
    new = root / "sys/kernel/iommu_groups" / str(group)
    (new / "devices").mkdir(parents=True, exist_ok=True)
    (d / "iommu_group").unlink()
    (d / "iommu_group").symlink_to(os.path.relpath(new, d))
    (new / "devices" / bdf).symlink_to(os.path.relpath(d, new / "devices"))


def group_of(root: Path, bdf: str) -> int:
    return int((pci_dir(root, bdf) / "iommu_group").resolve().name)
