"""What the kernel requires of a device before it can be preserved, checked from sysfs and /proc.

These checks need no kernel record: they run before kexec on any host (DESIGN.md §1, reference
§1.5 and §1.9).  A device can be preserved only if it is PCI, bound to vfio-pci, open as a VFIO
cdev bound to iommufd (legacy ``/dev/vfio/<group>`` users never are), and not using page
requests; and no device that will not be preserved may share a DMA alias with it, because the
old kernel clears the alias's context entry at kexec (VTD025; quirk aliases included), nor share
its IOMMU group for a reason no known alias explains (VTD028, UNKNOWN: an alias quirk vtdlud does
not know would have the same effect).
"""

from __future__ import annotations

from vtdlud.audit.report import Finding, Wanted, finding
from vtdlud.model.alias import DmaAliases, PciNode, Rid
from vtdlud.model.policy import Policy, policy_wants
from vtdlud.model.quirks import QUIRKS_READ_FROM, PciIds
from vtdlud.model.severity import Severity
from vtdlud.model.snapshot import VFIO_PCI, PciDevice, Snapshot, VfioHolder
from vtdlud.parse.sysfs import cmdline_value, kstrtobool, parse_bdf


def pci_nodes(snapshot: Snapshot) -> dict[str, PciNode]:
    """Devices whose config space was read; the others' aliases are not visible."""
    nodes = {}
    for bdf, d in snapshot.pci_devices.items():
        if d.config is None:
            continue
        b = parse_bdf(bdf)
        ids = PciIds(d.vendor, d.device, d.config.subsystem, d.pci_class)
        nodes[bdf] = PciNode(
            Rid(b.segment, b.bus, b.devfn),
            d.parent,
            d.config.pcie_type,
            d.config.secondary_bus,
            ids,
        )
    return nodes


def _bridges_above(snapshot: Snapshot, bdf: str) -> set[str]:
    out: set[str] = set()
    parent = snapshot.pci_devices[bdf].parent if bdf in snapshot.pci_devices else None
    while parent is not None and parent not in out:
        out.add(parent)
        up = snapshot.pci_devices.get(parent)
        parent = up.parent if up is not None else None
    return out


class HolderIndex:
    """The processes holding VFIO devices, indexed by the cdevs and groups they hold (built once
    per evaluation: a VMM may hold hundreds of cdevs)."""

    def __init__(self, holders: tuple[VfioHolder, ...]) -> None:
        self.holders = holders
        self._by_cdev: dict[str, list[int]] = {}
        self._by_group: dict[str, list[int]] = {}
        for i, h in enumerate(holders):
            for cdev in h.vfio_cdevs:
                self._by_cdev.setdefault(cdev, []).append(i)
            for group in h.vfio_groups:
                self._by_group.setdefault(group, []).append(i)

    def of(self, device: PciDevice) -> tuple[VfioHolder, ...]:
        """The processes holding one of the device's VFIO cdevs or its group, in scan order."""
        found = [i for cdev in device.vfio_devs for i in self._by_cdev.get(cdev, ())]
        if device.iommu_group is not None and self._by_group:
            found += self._by_group.get(str(device.iommu_group), ())
        if not found:
            return ()
        return tuple(self.holders[i] for i in sorted(set(found)))


def _holds_cdev(holder: VfioHolder, device: PciDevice) -> bool:
    """Whether ``holder`` has one of the device's VFIO cdevs open (not only its group)."""
    return not set(device.vfio_devs).isdisjoint(holder.vfio_cdevs)


def wanted_devices(
    snapshot: Snapshot, policy: Policy, index: HolderIndex
) -> tuple[list[Wanted], list[Finding]]:
    """The devices the policy says must be preserved (``index``: the scanned VFIO holders),
    plus UNKNOWN findings when it cannot tell."""
    out: list[Wanted] = []
    findings: list[Finding] = []
    if policy.vmm_held and snapshot.processes is None:
        findings.append(
            finding(
                "VTD050",
                "vmm_held: which processes hold VFIO devices is not known "
                "(a bundle without vtdlud/processes.json)",
            )
        )
    elif policy.vmm_held and snapshot.processes is not None and not snapshot.processes.complete:
        findings.append(
            finding(
                "VTD050", f"vmm_held: the process scan is incomplete: {snapshot.processes.note}"
            )
        )
    named = bool(policy.devices or policy.ids)
    for bdf, d in sorted(snapshot.pci_devices.items()):
        by_policy = named and policy_wants(policy, bdf, d.vendor, d.device)
        held = index.of(d)
        if by_policy or (policy.vmm_held and held):
            out.append(Wanted(bdf, by_policy, held))
    return out, findings


def _cannot_preserve(w: Wanted, d: PciDevice, snapshot: Snapshot) -> list[str]:
    """Reasons the kernel would refuse to preserve this device (VTD026)."""
    why = []
    if d.driver != VFIO_PCI:
        why.append(f"bound to {d.driver or 'no driver'}, not {VFIO_PCI}")
    legacy = [h for h in w.holders if not _holds_cdev(h, d)]
    if legacy:
        users = ", ".join(f"{h.name}[{h.pid}]" for h in legacy)
        why.append(f"held through the legacy VFIO group API (/dev/vfio/{d.iommu_group}) by {users}")
    cdev_users = [h for h in w.holders if _holds_cdev(h, d)]
    if cdev_users and not any(h.iommufd for h in cdev_users):
        users = ", ".join(f"{h.name}[{h.pid}]" for h in cdev_users)
        why.append(f"its VFIO cdev is open by {users} without /dev/iommu (not bound to iommufd)")
    if not w.holders and snapshot.processes is not None and snapshot.processes.complete:
        why.append("no process holds its VFIO cdev")
    if d.config is not None and d.config.pri_enabled:
        why.append("page requests (PRI) are enabled")
    return why


def check_preconditions(
    snapshot: Snapshot, policy: Policy, aliases: DmaAliases
) -> tuple[list[Wanted], list[Finding]]:
    """The devices to preserve and what stops the kernel from preserving them (``aliases``: the
    evaluation's DMA aliases of the host)."""
    index = HolderIndex(snapshot.processes.holders if snapshot.processes is not None else ())
    wanted, findings = wanted_devices(snapshot, policy, index)
    if not wanted:
        return wanted, findings
    shared = _SharedAliases(snapshot, {w.bdf for w in wanted}, aliases)
    for w in wanted:
        d = snapshot.pci_devices[w.bdf]
        why = _cannot_preserve(w, d, snapshot)
        if why:
            findings.append(
                finding("VTD026", f"{w.bdf} cannot be preserved: " + "; ".join(why), bdf=w.bdf)
            )
        findings += shared.findings(w.bdf)
    findings += _armed(snapshot, len(wanted))
    return wanted, findings


class _SharedAliases:
    """Which devices use each requester ID, computed once for all the devices to preserve."""

    def __init__(self, snapshot: Snapshot, names: set[str], aliases: DmaAliases) -> None:
        self.snapshot, self.names, self.aliases = snapshot, names, aliases
        self.rids = {bdf: aliases.of(bdf) for bdf in snapshot.pci_devices}
        self.groups: dict[int, list[str]] = {}
        for bdf, d in sorted(snapshot.pci_devices.items()):
            if d.iommu_group is not None:
                self.groups.setdefault(d.iommu_group, []).append(bdf)
        self.users: dict[Rid, list[str]] = {}
        for bdf, rids in sorted(self.rids.items()):
            for rid in rids or ():
                self.users.setdefault(rid, []).append(bdf)
        # The devices not to preserve whose aliases are not visible, and the bridges above them.
        self.unseen = {
            b: _bridges_above(snapshot, b) | {b}
            for b in sorted(self.rids)
            if self.rids[b] is None and b not in names
        }

    def findings(self, bdf: str) -> list[Finding]:
        """VTD025: the device to preserve ``bdf`` shares a requester ID with one that will not be."""
        mine = self.rids.get(bdf)
        if mine is None:
            return [
                finding(
                    "VTD025",
                    f"{bdf}: DMA aliases not visible (its or an upstream bridge's config "
                    "space could not be read, or a quirk takes them from the device: Switchtec "
                    "NTB proxy IDs, a VMD domain)",
                    bdf=bdf,
                    severity=Severity.UNKNOWN,
                )
            ]
        out = []
        shared: dict[str, list[str]] = {}
        for rid in mine:
            for other in self.users.get(rid, ()):
                if other != bdf and other not in self.names:
                    shared.setdefault(other, []).append(str(rid))
        for other in sorted(shared):
            out.append(
                finding(
                    "VTD025",
                    f"{bdf} shares DMA alias {', '.join(shared[other])} with {other}, which is "
                    "not preserved: its context entry is cleared at kexec",
                    bdf=bdf,
                )
            )
        # Devices whose aliases are not visible, below one of the same bridges: cannot tell.
        above = _bridges_above(self.snapshot, bdf) if self.unseen else set()
        for other, theirs in self.unseen.items():
            if above & theirs:
                out.append(
                    finding(
                        "VTD025",
                        f"{bdf}: whether it shares a DMA alias with {other} is not visible "
                        f"({other}'s config space or a bridge's could not be read)",
                        bdf=bdf,
                        severity=Severity.UNKNOWN,
                    )
                )
        return out + self.group_peers(bdf, set(shared))

    def group_peers(self, bdf: str, explained: set[str]) -> list[Finding]:
        """VTD028: a peer in the device's IOMMU group that will not be preserved and that no
        DMA alias vtdlud knows explains.  The kernel builds groups from the same aliases
        (``pci_device_group()`` walks ``pci_for_each_dma_alias()`` and takes the group of a
        device owning an alias, or of the bridge that reported it), so an unexplained peer may
        share a requester ID through a quirk this version does not know, and its context entry
        is cleared at kexec; or the group comes from missing ACS isolation, which is harmless.
        vtdlud cannot tell: UNKNOWN, blocking the gate."""
        d = self.snapshot.pci_devices.get(bdf)
        if d is None or d.iommu_group is None:
            return []
        bridges = set(self.aliases.bridges(bdf) or ())
        out = []
        for peer in self.groups.get(d.iommu_group, []):
            if peer == bdf or peer in self.names or peer in explained or peer in bridges:
                continue
            if bdf in (self.aliases.bridges(peer) or ()):
                continue  # the device to preserve is a bridge that aliases the peer
            out.append(
                finding(
                    "VTD028",
                    f"{bdf} shares IOMMU group {d.iommu_group} with {peer}, which is not "
                    "preserved, and no DMA alias vtdlud knows (the generic bridge rules and the "
                    f"quirks of {QUIRKS_READ_FROM}) explains it: if it shares a requester ID "
                    "through a quirk not modelled here, its context entry is cleared at kexec",
                    bdf=bdf,
                    severity=Severity.UNKNOWN,
                )
            )
        return out


def _armed(snapshot: Snapshot, count: int) -> list[Finding]:
    """Live update must be armed: KHO on, ``liveupdate`` on the command line, an image loaded."""
    missing = []
    cmdline = snapshot.cmdline
    if cmdline is not None:
        if kstrtobool(cmdline_value(cmdline, "kho")) is not True:
            missing.append("kho=on is not on the kernel command line")
        lu = cmdline_value(cmdline, "liveupdate")
        if lu is None or (lu != "" and kstrtobool(lu) is not True):
            missing.append("liveupdate is not on the kernel command line")
    if snapshot.kexec_loaded is False:
        missing.append("no kexec image is loaded (/sys/kernel/kexec_loaded is 0)")
    if not missing:
        return []
    return [
        finding(
            "VTD029",
            f"live update is not armed for {count} device(s) to preserve: " + "; ".join(missing),
        )
    ]
