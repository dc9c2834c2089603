"""Build a :class:`Snapshot` from a host root: every file vtdlud reads is named here.

Each input is read once.  A file that cannot be read or parsed becomes an
:class:`InputProblem` (VTD051; VTD052 for a format this version does not support) naming the
path, and the rest of the snapshot is still built.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from vtdlud.errors import ParseError, UnsupportedFormat
from vtdlud.host.pci import SYS_PCI_DEVICES, PciReader
from vtdlud.host.procs import process_facts
from vtdlud.host.root import HostRoot, describe_oserror
from vtdlud.model.debugfs import Regset, TranslationStruct
from vtdlud.model.dmar import DmarTable
from vtdlud.model.live import LiveTables, derive_live_tables
from vtdlud.model.snapshot import (
    KCORE_MISSING_LIVE,
    KCORE_MISSING_ROOT,
    VFIO_PCI,
    IommuGroup,
    KernelLog,
    PciDevice,
    Snapshot,
    SysfsUnit,
)
from vtdlud.model.tables import Mode
from vtdlud.model.tiers import InputProblem, Tier, TierState, TierStatus
from vtdlud.parse.dmar import parse_dmar
from vtdlud.parse.regset import parse_iommu_regset
from vtdlud.parse.sysfs import (
    cmdline_value,
    parse_bool01,
    parse_cmdline,
    parse_dec,
    parse_group_type,
    parse_hex,
    parse_lockdown,
    parse_reserved_regions,
    parse_version,
    parse_word,
)
from vtdlud.parse.translation import parse_dmar_translation_struct

if TYPE_CHECKING:  # the live-update readers are imported only when their tier is there
    from vtdlud.host.kcore import PhysMem
    from vtdlud.model.policy import Policy
    from vtdlud.model.preserved import PreservedRecords
    from vtdlud.model.relocate import RecordAddresses
    from vtdlud.model.walk import WalkResult

T = TypeVar("T")

SYS_CLASS_IOMMU = "sys/class/iommu"
SYS_IOMMU_GROUPS = "sys/kernel/iommu_groups"
ACPI_DMAR = "sys/firmware/acpi/tables/DMAR"
DEBUGFS = "sys/kernel/debug"
IOMMU_DEBUGFS = "sys/kernel/debug/iommu/intel"
IOMMU_REGSET = f"{IOMMU_DEBUGFS}/iommu_regset"
DMAR_TRANSLATION_STRUCT = f"{IOMMU_DEBUGFS}/dmar_translation_struct"
KHO_DEBUGFS = "sys/kernel/debug/kho"
PROC_CMDLINE = "proc/cmdline"
PROC_KCORE = "proc/kcore"
OSRELEASE = "proc/sys/kernel/osrelease"
BOOT_ID = "proc/sys/kernel/random/boot_id"
KEXEC_LOADED = "sys/kernel/kexec_loaded"
LOCKDOWN = "sys/kernel/security/lockdown"


class SnapshotBuilder:
    def __init__(
        self,
        root: HostRoot,
        *,
        kcore: str | None = None,
        processes: bool = True,
        record_hints: RecordAddresses | None = None,
        kernel_log: bool = False,
        policy: Policy | None = None,
        collect: bool = False,
    ) -> None:
        self.root = root
        self.policy = policy  # the devices a check reads extended config space of (host.pci)
        self.collect = collect  # read every device's config space whole, for the bundle
        self.read_log = kernel_log  # read /dev/kmsg (the post-kexec check's DMAR fault lines)
        self.problems: list[InputProblem] = []
        self.skip_kcore = kcore  # why /proc/kcore is not to be opened (None: open it)
        self.scan_processes = processes
        self.record_hints = record_hints  # the ledger's record addresses (after a live update)

    # -- helpers ---------------------------------------------------------------------------
    def _problem(
        self,
        rel: str,
        reason: str,
        tier: Tier,
        *,
        unsupported: bool = False,
        unit: int | None = None,
    ) -> None:
        self.problems.append(InputProblem(f"/{rel}", reason, tier, unsupported, unit))

    def _parse_bytes(
        self,
        rel: str,
        parser: Callable[[bytes], T],
        tier: Tier,
        *,
        optional: bool = False,
        unit: int | None = None,
    ) -> T | None:
        """Read ``rel`` and parse it; a failure is recorded as a problem, never raised."""
        try:
            data: bytes | OSError = self.root.read_bytes(rel)
        except OSError as exc:
            data = exc.with_traceback(None)  # no cycle through this frame (host/root.py)
        return self._parse_read(rel, data, parser, tier, optional=optional, unit=unit)

    def _parse_read(
        self,
        rel: str,
        data: bytes | OSError,
        parser: Callable[[bytes], T],
        tier: Tier,
        *,
        optional: bool = False,
        unit: int | None = None,
    ) -> T | None:
        """Parse what reading ``rel`` gave (its bytes or the OSError); failures become problems."""
        if isinstance(data, OSError):
            if isinstance(data, FileNotFoundError):
                if not optional:
                    self._problem(rel, "no such file", tier, unit=unit)
            else:
                self._problem(rel, describe_oserror(data), tier, unit=unit)
            return None
        try:
            return parser(data)
        except UnicodeDecodeError as exc:
            self._problem(rel, f"not text (byte {exc.start:#x} is not UTF-8)", tier, unit=unit)
        except UnsupportedFormat as exc:
            self._problem(rel, str(exc), tier, unsupported=True, unit=unit)
        except ParseError as exc:
            self._problem(rel, str(exc), tier, unit=unit)
        return None

    def _parse(
        self,
        rel: str,
        parser: Callable[[str], T],
        tier: Tier,
        *,
        optional: bool = False,
        unit: int | None = None,
    ) -> T | None:
        """:meth:`_parse_bytes` for text files (UTF-8)."""
        return self._parse_bytes(
            rel, lambda data: parser(data.decode("utf-8")), tier, optional=optional, unit=unit
        )

    def _listdir(self, rel: str, tier: Tier, *, optional: bool = False) -> list[str]:
        try:
            return self.root.listdir(rel)
        except FileNotFoundError:
            if not optional:
                self._problem(rel, "no such directory", tier)
        except OSError as exc:
            self._problem(rel, describe_oserror(exc), tier)
        return []

    # -- tiers -----------------------------------------------------------------------------
    def _denied_reason(self, exc: OSError, lockdown: str | None, what: str) -> str:
        if exc.errno == errno.EPERM and lockdown not in (None, "none"):
            return f"kernel lockdown ({lockdown}) blocks {what}"
        return f"{describe_oserror(exc)} on {what}"

    def sysfs_tier(self) -> TierState:
        try:
            names = self.root.listdir(SYS_CLASS_IOMMU)
        except FileNotFoundError:
            if not self.root.is_dir("sys/class"):
                return TierState(Tier.SYSFS, TierStatus.UNAVAILABLE, "sysfs not mounted at /sys")
            return TierState(
                Tier.SYSFS,
                TierStatus.AVAILABLE,
                "no /sys/class/iommu: kernel without IOMMU support",
            )
        except OSError as exc:
            return TierState(
                Tier.SYSFS, TierStatus.DENIED, f"{describe_oserror(exc)} on /sys/class/iommu"
            )
        n = sum(1 for n in names if n.startswith("dmar"))
        reason = f"{n} DMAR unit(s)" if n else "no DMAR units (VT-d disabled or absent)"
        return TierState(Tier.SYSFS, TierStatus.AVAILABLE, reason)

    def debugfs_mount(self, lockdown: str | None) -> tuple[TierStatus, str] | None:
        """Why debugfs itself cannot be seen, or None when it is mounted and listable."""
        try:
            top = self.root.listdir(DEBUGFS)
        except FileNotFoundError:
            top = []
        except OSError as exc:
            return TierStatus.DENIED, self._denied_reason(exc, lockdown, f"/{DEBUGFS}")
        if not top:
            return TierStatus.UNAVAILABLE, f"debugfs not mounted at /{DEBUGFS}"
        return None

    def debugfs_tier(
        self,
        tier: Tier,
        rel: str,
        mount: tuple[TierStatus, str] | None,
        lockdown: str | None,
        missing: str,
    ) -> TierState:
        """A debugfs directory's tier: the mount's state first, then the directory's own."""
        if mount is not None:
            return TierState(tier, *mount)
        try:
            self.root.listdir(rel)
        except FileNotFoundError:
            return TierState(tier, TierStatus.UNAVAILABLE, f"no /{rel}: {missing}")
        except OSError as exc:
            return TierState(tier, TierStatus.DENIED, self._denied_reason(exc, lockdown, f"/{rel}"))
        return TierState(tier, TierStatus.AVAILABLE, f"/{rel}")

    def open_kcore(self, lockdown: str | None) -> tuple[TierState, PhysMem | None]:
        """Open /proc/kcore (physical memory); the file itself is never packed by collect."""
        if self.skip_kcore is not None:
            return TierState(Tier.KCORE, TierStatus.UNAVAILABLE, self.skip_kcore), None
        if not self.root.exists(PROC_KCORE):  # the common case of a bundle: no ELF code needed
            reason = KCORE_MISSING_LIVE if self.root.is_live else KCORE_MISSING_ROOT
            return TierState(Tier.KCORE, TierStatus.UNAVAILABLE, reason), None
        from vtdlud.host.kcore import KcoreOpenError, PhysMem  # noqa: PLC0415 - ELF parsing

        try:
            mem = PhysMem.open(self.root, lockdown=lockdown)
        except KcoreOpenError as exc:
            return TierState(Tier.KCORE, exc.status, exc.reason), None
        except ParseError as exc:
            self._problem(PROC_KCORE, str(exc), Tier.KCORE)
            return TierState(
                Tier.KCORE, TierStatus.UNAVAILABLE, "/proc/kcore is not an x86-64 ELF core"
            ), None
        return TierState(Tier.KCORE, TierStatus.AVAILABLE, "/proc/kcore"), mem

    def walk_tables(
        self, mem: PhysMem, units: list[SysfsUnit], live: dict[str, LiveTables]
    ) -> dict[int, WalkResult]:
        """Walk each unit's root/context/PASID tables through kcore.

        The root table and the mode come from the live registers (RTADDR_REG in iommu_regset;
        registers are MMIO, not in kcore) or what dmar_translation_struct proves; a unit with
        neither is not walked."""
        from vtdlud.model.walk import walk_unit_tables  # noqa: PLC0415

        walks: dict[int, WalkResult] = {}
        for unit in units:
            tables = live.get(unit.name)
            if unit.address is None or tables is None:
                continue
            if tables.root_table is None or tables.mode is Mode.UNKNOWN:
                continue
            scalable = tables.mode is Mode.SCALABLE
            walks[unit.address] = walk_unit_tables(mem.read, tables.root_table, scalable)
        return walks

    def kernel_log(self) -> KernelLog | None:
        if not self.read_log:
            return None
        from vtdlud.host.kmsg import read_kernel_log  # noqa: PLC0415 - post-kexec only

        return read_kernel_log(self.root)

    # -- inventory -------------------------------------------------------------------------
    def unit(self, name: str) -> SysfsUnit:
        base = f"{SYS_CLASS_IOMMU}/{name}/intel-iommu"
        t = Tier.SYSFS
        address = self._parse(
            f"{base}/address", lambda s: parse_hex(s, "a register base address"), t
        )

        def read(attr: str, parser: Callable[[str], T]) -> T | None:
            return self._parse(f"{base}/{attr}", parser, t, unit=address)

        return SysfsUnit(
            name=name,
            address=address,
            version=read("version", parse_version),
            cap=read("cap", lambda s: parse_hex(s, "a CAP_REG value")),
            ecap=read("ecap", lambda s: parse_hex(s, "an ECAP_REG value")),
            domains_supported=read("domains_supported", parse_dec),
            domains_used=read("domains_used", parse_dec),
            devices=tuple(self._listdir(f"{SYS_CLASS_IOMMU}/{name}/devices", t)),
        )

    def group(self, number: int) -> IommuGroup:
        """One IOMMU group: read only for the groups of devices bound to vfio-pci, the only
        ones VFIO can hand to a VMM (a 2,048-VF host has ~2,000 groups nobody opens)."""
        base = f"{SYS_IOMMU_GROUPS}/{number}"
        t = Tier.SYSFS
        return IommuGroup(
            number=number,
            type=self._parse(f"{base}/type", parse_group_type, t),
            reserved_regions=self._parse(f"{base}/reserved_regions", parse_reserved_regions, t)
            or (),
            devices=tuple(self._listdir(f"{base}/devices", t)),
        )

    def vtd_absent(self, iommus: list[str], cmdline: tuple[str, ...] | None) -> str:
        """Why a host whose sysfs shows no DMAR unit has no Intel VT-d, in the words an operator
        needs: what /sys/class/iommu holds instead, whether the firmware has an ACPI DMAR table
        (only its existence is looked at), and ``intel_iommu=off`` on the command line."""
        others = sorted(n for n in iommus if not n.startswith("dmar"))
        where = (
            f"no DMAR unit in /sys/class/iommu (it holds {', '.join(others)}: another IOMMU)"
            if others
            else "no DMAR unit in /sys/class/iommu"
        )
        if not self.root.exists(ACPI_DMAR):
            return (
                f"{where} and no ACPI DMAR table: not an Intel VT-d host (AMD, a VM without a "
                "virtual VT-d), or VT-d is disabled in the firmware"
            )
        opts = cmdline_value(cmdline, "intel_iommu") if cmdline is not None else None
        if opts is not None and "off" in opts.split(","):
            why = "the kernel was booted with intel_iommu=off"
        else:
            why = "VT-d is off in this kernel (intel_iommu=off, or CONFIG_INTEL_IOMMU not built)"
        return f"{where}, although the firmware has an ACPI DMAR table: {why}"

    def _regset_of_these_units(self, regset: Regset, units: list[SysfsUnit]) -> Regset:
        """The blocks of ``iommu_regset`` that agree with sysfs: a block at a unit's register
        base naming another unit (the kernel prints ``iommu->name`` in both, so the files are
        of different boots or edited) is a problem (VTD051) and is not used."""
        named = {u.address: u.name for u in units if u.address is not None}
        keep = []
        for r in regset.units:
            want = named.get(r.reg_base_addr)
            if want is not None and r.name != want:
                self._problem(
                    IOMMU_REGSET,
                    f"the block at register base {r.reg_base_addr:#x} names {r.name}, but sysfs "
                    f"names the unit there {want} (files of different boots?); not used",
                    Tier.IOMMU_DEBUGFS,
                    unit=r.reg_base_addr,
                )
                continue
            keep.append(r)
        if len(keep) == len(regset.units):
            return regset
        return Regset(tuple(keep), regset.invalid_base_address)

    def dmar_table(self) -> DmarTable | None:
        return self._parse_bytes(ACPI_DMAR, parse_dmar, Tier.SYSFS)

    def build(self) -> Snapshot:
        t = Tier.SYSFS
        lockdown = self._parse(LOCKDOWN, parse_lockdown, t, optional=True)
        tiers = {Tier.SYSFS: self.sysfs_tier()}
        units: list[SysfsUnit] = []
        pci: dict[str, PciDevice] = {}
        groups: dict[int, IommuGroup] = {}
        dmar = None
        names: list[str] = []
        if tiers[Tier.SYSFS].available:
            names = self._listdir(SYS_CLASS_IOMMU, t, optional=True)
            units = [self.unit(n) for n in names if n.startswith("dmar")]
            bdfs = self._listdir(SYS_PCI_DEVICES, t, optional=True)
            pci = PciReader(self, self.policy, self.collect).read(bdfs)
            vfio_groups = {
                d.iommu_group
                for d in pci.values()
                if d.driver == VFIO_PCI and d.iommu_group is not None
            }
            for number in sorted(vfio_groups):
                groups[number] = self.group(number)
            if units:
                dmar = self.dmar_table()
        units.sort(key=lambda u: (u.address is None, u.address or 0, u.name))
        self.root.scale_to_host(len(units), len(pci))  # debugfs dumps grow with the host

        mount = self.debugfs_mount(lockdown)
        debugfs = self.debugfs_tier(
            Tier.IOMMU_DEBUGFS,
            IOMMU_DEBUGFS,
            mount,
            lockdown,
            "not built into this kernel (CONFIG_INTEL_IOMMU_DEBUGFS) or VT-d not active",
        )
        tiers[Tier.IOMMU_DEBUGFS] = debugfs
        regset: Regset | None = None
        translation: TranslationStruct | None = None
        if debugfs.available:
            regset = self._parse(IOMMU_REGSET, parse_iommu_regset, Tier.IOMMU_DEBUGFS)
            translation = self._parse(
                DMAR_TRANSLATION_STRUCT, parse_dmar_translation_struct, Tier.IOMMU_DEBUGFS
            )
            # The kernel prints a section per active unit (or the invalid-base line): a file
            # with none while sysfs lists units is cut short, not a host without units.
            if units and regset is not None and not (regset.units or regset.invalid_base_address):
                self._problem(IOMMU_REGSET, _no_unit(len(units)), Tier.IOMMU_DEBUGFS)
                regset = None
            if units and translation is not None and not translation.units:
                self._problem(DMAR_TRANSLATION_STRUCT, _no_unit(len(units)), Tier.IOMMU_DEBUGFS)
                translation = None
            if units and regset is not None:
                regset = self._regset_of_these_units(regset, units)
        tiers[Tier.KHO_DEBUGFS] = self.debugfs_tier(
            Tier.KHO_DEBUGFS,
            KHO_DEBUGFS,
            mount,
            lockdown,
            "KHO not built (CONFIG_KEXEC_HANDOVER_DEBUGFS) or not enabled (kho=on)",
        )
        live = derive_live_tables(regset, translation, ((u.address, u.name) for u in units))
        tiers[Tier.KCORE], mem = self.open_kcore(lockdown)
        kho = None
        preserved: PreservedRecords | None = None
        walks: dict[int, WalkResult] = {}
        pages: dict[int, bytes] | None = None
        try:
            if mem is not None:
                walks = self.walk_tables(mem, units, live)
            if tiers[Tier.KHO_DEBUGFS].available:
                from vtdlud.host.kho import read_kho  # noqa: PLC0415 - FDT parsing

                read = mem.read if mem is not None else None
                kho = read_kho(self.root, read, mem.peek if mem is not None else None)
                self.problems.extend(kho.problems)
            if mem is not None and kho is not None:
                from vtdlud.host.records import find_preserved  # noqa: PLC0415

                addresses = {u.address for u in units if u.address}
                preserved = find_preserved(
                    mem, kho, addresses, self.record_hints, bundle=not self.root.is_live
                )
            if mem is not None:
                pages = dict(mem.captured_pages())
        finally:
            if mem is not None:
                mem.close()
        processes, problem = process_facts(self.root) if self.scan_processes else (None, None)
        if problem is not None:
            path, _, reason = problem.partition(": ")
            self._problem(path.lstrip("/"), reason, Tier.SYSFS)
        cmdline = self._parse(PROC_CMDLINE, parse_cmdline, t)
        absent = None
        if tiers[Tier.SYSFS].available and not units:
            absent = self.vtd_absent(names, cmdline)

        return Snapshot(
            root=self.root.root_name,
            kernel_release=self._parse(
                OSRELEASE, lambda s: parse_word(s, "a kernel release"), t, optional=True
            ),
            boot_id=self._parse(BOOT_ID, lambda s: parse_word(s, "a boot id"), t, optional=True),
            cmdline=cmdline,
            kexec_loaded=self._parse(
                KEXEC_LOADED, lambda s: parse_bool01(s, "kexec_loaded"), t, optional=True
            ),
            lockdown=lockdown,
            tiers=tiers,
            units=tuple(units),
            pci_devices=pci,
            groups=groups,
            dmar=dmar,
            regset=regset,
            translation=translation,
            problems=tuple(self.problems),
            live_tables=live,
            processes=processes,
            kho=kho,
            kcore_walks=walks,
            kcore_pages=pages,
            preserved=preserved,
            kernel_log=self.kernel_log(),
            vtd_absent=absent,
        )


def _no_unit(n: int) -> str:
    return f"no DMAR unit in it (empty or cut short), while sysfs lists {n}"


def take_snapshot(
    root: HostRoot,
    *,
    skip_kcore: str | None = None,
    processes: bool = True,
    record_hints: RecordAddresses | None = None,
    kernel_log: bool = False,
    policy: Policy | None = None,
    collect: bool = False,
) -> Snapshot:
    """Read the host.  ``skip_kcore``: never open /proc/kcore, and say why in the kcore tier
    (the sandboxed daemon); ``processes=False``: do not scan other processes' descriptors;
    ``record_hints``: where the gate's ledger says the IOMMU records were (after a live update,
    :mod:`vtdlud.model.relocate`); ``kernel_log``: read this boot's kernel log (the post-kexec
    check's DMAR fault lines; needs CAP_SYSLOG under ``kernel.dmesg_restrict``); ``policy``: the
    policy the snapshot will be evaluated against (config space beyond the capability list is
    read only of the devices a check needs, :mod:`vtdlud.host.pci`; None: of every device);
    ``collect``: read every device's config space whole (the bundle records it)."""
    builder = SnapshotBuilder(
        root,
        kcore=skip_kcore,
        processes=processes,
        record_hints=record_hints,
        kernel_log=kernel_log,
        policy=policy,
        collect=collect,
    )
    return builder.build()
