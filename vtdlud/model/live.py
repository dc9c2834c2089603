"""What ``iommu_regset`` and ``dmar_translation_struct`` prove together about one unit.

:func:`derive_unit_tables` is the live state of one unit that the two files show together, as a
pure function of the parsed units (``host/`` derives it once per snapshot).  The two files are
read at different moments; nothing here hides a disagreement between them (see
:class:`LiveTables`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import field
from types import MappingProxyType

from vtdlud.frozen import frozen
from vtdlud.model.bitfield import field_named
from vtdlud.model.debugfs import (
    Regset,
    RegsetUnit,
    TranslationRow,
    TranslationStruct,
    TranslationUnit,
)
from vtdlud.model.registers import gsts_tes, rtaddr_is_scalable, rtaddr_root_table
from vtdlud.model.tables import (
    SM_CONTEXT_LO_FIELDS,
    SM_UPPER_DEVFN,
    Mode,
    PasidEntry,
    bdf_name,
    context_table_bit,
)

RID_PASID = 0  # IOMMU_NO_PASID: the PASID the kernel programs as RID_PASID


_PDTS = field_named(SM_CONTEXT_LO_FIELDS, "pdts")
_PRE = field_named(SM_CONTEXT_LO_FIELDS, "pre")


@frozen
class ContextInfo:
    """A present context entry that ``dmar_translation_struct`` shows, by BDF (no segment).

    ``mode`` is the kind of rows it came from.  Legacy: ``did`` and ``tt`` from the context entry;
    the scalable fields are None.  Scalable: ``pasid_dir`` (context lo & VTD_PAGE_MASK), ``pdts``
    (lo bits 11:9), ``pre`` (lo bit 4), the present PASID entries the rows show, and ``did``
    = the DID of the RID_PASID entry (PASID 0, which the kernel always programs as RID_PASID), or
    None when no PASID 0 row is shown; ``tt`` is None.
    """

    bus: int
    devfn: int
    mode: Mode
    context_hi: int
    context_lo: int
    did: int | None
    tt: int | None = None
    pasid_dir: int | None = None
    pdts: int | None = None
    pre: bool | None = None
    pasid_entries: Mapping[int, PasidEntry] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def bdf(self) -> str:
        return bdf_name(self.bus, self.devfn)


@frozen
class LiveTables:
    """One unit's live translation state as debugfs shows it.

    ``root_table``: RTADDR_REG & VTD_PAGE_MASK from ``iommu_regset`` when it has RTADDR, else the
    ``Root Table Address`` line; ``root_table_debugfs`` is always that line (None without it), so
    a disagreement stays visible (:attr:`root_table_mismatch`).

    ``mode``: RTADDR_REG bit 10 (DMA_RTADDR_SMT) when the regset has RTADDR (ECAP.SMTS only says
    "supported").  Without it, what the rows prove (``mode_from_rows``): the kernel prints PASID
    -1 rows only when RTADDR.SMT is clear and PASID rows only when it is set, so any row settles
    the mode; with no rows it is UNKNOWN.  ``mode_from_rows`` is kept so a disagreement with the
    register shows.

    ``translation_enabled``: GSTS.TES from the regset; without GSTS, False for a ``DMA
    Remapping is not enabled`` unit and True for a walked one; None with neither file.

    ``context_table_bits``: bits ``(bus << 1) + half`` of the root halves the rows prove present
    — a LOWER BOUND.  Provable: each row shows the root entry of its bus at the time of the walk,
    so for every bus in ``buses_shown`` its lower table (root lo bit 0, always set on a shown bus)
    is present, and in scalable mode its upper table is present exactly when root hi bit 0 is set
    (both halves of a shown bus are thus known exactly).  Not provable: anything about a bus with
    no row.  A bus has no row when its context table holds no present entry (legacy and
    scalable), when, in scalable mode, its lower table is missing (the walk stops the bus at devfn
    0, so devices at devfn >= 0x80 in an existing upper table stay hidden), when none of its
    scalable-mode devices has a present PASID entry, or when its first entries were taken over
    from a previous kernel (recent kernels' ``iommu_context_addr()`` returns NULL for a
    "copied" context entry, which also stops the bus walk; reference §6.5).  The root hi half is
    never counted outside scalable mode (it is reserved in legacy mode).

    ``devices``: the present context entries the rows show, keyed by ``(bus, devfn)``.  A lower
    bound too: scalable-mode devices without a present PASID entry and everything a bus walk
    stopped before (see above) are missing.
    """

    name: str | None
    reg_base_addr: int | None
    root_table: int | None
    root_table_debugfs: int | None
    mode: Mode
    mode_from_rows: Mode
    translation_enabled: bool | None
    context_table_bits: frozenset[int]
    buses_shown: frozenset[int]
    devices: Mapping[tuple[int, int], ContextInfo]

    @property
    def debugfs_walked(self) -> bool:
        """``dmar_translation_struct`` walked this unit: it printed its ``Root Table Address``
        (not ``DMA Remapping is not enabled``), so its rows are the lower bound described above."""
        return self.root_table_debugfs is not None

    @property
    def root_table_mismatch(self) -> bool:
        """RTADDR and the debugfs ``Root Table Address`` line both known and different."""
        return (
            self.root_table is not None
            and self.root_table_debugfs is not None
            and self.root_table != self.root_table_debugfs
        )


def _mode_from_rows(rows: Iterable[TranslationRow]) -> Mode:
    for row in rows:  # the parser guarantees one kind of row per unit
        return Mode.SCALABLE if row.is_scalable else Mode.LEGACY
    return Mode.UNKNOWN


def _context_table_bits(rows: Iterable[TranslationRow], mode: Mode) -> frozenset[int]:
    bits: set[int] = set()
    for row in rows:
        if row.root.lctp_present:
            bits.add(context_table_bit(row.bus, 0))
        if mode is Mode.SCALABLE and row.root.uctp_present:
            bits.add(context_table_bit(row.bus, SM_UPPER_DEVFN))
    return frozenset(bits)


def _devices(rows: Iterable[TranslationRow]) -> dict[tuple[int, int], ContextInfo]:
    out: dict[tuple[int, int], ContextInfo] = {}
    scalable: dict[tuple[int, int], tuple[TranslationRow, dict[int, PasidEntry]]] = {}
    for row in rows:
        key = (row.bus, row.devfn)
        if not row.is_scalable:
            ctx = row.context
            out[key] = ContextInfo(
                row.bus, row.devfn, Mode.LEGACY, row.context_hi, row.context_lo, ctx.did, ctx.tt
            )
        else:
            scalable.setdefault(key, (row, {}))[1][row.pasid] = row.pasid_entry
    for key, (row, entries) in scalable.items():
        rid = entries.get(RID_PASID)
        out[key] = ContextInfo(
            row.bus,
            row.devfn,
            Mode.SCALABLE,
            row.context_hi,
            row.context_lo,
            did=rid.did if rid is not None else None,
            pasid_dir=row.sm_context.pasid_dir_ptr,
            pdts=_PDTS.raw(row.context_lo),
            pre=bool(_PRE.raw(row.context_lo)),
            pasid_entries=MappingProxyType(entries),
        )
    return out


def unit_root_table(
    regset_unit: RegsetUnit | None,
    trans_unit: TranslationUnit | None,
    mode_from_rows: Mode | None = None,
) -> tuple[int | None, Mode]:
    """The root table and translation mode of :func:`derive_unit_tables` alone (what a kcore
    walk starts from): RTADDR_REG when iommu_regset shows it, else what the
    dmar_translation_struct rows prove (``mode_from_rows``, computed when not given)."""
    rtaddr = regset_unit.get("RTADDR") if regset_unit else None
    if rtaddr is not None:
        mode = Mode.SCALABLE if rtaddr_is_scalable(rtaddr) else Mode.LEGACY
        return rtaddr_root_table(rtaddr), mode
    if mode_from_rows is None:
        mode_from_rows = _mode_from_rows(trans_unit.rows if trans_unit else ())
    return (trans_unit.root_table if trans_unit else None), mode_from_rows


def derive_unit_tables(
    regset_unit: RegsetUnit | None, trans_unit: TranslationUnit | None
) -> LiveTables:
    """The live state of one unit from its ``iommu_regset`` and ``dmar_translation_struct``
    blocks (either may be None).  The rules are in :class:`LiveTables`.  ValueError when both are
    given for different unit names (pair them by name: both files name units ``dmarN`` of the same
    boot)."""
    if regset_unit and trans_unit and regset_unit.name != trans_unit.name:
        raise ValueError(f"unit names differ: {regset_unit.name} vs {trans_unit.name}")
    gsts = regset_unit.get("GSTS") if regset_unit else None
    debugfs_root = trans_unit.root_table if trans_unit else None
    rows = trans_unit.rows if trans_unit else ()
    mode_rows = _mode_from_rows(rows)
    root_table, mode = unit_root_table(regset_unit, trans_unit, mode_rows)
    if gsts is not None:
        enabled: bool | None = gsts_tes(gsts)
    elif trans_unit is not None:
        enabled = trans_unit.enabled
    else:
        enabled = None
    name = regset_unit.name if regset_unit else trans_unit.name if trans_unit else None
    return LiveTables(
        name=name,
        reg_base_addr=regset_unit.reg_base_addr if regset_unit else None,
        root_table=root_table,
        root_table_debugfs=debugfs_root,
        mode=mode,
        mode_from_rows=mode_rows,
        translation_enabled=enabled,
        context_table_bits=_context_table_bits(rows, mode),
        buses_shown=frozenset(row.bus for row in rows),
        devices=MappingProxyType(_devices(rows)),
    )


def unit_blocks(
    regset: Regset | None, translation: TranslationStruct | None, address: int | None, name: str
) -> tuple[RegsetUnit | None, TranslationUnit | None]:
    """A sysfs unit's blocks: the first ``iommu_regset`` block at its register base address
    (names may differ between files) and the ``dmar_translation_struct`` block of its name (that
    file prints only the name)."""
    regs = None
    if regset is not None and address is not None:
        regs = next((r for r in regset.units if r.reg_base_addr == address), None)
    return regs, translation.unit(name) if translation is not None else None


def derive_live_tables(
    regset: Regset | None,
    translation: TranslationStruct | None,
    units: Iterable[tuple[int | None, str]],
) -> dict[str, LiveTables]:
    """:func:`derive_unit_tables` of each ``(address, name)`` unit's blocks (:func:`unit_blocks`),
    by name; a unit neither file shows has none."""
    out: dict[str, LiveTables] = {}
    for address, name in units:
        regs, trans = unit_blocks(regset, translation, address, name)
        if regs is not None or trans is not None:
            out[name] = derive_unit_tables(regs, trans)
    return out
