"""Reading ``/sys/bus/pci/devices``: each device's links, its VFIO cdevs and as little of its
configuration space as the checks decode.

Every dword of ``config`` a root reader asks for is a configuration cycle to the device (a
non-posted ECAM read, a VM exit when the host is itself a guest): reading 4 KiB whole for each
of 2,048 SR-IOV functions is ~2 million of them for one ``vtdlud status``.  So ``config`` is read
with pread(2) where the decoder asks (:class:`~vtdlud.host.root.PreadFile`):

- every device: the 64-byte header (IDs, header type, secondary bus, subsystem IDs; a non-root
  reader gets exactly this) and the capability list, two bytes a capability, for the PCI Express
  port type (the DMA-alias rules of the bridges above a device; any device may share an alias
  with one to preserve, so every device's aliases are computed);
- the extended capabilities (PRI, ATS, PASID: only PRI is checked, of the devices to preserve)
  only for the devices a check reads them of: those bound to a VFIO driver or holding a VFIO
  cdev, the other devices of their IOMMU groups, and the devices the policy names.  Without a
  policy (``collect``, the tests' default) every device's are read.

The vendor, device and class IDs come from the header, as ``pci_setup_device()`` takes them;
``vendor``, ``device`` and ``class`` are read only where the header does not give them (not
readable, cut short, or vendor ID 0xffff: no response, or an SR-IOV VF, whose ID fields read
0xffff and whose IDs the kernel takes from its PF).  A VF (it has a ``physfn`` link) is decoded
despite its 0xffff ID fields: its header type, capabilities and port type are its own, but its
PRI and PASID state is its PF's (a VF implements neither capability and shares the PF's:
``pci_enable_pri()``, ``pci_enable_pasid()``), so the PF's extended capabilities are read too.
``collect`` still reads and records every file whole, so a bundle holds all of config space.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from vtdlud.errors import ParseError
from vtdlud.host.files import PreadFile
from vtdlud.host.root import HostRoot, describe_oserror, link_basename
from vtdlud.model.pci import PciConfig
from vtdlud.model.policy import Policy, policy_wants
from vtdlud.model.snapshot import PciDevice
from vtdlud.model.tiers import Tier
from vtdlud.parse.pciconfig import (
    PCI_HEADER_READ,
    PCI_HEADER_SIZE,
    BytesConfig,
    ConfigSpace,
    decode_extended,
    decode_pci_config,
    parse_pci_config,
    pci_ids,
)
from vtdlud.parse.sysfs import parse_bdf, parse_hex

T = TypeVar("T")


class Builder(Protocol):
    """What :class:`PciReader` needs of the snapshot builder (vtdlud.host.snapshot)."""

    root: HostRoot

    def _problem(self, rel: str, reason: str, tier: Tier) -> None: ...

    def _parse_read(
        self, rel: str, data: bytes | OSError, parser: Callable[[bytes], T], tier: Tier
    ) -> T | None: ...


SYS_PCI_DEVICES = "sys/bus/pci/devices"
PCI_ID_FILES = ("vendor", "device", "class")
PCI_DEVICE_LINKS = ("driver", "iommu", "iommu_group")
_ID_WHAT = {"vendor": "a PCI vendor ID", "device": "a PCI device ID", "class": "a PCI class code"}

Decoded = tuple[bytes, PciConfig | ParseError]


def _decoder(
    extended: bool, virtfn: bool = False, header: bytes | None = None
) -> Callable[[PreadFile], Decoded]:
    """Decode config space as it is read (``header``: its first bytes, read already)."""

    def decode(space: PreadFile) -> Decoded:
        first = space.read(0, PCI_HEADER_READ) if header is None else header
        try:
            return first, decode_pci_config(space, first, extended=extended, virtfn=virtfn)
        except ParseError as exc:
            return first, exc.with_traceback(None)  # kept as a value: no frames (root.py)

    return decode


def _parse_whole(data: bytes, extended: bool, virtfn: bool = False) -> PciConfig | ParseError:
    try:
        return parse_pci_config(data, extended=extended, virtfn=virtfn)
    except ParseError as exc:
        return exc.with_traceback(None)


def _shared_with_pf(vf: PciConfig, pf: _Read | None) -> PciConfig:
    """A VF's PRI and PASID state: a VF has neither capability and shares its PF's, so the kernel
    enables them on a VF only when they are enabled on its PF (pci_enable_pri() and
    pci_enable_pasid(), drivers/pci/ats.c, Linux 7.2.13): the PF's enable bits; None where the
    PF's were not read."""
    pf_config = pf.config if pf is not None and isinstance(pf.config, PciConfig) else None
    if vf.pri_enabled is None and vf.pasid_enabled is None:
        return vf  # the VF's own extended capabilities were not read: neither are the PF's
    return replace(
        vf,
        pri_enabled=None if pf_config is None else pf_config.pri_enabled,
        pasid_enabled=None if pf_config is None else pf_config.pasid_enabled,
    )


@dataclass
class _Read:
    """What was read of one device, before it becomes a :class:`PciDevice`."""

    base: str
    config: PciConfig | ParseError | OSError
    links: dict[str, str | None]
    vfio: list[str] | OSError
    ids: tuple[int, int, int] | None  # from the header
    id_files: dict[str, bytes | OSError]  # read where the header does not give the IDs
    whole: bytes | None  # collect: the whole file, decoded again for the extended list
    virtfn: bool = False  # an SR-IOV VF (its ``physfn`` link)
    physfn: str | None = None  # a VF's PF, by BDF

    @property
    def vfio_bound(self) -> bool:
        driver = self.links["driver"]
        return (driver is not None and "vfio" in link_basename(driver)) or bool(
            not isinstance(self.vfio, OSError) and any(v.startswith("vfio") for v in self.vfio)
        )

    @property
    def group(self) -> int | None:
        g = self.links["iommu_group"]
        return int(n) if g and (n := link_basename(g)).isdigit() else None

    def id_of(self, i: int, name: str) -> int | None:
        if self.ids is not None:
            return self.ids[i]
        data = self.id_files.get(name)
        if not isinstance(data, bytes):
            return None
        try:
            return parse_hex(data.decode(), _ID_WHAT[name])
        except (ParseError, UnicodeDecodeError):
            return None


class PciReader:
    """Reads every device of ``/sys/bus/pci/devices`` for the snapshot builder.

    ``policy``: read the extended capabilities only of the devices a check reads them of (see
    the module); None: of every device.  ``collect``: read and record every file whole."""

    def __init__(self, builder: Builder, policy: Policy | None, collect: bool) -> None:
        self.b, self.root = builder, builder.root
        self.policy, self.collect = policy, collect

    def read(self, bdfs: list[str]) -> dict[str, PciDevice]:
        every = self.policy is None
        raw = {bdf: self._read(bdf, extended=every) for bdf in bdfs}
        if not every:
            for bdf in sorted(self._extended_for(raw)):
                self._reread_extended(raw[bdf])
        for r in raw.values():
            if r.virtfn and isinstance(r.config, PciConfig):
                r.config = _shared_with_pf(r.config, raw.get(r.physfn or ""))
        return {bdf: self._device(bdf, r) for bdf, r in raw.items()}

    def _read(self, bdf: str, *, extended: bool) -> _Read:
        base = f"{SYS_PCI_DEVICES}/{bdf}"
        header: bytes | None = None
        whole: bytes | None = None
        config: PciConfig | ParseError | OSError
        if self.collect:
            got = self.root.read_entries(
                base,
                files=(*PCI_ID_FILES, "config"),
                links=PCI_DEVICE_LINKS,
                dirs=("vfio-dev",),
            )
            data = got.files["config"]
            if isinstance(data, OSError):
                config = data
            else:
                whole, header = data, data[:PCI_HEADER_SIZE]
                config = _parse_whole(data, extended)
        else:
            got = self.root.read_entries(
                base, links=PCI_DEVICE_LINKS, preads={"config": _decoder(extended)}
            )
            # vfio-dev/vfioN exists only under a VFIO driver (vfio_device_add()): listed where
            # the driver is one, or is not known
            driver = got.links["driver"]
            if driver is None or "vfio" in link_basename(driver):
                got.dirs["vfio-dev"] = self.root.read_entries(base, dirs=("vfio-dev",)).dirs[
                    "vfio-dev"
                ]
            else:
                got.dirs["vfio-dev"] = FileNotFoundError(errno.ENOENT, "not a VFIO driver")
            result = got.preads["config"]
            if isinstance(result, OSError):
                config = result
            else:
                header, config = result  # type: ignore[misc]
        virtfn, physfn = False, None
        if header is not None and header[:2] == b"\xff\xff":
            # vendor ID 0xffff: no response, or an SR-IOV VF (its ID fields read so; its IDs
            # are the kernel's, from the PF: pci_iov_scan_device()); the rest is its own
            link = self.root.link_target(f"{base}/physfn")
            virtfn, physfn = link is not None, link and link_basename(link)
            if virtfn and whole is not None:
                config = _parse_whole(whole, extended, virtfn=True)
            elif virtfn:
                decode = _decoder(extended, virtfn=True, header=header)
                again = self.root.pread_path(f"{base}/config", decode)
                config = again if isinstance(again, OSError) else again[1]  # type: ignore[index]
        ids = pci_ids(header) if header is not None else None
        id_files = {n: got.files[n] for n in PCI_ID_FILES if n in got.files}
        if ids is None and not self.collect:
            id_files = self.root.read_entries(base, files=PCI_ID_FILES).files
        return _Read(
            base, config, got.links, got.dirs["vfio-dev"], ids, id_files, whole, virtfn, physfn
        )

    def _extended_for(self, raw: dict[str, _Read]) -> set[str]:
        """The devices whose extended capabilities a check reads (see the module)."""
        assert self.policy is not None
        named = bool(self.policy.devices or self.policy.ids)
        out = {
            bdf
            for bdf, r in raw.items()
            if r.vfio_bound
            or (
                named and policy_wants(self.policy, bdf, r.id_of(0, "vendor"), r.id_of(1, "device"))
            )
        }
        groups = {g for bdf in out if (g := raw[bdf].group) is not None}
        out |= {bdf for bdf, r in raw.items() if r.group is not None and r.group in groups}
        # a VF's PRI and PASID are its PF's (drivers/pci/ats.c)
        out |= {pf for bdf in out if (pf := raw[bdf].physfn) in raw}
        return out

    def _reread_extended(self, r: _Read) -> None:
        """Add the extended capabilities to the device's decoded config space (reading only
        the extended list)."""
        config = r.config
        if not isinstance(config, PciConfig):
            return  # the header or the capability list failed: the extended walk would too

        def extended(space: ConfigSpace) -> PciConfig | ParseError:
            try:
                return decode_extended(space, config)
            except ParseError as exc:
                return exc.with_traceback(None)

        if r.whole is not None:
            r.config = extended(BytesConfig(r.whole))
            return
        got = self.root.pread_path(f"{r.base}/config", extended)
        assert isinstance(got, PciConfig | ParseError | OSError)  # extended's, or the OSError
        r.config = got

    def _device(self, bdf: str, r: _Read) -> PciDevice:
        """The device, its problems recorded in the order a whole read gave them: the VFIO cdev
        directory, config space, then the ID attributes."""
        t = Tier.SYSFS
        base = r.base
        vfio = r.vfio
        if isinstance(vfio, OSError):
            if not isinstance(vfio, FileNotFoundError):  # optional: most devices have none
                self.b._problem(f"{base}/vfio-dev", describe_oserror(vfio), t)
            vfio = []
        config: PciConfig | None = None
        if isinstance(r.config, PciConfig):
            config = r.config
        elif isinstance(r.config, ParseError):
            self.b._problem(f"{base}/config", str(r.config), t)
        elif isinstance(r.config, FileNotFoundError):
            self.b._problem(f"{base}/config", "no such file", t)
        else:
            self.b._problem(f"{base}/config", describe_oserror(r.config), t)
        ids: list[int | None] = []
        for i, name in enumerate(PCI_ID_FILES):
            if r.ids is not None:
                ids.append(r.ids[i])
                continue
            what = _ID_WHAT[name]

            def parse(data: bytes, what: str = what) -> int:
                return parse_hex(data.decode(), what)

            ids.append(
                self.b._parse_read(
                    f"{base}/{name}", r.id_files.get(name, FileNotFoundError()), parse, t
                )
            )
        driver, iommu = r.links["driver"], r.links["iommu"]
        return PciDevice(
            parent=self._parent_bridge(base),
            config=config,
            bdf=bdf,
            vendor=ids[0],
            device=ids[1],
            pci_class=ids[2],
            driver=None if driver is None else link_basename(driver),
            iommu=None if iommu is None else link_basename(iommu),
            iommu_group=r.group,
            vfio_devs=tuple(v for v in vfio if v.startswith("vfio")),
        )

    def _parent_bridge(self, rel: str) -> str | None:
        """The upstream bridge: the parent directory of the device in /sys/devices."""
        try:
            real = self.root.resolve(rel)
        except OSError:
            return None
        parent = real.rsplit("/", 2)[-2] if real.count("/") >= 2 else ""
        try:
            parse_bdf(parent)
        except ParseError:
            return None  # pci0000:00: a root bus
        return parent
