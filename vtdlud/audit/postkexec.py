"""Post-kexec verification (``vtdlud check --post-kexec``): the new kernel against the ledger.

The gate that passed before the live update wrote the ledger (``/var/lib/vtdlud/ledger.json``,
:mod:`vtdlud.model.ledger`): per unit the register base, the root table, the bitmap bits and
the preserved devices with their DIDs and PASID directories, plus the boot id and the live-update
count.  The first evaluation after the kexec compares this kernel with it (and the command then
marks it consumed, :func:`vtdlud.service.ledger.consume_ledger`):

- VTD064 (WARN): the ledger does not belong to this boot chain: it was written in this very boot
  (no kexec happened since the gate), this boot is not a live update (no ``kho/in``), the
  previous kernel named by ``kho/in/sub_fdts/kexec-metadata`` (Linux 7.2) is not the release
  the ledger was written under, or the live-update count is not the ledger's + 1.  Nothing is
  compared then.
- VTD060: a unit of the ledger has no incoming hw record, or its ``intel.restored`` is 0 (read
  from the incoming records through kcore: behind the LUO FLB while the incoming LUO state is
  intact, else at the physical addresses the ledger recorded, ``located_by="ledger"``; on
  Linux 7.2 the kernel frees the incoming LUO state early in boot), or the unit is gone.  When
  neither way finds them the finding is UNKNOWN and says why.
- VTD061: the live root table (RTADDR) or the incoming record's ``intel.root_table`` is not the
  ledger's.
- VTD062: a context table a ledger bit names is absent, or a preserved device's live context
  entry is gone or carries another DID or PASID directory, or its incoming record does.  Tables
  the new kernel allocated for other devices are not a finding.
- VTD063: DMAR faults on a unit with preserved devices: FSTS.PPF/PFO in ``iommu_regset`` (the
  fault record naming the source is not printed there, so the finding names the unit), and the
  kernel log's ``DMAR: [DMA Read|Write ...] Request device [bb:dd.f]`` lines (format of
  ``dmar_fault_do_one()`` in drivers/iommu/intel/dmar.c) naming a preserved device.
- VTD065: there is no ledger for this boot (NOTE on a boot that is not a live update; UNKNOWN on
  one that is: the preserved state cannot be verified against what the gate saw).  On a host
  without Intel VT-d and no ledger pending there is nothing to say: the verdict stays
  NOT_APPLICABLE; a pending ledger still compares (its units are gone: VTD060).

The kernel log's fault lines come with the snapshot (:mod:`vtdlud.host.kmsg` reads
``/dev/kmsg`` when asked, :mod:`vtdlud.parse.kmsg` finds the lines); bundles carry no log, so
there only FSTS is looked at.  The ledger is read by :mod:`vtdlud.host.ledger`.

The post-kexec report is the evaluation of this kernel without the gate's own codes (VTD025,
VTD026, VTD029-VTD031: they are about the next update, and devices are not held by their VMMs yet
this early in the boot), plus these findings.  A check whose inputs are not visible is UNKNOWN,
never FAIL.  Everything here is pure: ``evaluate(snapshot, policy, ledger)`` calls
:func:`post_kexec` with what ``host/`` read.  Tested on the kernel model (tests/kernelmodel) only: no real capture of
a live update.
"""

from __future__ import annotations

import dataclasses

from vtdlud.audit.aliasentries import alias_problems
from vtdlud.audit.ledger import liveupdate_count
from vtdlud.audit.mirror import LiveView, Sink, live_view, required_for, unit_mode
from vtdlud.audit.preconditions import pci_nodes
from vtdlud.audit.preserved import device_bdf
from vtdlud.audit.report import Finding, Report, UnitReport, finding
from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.model.abi import IommuDeviceSerV1, IommuHwSerV1
from vtdlud.model.alias import DmaAliases
from vtdlud.model.bitfield import field_named
from vtdlud.model.ledger import Ledger, LedgerDevice, LedgerInput, LedgerUnit
from vtdlud.model.registers import FSTS_FIELDS
from vtdlud.model.severity import Severity
from vtdlud.model.snapshot import DmarFault, KernelLog
from vtdlud.model.tables import Mode, context_table_bit
from vtdlud.model.tiers import Tier
from vtdlud.parse.sysfs import parse_bdf

GATE_ONLY = frozenset({"VTD025", "VTD026", "VTD029", "VTD030", "VTD031"})
LIVE_TIERS = (Tier.IOMMU_DEBUGFS, Tier.KCORE)
RECORD_TIERS = (Tier.KHO_DEBUGFS, Tier.KCORE)
_PPF = field_named(FSTS_FIELDS, "ppf")
_PFO = field_named(FSTS_FIELDS, "pfo")
# What the post-kexec check says about the kernel log when the caller did not read it.
LOG_NOT_READ = KernelLog("/dev/kmsg", None, "not read (take_snapshot(kernel_log=True))")


@frozen
class PostKexec:
    findings: tuple[Finding, ...]
    consume: bool  # mark the ledger consumed by this boot
    compared: bool  # the ledger applied and the kernel was compared with it


class _Check(Sink):
    def __init__(self, report: Report, ledger: Ledger, log: KernelLog) -> None:
        super().__init__(report.snapshot, report.policy)
        self.report, self.ledger, self.log = report, ledger, log
        recs = self.snap.preserved
        self.state = recs.incoming if recs is not None else None
        self.aliases = DmaAliases(pci_nodes(self.snap))

    def run(self) -> list[Finding]:
        units = {u.address: u for u in self.report.units if u.address is not None}
        for lu in self.ledger.units:
            u = units.get(lu.address)
            if u is None:
                msg = f"unit {lu.address:#x} of the ledger is not in this kernel (sysfs)"
                self.add("VTD060", msg, unit=lu.address)
                continue
            self.restored(u, lu)
            self.root_table(u, lu)
            self.tables(u, lu)
        self.faults(units)
        return self.out

    # -- VTD060 -----------------------------------------------------------------------------
    def restored(self, u: UnitReport, lu: LedgerUnit) -> None:
        state = self.state
        if state is None:
            self.no_incoming(u)
            return
        hw = state.find_hw(lu.address)
        if not hw:
            msg = f"{u.name}: no live incoming hw record for {lu.address:#x}"
            if state.complete:
                self.add("VTD060", msg + ": the unit was not handed over", unit=lu.address)
            else:
                msg += " (the record chain is incomplete)"
                self.add("VTD060", msg, unit=lu.address, unknown=())
            return
        rec = hw[0].record
        if not isinstance(rec, IommuHwSerV1):
            return  # no Intel part in this layout (VTD003 says so)
        if rec.intel.restored == 0:
            msg = f"{u.name}: incoming hw record at {hw[0].phys:#x}: intel.restored 0 (the "
            self.add("VTD060", msg + "kernel did not reclaim the preserved tables)", unit=u.address)
        root = rec.intel.root_table
        if root != lu.root_table:
            msg = f"{u.name}: incoming hw record: intel.root_table {root:#x}, the ledger's "
            cmp = {"expected": f"{lu.root_table:#x}", "actual": f"{root:#x}"}
            self.add("VTD061", msg + f"{lu.root_table:#x}", unit=u.address, details=cmp)

    def no_incoming(self, u: UnitReport) -> None:
        """VTD060 when the incoming records were not decoded: FAIL only when the incoming LUO
        was read and carries no IOMMU FLB at all."""
        kho = self.snap.kho
        inc = kho.incoming if kho is not None else None
        luo = inc.luo_state if inc is not None else None
        recs = self.snap.preserved
        why = recs.incoming_reason if recs is not None else None
        if (
            luo is not None
            and inc is not None
            and not inc.luo_freed  # freed memory proves no absence (parse.luofreed)
            and isinstance(luo.flbs, tuple)
            and luo.iommu is None
        ):
            msg = f"{u.name}: the incoming LUO state holds no IOMMU FLB: nothing was handed over"
            self.add("VTD060", msg, unit=u.address)
        else:
            msg = f"{u.name}: intel.restored not checked: the incoming IOMMU records are not "
            msg += "visible" + (f" ({why})" if why else "")
            self.add("VTD060", msg, unit=u.address, unknown=RECORD_TIERS)

    # -- VTD061 -----------------------------------------------------------------------------
    def root_table(self, u: UnitReport, lu: LedgerUnit) -> None:
        if u.root_table is None:
            msg = f"{u.name}: the live root table (RTADDR) is not visible; the ledger's is "
            msg += f"{lu.root_table:#x}"
            want = {"expected": f"{lu.root_table:#x}"}
            self.add("VTD061", msg, unit=u.address, unknown=(Tier.IOMMU_DEBUGFS,), details=want)
        elif u.root_table != lu.root_table:
            msg = f"{u.name}: live root table {u.root_table:#x} (RTADDR), the ledger's "
            cmp = {"expected": f"{lu.root_table:#x}", "actual": f"{u.root_table:#x}"}
            self.add("VTD061", msg + f"{lu.root_table:#x}", unit=u.address, details=cmp)

    # -- VTD062 -----------------------------------------------------------------------------
    def tables(self, u: UnitReport, lu: LedgerUnit) -> None:
        live, mode = live_view(self.snap, u), unit_mode(u)
        if live is None:
            msg = f"{u.name}: the {len(lu.bits)} context table(s) and {len(lu.devices)} device "
            msg += "entries of the ledger not checked: no kcore walk, no dmar_translation_struct"
            self.add("VTD062", msg, unit=u.address, unknown=LIVE_TIERS)
        else:
            absent = sorted(set(lu.bits) - live.bits)
            for bit in absent if live.exact else ():
                msg = f"{u.name}: the ledger's context table of bit {bit} (bus {bit >> 1:02x} "
                msg += f"{'upper' if bit & 1 else 'lower'}) is absent (root entry half not present)"
                self.add("VTD062", msg, unit=u.address, details={"bit": str(bit)})
            if absent and not live.exact:
                msg = f"{u.name}: ledger bits {absent} not shown present by {live.source} "
                msg += "(a lower bound)"
                bits = {"bit": ",".join(str(b) for b in absent)}
                self.add("VTD062", msg, unit=u.address, unknown=LIVE_TIERS, details=bits)
        state = self.state
        records = {device_bdf(d): d.record for d in state.live_devices()} if state else {}
        for ld in lu.devices:
            at = f"{u.name}: {ld.bdf}"
            rec = records.get(ld.bdf)
            if rec is not None and rec.domain_iommu_ser.attachment_id != ld.did:
                msg = f"{at}: incoming record's attachment_id {rec.domain_iommu_ser.attachment_id},"
                msg += f" the ledger's DID {ld.did}"
                cmp = {"expected": str(ld.did), "actual": str(rec.domain_iommu_ser.attachment_id)}
                self.add("VTD062", msg, unit=u.address, bdf=ld.bdf, details=cmp)
            pasid = rec.intel.pasid_table if isinstance(rec, IommuDeviceSerV1) else None
            if ld.pasid_table is not None and pasid is not None and pasid != ld.pasid_table:
                msg = f"{at}: incoming record's intel.pasid_table {pasid:#x}, the ledger's "
                msg += f"{ld.pasid_table:#x}"
                cmp = {"expected": f"{ld.pasid_table:#x}", "actual": f"{pasid:#x}"}
                self.add("VTD062", msg, unit=u.address, bdf=ld.bdf, details=cmp)
            if live is None:
                continue
            try:
                b = parse_bdf(ld.bdf)
            except ParseError:
                continue
            self.alias_entries(u, lu, ld, live, mode=mode)
            key = (b.bus, b.devfn)
            info = live.devices.get(key)
            bit = context_table_bit(b.bus, b.devfn if mode is Mode.SCALABLE else 0)
            walked = live.exact and bit not in live.unwalked and key not in live.incomplete
            if info is None or info.did is None:
                what = "context entry" if info is None else "RID_PASID (PASID 0) entry"
                if walked:
                    msg = f"{at}: its live {what} is gone (per kcore); the ledger's DID {ld.did}"
                    gone = {"bit": str(bit), "expected": str(ld.did), "actual": "none"}
                    self.add("VTD062", msg, unit=u.address, bdf=ld.bdf, details=gone)
                else:
                    msg = f"{at}: its live {what} is not visible ({live.source})"
                    self.add("VTD062", msg, unit=u.address, bdf=ld.bdf, unknown=LIVE_TIERS)
                continue
            if info.did != ld.did:
                msg = f"{at}: live DID {info.did} (per {live.source}), the ledger's DID {ld.did}"
                cmp = {"expected": str(ld.did), "actual": str(info.did)}
                self.add("VTD062", msg, unit=u.address, bdf=ld.bdf, details=cmp)
            if (
                mode is Mode.SCALABLE
                and ld.pasid_table is not None
                and info.pasid_dir != ld.pasid_table
            ):
                msg = f"{at}: live PASID directory {info.pasid_dir:#x}, the ledger's "
                msg += f"{ld.pasid_table:#x}"
                cmp = {"expected": f"{ld.pasid_table:#x}", "actual": f"{info.pasid_dir:#x}"}
                self.add("VTD062", msg, unit=u.address, bdf=ld.bdf, details=cmp)

    def alias_entries(
        self, u: UnitReport, lu: LedgerUnit, ld: LedgerDevice, live: LiveView, *, mode: Mode
    ) -> None:
        """VTD062: the context entries of the device's DMA aliases carry the ledger's DID
        (legacy) or a preserved PASID directory (scalable), as before the kexec
        (:mod:`vtdlud.audit.aliasentries`; the aliases from this boot's topology)."""
        bdf, did, pasid_table = ld.bdf, ld.did, ld.pasid_table
        rids = self.aliases.of(bdf)
        if rids is None:
            if bdf in self.snap.pci_devices:
                msg = f"{u.name}: {bdf}: its DMA aliases are not visible (a bridge's config space "
                msg += "could not be read): their context entries are not checked"
                self.add("VTD062", msg, unit=u.address, bdf=bdf, unknown=())
            return
        dirs = {d.pasid_table for d in lu.devices if d.pasid_table}
        own = self.aliases.own(bdf) or rids[:1]
        for p in alias_problems(
            rids, own, mode, live, did=did, pasid_dir=pasid_table, preserved_dirs=dirs
        ):
            msg = f"{u.name}: {bdf}: {p.message}; the ledger's DID {did}"
            unknown = LIVE_TIERS if p.unknown else None
            self.add(
                "VTD062", msg, unit=u.address, bdf=bdf, unknown=unknown, details=dict(p.details)
            )

    # -- VTD063 -----------------------------------------------------------------------------
    def faults(self, units: dict[int, UnitReport]) -> None:
        regset = self.snap.regset
        owners: dict[tuple[int, int], tuple[int, str]] = {}
        for lu in self.ledger.units:
            for ld in lu.devices:
                try:
                    b = parse_bdf(ld.bdf)
                except ParseError:
                    continue
                owners[(b.bus, b.devfn)] = (lu.address, ld.bdf)
            regs = (
                next((r for r in regset.units if r.reg_base_addr == lu.address), None)
                if regset
                else None
            )
            fsts = regs.get("FSTS") if regs is not None else None
            if fsts is not None and (_PPF.raw(fsts) or _PFO.raw(fsts)):
                name = units[lu.address].name if lu.address in units else f"{lu.address:#x}"
                what = "primary fault overflow" if _PFO.raw(fsts) else "primary fault pending"
                msg = f"{name}: FSTS {fsts:#x}: {what} on a unit with {len(lu.devices)} "
                msg += "preserved device(s); the fault record "
                self.add("VTD063", msg + "(its source) is not in iommu_regset", unit=lu.address)
        faults = self.log.dmar_faults
        if faults is None and regset is None and self.ledger.units:
            msg = f"DMAR faults not checked: no iommu_regset (FSTS), kernel log {self.log.source}: "
            self.add("VTD063", msg + self.log.reason, unknown=(Tier.IOMMU_DEBUGFS,))
        seen: dict[tuple[int, int], list[DmarFault]] = {}
        for fault in faults or ():
            if (fault.bus, fault.devfn) in owners:
                seen.setdefault((fault.bus, fault.devfn), []).append(fault)
        for key, lines in sorted(seen.items()):
            address, bdf = owners[key]
            msg = f"{bdf}: {len(lines)} DMAR fault line(s) in {self.log.source}, first: "
            self.add("VTD063", msg + repr(lines[0].line[:160]), unit=address, bdf=bdf)


def _boot_chain(report: Report, ledger: Ledger) -> Finding | None:
    """VTD064 when the ledger is not the one this boot continues from (None: it is, or that
    cannot be told, which is UNKNOWN only for the live-update count)."""
    snap = report.snapshot
    kho_seen = snap.tiers[Tier.KHO_DEBUGFS].available and snap.kho is not None
    if snap.boot_id is not None and ledger.boot_id == snap.boot_id:
        return finding(
            "VTD064",
            f"the ledger was written in this boot (boot id {ledger.boot_id}): no kexec since "
            "the gate passed",
        )
    if kho_seen and snap.kho is not None and snap.kho.incoming is None:
        return finding(
            "VTD064",
            f"this boot is not a live update (no kho/in); the ledger is from boot "
            f"{ledger.boot_id} (live-update count {ledger.liveupdate_count})",
        )
    inc = snap.kho.incoming if kho_seen and snap.kho is not None else None
    meta = inc.metadata if inc is not None else None
    previous = meta.previous_release if meta is not None else None
    if (
        previous is not None
        and ledger.kernel_release is not None
        and previous != ledger.kernel_release
    ):
        return finding(
            "VTD064",
            f"the previous kernel was {previous} (kho/in/sub_fdts/kexec-metadata), the ledger "
            f"was written under {ledger.kernel_release}: this boot did not follow the gate",
        )
    now, then = liveupdate_count(snap), ledger.liveupdate_count
    if now is not None and then is not None and now != then + 1:
        return finding(
            "VTD064",
            f"live-update count {now}, the ledger's {then}: this boot is not the live update "
            f"that followed the gate (boot {ledger.boot_id})",
        )
    return None


def _no_ledger(report: Report, why: str) -> Finding:
    """VTD065: NOTE on a boot that is not a live update, else UNKNOWN."""
    snap = report.snapshot
    kho = snap.kho if snap.tiers[Tier.KHO_DEBUGFS].available else None
    if kho is not None and kho.incoming is None:
        msg = f"this boot is not a live update (no kho/in) and {why}: nothing to verify"
        return finding("VTD065", msg, severity=Severity.NOTE, required=False)
    what = "this boot is a live update" if kho is not None else "whether this boot is a live "
    what += "" if kho is not None else "update is not visible (kho_debugfs)"
    req = required_for(snap, report.policy, (Tier.KHO_DEBUGFS,))
    msg = f"{what}, but {why}: its preserved state is not verified against the gate's"
    return finding("VTD065", msg, severity=Severity.UNKNOWN, required=req)


def post_kexec_findings(report: Report, found: LedgerInput, log: KernelLog) -> PostKexec:
    """The VTD06x findings of ``report``'s snapshot against the ledger (pure)."""
    snap = report.snapshot
    pending = found.ledger is not None and not found.ledger.consumed
    if report.not_applicable is not None and found.error is None and not pending:
        return PostKexec((), False, False)  # no VT-d and nothing pending: NOT_APPLICABLE
    if found.error is not None:
        msg = f"{found.path}: {found.error}"
        return PostKexec(
            (finding("VTD051", msg), _no_ledger(report, "the ledger is unusable")), False, False
        )
    ledger = found.ledger
    if ledger is None:
        return PostKexec((_no_ledger(report, f"there is no ledger ({found.path})"),), False, False)
    if ledger.consumed and ledger.consumed_by_boot_id != snap.boot_id:
        why = f"the ledger was already used by boot {ledger.consumed_by_boot_id}"
        return PostKexec((_no_ledger(report, why),), False, False)
    chain = _boot_chain(report, ledger)
    fresh = snap.boot_id is not None and ledger.boot_id != snap.boot_id and not ledger.consumed
    if chain is not None:
        return PostKexec((chain,), fresh, False)
    out: list[Finding] = []
    if snap.boot_id is None or ledger.boot_id is None:
        msg = "the boot ids are not known: the boot chain is judged by the live-update count only"
        out.append(finding("VTD064", msg, severity=Severity.UNKNOWN, required=False))
    out += _Check(report, ledger, log).run()
    return PostKexec(tuple(out), fresh, True)


def post_kexec_report(report: Report, result: PostKexec) -> Report:
    kept = tuple(f for f in report.findings if f.code not in GATE_ONLY)
    return dataclasses.replace(
        report, findings=kept + result.findings, consume_ledger=result.consume
    )


def post_kexec(report: Report, found: LedgerInput) -> Report:
    """The post-kexec report of ``report``: its snapshot (and kernel log) against the ledger
    ``found`` (pure; :func:`vtdlud.audit.evaluate.evaluate` with a ledger calls it)."""
    log = report.snapshot.kernel_log or LOG_NOT_READ
    return post_kexec_report(report, post_kexec_findings(report, found, log))
