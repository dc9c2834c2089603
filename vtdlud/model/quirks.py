"""The PCI quirks that change a device's DMA aliases, as a table (vendor:device -> rule).

Read from ``drivers/pci/quirks.c`` of Linux 7.2.13 (Debian ``linux-source-7.2``; the rules are
paraphrased, no kernel text is copied) and checked against ``pci_for_each_dma_alias()`` in
``drivers/pci/search.c`` of the same tree.  A quirk does one of two things:

- it adds requester IDs on the device's own bus to ``dma_alias_mask`` (``pci_add_dma_alias()``):
  ``pci_for_each_dma_alias()`` reports them right after the device's own RID, in devfn order,
  and ``intel_pasid_setup_sm_context()`` gives them the device's own PASID table (they are the
  device's, unlike a bridge's alias);
- it sets a ``dev_flags`` bit on a bridge that changes the upward walk:
  ``PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS`` (a conventional bridge that is really a PCIe-to-PCI one
  aliases as its secondary bus, devfn 00.0), ``PCI_DEV_FLAGS_PCI_BRIDGE_NO_ALIAS`` (a
  PCIe-to-PCI bridge that forwards the requester ID unchanged), ``PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT``
  (the walk stops at this bridge: the IOMMU sits below the root bus).

Not visible from userspace, so a device they match has aliases vtdlud does not know (None):
the Switchtec NTB proxy IDs (read from the device's MMIO registers at boot), and a device in a
VMD domain (segment >= 0x10000: ``pci_real_dma_dev()`` makes the VMD endpoint the requester).
A quirk added to a later kernel than the one read here is unknown to this table too: the IOMMU
group check (VTD028) is the safety net for it.
"""

from __future__ import annotations

from enum import Enum

from vtdlud.frozen import frozen

QUIRKS_READ_FROM = "Linux 7.2.13 drivers/pci/quirks.c (Debian linux-source-7.2)"
MAX_NR_DEVFNS = 256
VMD_FIRST_DOMAIN = 0x10000  # vmd_find_free_domain() numbers VMD domains from here
PCI_CLASS_BRIDGE_OTHER = 0x0680  # (class >> 8), the Switchtec fixups' class match


class Rule(Enum):
    FUNC0 = "quirk_dma_func0_alias"  # function 0 of the slot, unless the device is function 0
    FUNC1 = "quirk_dma_func1_alias"  # function 1 of the slot, unless the device is function 1
    FIXED = "quirk_fixed_dma_alias"  # one fixed devfn, by subsystem IDs
    MIC_X200 = "quirk_mic_x200_dma_alias"  # devfns 10.0, 11.0 and 12.3
    PEX_VCA = "quirk_pex_vca_alias"  # functions 0-4 of every slot
    PLX_NTB = "quirk_plx_ntb_dma_alias"  # every devfn
    SWITCHTEC_NTB = "quirk_switchtec_ntb_dma_alias"  # proxy IDs from MMIO: not visible
    PCIE_BRIDGE_ALIAS = "quirk_use_pcie_bridge_dma_alias"  # PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS
    BRIDGE_XLATE_ROOT = "quirk_bridge_cavm_thrx2_pcie_root"  # PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT
    PCI_BRIDGE_NO_ALIAS = "quirk_aspeed_pci_bridge_no_alias"  # PCI_DEV_FLAGS_PCI_BRIDGE_NO_ALIAS


@frozen
class Quirk:
    vendor: int
    device: int
    rule: Rule
    subsystem: tuple[int, int] | None = None  # (subsystem vendor, device) for FIXED
    devfn: int | None = None  # FIXED: the alias
    pci_class: int | None = None  # (class >> 8) the fixup requires (Switchtec)


def _devfn(slot: int, func: int) -> int:
    return slot << 3 | func


RICOH, GLENFLY, MARVELL_EXT, TTI, JMICRON = 0x1180, 0x6766, 0x1B4B, 0x1103, 0x197B
ADAPTEC2, ASMEDIA, INTEL, PLX, BROADCOM, ASPEED = 0x9005, 0x1B21, 0x8086, 0x10B5, 0x14E4, 0x1A03
MICROSEMI, EFAR = 0x11F8, 0x1055

_F1_MARVELL = (0x9120, 0x9123, 0x9125, 0x9128, 0x9130, 0x9170, 0x9172, 0x917A, 0x9182, 0x9183,
               0x91A0, 0x9215, 0x9220, 0x9230, 0x9235)  # fmt: skip
_SWITCHTEC = ((MICROSEMI, d) for d in (0x8531, 0x8532, 0x8533, 0x8534, 0x8535, 0x8536, 0x5552,
              0x5536, 0x5528))  # fmt: skip

_PCIE_BRIDGE_ALIAS = ((ASMEDIA, 0x1080), (0x10E3, 0x8113), (0x1283, 0x8892), (0x1283, 0x8893),
                      (INTEL, 0x244E))  # fmt: skip

QUIRKS: tuple[Quirk, ...] = (
    *(Quirk(RICOH, d, Rule.FUNC0) for d in (0xE832, 0xE476)),
    *(Quirk(GLENFLY, d, Rule.FUNC0) for d in (0x3D40, 0x3D41)),
    *(Quirk(MARVELL_EXT, d, Rule.FUNC1) for d in _F1_MARVELL),
    *(Quirk(TTI, d, Rule.FUNC1) for d in (0x0642, 0x0645)),
    Quirk(JMICRON, 0x2392, Rule.FUNC1),  # JMB388_ESD
    Quirk(0x1C28, 0x0122, Rule.FUNC1),  # Lite-On Plextor M6E (Marvell 88SS9183)
    Quirk(ADAPTEC2, 0x0285, Rule.FIXED, (ADAPTEC2, 0x02BB), _devfn(1, 0)),  # Adaptec 3405
    Quirk(ADAPTEC2, 0x0285, Rule.FIXED, (ADAPTEC2, 0x02BC), _devfn(1, 0)),  # Adaptec 3805
    *(Quirk(INTEL, d, Rule.MIC_X200) for d in (0x2260, 0x2264)),
    *(Quirk(INTEL, d, Rule.PEX_VCA) for d in (0x2954, 0x2955, 0x2956, 0x2958, 0x2959, 0x295A)),
    *(Quirk(PLX, d, Rule.PLX_NTB) for d in (0x87B0, 0x87B1)),
    *(Quirk(v, d, Rule.SWITCHTEC_NTB, pci_class=PCI_CLASS_BRIDGE_OTHER) for v, d in _SWITCHTEC),
    *(
        Quirk(EFAR, d, Rule.SWITCHTEC_NTB, pci_class=PCI_CLASS_BRIDGE_OTHER)
        for d in range(0x1001, 0x1007)
    ),
    *(Quirk(v, d, Rule.PCIE_BRIDGE_ALIAS) for v, d in _PCIE_BRIDGE_ALIAS),
    *(Quirk(BROADCOM, d, Rule.BRIDGE_XLATE_ROOT) for d in (0x9000, 0x9084)),
    Quirk(ASPEED, 0x1150, Rule.PCI_BRIDGE_NO_ALIAS),
)

_BY_ID: dict[tuple[int, int], tuple[Quirk, ...]] = {}
for _q in QUIRKS:
    _BY_ID[(_q.vendor, _q.device)] = (*_BY_ID.get((_q.vendor, _q.device), ()), _q)


@frozen
class PciIds:
    """What the quirks match on: vendor, device, subsystem IDs (None: not read), class."""

    vendor: int | None
    device: int | None
    subsystem: tuple[int, int] | None = None
    pci_class: int | None = None  # the 24-bit class code


def quirks_of(ids: PciIds | None) -> tuple[Quirk, ...]:
    """The quirks whose vendor:device (and class) match; None ids match nothing."""
    if ids is None or ids.vendor is None or ids.device is None:
        return ()
    found = _BY_ID.get((ids.vendor, ids.device), ())
    return tuple(
        q
        for q in found
        if q.pci_class is None or (ids.pci_class is not None and ids.pci_class >> 8 == q.pci_class)
    )


def quirk_alias_devfns(ids: PciIds | None, devfn: int) -> tuple[int, ...] | None:
    """The devfns a header fixup adds to ``dma_alias_mask`` (on the device's own bus), sorted
    as ``for_each_set_bit`` reports them; None when the aliases are not visible (Switchtec
    proxy IDs, or an Adaptec 0x0285 whose subsystem IDs were not read)."""
    mask: set[int] = set()
    slot, func = devfn >> 3, devfn & 7
    for q in quirks_of(ids):
        match q.rule:
            case Rule.FUNC0 if func != 0:
                mask.add(_devfn(slot, 0))
            case Rule.FUNC1 if func != 1:
                mask.add(_devfn(slot, 1))
            case Rule.FIXED:
                if ids is None or ids.subsystem is None:
                    return None
                if ids.subsystem == q.subsystem and q.devfn is not None:
                    mask.add(q.devfn)
            case Rule.MIC_X200:
                mask.update((_devfn(0x10, 0), _devfn(0x11, 0), _devfn(0x12, 3)))
            case Rule.PEX_VCA:
                mask.update(_devfn(s, f) for s in range(0x20) for f in range(5))
            case Rule.PLX_NTB:
                mask.update(range(MAX_NR_DEVFNS))
            case Rule.SWITCHTEC_NTB:
                return None
            case _:
                pass
    return tuple(sorted(mask))


def bridge_rules(ids: PciIds | None) -> frozenset[Rule]:
    """The ``dev_flags`` rules a bridge's quirks set (the walk decides where they apply)."""
    flags = (Rule.PCIE_BRIDGE_ALIAS, Rule.BRIDGE_XLATE_ROOT, Rule.PCI_BRIDGE_NO_ALIAS)
    return frozenset(q.rule for q in quirks_of(ids) if q.rule in flags)
