"""PCI: device addresses and the configuration-space facts the live-update preconditions need.

Offsets and IDs are the kernel's ``include/uapi/linux/pci_regs.h`` names; the parser of sysfs
``config`` is :mod:`vtdlud.parse.pciconfig`.
"""

from __future__ import annotations

from vtdlud.frozen import frozen

PCI_CFG_SPACE_SIZE = 256
PCI_CFG_SPACE_EXP_SIZE = 4096
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_CLASS_REVISION = 0x08  # revision in the low byte, the 24-bit class above it
PCI_HEADER_TYPE = 0x0E
PCI_HEADER_TYPE_MASK = 0x7F
PCI_HEADER_TYPE_BRIDGE = 1
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_SECONDARY_BUS = 0x19
PCI_SUBSYSTEM_VENDOR_ID = 0x2C  # header type 0 only
PCI_SUBSYSTEM_ID = 0x2E
PCI_CAP_ID_EXP = 0x10
PCI_EXP_FLAGS = 2
PCI_EXP_FLAGS_TYPE_SHIFT = 4
PCI_EXT_CAP_ID_ATS = 0x0F
PCI_EXT_CAP_ID_PRI = 0x13
PCI_EXT_CAP_ID_PASID = 0x1B
PCI_PRI_CTRL = 0x04
PCI_PRI_CTRL_ENABLE = 0x0001
PCI_ATS_CTRL = 0x06
PCI_ATS_CTRL_ENABLE = 0x8000
PCI_PASID_CTRL = 0x06
PCI_PASID_CTRL_ENABLE = 0x0001

# PCIe device/port types (PCI_EXP_FLAGS_TYPE)
PCI_EXP_TYPE_ENDPOINT = 0x0
PCI_EXP_TYPE_LEG_END = 0x1
PCI_EXP_TYPE_ROOT_PORT = 0x4
PCI_EXP_TYPE_UPSTREAM = 0x5
PCI_EXP_TYPE_DOWNSTREAM = 0x6
PCI_EXP_TYPE_PCI_BRIDGE = 0x7  # PCIe-to-PCI/PCI-X bridge
PCI_EXP_TYPE_PCIE_BRIDGE = 0x8  # PCI/PCI-X-to-PCIe bridge
PCI_EXP_TYPE_RC_END = 0x9
PCI_EXP_TYPE_RC_EC = 0xA


@frozen
class PciConfig:
    is_bridge: bool
    secondary_bus: int | None
    pcie_type: int | None  # None: not a PCIe device (no PCI Express capability)
    # None: extended config space not readable, or not read (only for the devices a check
    # reads them of: vtdlud.host.snapshot)
    pri_enabled: bool | None
    ats_enabled: bool | None
    pasid_enabled: bool | None
    # (subsystem vendor, subsystem device) of a type-0 header (the fixed-DMA-alias quirk
    # matches them); None for a bridge
    subsystem: tuple[int, int] | None = None


@frozen
class Bdf:
    segment: int
    bus: int
    dev: int
    fn: int

    @property
    def devfn(self) -> int:
        return (self.dev << 3) | self.fn

    def __str__(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.dev:02x}.{self.fn:x}"
