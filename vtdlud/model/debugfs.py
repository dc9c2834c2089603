"""What intel-iommu debugfs shows, as data: ``iommu_regset`` and ``dmar_translation_struct``.

The file formats (parsers and byte-exact renderers) are :mod:`vtdlud.parse.regset` and
:mod:`vtdlud.parse.translation`; what the two files prove together is :mod:`vtdlud.model.live`.
"""

from __future__ import annotations

from vtdlud.frozen import frozen
from vtdlud.model.tables import ContextEntry, PasidEntry, RootEntry, SmContextEntry, bdf_name

NO_PASID = -1  # the PASID column of a legacy-mode row


@frozen
class Register:
    """One register line: name (``DMAR_<name>_REG``), MMIO offset, value as printed."""

    name: str
    offset: int
    value: int


@frozen
class RegsetUnit:
    """One unit's block: ``dmarN``, its DRHD register base address and its registers in order."""

    name: str
    reg_base_addr: int
    registers: tuple[Register, ...]

    def get(self, name: str) -> int | None:
        """The value of register ``name`` (e.g. ``"RTADDR"``), None when the unit lacks it."""
        for reg in self.registers:
            if reg.name == name:
                return reg.value
        return None


@frozen
class Regset:
    """The whole file.  ``invalid_base_address``: the walk ended at a unit with base address 0."""

    units: tuple[RegsetUnit, ...]
    invalid_base_address: bool = False

    def unit(self, name: str) -> RegsetUnit | None:
        return next((u for u in self.units if u.name == name), None)


@frozen
class TranslationRow:
    """One row.  ``root`` and ``context_lo``/``context_hi`` keep the kernel's lo/hi meaning
    (debugfs prints them high qword first); ``pasid`` is -1 on legacy rows, whose
    ``pasid_entry`` is then all zero."""

    bus: int
    devfn: int
    root: RootEntry
    context_hi: int
    context_lo: int
    pasid: int
    pasid_entry: PasidEntry

    @property
    def bdf(self) -> str:
        """``bus:dev.fn`` as debugfs prints it (no PCI segment)."""
        return bdf_name(self.bus, self.devfn)

    @property
    def is_scalable(self) -> bool:
        """A scalable-mode row (PASID column != -1)."""
        return self.pasid != NO_PASID

    @property
    def context(self) -> ContextEntry:
        """The context entry decoded as a legacy one."""
        return ContextEntry(lo=self.context_lo, hi=self.context_hi)

    @property
    def sm_context(self) -> SmContextEntry:
        """The context entry decoded as a scalable-mode one (its low 128 bits)."""
        return SmContextEntry(lo=self.context_lo, hi=self.context_hi)


@frozen
class TranslationUnit:
    """One unit: ``enabled`` False is the ``DMA Remapping is not enabled`` line (then
    ``root_table`` is None and there are no rows); ``root_table`` is the ``Root Table Address``
    (``virt_to_phys(iommu->root_entry)``)."""

    name: str
    enabled: bool
    root_table: int | None
    rows: tuple[TranslationRow, ...]


@frozen
class TranslationStruct:
    units: tuple[TranslationUnit, ...]

    def unit(self, name: str) -> TranslationUnit | None:
        return next((u for u in self.units if u.name == name), None)
