"""Each unit's preserved record as the kernel wrote it, and what it should hold.

``required_bitmap``: the context-table halves holding the entries of the unit's preserved
devices and of their DMA aliases (DESIGN.md §4) — the bits the kernel must have set, because at
kexec every root half whose bit is clear is zeroed.  Every preservation also adds every other
context table that existed at the time (reference §1.5), so the record's bitmap is normally a
superset; the audit judges the difference.
"""

from __future__ import annotations

from vtdlud.frozen import frozen
from vtdlud.model.abi import IommuHwSerV1, IommuTypeSer
from vtdlud.model.alias import DmaAliases, Rid
from vtdlud.model.records import DeviceSlot, HwSlot, PreservedState, RefStatus
from vtdlud.model.tables import Mode, context_table_bit, words_to_bits


@frozen
class PreservedDevice:
    bdf: str
    slot: DeviceSlot
    rids: tuple[Rid, ...] | None  # own RID then DMA aliases; None when not visible


@frozen
class PreservedUnit:
    """One unit's live hw record and the live device records that point at it."""

    hw: HwSlot
    located_by: str
    assumed: bool  # decoded with an assumed layout (v2 FLB paired with Intel unions)
    devices: tuple[PreservedDevice, ...]

    @property
    def record(self) -> IommuHwSerV1:
        rec = self.hw.record
        assert isinstance(rec, IommuHwSerV1)  # only Intel records reach a unit
        return rec

    @property
    def bitmap(self) -> tuple[int, ...]:
        return tuple(words_to_bits(self.record.intel.context_tables_bitmap))


def device_bdf(slot: DeviceSlot) -> str:
    rec = slot.record
    bus, devfn = rec.devid >> 8 & 0xFF, rec.devid & 0xFF
    return f"{rec.pci_domain_nr:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"


def required_bits(unit: PreservedUnit, mode: Mode) -> tuple[int, ...] | None:
    """Halves of the preserved devices and their aliases; None when an alias is not visible.

    Legacy mode has one context table per bus (the even bit), whatever the devfn."""
    bits: set[int] = set()
    for dev in unit.devices:
        if dev.rids is None:
            return None
        bits.update(rid_bits(dev.rids, mode))
    return tuple(sorted(bits))


def rid_bits(rids: tuple[Rid, ...], mode: Mode) -> tuple[int, ...]:
    """The halves holding the context entries of these requester IDs, sorted."""
    if mode is Mode.SCALABLE:
        return tuple(sorted({context_table_bit(r.bus, r.devfn) for r in rids}))
    return tuple(sorted({context_table_bit(r.bus, 0) for r in rids}))


class PreservedIndex:
    """The live device records of one record set grouped by the hw record they point at (one
    pass over them, however many units), for :meth:`units`."""

    def __init__(self, state: PreservedState, aliases: DmaAliases) -> None:
        self.state, self.aliases = state, aliases
        self._by_hw: dict[int, list[PreservedDevice]] = {}
        for dev in state.live_devices():
            ref = state.iommu_ref(dev)
            if ref.status is RefStatus.OK and ref.slot is not None:
                bdf = device_bdf(dev)
                rids = aliases.of(bdf) if bdf in aliases.nodes else (_own_rid(dev),)
                self._by_hw.setdefault(id(ref.slot), []).append(PreservedDevice(bdf, dev, rids))

    def units(self, address: int) -> list[PreservedUnit]:
        """The live Intel hw records whose token is ``address`` (normally one)."""
        state = self.state
        return [
            PreservedUnit(hw, state.located_by, state.assumed, tuple(self._by_hw.get(id(hw), ())))
            for hw in state.find_hw(address, IommuTypeSer.IOMMU_INTEL)
            if not hw.deleted and isinstance(hw.record, IommuHwSerV1)
        ]


def _own_rid(slot: DeviceSlot) -> Rid:
    rec = slot.record
    return Rid(rec.pci_domain_nr, rec.devid >> 8 & 0xFF, rec.devid & 0xFF)
