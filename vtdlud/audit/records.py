"""The record audit: the mirror of what the kernel should have written, diffed with its records.

Per preserved unit ``drivers/iommu/intel/liveupdate.c`` writes an ``iommu_hw_ser``, and per
preserved device an ``iommu_device_ser`` pointing at it and at an ``iommu_domain_ser`` (reference
§1.3-§1.5).  :func:`mirror_hw`, :func:`mirror_device` and :func:`mirror_domain` build, with the ABI
mirror's own record classes, the records the kernel should have written from what is live (the
register base, the root table from RTADDR, the unit's device records, each device's DID from its
context entry (legacy) or RID_PASID PASID entry (scalable), its PASID directory, the domain's top
page table and level); :func:`field_diffs` compares them with the kernel's records field by field,
each field belonging to one code (``HW_FIELDS``, ``DEVICE_FIELDS``, ``DOMAIN_FIELDS``).  A field
whose live value is not visible is copied from the record (not judged) and reported UNKNOWN.  The
bitmap is judged against bounds: it must hold the halves of the preserved devices and their DMA
aliases (VTD011), only tables that exist and are KHO-preserved (VTD013, with the root table page
the hardware walks), no odd bit in legacy mode (VTD014); a present table outside it holding no
preserved device was allocated after the last preservation (VTD012, NOTE).

A device record belongs to the unit sysfs says (its ``iommu`` link): one whose ``iommu_phys`` names
another unit's record is VTD022 and still counts for its own unit's ``ref_count`` (the kernel
counted it there), so one wrong pointer is one finding; device records of a VTD001/VTD003 hw
record are not judged again.

Phases.  ``located_by == "signature"``: the outgoing records before a kexec, every check runs (the
gate).  ``"flb"`` or ``"ledger"``: the incoming records of a live update (through the LUO FLB, or
at the addresses the gate's ledger recorded).  Then the record-internal checks run
(VTD001-003, 011, 014, 020-022, 027, 040, 041); comparing the live root table, tables, DIDs and
PASID directories is the post-kexec verification's, against the ledger (VTD061/VTD062,
:mod:`vtdlud.audit.postkexec`); tables the new kernel allocated are no NOTE, and VTD030/VTD031
belong to the gate.

Visibility.  Live tables come from the unit's kcore walk (exact), else ``dmar_translation_struct``
(a lower bound: what it does not show proves nothing).  A check whose input is not visible reports
its code as UNKNOWN, never FAIL, blocking the gate (``required``) when a tier the policy requires
is the one missing, or when none is and the input still is not (fail closed).  Without the kcore
or kho_debugfs tier no record is visible and VTD050 stands for every check here.  Tested on the
simulator (tests.kernelmodel) only: no real capture of the records exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from vtdlud.audit.aliasentries import alias_problems
from vtdlud.audit.mirror import (
    DEVICE_FIELDS,
    DOMAIN_FIELDS,
    HW_FIELDS,
    INTEL,
    LIVE_TIERS,
    REF_TEXT,
    LiveView,
    Sink,
    _half,
    _key,
    _x,
    field_diffs,
    live_top_table,
    live_view,
    mirror_device,
    mirror_domain,
    mirror_hw,
    points_nowhere,
    unit_mode,
)
from vtdlud.audit.pages import page_table_findings, pasid_findings
from vtdlud.audit.preserved import PreservedDevice, device_bdf, rid_bits
from vtdlud.audit.recfields import (
    device_ref_problem,
    devid_problem,
    domain_ref_problem,
    flags_problem,
    max_pasid_problem,
    vasz_problem,
)
from vtdlud.audit.report import Finding, UnitReport, Wanted, bits_detail
from vtdlud.frozen import frozen
from vtdlud.model.abi import IommuDeviceSerV1, IommuDomainSer, IommuHwSerV1
from vtdlud.model.alias import DmaAliases, Rid
from vtdlud.model.khomem import MapState, MemMapProblemKind
from vtdlud.model.live import ContextInfo
from vtdlud.model.policy import Policy
from vtdlud.model.records import Chain, HwSlot, PreservedState, RefStatus
from vtdlud.model.records import ProblemKind as ChainKind
from vtdlud.model.snapshot import Snapshot
from vtdlud.model.tables import (
    Mode,
    context_table_bit,
)
from vtdlud.model.tiers import Tier

if TYPE_CHECKING:
    from vtdlud.model.preserved import PreservedRecords


INCOMING = frozenset({"flb", "ledger"})  # located_by of the incoming records


@frozen
class _Unit:
    """One unit with a live hw record, and what the audit of it needs."""

    state: PreservedState
    view: UnitReport
    address: int
    hw: HwSlot
    rec: IommuHwSerV1
    members: list[PreservedDevice]
    mode: Mode
    live: LiveView | None
    before: bool  # outgoing records (the gate); False: incoming, after a live update
    complete: bool  # the device chain was read to its end
    name: str

    def pasid_dirs(self) -> set[int]:
        """The PASID directories the unit's device records name (computed once: a unit may
        hold hundreds of records, and every one's alias entries are checked against them)."""
        got: set[int] | None = self.__dict__.get("_pasid_dirs")
        if got is None:
            got = {
                m.slot.record.intel.pasid_table
                for m in self.members
                if isinstance(m.slot.record, IommuDeviceSerV1) and m.slot.record.intel.pasid_table
            }
            object.__setattr__(self, "_pasid_dirs", got)
        return got


# --- the audit --------------------------------------------------------------------------------


class _Audit(Sink):
    def __init__(
        self,
        snapshot: Snapshot,
        units: Sequence[UnitReport],
        policy: Policy,
        wanted: Sequence[Wanted],
        *,
        aliases: DmaAliases,
    ) -> None:
        super().__init__(snapshot, policy)
        self.wanted = wanted
        self.units = {u.address: u for u in units if u.address is not None}
        self.by_name = {u.name: u.address for u in units if u.address is not None}
        self.records: PreservedRecords | None = snapshot.preserved
        self.aliases = aliases
        self.domains_walked: set[int] = set()  # domain records whose page table was judged

    def name(self, address: int | None) -> str:
        u = self.units.get(address) if address is not None else None
        return u.name if u is not None else f"unit {_x(address)}"

    def sysfs_unit(self, bdf: str) -> int | None:
        """The unit sysfs puts the device on (its ``iommu`` link, else the unit's devices/)."""
        dev = self.snap.pci_devices.get(bdf)
        if dev is not None and dev.iommu in self.by_name:
            return self.by_name[dev.iommu]
        return next((a for a, u in self.units.items() if bdf in u.devices), None)

    # -- entry ------------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        if not self.snap.tiers[Tier.SYSFS].available:
            return []  # no unit to key anything on; VTD050 says why
        recs = self.records
        state = recs.state if recs is not None else None
        before = state is None or state.located_by not in INCOMING
        if before:
            self.memory_map()
        if state is None:
            self.no_records()
            return self.out
        if state.unknown is not None:
            self.add("VTD040", f"IOMMU records ({state.located_by}): {state.unknown.reason}")
            if before:
                self.no_records(f"their ABI is unknown ({state.unknown.reason})")
            return self.out
        scan = recs.scan if recs is not None else None
        if before and scan is not None and scan.flb_phys is None:
            msg = "records found by signature, but no preserved page has the shape of their "
            msg += "iommu_flb_ser (v1: three array addresses; v2: version 1, then three): its "
            self.add(
                "VTD040", msg + "format or version may be one the next kernel refuses", unknown=()
            )
        for p in state.problems:
            where = f" (linked from {p.linked_from:#x})" if p.linked_from is not None else ""
            io = p.kind is ChainKind.UNREADABLE and not points_nowhere(p.reason)
            msg = f"{p.chain.value} chain {'unreadable' if io else 'broken'} at {p.page_phys:#x}"
            self.add("VTD051" if io else "VTD041", f"{msg}{where}: {p.reason}")
        good = self.hw_records(state)
        members = self.devices(state, good)
        self.domain_records(state)
        complete = not any(p.chain in (Chain.FLB, Chain.DEVICE) for p in state.problems)
        for address, hw in good.items():
            rec, view = hw.record, self.units[address]
            assert isinstance(rec, IommuHwSerV1)  # hw_records keeps only those
            mine = members.get(address, [])
            live, mode = live_view(self.snap, view), unit_mode(view)
            u = _Unit(state, view, address, hw, rec, mine, mode, live, before, complete, view.name)
            self.unit(u)
        if before:
            self.policy_codes(state, complete)
        return self.out

    # -- visibility of the records ----------------------------------------------------------
    def memory_map(self) -> None:
        """Problems of KHO's preserved-memory map, and record pages it lacks (before kexec)."""
        recs = self.records
        pm = recs.memory_map if recs is not None else None
        for p in pm.problems if pm is not None and pm.state is MapState.INCOMPLETE else ():
            if p.kind is MemMapProblemKind.LIMIT or (
                p.kind is MemMapProblemKind.UNREADABLE and not points_nowhere(p.reason)
            ):
                self.add("VTD051", f"KHO preserved-memory map at {p.phys:#x}: {p.reason}")
            else:
                self.add("VTD041", f"KHO preserved-memory map broken at {p.phys:#x}: {p.reason}")
        scan = recs.scan if recs is not None else None
        for page in scan.not_preserved if scan is not None else ():
            msg = f"IOMMU record page {page:#x} is not in KHO's preserved-memory map: the next "
            self.add("VTD041", msg + "kernel cannot follow the record chain through it")

    def no_records(self, reason: str | None = None) -> None:
        """VTD030 for the devices to preserve when no record could be decoded: FAIL only when
        KHO's whole preserved memory was scanned and holds none."""
        recs = self.records
        unknown: Sequence[Tier] | None = ()  # blocking UNKNOWN: the tiers are there
        if recs is None:
            return  # the kho_debugfs or kcore tier is missing: VTD050 stands for every check
        if reason is None and (
            recs.scan is not None
            and recs.memory_map is not None
            and recs.memory_map.state is MapState.COMPLETE
            and recs.scan.unreadable == 0
            and all(u.address is not None for u in self.snap.units)  # the signatures sought
        ):
            reason, unknown = "KHO's preserved memory holds no IOMMU live-update record", None
        elif reason is None:
            reason = "; ".join(recs.notes) or "the IOMMU records could not be located"
        for w in self.wanted:
            msg = f"{w.bdf}: the policy requires it preserved; {reason}"
            self.add("VTD030", msg, unit=self.sysfs_unit(w.bdf), bdf=w.bdf, unknown=unknown)

    # -- hw and device records --------------------------------------------------------------
    def hw_records(self, state: PreservedState) -> dict[int, HwSlot]:
        """VTD001/VTD003 on every live hw record; the record per unit the kernel would use."""
        good: dict[int, HwSlot] = {}
        for hw in state.live_hw():
            rec, at = hw.record, f"hw record at {hw.phys:#x}"
            known = rec.token in self.units
            if (why := flags_problem(rec.hdr)) is not None:
                self.add("VTD003", f"{at}: {why}", unit=rec.token if known else None)
            if rec.type != INTEL:
                msg = f"{at}: type {rec.type} is not IOMMU_INTEL ({INTEL}); token {rec.token:#x}"
                self.add("VTD003", msg, unit=rec.token if known else None)
            elif not known:
                units = ", ".join(f"{a:#x}" for a in sorted(self.units)) or "none"
                msg = f"{at}: token {rec.token:#x} matches no DMAR unit (units: {units})"
                self.add("VTD001", msg, unit=rec.token)
            elif not isinstance(rec, IommuHwSerV1):
                self.add("VTD003", f"{at}: no Intel part in this record layout", unit=rec.token)
            elif rec.token in good:
                first = good[rec.token].phys
                msg = f"{at}: a second live record for token {rec.token:#x} (the kernel uses the "
                self.add("VTD003", msg + f"first, at {first:#x})", unit=rec.token)
            else:
                good[rec.token] = hw
        return good

    def devices(
        self, state: PreservedState, good: Mapping[int, HwSlot]
    ) -> dict[int, list[PreservedDevice]]:
        """VTD002, VTD021, VTD022; each live device record under the unit it belongs to."""
        members: dict[int, list[PreservedDevice]] = {}
        good_slots = {hw.phys for hw in good.values()}
        for dev in state.live_devices():
            if (why := devid_problem(dev.record.devid)) is not None:
                hw_slot = state.iommu_ref(dev).slot
                token = hw_slot.record.token if hw_slot is not None else None
                msg = f"device record at {dev.phys:#x}: {why}"
                self.add("VTD003", msg, unit=token if token in self.units else None)
                continue
            bdf, ref = device_bdf(dev), state.iommu_ref(dev)
            at = f"{bdf}: device record at {dev.phys:#x}"
            for why in (flags_problem(dev.record.hdr), device_ref_problem(dev.record.hdr)):
                if why is not None:
                    self.add("VTD003", f"{at}: {why}", unit=self.sysfs_unit(bdf), bdf=bdf)
            mine = self.sysfs_unit(bdf)
            target = ref.slot.record.token if ref.slot is not None else None
            owner = mine if mine is not None else target
            if bdf not in self.snap.pci_devices:
                msg = f"{at} names a device that is not in sysfs (removed after preservation?)"
                self.add("VTD021", msg, unit=owner, bdf=bdf)
            if ref.status is not RefStatus.OK:
                what = REF_TEXT[ref.status].format("hw")
                hw = good.get(owner) if owner is not None else None
                have = f"; the unit's live record is at {hw.phys:#x}" if hw is not None else ""
                msg = f"{at}: domain_iommu_ser.iommu_phys {ref.phys:#x} {what} (token {_x(target)})"
                self.add("VTD002", msg + have, unit=owner, bdf=bdf)
            elif ref.phys not in good_slots:
                owner = None  # its hw record is VTD001/VTD003 already
            elif mine is not None and target != mine:
                theirs = f"its record is at {good[mine].phys:#x}" if mine in good else "no record"
                msg = f"{at}: domain_iommu_ser.iommu_phys {ref.phys:#x} is the hw record of "
                msg += f"{self.name(target)} ({_x(target)}); sysfs puts the device on "
                self.add(
                    "VTD022", msg + f"{self.name(mine)} ({mine:#x}), {theirs}", unit=mine, bdf=bdf
                )
            if owner is None:
                continue
            own = (Rid(dev.record.pci_domain_nr, *_key(dev)),)
            rids = self.aliases.of(bdf) if bdf in self.aliases.nodes else own
            members.setdefault(owner, []).append(PreservedDevice(bdf, dev, rids))
        return members

    def domain_records(self, state: PreservedState) -> None:
        """VTD003 (flags, ref_count) and VTD027 (vasz) on every live domain record."""
        users: dict[int, int] = {}
        for dev in state.live_devices():
            phys = dev.record.domain_iommu_ser.domain_phys
            users[phys] = users.get(phys, 0) + 1
        for dom in state.live_domains():
            at = f"domain record at {dom.phys:#x}"
            for why in (
                flags_problem(dom.record.hdr),
                domain_ref_problem(dom.record.hdr, users.get(dom.phys, 0)),
            ):
                if why is not None:
                    self.add("VTD003", f"{at}: {why}")
            if (bad := vasz_problem(dom.record)) is not None:
                msg = f"{at}: vasz {bad[0]}, but its top_level {dom.record.top_level} makes a "
                msg += f"{dom.record.top_level + 1}-level table of {bad[1]} bits [I]"
                self.add("VTD027", msg, details={"expected": str(bad[1]), "actual": str(bad[0])})

    # -- one unit -----------------------------------------------------------------------------
    def unit(self, u: _Unit) -> None:
        at = f"{u.name}: hw record at {u.hw.phys:#x}"
        root = u.view.root_table if u.before else None
        count = len(u.members) if u.complete else None
        expected = mirror_hw(
            u.rec, u.address, root_table=root, ref_count=count, restored=0 if u.before else None
        )
        for path, a, e in field_diffs(u.rec, expected):
            if path in HW_FIELDS:
                code, why = HW_FIELDS[path]
                msg = f"{at}: iommu_hw_ser.{path} {_x(a, path)}, expected {_x(e, path)} ({why})"
                cmp = {"expected": _x(e, path), "actual": _x(a, path)}
                self.add(code, msg, unit=u.address, details=cmp)
        if u.before and u.view.root_table is None:
            msg = f"{at}: intel.root_table {u.rec.intel.root_table:#x} not checked: the live root "
            msg += "table (RTADDR in iommu_regset) is not visible"
            self.add(
                "VTD010",
                msg,
                unit=u.address,
                unknown=(Tier.IOMMU_DEBUGFS,),
                details={"actual": f"{u.rec.intel.root_table:#x}"},
            )
        if not u.complete:
            msg = f"{at}: hdr.ref_count {u.rec.hdr.ref_count} not checked: the device chain is "
            self.add("VTD020", msg + "incomplete", unit=u.address, unknown=())
        bits = set(u.rec.intel.context_table_bits)
        occupied = self.bitmap(u, bits)
        if u.before:
            self.late_tables(u, bits, occupied)
            self.tables(u, bits - {b for b in bits if b & 1} if u.mode is Mode.LEGACY else bits)
            if u.live is None and u.members:
                msg = f"{u.name}: the DIDs of {len(u.members)} preserved device(s) not checked: "
                msg += "no kcore walk and no dmar_translation_struct rows for this unit"
                self.add("VTD023", msg, unit=u.address, unknown=LIVE_TIERS)
        for dev in u.members:
            if dev.bdf in self.snap.pci_devices:
                self.device(u, dev)

    def bitmap(self, u: _Unit, bits: set[int]) -> set[int]:
        """VTD014, VTD011; returns the halves the preserved devices' entries occupy."""
        field = f"{u.name}: intel.context_tables_bitmap"
        odd = {b for b in bits if b & 1}
        if odd and u.mode is Mode.LEGACY:
            msg = f"{field} has upper-table {_half(*sorted(odd))} set on a legacy-mode unit"
            self.add("VTD014", msg, unit=u.address, details={"bit": bits_detail(*odd)})
        elif odd and u.mode is Mode.UNKNOWN:
            msg = f"{field} has {_half(*sorted(odd))} set; the unit's mode is not visible"
            unknown = (Tier.IOMMU_DEBUGFS,)
            bit = {"bit": bits_detail(*odd)}
            self.add("VTD014", msg, unit=u.address, unknown=unknown, details=bit)
        occupied: set[int] = set()
        for dev in u.members:
            at = f"{u.name}: {dev.bdf}"
            if dev.rids is None:
                msg = f"{at}: its DMA aliases are not visible (a bridge's config space could not "
                msg += "be read): the halves its entries need are not known"
                self.add("VTD011", msg, unit=u.address, bdf=dev.bdf, unknown=())
                continue
            need = rid_bits(dev.rids, u.mode)
            if u.mode is Mode.UNKNOWN and need != rid_bits(dev.rids, Mode.SCALABLE):
                msg = f"{at}: which half holds its entry depends on the mode, which is not visible"
                self.add("VTD011", msg, unit=u.address, bdf=dev.bdf, unknown=(Tier.IOMMU_DEBUGFS,))
                continue
            occupied.update(need)
            missing = set(need) - bits
            if missing:
                rids = ", ".join(str(r) for r in dev.rids)
                msg = f"{field} lacks {_half(*sorted(missing))}, the table of {dev.bdf}'s context entries "
                msg += f"(RIDs {rids}): that half is zeroed at kexec"
                bit = {"bit": bits_detail(*missing)}
                self.add("VTD011", msg, unit=u.address, bdf=dev.bdf, details=bit)
        return occupied

    def late_tables(self, u: _Unit, bits: set[int], occupied: set[int]) -> None:
        """VTD012: present tables outside the bitmap that hold no preserved device."""
        if u.live is None:
            return
        for bit in sorted(u.live.bits - bits - occupied):
            msg = f"{u.name}: the context table of {_half(bit)} exists (per {u.live.source}) but "
            msg += "its bit is clear and it holds no preserved device: it is dropped at kexec"
            self.add("VTD012", msg, unit=u.address, details={"bit": str(bit)})

    def tables(self, u: _Unit, bits: set[int]) -> None:
        """VTD013: every table a bit claims exists and, like the root table the hardware walks,
        is a KHO-preserved page."""
        live = u.live
        if live is not None and live.exact:
            for bit in sorted(bits - live.bits):
                msg = f"{u.name}: intel.context_tables_bitmap has {_half(bit)} set but no such "
                msg += "context table exists (its root entry half is not present, per kcore)"
                self.add("VTD013", msg, unit=u.address, details={"bit": str(bit)})
        elif bits:
            src = f"{live.source}, a lower bound" if live is not None else "no live tables"
            unproven = len(bits - (live.bits if live is not None else frozenset()))
            msg = f"{u.name}: the {len(bits)} context table(s) of the bitmap are not verified (no "
            msg += f"kcore walk; {src}): {unproven} not shown present, page addresses not known"
            self.add("VTD013", msg, unit=u.address, unknown=LIVE_TIERS)
        pm = self.records.memory_map if self.records is not None else None
        if pm is None or pm.state is not MapState.COMPLETE:
            why = "no" if pm is None else f"an {pm.state.value}"
            msg = f"{u.name}: whether the root and context tables are KHO-preserved is not known "
            self.add("VTD013", msg + f"({why} preserved-memory map)", unit=u.address, unknown=())
            return
        root = u.view.root_table if u.view.root_table is not None else u.rec.intel.root_table
        if not pm.contains(root & ~0xFFF):
            msg = f"{u.name}: the root table page {root:#x} is not KHO-preserved"
            self.add("VTD013", msg, unit=u.address, details={"actual": f"{root:#x}"})
        tables = live.tables if live is not None else {}
        for bit in sorted(bits & set(tables)):
            if not pm.contains(tables[bit]):
                msg = f"{u.name}: context table {tables[bit]:#x} of {_half(bit)} is not "
                at_bit = {"bit": str(bit), "actual": f"{tables[bit]:#x}"}
                self.add("VTD013", msg + "KHO-preserved", unit=u.address, details=at_bit)

    def device(self, u: _Unit, dev: PreservedDevice) -> None:
        """VTD023/VTD024 (before kexec) and VTD027 for one device record of the unit."""
        slot, bdf, live = dev.slot, dev.bdf, u.live
        at = f"{u.name}: {bdf}: device record at {slot.phys:#x}"
        dom = u.state.domain_ref(slot)
        if dom.status is not RefStatus.OK:
            what = REF_TEXT[dom.status].format("domain")
            msg = f"{at}: domain_iommu_ser.domain_phys {dom.phys:#x} {what}"
            self.add("VTD027", msg, unit=u.address, bdf=bdf)
        key = _key(slot)
        info = live.devices.get(key) if live is not None else None
        if isinstance(slot.record, IommuDeviceSerV1) and u.mode is not Mode.LEGACY:
            # (legacy mode: a record with a PASID table at all is VTD024, audit/pages.py)
            pdts = info.pdts if info is not None and u.mode is Mode.SCALABLE else None
            if (why := max_pasid_problem(slot.record, pdts)) is not None:
                self.add("VTD024", f"{at}: {why}", unit=u.address, bdf=bdf)
        if live is None:
            return
        if u.before:
            self.alias_entries(u, dev, live)
            if isinstance(slot.record, IommuDeviceSerV1):
                pm = self.records.memory_map if self.records is not None else None
                pasid_findings(
                    self,
                    at=at,
                    unit=u.address,
                    bdf=bdf,
                    rec=slot.record,
                    mode=u.mode,
                    info=info,
                    live=live,
                    pm=pm,
                )
        if info is None or info.did is None:
            if u.before:
                what = "context entry" if info is None else "RID_PASID (PASID 0) entry"
                bit = context_table_bit(key[0], key[1] if u.mode is Mode.SCALABLE else 0)
                if live.exact and bit not in live.unwalked and key not in live.incomplete:
                    attach = slot.record.domain_iommu_ser.attachment_id
                    msg = f"{at}: attachment_id {attach} but no live {what} is present (kcore)"
                    gone = {"bit": str(bit), "expected": str(attach), "actual": "none"}
                    self.add("VTD023", msg, unit=u.address, bdf=bdf, details=gone)
                else:
                    msg = f"{at}: its live {what} is not visible ({live.source})"
                    self.add("VTD023", msg, unit=u.address, bdf=bdf, unknown=LIVE_TIERS)
            return
        rec = slot.record
        if u.before and isinstance(rec, IommuDeviceSerV1):
            pasid_dir = info.pasid_dir if u.mode is Mode.SCALABLE else None
            for path, a, e in field_diffs(
                rec, mirror_device(rec, did=info.did, pasid_dir=pasid_dir)
            ):
                code, what = DEVICE_FIELDS[path]
                msg = f"{at}: iommu_device_ser.{path} {_x(a, path)}, {what} {_x(e, path)} "
                cmp = {"expected": _x(e, path), "actual": _x(a, path)}
                self.add(code, msg + f"(per {live.source})", unit=u.address, bdf=bdf, details=cmp)
        elif u.before and rec.domain_iommu_ser.attachment_id != info.did:
            msg = f"{at}: attachment_id {rec.domain_iommu_ser.attachment_id}, live DID {info.did}"
            cmp = {"expected": str(info.did), "actual": str(rec.domain_iommu_ser.attachment_id)}
            self.add("VTD023", msg + f" (per {live.source})", unit=u.address, bdf=bdf, details=cmp)
        if dom.slot is not None and dom.status is RefStatus.OK:
            self.domain(u, bdf, dom.slot.phys, dom.slot.record, info)

    def alias_entries(self, u: _Unit, dev: PreservedDevice, live: LiveView) -> None:
        """VTD023 (legacy) / VTD024 (scalable): the context entries of the RIDs the device's
        DMA uses besides its own (:mod:`vtdlud.audit.aliasentries`)."""
        if dev.rids is None:
            return  # not visible: VTD011 says so
        rec = dev.slot.record
        dirs = u.pasid_dirs()
        pasid = rec.intel.pasid_table if isinstance(rec, IommuDeviceSerV1) else None
        own = self.aliases.own(dev.bdf) or dev.rids[:1]
        code = "VTD024" if u.mode is Mode.SCALABLE else "VTD023"
        for p in alias_problems(
            dev.rids,
            own,
            u.mode,
            live,
            did=rec.domain_iommu_ser.attachment_id,
            pasid_dir=pasid,
            preserved_dirs=dirs,
        ):
            msg = f"{u.name}: {dev.bdf}: device record at {dev.slot.phys:#x}: {p.message}"
            unknown = LIVE_TIERS if p.unknown else None
            details = dict(p.details)
            self.add(code, msg, unit=u.address, bdf=dev.bdf, unknown=unknown, details=details)

    def domain(self, u: _Unit, bdf: str, phys: int, rec: IommuDomainSer, info: ContextInfo) -> None:
        """VTD027: the domain record against the page table the device's live entry uses."""
        at = f"{u.name}: {bdf}: domain record at {phys:#x}"
        top = live_top_table(info)
        recs = self.records
        # VTD017: the page table's pages, once per domain record, when it is the one the live
        # entry uses (else VTD027 below says so, and the record's would be the wrong one).
        same = not isinstance(top, str) and top[0] == rec.top_table_phys
        if same and u.before and recs is not None and phys not in self.domains_walked:
            self.domains_walked.add(phys)
            walk = recs.page_tables.get(phys)
            pm = recs.memory_map
            page_table_findings(self, at=at, unit=u.address, bdf=bdf, walk=walk, pm=pm)
        if isinstance(top, str):
            msg = f"{at}: top_table_phys {rec.top_table_phys:#x}, but {top}"
            self.add("VTD027", msg, unit=u.address, bdf=bdf)
            return
        source = u.live.source if u.live is not None else "?"
        for path, a, e in field_diffs(rec, mirror_domain(rec, top_table=top[0], top_level=top[1])):
            code, what = DOMAIN_FIELDS[path]
            msg = f"{at}: iommu_domain_ser.{path} {_x(a, path)}, {what} {_x(e, path)} "
            cmp = {"expected": _x(e, path), "actual": _x(a, path)}
            self.add(code, msg + f"(per {source})", unit=u.address, bdf=bdf, details=cmp)

    # -- policy -------------------------------------------------------------------------------
    def policy_codes(self, state: PreservedState, complete: bool) -> None:
        """VTD030: a device the policy requires has no record; VTD031: a preserved device the
        policy does not expect (not judged while the VMM scan is unknown: VTD050 says so)."""
        recorded = {
            device_bdf(d): d for d in state.live_devices() if devid_problem(d.record.devid) is None
        }
        for w in self.wanted:
            if w.bdf in recorded:
                continue
            why = "named by the policy" if w.by_policy else "held by a VMM"
            msg = f"{w.bdf}: to be preserved ({why}) but no live iommu_device_ser names it"
            unit = self.sysfs_unit(w.bdf)
            if complete:
                self.add("VTD030", msg, unit=unit, bdf=w.bdf)
            else:
                msg += " (the device record chain is incomplete)"
                self.add("VTD030", msg, unit=unit, bdf=w.bdf, unknown=())
        procs = self.snap.processes
        if self.policy.vmm_held and (procs is None or not procs.complete):
            return
        expected = {w.bdf for w in self.wanted}
        for bdf, dev in sorted(recorded.items()):
            if bdf not in expected and bdf in self.snap.pci_devices:
                msg = f"{bdf}: preserved (device record at {dev.phys:#x}) but the policy does not "
                msg += "expect it (not named by it, not held by a VMM)"
                self.add("VTD031", msg, unit=self.sysfs_unit(bdf), bdf=bdf)


def record_findings(
    snapshot: Snapshot,
    units: Sequence[UnitReport],
    policy: Policy,
    wanted: Sequence[Wanted],
    *,
    aliases: DmaAliases,
) -> list[Finding]:
    """The record audit (see the module docstring): pure, from the snapshot and the unit views
    ``evaluate`` built; ``wanted`` are the devices the policy says must be preserved;
    ``aliases`` the evaluation's."""
    return _Audit(snapshot, units, policy, wanted, aliases=aliases).run()
