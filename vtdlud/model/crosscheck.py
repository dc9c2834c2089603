"""VTD015: what intel-iommu debugfs shows against the kcore walk of the same unit's tables.

:func:`compare_with_debugfs` lists what debugfs proves and the walk (:mod:`vtdlud.model.walk`)
contradicts; :func:`debugfs_rows` renders a walk as the rows ``dmar_translation_struct`` would
print, so the kernel model and the tests can compare text with text.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from vtdlud.frozen import frozen
from vtdlud.model.debugfs import TranslationRow
from vtdlud.model.live import ContextInfo, LiveTables
from vtdlud.model.tables import Mode, PasidEntry, bdf_name, context_table_bit, table_half
from vtdlud.model.walk import WalkResult


class DisagreementKind(Enum):
    ROOT_TABLE = "root_table"  # the walk started from another root table than debugfs shows
    MODE = "mode"  # legacy vs scalable
    CONTEXT_TABLE = "context_table"  # a bit debugfs proves is not a present root half in kcore
    ROOT_ENTRY = "root_entry"  # a row's root entry differs
    CONTEXT_MISSING = "context_missing"  # debugfs shows a present context entry, kcore does not
    CONTEXT_ENTRY = "context_entry"  # context entry hi/lo differ
    PASID_MISSING = "pasid_missing"  # debugfs shows a present PASID entry, kcore does not
    PASID_ENTRY = "pasid_entry"  # PASID entry val[2]:val[1]:val[0] differ
    PASID_EXTRA = "pasid_extra"  # kcore has a present PASID entry of a shown device debugfs lacks


@frozen
class Disagreement:
    kind: DisagreementKind
    message: str
    bus: int | None = None
    devfn: int | None = None
    pasid: int | None = None
    debugfs: str | None = None  # the value as debugfs prints it
    kcore: str | None = None

    @property
    def bdf(self) -> str | None:
        if self.bus is None or self.devfn is None:
            return None
        return bdf_name(self.bus, self.devfn)


def _pair(hi: int, lo: int) -> str:
    return f"0x{hi:016x}:0x{lo:016x}"


def _pasid(pe: PasidEntry | None) -> str | None:
    return None if pe is None else f"0x{pe.val2:016x}:0x{pe.val1:016x}:0x{pe.val0:016x}"


def _compare_pasids(theirs: ContextInfo, mine: ContextInfo, incomplete: bool) -> list[Disagreement]:
    out: list[Disagreement] = []
    bus, devfn, bdf = theirs.bus, theirs.devfn, theirs.bdf
    same_dir = (theirs.context_lo, theirs.context_hi) == (mine.context_lo, mine.context_hi)
    for pasid in sorted(set(theirs.pasid_entries) | set(mine.pasid_entries)):
        t, k = theirs.pasid_entries.get(pasid), mine.pasid_entries.get(pasid)
        if t is not None and k is None and not incomplete:
            kind, msg = DisagreementKind.PASID_MISSING, "shown by debugfs, not present in kcore"
        elif t is not None and k is not None and t != k:
            kind, msg = DisagreementKind.PASID_ENTRY, "PASID entry differs"
        elif t is None and same_dir and not incomplete:
            kind = DisagreementKind.PASID_EXTRA
            msg = "present in kcore, but debugfs (which prints every present PASID entry of a "
            msg += "device it shows) does not show it"
        else:
            continue
        out.append(
            Disagreement(
                kind, f"{bdf} PASID {pasid}: {msg}", bus, devfn, pasid, _pasid(t), _pasid(k)
            )
        )
    return out


def compare_with_debugfs(
    walk: WalkResult, live: LiveTables, rows: Iterable[TranslationRow] = ()
) -> list[Disagreement]:
    """What debugfs shows that kcore contradicts (VTD015); [] when they agree.

    debugfs is a lower bound (see :class:`LiveTables`): a bus, table or device it does not show
    is never a disagreement.  Every bit it proves must be a present root half in kcore; every
    device it shows must have the same context entry (hi/lo) and the same present PASID entries
    (debugfs prints *every* present PASID entry of a device it shows, so an extra one in kcore
    counts when the two context entries are equal); ``rows`` (the unit's
    ``dmar_translation_struct`` rows, optional) add the root entry of every row.  Where the walk
    could not look (unread table, PASID walk cut short, unreadable root table) nothing is
    claimed: the walk's problems say why.  A different root table or mode stops the comparison
    at that one disagreement.
    """
    if not walk.root_entries:
        return []
    if live.root_table is not None and live.root_table != walk.root_table:
        msg = f"debugfs root table {live.root_table:#x}, kcore walk from {walk.root_table:#x}"
        kind = DisagreementKind.ROOT_TABLE
        return [
            Disagreement(kind, msg, debugfs=f"{live.root_table:#x}", kcore=f"{walk.root_table:#x}")
        ]
    if live.mode is not Mode.UNKNOWN and live.mode is not walk.mode:
        msg = f"debugfs says {live.mode.value} mode, kcore walked {walk.mode.value} tables"
        kind = DisagreementKind.MODE
        return [Disagreement(kind, msg, debugfs=live.mode.value, kcore=walk.mode.value)]
    out: list[Disagreement] = []
    for bit in sorted(live.context_table_bits - walk.context_table_bits):
        bus, half = bit >> 1, table_half(bool(bit & 1))
        msg = f"bus {bus:02x}: debugfs proves the {half} context table present, kcore's root "
        msg += "entry says not present"
        out.append(Disagreement(DisagreementKind.CONTEXT_TABLE, msg, bus=bus))
    seen_bus: set[int] = set()
    for row in rows:
        k = walk.root_entries[row.bus]
        if row.bus not in seen_bus and k != row.root:
            msg = f"bus {row.bus:02x}: root entry differs"
            theirs_root, mine_root = _pair(row.root.hi, row.root.lo), _pair(k.hi, k.lo)
            kind = DisagreementKind.ROOT_ENTRY
            out.append(Disagreement(kind, msg, row.bus, debugfs=theirs_root, kcore=mine_root))
        seen_bus.add(row.bus)
    scalable = walk.mode is Mode.SCALABLE
    for key, theirs in sorted(live.devices.items()):
        bit = context_table_bit(theirs.bus, theirs.devfn if scalable else 0)
        if bit in walk.unwalked_tables:
            continue
        mine = walk.devices.get(key)
        shown = _pair(theirs.context_hi, theirs.context_lo)
        if mine is None:
            msg = f"{theirs.bdf}: debugfs shows a present context entry, kcore's is not present"
            msg += "" if bit in walk.context_table_bits else " (no table)"
            kind = DisagreementKind.CONTEXT_MISSING
            out.append(Disagreement(kind, msg, theirs.bus, theirs.devfn, debugfs=shown))
            continue
        if (theirs.context_hi, theirs.context_lo) != (mine.context_hi, mine.context_lo):
            msg = f"{theirs.bdf}: context entry differs"
            kcore = _pair(mine.context_hi, mine.context_lo)
            kind = DisagreementKind.CONTEXT_ENTRY
            out.append(Disagreement(kind, msg, *key, debugfs=shown, kcore=kcore))
        if scalable:
            out.extend(_compare_pasids(theirs, mine, key in walk.incomplete_devices))
    return out


def debugfs_rows(walk: WalkResult) -> tuple[TranslationRow, ...]:
    """The rows ``dmar_translation_struct`` would print for the walked tables.

    Mirrors the kernel's walk: bus 0..255, devfn 0..255, a bus stops at the first devfn whose
    table is missing (scalable: a missing lower table hides the upper one too); legacy rows have
    PASID -1, scalable rows one per present PASID entry.  Tables the walk could not decode are
    treated as missing.  Rendering these rows (``render_dmar_translation_struct``) gives the
    text debugfs would print for this unit.
    """
    rows: list[TranslationRow] = []
    scalable = walk.mode is Mode.SCALABLE
    present = walk.context_table_bits - walk.unwalked_tables
    for bus, root in enumerate(walk.root_entries):
        for devfn in range(256):
            if context_table_bit(bus, devfn if scalable else 0) not in present:
                break
            info = walk.devices.get((bus, devfn))
            if info is None:
                continue
            if not scalable:
                rows.append(
                    TranslationRow(
                        bus, devfn, root, info.context_hi, info.context_lo, -1, PasidEntry(0, 0, 0)
                    )
                )
                continue
            for pasid, pe in sorted(info.pasid_entries.items()):
                rows.append(
                    TranslationRow(bus, devfn, root, info.context_hi, info.context_lo, pasid, pe)
                )
    return tuple(rows)
