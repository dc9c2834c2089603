"""Faults on demand: one per way DESIGN.md §3 says a record or a host can go wrong.

``inject(host, Fault.X, target=None)`` changes the simulated host *now* — a record in memory, a
register, the topology, or (for what only a file can show) a rewrite of one file of the next
tree written — and returns a one-line description.  Every fault is visible in the files
:func:`tests.kernelmodel.tree.write_tree` writes afterwards: in ``proc/kcore`` (records, tables, KHO's
memory map), the debugfs text, the KHO/LUO blobs, sysfs or ``vtdlud/processes.json``
(:attr:`FaultSpec.shows_in` names them).  The finding each one should lead to is
:attr:`FaultSpec.code`; judging them is the audit's job.

``target`` names the device (BDF) or unit (``dmarN``) to hit; by default the first preserved
device and its unit.  Record faults act on the outgoing records before kexec and on the incoming
ones (still in memory at the same places) after it.  Faults whose :attr:`FaultSpec.phase` is
``after`` need a kexec first; ``before`` ones need it not to have happened yet.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from tests.kernelmodel.iommu import GSTS_TES, DmarUnit
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.layout import (
    DEVICE,
    DOMAIN,
    FLB_VERSION,
    HW,
    RESTORED_OFFSET,
    Record,
    bitmap_bit,
    bitmap_bits,
    bitmap_words,
)
from tests.kernelmodel.memory import PAGE_SIZE
from tests.kernelmodel.pci import PCI_EXP_TYPE_PCI_BRIDGE
from tests.kernelmodel.records import deleted
from vtdlud.frozen import frozen

FSTS_PPF = 1 << 1
KCORE = "proc/kcore"
DMAR_TRANSLATION = "sys/kernel/debug/iommu/intel/dmar_translation_struct"
REGSET = "sys/kernel/debug/iommu/intel/iommu_regset"
PCI_DEVICES = "sys/bus/pci/devices/"
SYS_DEVICES = "sys/devices/"
PROCESSES = "vtdlud/processes.json"
KHO_OUT_FDT = "sys/kernel/debug/kho/out/fdt"
KHO_OUT_LUO = "sys/kernel/debug/kho/out/sub_fdts/LUO"
KEXEC_LOADED = "sys/kernel/kexec_loaded"
UNKNOWN_FLB_NAME = "iommu-liveupdate-v9"
FLB_NAME_LEN = 48


class Fault(Enum):
    TOKEN_NO_UNIT = "token-no-unit"
    HW_RECORD_DELETED = "hw-record-deleted"
    TYPE_NOT_INTEL = "type-not-intel"
    TOKEN_NE_PHYS = "token-ne-phys-addr"
    ROOT_TABLE_MISMATCH = "root-table-mismatch"
    BIT_MISSING = "bit-missing"
    LATE_CONTEXT_TABLE = "late-context-table"
    BIT_WITHOUT_TABLE = "bit-without-table"
    TABLE_NOT_PRESERVED = "table-not-preserved"
    ODD_BIT_LEGACY = "odd-bit-legacy"
    DEBUGFS_DISAGREES = "debugfs-disagrees"
    REF_COUNT_OFF = "ref-count-off"
    DEVICE_GONE = "device-gone"
    WRONG_HW_RECORD = "wrong-hw-record"
    WRONG_ATTACHMENT_ID = "wrong-attachment-id"
    WRONG_PASID_TABLE = "wrong-pasid-table"
    SHARED_ALIAS = "shared-alias"
    PRI_ENABLED = "pri-enabled"
    LEGACY_VFIO_GROUP = "legacy-vfio-group"
    NOT_ARMED = "not-armed"
    DOMAIN_MISMATCH = "domain-mismatch"
    DOMAIN_DELETED = "domain-deleted"
    CHAIN_LOOP = "chain-loop"
    COUNT_OVER_CAPACITY = "count-over-capacity"
    POINTER_OUTSIDE_RAM = "pointer-outside-ram"
    UNKNOWN_FLB_COMPATIBLE = "unknown-flb-compatible"
    UNKNOWN_FLB_VERSION = "unknown-flb-version"
    UNKNOWN_KHO_COMPATIBLE = "unknown-kho-compatible"
    UNKNOWN_LUO_COMPATIBLE = "unknown-luo-compatible"
    NOT_RESTORED = "not-restored"
    ROOT_TABLE_CHANGED = "root-table-changed"
    CONTEXT_CHANGED = "context-changed"
    DMAR_FAULT = "dmar-fault"
    TRANSLATION_DISABLED = "translation-disabled"


@frozen
class Records:
    """Where the records are now: outgoing bookkeeping before kexec, the incoming walk after."""

    hw: dict[int, int]  # unit register base -> slot
    devices: dict[str, int]  # BDF -> slot
    flb_phys: int
    device_pages: tuple[int, ...]


def records(host: SimHost) -> Records:
    out = host.outgoing
    if out is not None:
        return Records(
            dict(out.hw_slot), dict(out.device_slot), out.flb_phys, tuple(out.devices.pages)
        )
    inc, handed = host.incoming, host.handed_over
    if inc is None or handed is None or not handed.flbs:
        raise ValueError("no live-update records: preserve a device (or kexec with an FLB)")
    devices = {}
    for slot, rec in inc.devices:
        bus, devfn = rec["devid"] >> 8 & 0xFF, rec["devid"] & 0xFF
        devices[f"{rec['pci_domain_nr']:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"] = slot
    pages = tuple(sorted({s & ~(PAGE_SIZE - 1) for s, _ in inc.devices}))
    hw = {rec["token"]: slot for slot, rec in inc.hw}
    return Records(hw, devices, handed.flbs[0].data, pages)


def _read_hw(host: SimHost, slot: int) -> Record:
    return HW.unpack(host.mem.read(slot, HW.size))


def _read_dev(host: SimHost, slot: int) -> Record:
    return DEVICE.unpack(host.mem.read(slot, DEVICE.size))


def _target(host: SimHost, target: str | None) -> tuple[str, DmarUnit, Records]:
    recs = records(host)
    bdf = target if target in recs.devices else next(iter(sorted(recs.devices)), None)
    if target is not None and target.startswith("dmar"):
        unit = host.units[target]
        bdf = next((b for b in sorted(recs.devices) if host.device(b).unit == unit.name), bdf)
    if bdf is None:
        raise ValueError("no preserved device to aim the fault at")
    return bdf, host.unit_of(bdf), recs


def _hw_slot(host: SimHost, target: str | None) -> tuple[int, DmarUnit, Records]:
    _, unit, recs = _target(host, target)
    if unit.reg_base not in recs.hw:
        raise ValueError(f"{unit.name} has no hw record")
    return recs.hw[unit.reg_base], unit, recs


def _edit_hw(host: SimHost, target: str | None, edit: Callable[[Record], Record]) -> str:
    slot, unit, _ = _hw_slot(host, target)
    host.mem.write(slot, HW.pack(edit(_read_hw(host, slot))))
    return f"{unit.name}: hw record at {slot:#x} edited"


def _edit_bits(host: SimHost, target: str | None, change: Callable[[set[int]], None]) -> str:
    def edit(rec: Record) -> Record:
        bits = bitmap_bits(rec["intel.context_tables_bitmap"])
        change(bits)
        return rec | {"intel.context_tables_bitmap": bitmap_words(bits)}

    return _edit_hw(host, target, edit)


def _edit_dev(host: SimHost, target: str | None, edit: Callable[[Record], Record]) -> str:
    bdf, _, recs = _target(host, target)
    slot = recs.devices[bdf]
    host.mem.write(slot, DEVICE.pack(edit(_read_dev(host, slot))))
    return f"{bdf}: device record at {slot:#x} edited"


def _device_bit(host: SimHost, bdf: str) -> int:
    dev = host.device(bdf)
    return bitmap_bit(dev.bus, dev.devfn if host.unit_of(bdf).scalable else 0)


# -- the faults ---------------------------------------------------------------------------------


def _token_no_unit(host: SimHost, target: str | None) -> str:
    taken = {u.reg_base for u in host.units.values()}
    base = max(taken) + 0x10_0000
    return _edit_hw(
        host,
        target,
        lambda r: r | {"token": base, "intel.phys_addr": base},
    )


def _late_table(host: SimHost, target: str | None) -> str:
    unit = host.units[target] if target in host.units else next(iter(host.units.values()))
    bus = 0xF0
    while any(b >> 1 == bus for b in unit.context_tables()):
        bus -= 1
    dev = host.hotplug(unit.segment, bus, 0, driver="e1000e", unit=unit.name)
    return f"{dev.bdf} hot-added: its bus's context table is new and not in the bitmap"


def _bit_without_table(host: SimHost, target: str | None) -> str:
    _, unit, _ = _hw_slot(host, target)
    tables = unit.context_tables()
    bit = next(bitmap_bit(b, 0) for b in range(255, -1, -1) if 2 * b not in tables)
    return _edit_bits(host, target, lambda bits: bits.add(bit)) + f" (bit {bit} set)"


def _table_not_preserved(host: SimHost, target: str | None) -> str:
    bdf, unit, _ = _target(host, target)
    table = unit.context_tables()[_device_bit(host, bdf)]
    host.mem.unpreserve(table)
    return f"{unit.name}: context table {table:#x} of {bdf} no longer KHO-preserved"


def _odd_bit(host: SimHost, target: str | None) -> str:
    bdf, unit, _ = _target(host, target)
    if unit.scalable:
        raise ValueError(f"{unit.name} is in scalable mode: odd bits are legal there")
    bit = _device_bit(host, bdf) + 1
    return _edit_bits(host, target, lambda bits: bits.add(bit)) + f" (bit {bit} set)"


def _debugfs_disagrees(host: SimHost, target: str | None) -> str:
    """debugfs shows a different DID for one device than the tables in memory hold."""
    bdf, _, _ = _target(host, target)
    dev = host.device(bdf)

    name = f"{dev.bus:02x}:{dev.devfn >> 3:02x}.{dev.devfn & 7:x}\t"

    def changed(line: str) -> str:
        if not line.startswith(name):
            return line
        cols = line.split("\t")  # B.D.F, root, context hi:lo, PASID, PASID entry v2:v1:v0
        if cols[3].strip() == "-1":  # legacy: the DID is in the context entry's hi (23:8)
            hi, lo = (int(x, 16) for x in cols[2].split(":"))
            cols[2] = f"0x{hi ^ 0x8000:016x}:0x{lo:016x}"
        else:  # scalable: in the PASID entry's val[1] (15:0)
            v2, v1, v0 = (int(x, 16) for x in cols[4].split(":"))
            cols[4] = f"0x{v2:016x}:0x{v1 ^ 0x80:016x}:0x{v0:016x}"
        return "\t".join(cols)

    def hook(data: bytes) -> bytes:
        return "\n".join(changed(line) for line in data.decode().split("\n")).encode()

    host.tree_hooks[DMAR_TRANSLATION] = hook
    return f"{bdf}: debugfs prints another DID than memory holds"


def _shared_alias(host: SimHost, target: str | None) -> str:
    bdf, _, _ = _target(host, target)
    dev = host.device(bdf)
    bridge = host.device(dev.parent) if dev.parent else None
    if bridge is None or bridge.pcie_type != PCI_EXP_TYPE_PCI_BRIDGE:
        raise ValueError(f"{bdf} is not behind a PCIe-to-PCI bridge: it has no shared alias")
    used = {d.devfn >> 3 for d in host.topology.devices.values() if d.bus == dev.bus}
    slot = next(s for s in range(1, 32) if s not in used)
    other = host.hotplug(dev.segment, dev.bus, slot, pcie_type=None, driver="e1000", unit=dev.unit)
    return f"{other.bdf} (not preserved) shares {bdf}'s DMA alias {dev.bus:02x}:00.0"


def _domain_deleted(host: SimHost, target: str | None) -> str:
    bdf, _, recs = _target(host, target)
    slot = _read_dev(host, recs.devices[bdf])["domain_iommu_ser.domain_phys"]
    rec = DOMAIN.unpack(host.mem.read(slot, DOMAIN.size))
    host.mem.write(slot, DOMAIN.pack(deleted(rec)))
    return f"{bdf}: its domain record at {slot:#x} is DELETED"


def _domain_mismatch(host: SimHost, target: str | None) -> str:
    bdf, _, recs = _target(host, target)
    slot = _read_dev(host, recs.devices[bdf])["domain_iommu_ser.domain_phys"]
    rec = DOMAIN.unpack(host.mem.read(slot, DOMAIN.size))
    wrong = rec["top_table_phys"] + PAGE_SIZE
    host.mem.write(slot, DOMAIN.pack(rec | {"top_table_phys": wrong}))
    return f"{bdf}: domain record top_table_phys {wrong:#x} is not the live page table"


def _wrong_hw_record(host: SimHost, target: str | None) -> str:
    bdf, unit, recs = _target(host, target)
    others = [s for base, s in recs.hw.items() if base != unit.reg_base]
    if not others:
        raise ValueError("needs a second unit with a hw record")
    return _edit_dev(
        host,
        bdf,
        lambda r: r | {"domain_iommu_ser.iommu_phys": others[0]},
    )


def _chain_edit(host: SimHost, what: str) -> str:
    recs = records(host)
    last = recs.device_pages[-1]
    if what == "loop":
        host.mem.set_u64(last, recs.device_pages[0])
    elif what == "count":
        host.mem.set_u64(last + 8, DEVICE.capacity() + 1)
    else:
        host.mem.set_u64(last, host.mem.ram_end + (1 << 32))
    return f"device array page {last:#x}: {what} corrupted"


def _unknown_flb_compatible(host: SimHost, target: str | None) -> str:
    handed = host.handed_over
    if host.outgoing is not None or handed is None or handed.flb_header is None:
        raise ValueError("the FLB list exists only after a kexec with an FLB generation")
    name_at = handed.flb_header + 16  # luo_flb_header_ser, then luo_flb_ser.name
    host.mem.write(name_at, UNKNOWN_FLB_NAME.encode().ljust(FLB_NAME_LEN, b"\0"))
    return f"incoming FLB list names {UNKNOWN_FLB_NAME!r}"


def _unknown_flb_version(host: SimHost, target: str | None) -> str:
    if host.flb_variant != "v2":
        raise ValueError("the v1 FLB has no version word (use flb_variant='v2')")
    recs = records(host)
    host.mem.set_u64(recs.flb_phys, FLB_VERSION + 1)
    return f"iommu_flb_ser at {recs.flb_phys:#x}: version {FLB_VERSION + 1}"


def _not_restored(host: SimHost, target: str | None) -> str:
    if host.handed_over is None:
        raise ValueError("restored is set by the new kernel: kexec first")
    slot, unit, _ = _hw_slot(host, target)
    host.mem.write(slot + RESTORED_OFFSET, b"\0")
    return f"{unit.name}: restored == 0 after kexec"


def _root_changed(host: SimHost, target: str | None) -> str:
    if host.handed_over is None:
        raise ValueError("a post-kexec fault: kexec first")
    unit = host.units[target] if target in host.units else next(iter(host.units.values()))
    new = host.mem.alloc()
    host.mem.write(new, host.mem.read(unit.root_table, PAGE_SIZE))
    unit.root_table = new
    return f"{unit.name}: new kernel runs on a fresh root table {new:#x}"


def _context_changed(host: SimHost, target: str | None) -> str:
    if host.handed_over is None:
        raise ValueError("a post-kexec fault: kexec first")
    bdf, unit, _ = _target(host, target)
    dev = host.device(bdf)
    if unit.scalable:
        addr = unit.pasid_entry_addr(dev.bus, dev.devfn, 0, alloc=False)
        assert addr is not None
        host.mem.set_u64(addr + 8, host.mem.u64(addr + 8) ^ 0x80)
    else:
        addr = unit.context_addr(dev.bus, dev.devfn)
        assert addr is not None
        host.mem.set_u64(addr + 8, host.mem.u64(addr + 8) ^ 0x8000)
    return f"{bdf}: DID changed in the new kernel"


def _unit(host: SimHost, target: str | None) -> DmarUnit:
    if target in host.units:
        return host.units[target]
    if target is not None:
        return host.unit_of(target)
    return next(iter(host.units.values()))


def _device(host: SimHost, target: str | None) -> str:
    if target is not None and target in host.topology.devices:
        return target
    return _target(host, target)[0]


def _legacy_group(host: SimHost, target: str | None) -> str:
    bdf = _device(host, target)
    host.legacy_group_users.add(bdf)
    return f"{bdf}: a process holds /dev/vfio/{host.device(bdf).group}"


def _kho_compatible(host: SimHost, target: str | None) -> str:
    host.kho.kho_compatible = "kho-v9"
    return "KHO root FDT compatible 'kho-v9'"


def _luo_compatible(host: SimHost, target: str | None) -> str:
    host.kho.luo_compatible = "luo-v9"
    return "LUO FDT compatible 'luo-v9'"


def _dmar_fault(host: SimHost, target: str | None) -> str:
    unit = _unit(host, target)
    unit.fsts |= FSTS_PPF
    return f"{unit.name}: FSTS.PPF set"


def _tes_off(host: SimHost, target: str | None) -> str:
    unit = _unit(host, target)
    unit.gsts &= ~GSTS_TES
    return f"{unit.name}: GSTS.TES clear"


@frozen
class FaultSpec:
    code: str  # the finding (DESIGN.md §3) the fault should lead to
    phase: str  # "before" / "after" a kexec, or "any"
    doc: str
    apply: Callable[[SimHost, str | None], str]
    shows_in: tuple[str, ...] = (KCORE,)  # root-relative path prefixes of the changed files


Apply = Callable[[SimHost, str | None], str]
HwEdit = Callable[[Record], Record]
DevEdit = HwEdit


def _hw(edit: HwEdit) -> Apply:
    return lambda h, t: _edit_hw(h, t, edit)


def _intel(**fields: Callable[[Record], int]) -> Apply:
    def edit(r: Record) -> Record:
        changes: dict[str, Any] = {f"intel.{k}": f(r) for k, f in fields.items()}
        return r | changes

    return _hw(edit)


def _dev_map(**fields: Callable[[Record], int]) -> Apply:
    def edit(r: Record) -> Record:
        changes: dict[str, Any] = {f"domain_iommu_ser.{k}": f(r) for k, f in fields.items()}
        return r | changes

    return lambda h, t: _edit_dev(h, t, edit)


def _set(attr: str) -> Apply:
    def apply(host: SimHost, target: str | None) -> str:
        bdf = _device(host, target)
        setattr(host.device(bdf), attr, not getattr(host.device(bdf), attr))
        return f"{bdf}: {attr} = {getattr(host.device(bdf), attr)}"

    return apply


def _not_armed(host: SimHost, target: str | None) -> str:
    host.kexec_loaded = False
    return "no kexec image loaded"


def _bit_missing(host: SimHost, target: str | None) -> str:
    bit = _device_bit(host, _target(host, target)[0])
    return _edit_bits(host, target, lambda bits: bits.discard(bit)) + f" (bit {bit} clear)"


def _pasid_table(host: SimHost, target: str | None) -> str:
    def edit(r: Record) -> Record:
        return r | {"intel.pasid_table": r["intel.pasid_table"] + PAGE_SIZE}

    return _edit_dev(host, target, edit)


_S = FaultSpec
FAULTS: dict[Fault, FaultSpec] = {
    Fault.TOKEN_NO_UNIT: _S("VTD001", "any", "token/phys_addr of no DMAR unit", _token_no_unit),
    Fault.HW_RECORD_DELETED: _S(
        "VTD002",
        "any",
        "the unit's hw record is DELETED, devices still point at it",
        _hw(deleted),
    ),
    Fault.TYPE_NOT_INTEL: _S(
        "VTD003",
        "any",
        "hw record type IOMMU_INVALID",
        _hw(lambda r: r | {"type": 0}),  # IOMMU_INVALID
    ),
    Fault.TOKEN_NE_PHYS: _S(
        "VTD003", "any", "phys_addr != token", _intel(phys_addr=lambda r: r["token"] ^ 0x1000)
    ),
    Fault.ROOT_TABLE_MISMATCH: _S(
        "VTD010",
        "before",
        "root_table is not RTADDR's",
        _intel(root_table=lambda r: r["intel.root_table"] + PAGE_SIZE),
    ),
    Fault.BIT_MISSING: _S("VTD011", "before", "a preserved device's bit clear", _bit_missing),
    Fault.LATE_CONTEXT_TABLE: _S(
        "VTD012",
        "before",
        "a device hot-added on a new bus after preservation",
        _late_table,
        (DMAR_TRANSLATION, PCI_DEVICES, KCORE),
    ),
    Fault.BIT_WITHOUT_TABLE: _S("VTD013", "before", "a bit without a table", _bit_without_table),
    Fault.TABLE_NOT_PRESERVED: _S(
        "VTD013", "before", "a bit's table page not KHO-preserved", _table_not_preserved
    ),
    Fault.ODD_BIT_LEGACY: _S("VTD014", "any", "an odd bit on a legacy unit", _odd_bit),
    Fault.DEBUGFS_DISAGREES: _S(
        "VTD015", "any", "debugfs DID != memory", _debugfs_disagrees, (DMAR_TRANSLATION,)
    ),
    Fault.REF_COUNT_OFF: _S(
        "VTD020",
        "any",
        "ref_count one above the live device records",
        _hw(lambda r: r | {"hdr.ref_count": r["hdr.ref_count"] + 1}),
    ),
    Fault.DEVICE_GONE: _S(
        "VTD021", "any", "a preserved device not in sysfs", _set("in_sysfs"), (PCI_DEVICES,)
    ),
    Fault.WRONG_HW_RECORD: _S(
        "VTD022", "any", "iommu_phys names another unit's record", _wrong_hw_record
    ),
    Fault.WRONG_ATTACHMENT_ID: _S(
        "VTD023",
        "any",
        "attachment_id != the live DID",
        _dev_map(attachment_id=lambda r: r["domain_iommu_ser.attachment_id"] + 0x100),
    ),
    Fault.WRONG_PASID_TABLE: _S(
        "VTD024", "any", "pasid_table != the live PASID directory", _pasid_table
    ),
    Fault.SHARED_ALIAS: _S(
        "VTD025",
        "before",
        "a non-preserved device shares the alias",
        _shared_alias,
        (PCI_DEVICES, KCORE),
    ),
    Fault.PRI_ENABLED: _S(
        "VTD026", "any", "PRI enabled in config space", _set("pri_enabled"), (SYS_DEVICES,)
    ),
    Fault.LEGACY_VFIO_GROUP: _S(
        "VTD026", "any", "a legacy VFIO group user", _legacy_group, (PROCESSES,)
    ),
    Fault.NOT_ARMED: _S("VTD029", "before", "no kexec image loaded", _not_armed, (KEXEC_LOADED,)),
    Fault.DOMAIN_MISMATCH: _S("VTD027", "any", "domain top table wrong", _domain_mismatch),
    Fault.DOMAIN_DELETED: _S("VTD027", "any", "domain record DELETED", _domain_deleted),
    Fault.CHAIN_LOOP: _S("VTD041", "any", "array chain loops", lambda h, t: _chain_edit(h, "loop")),
    Fault.COUNT_OVER_CAPACITY: _S(
        "VTD041", "any", "nr_objects over capacity", lambda h, t: _chain_edit(h, "count")
    ),
    Fault.POINTER_OUTSIDE_RAM: _S(
        "VTD041", "any", "next_array_phys outside RAM", lambda h, t: _chain_edit(h, "outside")
    ),
    Fault.UNKNOWN_FLB_COMPATIBLE: _S(
        "VTD040", "after", "unknown FLB name in the list", _unknown_flb_compatible
    ),
    Fault.UNKNOWN_FLB_VERSION: _S(
        "VTD040", "any", "unknown iommu_flb_ser.version", _unknown_flb_version
    ),
    Fault.UNKNOWN_KHO_COMPATIBLE: _S(
        "VTD040", "any", "unknown KHO root compatible", _kho_compatible, (KHO_OUT_FDT,)
    ),
    Fault.UNKNOWN_LUO_COMPATIBLE: _S(
        "VTD040", "any", "unknown LUO compatible/feature", _luo_compatible, (KHO_OUT_LUO,)
    ),
    Fault.NOT_RESTORED: _S("VTD060", "after", "restored == 0 after kexec", _not_restored),
    Fault.ROOT_TABLE_CHANGED: _S(
        "VTD061",
        "after",
        "the new kernel runs another root table",
        _root_changed,
        (REGSET, DMAR_TRANSLATION, KCORE),
    ),
    Fault.CONTEXT_CHANGED: _S(
        "VTD062",
        "after",
        "a preserved device's DID changed after kexec",
        _context_changed,
        (DMAR_TRANSLATION, KCORE),
    ),
    Fault.DMAR_FAULT: _S("VTD063", "any", "FSTS.PPF set", _dmar_fault, (REGSET,)),
    Fault.TRANSLATION_DISABLED: _S(
        "VTD070", "any", "GSTS.TES clear", _tes_off, (REGSET, DMAR_TRANSLATION)
    ),
}


def inject(host: SimHost, fault: Fault, target: str | None = None) -> str:
    """Apply ``fault`` to ``host`` now; returns what was done (ValueError if it cannot apply)."""
    spec = FAULTS[fault]
    if spec.phase == "after" and host.handed_over is None:
        raise ValueError(f"{fault.value}: a post-kexec fault; kexec first")
    if spec.phase == "before" and host.handed_over is not None and host.outgoing is None:
        raise ValueError(f"{fault.value}: needs preserved devices before kexec")
    return spec.apply(host, target)
