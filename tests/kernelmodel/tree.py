"""Write a simulated host as a host root: every path ``vtdlud.host.snapshot`` reads.

The layout follows the real captures (tests/data/captures): ``sys/class/iommu/dmarN`` links to
``../../devices/virtual/iommu/dmarN`` holding ``intel-iommu/*`` and ``devices/<bdf>`` links;
PCI functions live under ``sys/devices/pci0000:00/...`` nested below their bridges, reached
through ``sys/bus/pci/devices/<bdf>`` links, with ``vendor``, ``device``, ``class``, ``config``
and the ``driver``, ``iommu`` and ``iommu_group`` links and ``vfio-dev/vfioN``;
``sys/kernel/iommu_groups/N`` has ``type``, ``reserved_regions`` and ``devices/``.  Debugfs text
is the model's own rendering (:mod:`tests.kernelmodel.debugfs`) of a walk of the simulated tables,
checked byte for byte against the real captures.  KHO debugfs: before the first kexec ``kho/out`` only; after a kexec
``kho/in`` (what the old kernel handed over) and the new kernel's ``kho/out``.  ``proc/kcore`` is
an ELF core (:mod:`vtdlud.host.corewriter`) of every page the model uses: compact by default
(any other address is outside RAM), or with ``kcore_full_ram`` one sparse segment per RAM range
(unused RAM reads as zeros, as on a real kernel); ``vtdlud/processes.json`` says which process
holds which VFIO cdev (what ``vtdlud collect`` records for the ``vmm_held`` policy).

:class:`TreeOptions` leaves tiers out; ``overrides`` (root-relative path -> bytes, or None to
delete) are applied last — the faults use them for what only a file can show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tests.kernelmodel.acpi import build_dmar
from tests.kernelmodel.debugfs import regset_text, translation_text
from tests.kernelmodel.iommu import DomainKind
from tests.kernelmodel.kernel import VMM_PID, SimHost
from tests.kernelmodel.pci import config_space
from vtdlud.host.corewriter import write_core
from vtdlud.host.procs import facts_to_json
from vtdlud.model.snapshot import VFIO_PCI, ProcessFacts, VfioHolder

IOMMU_DEBUGFS = "sys/kernel/debug/iommu/intel"
KHO_DEBUGFS = "sys/kernel/debug/kho"


@dataclass
class TreeOptions:
    iommu_debugfs: bool = True
    kho_debugfs: bool = True
    kcore: bool = True
    kcore_full_ram: bool = False  # one sparse segment per RAM range instead of compact runs
    processes: bool = True
    lockdown: str | None = "none"
    overrides: dict[str, bytes | None] = field(default_factory=dict)


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: set[Path] = set()

    def _parent(self, path: Path) -> None:
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.update([path.parent, *path.parent.parents])

    def file(self, rel: str, data: bytes | str) -> None:
        path = self.root / rel
        self._parent(path)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    def link(self, rel: str, target_rel: str) -> None:
        path = self.root / rel
        self._parent(path)
        if path.is_symlink():
            path.unlink()
        path.symlink_to(os.path.relpath(self.root / target_rel, path.parent))

    def mkdir(self, rel: str) -> None:
        path = self.root / rel
        if path not in self._dirs:
            path.mkdir(parents=True, exist_ok=True)
            self._dirs.update([path, *path.parents])


def _sysfs(host: SimHost, w: _Writer) -> None:
    topo = host.topology
    for unit in host.units.values():
        base = f"sys/devices/virtual/iommu/{unit.name}"
        attrs = {
            "address": f"{unit.reg_base:x}\n",
            "cap": f"{unit.cap:x}\n",
            "ecap": f"{unit.ecap:x}\n",
            "version": f"{unit.version >> 4 & 0xF}:{unit.version & 0xF}\n",
            "domains_supported": f"{unit.ndoms}\n",
            "domains_used": f"{unit.domains_used}\n",
        }
        for name, text in attrs.items():
            w.file(f"{base}/intel-iommu/{name}", text)
        w.mkdir(f"{base}/devices")
        w.link(f"sys/class/iommu/{unit.name}", base)
    for group in host.groups.values():
        gbase = f"sys/kernel/iommu_groups/{group.number}"
        w.file(f"{gbase}/type", f"{group.type_name}\n")
        w.file(f"{gbase}/reserved_regions", group.reserved_regions)
        w.mkdir(f"{gbase}/devices")
    for dev in topo.sorted():
        if not dev.in_sysfs:
            continue
        path = f"sys/devices/{topo.sysfs_path(dev.bdf)}"
        w.file(f"{path}/vendor", f"0x{dev.vendor:04x}\n")
        w.file(f"{path}/device", f"0x{dev.device:04x}\n")
        w.file(f"{path}/class", f"0x{dev.pci_class:06x}\n")
        w.file(f"{path}/config", config_space(dev, topo))
        w.link(f"sys/bus/pci/devices/{dev.bdf}", path)
        if dev.physfn is not None:
            w.link(f"{path}/physfn", f"sys/devices/{topo.sysfs_path(dev.physfn)}")
        if dev.driver:
            w.mkdir(f"sys/bus/pci/drivers/{dev.driver}")
            w.link(f"{path}/driver", f"sys/bus/pci/drivers/{dev.driver}")
            w.link(f"sys/bus/pci/drivers/{dev.driver}/{dev.bdf}", path)
        unit = host.units[dev.unit]
        if dev.bdf in unit.devices:
            w.link(f"{path}/iommu", f"sys/devices/virtual/iommu/{unit.name}")
            w.link(f"sys/devices/virtual/iommu/{unit.name}/devices/{dev.bdf}", path)
        if dev.group is not None and dev.group in host.groups:
            w.link(f"{path}/iommu_group", f"sys/kernel/iommu_groups/{dev.group}")
            w.link(f"sys/kernel/iommu_groups/{dev.group}/devices/{dev.bdf}", path)
        if dev.vfio is not None and dev.driver == VFIO_PCI:
            w.file(f"{path}/vfio-dev/vfio{dev.vfio}/uevent", f"MAJOR=511\nMINOR={dev.vfio}\n")
            w.link(f"{path}/vfio-dev/vfio{dev.vfio}/device", path)
    w.file("sys/firmware/acpi/tables/DMAR", build_dmar(list(host.units.values()), topo))


def _proc(host: SimHost, w: _Writer, opts: TreeOptions) -> None:
    w.file("proc/cmdline", host.cmdline + "\n")
    w.file("proc/sys/kernel/osrelease", host.release + "\n")
    w.file("proc/sys/kernel/random/boot_id", host.boot_id + "\n")
    w.file("sys/kernel/kexec_loaded", "1\n" if host.kexec_loaded else "0\n")
    if opts.lockdown is not None:
        modes = ["none", "integrity", "confidentiality"]
        w.file(
            "sys/kernel/security/lockdown",
            " ".join(f"[{m}]" if m == opts.lockdown else m for m in modes) + "\n",
        )


def processes(host: SimHost) -> ProcessFacts:
    """The VMM: it holds the VFIO cdev of every device attached to an iommufd HWPT, and
    /dev/iommu; legacy group users hold /dev/vfio/<group>."""
    cdevs = sorted(
        f"vfio{host.device(b).vfio}"
        for b, d in host.attached.items()
        if d.kind is DomainKind.UNMANAGED and host.device(b).vfio is not None
    )
    holders = []
    if cdevs:
        cmd = ("qemu-system-x86_64", "-device", "vfio-pci")
        holders.append(VfioHolder(VMM_PID, "qemu-system-x86", cmd, tuple(cdevs), (), True))
    groups = sorted({str(host.device(b).group) for b in host.legacy_group_users})
    if groups:
        holders.append(VfioHolder(VMM_PID + 1, "old-vmm", ("old-vmm",), (), tuple(groups), False))
    return ProcessFacts(tuple(holders), True, "simulated host (tests.kernelmodel)")


def _kho(host: SimHost, w: _Writer) -> None:
    """``kho/out`` and, after a kexec, ``kho/in``.  Linux 7.2 model: ``out/fdt`` is the cut
    copy (absent after a KHO boot) and the sub blobs show the memory at their address now."""
    kho = host.kho
    kho.refresh_radix()
    out = f"{KHO_DEBUGFS}/out"
    fdt = kho.debugfs_fdt()
    if fdt is not None:
        w.file(f"{out}/fdt", fdt)
    for name, phys, size in kho.subtrees():
        w.file(
            f"{out}/sub_fdts/{name}", kho.luo_blob() if name == "LUO" else host.mem.read(phys, size)
        )
    w.file(f"{out}/scratch_phys", "".join(f"0x{p:x}\n" for p, _ in kho.scratch))
    w.file(f"{out}/scratch_len", "".join(f"0x{s:x}\n" for _, s in kho.scratch))
    handed = host.handed_over
    if handed is not None:
        w.file(f"{KHO_DEBUGFS}/in/fdt", handed.root_fdt)
        if not handed.linux72:
            w.file(f"{KHO_DEBUGFS}/in/sub_fdts/LUO", handed.luo_blob)
        for name, phys, size in handed.subtrees if handed.linux72 else ():
            w.file(f"{KHO_DEBUGFS}/in/sub_fdts/{name}", host.mem.read(phys, size))


def write_tree(host: SimHost, root: Path, options: TreeOptions | None = None) -> Path:
    """Write the host's current state under ``root`` (created if needed); returns ``root``."""
    opts = options or TreeOptions()
    root.mkdir(parents=True, exist_ok=True)
    w = _Writer(root)
    _sysfs(host, w)
    _proc(host, w, opts)
    w.mkdir("sys/kernel/debug")
    if opts.iommu_debugfs:
        w.file(f"{IOMMU_DEBUGFS}/iommu_regset", regset_text(host.units.values()))
        w.file(f"{IOMMU_DEBUGFS}/dmar_translation_struct", translation_text(host.units.values()))
    if opts.kho_debugfs:
        _kho(host, w)
    if opts.kcore:
        w.mkdir("proc")
        ram = host.mem.ranges if opts.kcore_full_ram else None
        write_core(root / "proc/kcore", host.mem.snapshot(), ram=ram)
    if opts.processes:
        w.file("vtdlud/processes.json", facts_to_json(processes(host)))
    for rel, hook in host.tree_hooks.items():
        path = root / rel
        if path.exists():
            new = hook(path.read_bytes())
            if new is None:
                path.unlink()
            else:
                path.write_bytes(new)
    for rel, data in opts.overrides.items():
        if data is None:
            (root / rel).unlink(missing_ok=True)
        else:
            w.file(rel, data)
    return root
