"""PCI config space read where the decoder asks (pread at offsets), not 4 KiB whole (#15).

The oracle for the decoder is a whole-buffer reading of config space written here (the one
vtdlud used before it read sparsely), so a sparse read that decodes differently from the whole
file fails; the snapshot tests use the kernel model's trees (tests.kernelmodel).
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.pci import PCI_EXP_TYPE_ROOT_PORT
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud.audit.evaluate import evaluate
from vtdlud.errors import ParseError
from vtdlud.host.files import PreadFile
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.pci import PciConfig
from vtdlud.model.policy import Policy
from vtdlud.parse.pciconfig import decode_pci_config

VFIO = "0000:00:05.0"


def _u16(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 2], "little")


def _whole(data: bytes) -> tuple[object, ...] | str:
    """The reference: decode a whole ``config`` buffer (pci_regs.h offsets), or the error kind."""
    if len(data) < 64:
        return "short"
    if _u16(data, 0) == 0xFFFF:
        return "no response"
    bridge = data[0x0E] & 0x7F == 1
    caps: dict[int, int] = {}
    if len(data) >= 256 and _u16(data, 0x06) & 0x10:
        ptr, seen = data[0x34] & ~3, set[int]()
        while ptr:
            if ptr in seen or len(seen) >= 48 or ptr < 0x40 or ptr + 2 > 256:
                return "bad list"
            seen.add(ptr)
            caps.setdefault(data[ptr], ptr)
            ptr = data[ptr + 1] & ~3
    pcie = (_u16(data, caps[0x10] + 2) >> 4) & 0xF if 0x10 in caps else None
    ext: dict[int, int] = {}
    flags: tuple[bool | None, ...] = (None, None, None)
    if pcie is None and len(data) >= 256:
        flags = (False, False, False)
    elif pcie is not None and len(data) >= 4096:
        ptr, seen = 0x100, set[int]()
        while ptr:
            if ptr in seen or len(seen) >= 48 or ptr < 0x100:
                return "bad ext list"
            seen.add(ptr)
            hdr = int.from_bytes(data[ptr : ptr + 4], "little")
            if hdr in (0, 0xFFFFFFFF):
                break
            ext.setdefault(hdr & 0xFFFF, ptr)
            ptr = (hdr >> 20) & 0xFFC

        def on(cap: int, ctrl: int, bit: int) -> bool:
            return cap in ext and bool(_u16(data, ext[cap] + ctrl) & bit)

        flags = (on(0x13, 4, 1), on(0x0F, 6, 0x8000), on(0x1B, 6, 1))
    sub = None if bridge else (_u16(data, 0x2C), _u16(data, 0x2E))
    return (bridge, data[0x19] if bridge else None, pcie, *flags, sub)


def _shape(cfg: PciConfig) -> tuple[object, ...]:
    return (
        cfg.is_bridge,
        cfg.secondary_bus,
        cfg.pcie_type,
        cfg.pri_enabled,
        cfg.ats_enabled,
        cfg.pasid_enabled,
        cfg.subsystem,
    )


def _sparse(path: Path, *, live: bool = False, size: int | None = None) -> tuple[object, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        f = PreadFile(fd, os.fstat(fd).st_size if size is None else size, live)
        try:
            got: object = _shape(decode_pci_config(f))
        except ParseError as exc:
            got = exc
        return got, f.bytes_read
    finally:
        os.close(fd)


@st.composite
def _config_space(draw: st.DrawFn) -> bytes:
    """Config space with a capability list and an extended list that are often well formed
    and sometimes not (loops, pointers out of range), cut to a length a reader can get."""
    size = draw(st.sampled_from([0, 40, 64, 128, 200, 256, 1000, 4096, 4100]))
    cfg = bytearray(random.Random(draw(st.integers(0, 2**32))).randbytes(4096))
    if draw(st.booleans()):
        cfg[0:2] = b"\x86\x80"
    ptrs = draw(st.lists(st.integers(0x40, 0xFE), min_size=0, max_size=6))
    cfg[0x34] = ptrs[0] if ptrs else 0
    for i, p in enumerate(ptrs):
        cfg[p] = draw(st.sampled_from([0x10, 0x01, 0x05, 0x11]))
        if p + 1 < len(cfg):
            cfg[p + 1] = ptrs[i + 1] if i + 1 < len(ptrs) else 0
    ext = draw(st.lists(st.integers(0x40, 0x3FF), min_size=0, max_size=6))
    for i, p in enumerate(ext):
        off = p * 4
        nxt = ext[i + 1] * 4 if i + 1 < len(ext) else 0
        cap = draw(st.sampled_from([0x0F, 0x13, 0x1B, 0x01]))
        struct.pack_into("<I", cfg, off, cap | 1 << 16 | nxt << 20)
    if ext:
        struct.pack_into("<I", cfg, 0x100, cfg[0x100] | 1 << 16 | (ext[0] * 4) << 20)
    end = draw(st.sampled_from([None, 0, 0xFFFFFFFF]))  # no extended space: all zeros or ones
    if end is not None:
        struct.pack_into("<I", cfg, 0x100, end)
    return bytes(cfg[:size])


@settings(max_examples=400, deadline=None)
@given(data=_config_space())
def test_sparse_read_decodes_as_the_whole_file(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config"
    path.write_bytes(data)
    got, read = _sparse(path)
    want = _whole(data)
    if isinstance(want, str):
        assert isinstance(got, ParseError), (want, got)
    else:
        assert got == want
    assert read <= len(data)


def test_unprivileged_reader_of_live_sysfs(tmp_path: Path) -> None:
    """sysfs sizes ``config`` at 4 KiB but gives a non-root reader 64 bytes: the live reader
    probes the last byte it needs, and finds the capability lists unreadable (None)."""
    cfg = bytearray(64)
    cfg[0:2], cfg[0x06], cfg[0x34] = b"\x86\x80", 0x10, 0x40
    path = tmp_path / "config"
    path.write_bytes(bytes(cfg))
    got, read = _sparse(path, live=True, size=4096)
    assert got == (False, None, None, None, None, None, (0, 0))
    assert read == 64  # the header; the probe at 255 read nothing


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = q35_host(scalable=True, seed=5)
    sim.vfio_attach(VFIO)
    sim.preserve(VFIO)
    return write_tree(sim, tmp_path_factory.mktemp("pcicfg") / "host")


def test_status_reads_headers_and_capabilities_not_whole_config(host: Path) -> None:
    whole = take_snapshot(HostRoot(host), collect=True)
    hr = HostRoot(host)
    snap = take_snapshot(hr, policy=Policy())
    config = {p: n for p, n in hr.bytes_pread.items() if p.endswith("/config")}
    assert len(config) == len(snap.pci_devices)
    assert sum(config.values()) / len(config) <= 256  # issue #15's goal, on average
    assert max(config.values()) < 4096
    assert not [p for p in hr.files_read if p.rsplit("/", 1)[-1] in ("vendor", "device", "class")]
    extended = {
        b for b, d in snap.pci_devices.items() if d.config and d.config.ats_enabled is not None
    }
    pcie = {b for b, d in snap.pci_devices.items() if d.config and d.config.pcie_type is not None}
    group = snap.pci_devices[VFIO].iommu_group
    peers = {b for b, d in snap.pci_devices.items() if d.iommu_group == group}
    # PCIe functions' extended capabilities: only of the VFIO device and its group's devices
    assert extended & pcie == peers & pcie and VFIO in extended
    for bdf, d in snap.pci_devices.items():
        w = whole.pci_devices[bdf]
        assert (d.vendor, d.device, d.pci_class) == (w.vendor, w.device, w.pci_class), bdf
        assert d.config is not None and w.config is not None
        if bdf in extended or d.config.pcie_type is None:
            assert d.config == w.config, bdf
        else:
            assert d.config.pri_enabled is None and w.config.pri_enabled is not None, bdf


def test_collect_records_every_file_whole(host: Path) -> None:
    hr = HostRoot(host)
    take_snapshot(hr, collect=True)
    dev = hr.resolve(f"sys/bus/pci/devices/{VFIO}")
    assert len(hr.contents[f"{dev}/config"]) == 4096
    assert hr.contents[f"{dev}/vendor"] == b"0x8086\n"
    assert {f"{dev}/device", f"{dev}/class"} <= set(hr.contents)


def test_ids_from_attributes_where_the_header_has_none(host: Path, tmp_path: Path) -> None:
    """Vendor ID 0xffff in the header (no response; an SR-IOV VF reads so too): the IDs come
    from sysfs ``vendor``/``device``/``class``, as the kernel holds them."""
    work = tmp_path / "host"
    shutil.copytree(host, work, symlinks=True)
    hr = HostRoot(work)
    path = work / hr.resolve(f"sys/bus/pci/devices/{VFIO}") / "config"
    data = bytearray(path.read_bytes())
    data[0:4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    snap = take_snapshot(hr, policy=Policy())
    d = snap.pci_devices[VFIO]
    assert (d.vendor, d.device) == (0x8086, 0x10D3) and d.config is None
    assert any(p.path.endswith(f"{VFIO}/config") and "0xffff" in p.reason for p in snap.problems)
    assert f"{hr.resolve(f'sys/bus/pci/devices/{VFIO}')}/vendor" in hr.files_read


def _sriov_host() -> SimHost:
    """The q35 host plus an SR-IOV PF behind root port 00:04.0 (bus 1 holds the NVMe at 01:00.0,
    so the PF sits on bus 3's port, beside its 03:00.0 e1000e) with three VFs 03:00.1-3; the
    first VF goes to a VMM and is preserved."""
    host = SimHost(seed=9)
    host.add_unit(reg_base=0xFED9_0000, scalable=True)
    host.add_device(
        0, 0, 0x04, 0, device=0x000C, vendor=0x1B36, driver="pcieport",
        pcie_type=PCI_EXP_TYPE_ROOT_PORT, secondary_bus=3,
    )  # fmt: skip
    host.add_device(0, 3, 0, 0, device=0x10FB, driver="ixgbe")
    for fn in (1, 2, 3):
        host.add_device(0, 3, 0, fn, device=0x10ED, driver="ixgbevf", physfn="0000:03:00.0")
    host.boot()
    host.vfio_attach(VF)
    host.preserve(VF)
    return host


VF = "0000:03:00.1"


def test_sriov_vf_config_space_is_its_own(tmp_path: Path) -> None:
    """A VF's Vendor and Device ID fields read 0xffff (SR-IOV 1.1 §3.4.1.1-2): vtdlud takes its
    IDs from sysfs (the kernel's, from the PF) and decodes the rest of its config space, so its
    DMA aliases are visible and the gate can pass; read as a non-responding device, every VF of
    an SR-IOV host was an unreadable input and an UNKNOWN alias check."""
    root = write_tree(_sriov_host(), tmp_path / "host")
    assert (root / "sys/bus/pci/devices" / VF / "config").read_bytes()[:4] == b"\xff" * 4
    snap = take_snapshot(HostRoot(root), policy=Policy())
    vf = snap.pci_devices[VF]
    assert (vf.vendor, vf.device, vf.pci_class) == (0x8086, 0x10ED, 0x020000)
    assert vf.config is not None and vf.config.pcie_type == 0  # PCI_EXP_TYPE_ENDPOINT
    assert vf.config.pri_enabled is False  # extended capabilities read: bound to vfio-pci
    assert not [p for p in snap.problems if "/config" in p.path]
    report = evaluate(snap, Policy())
    assert not [f for f in report.findings if f.code in ("VTD025", "VTD051")]
    hr = HostRoot(root)
    take_snapshot(hr, collect=True)  # a bundle keeps the link that says it is a VF
    assert f"{hr.resolve(f'sys/bus/pci/devices/{VF}')}/physfn" in hr.links


def test_sriov_vf_page_requests_are_its_pf(tmp_path: Path) -> None:
    """A VF implements no PRI capability; its PRI is its PF's (pci_enable_pri(), Linux 7.2.13
    drivers/pci/ats.c): with the PF's PRI enabled, the VF to preserve cannot be (VTD026).  Read
    from the VF's own config space alone it looked PRI-free."""
    sim = _sriov_host()
    sim.device("0000:03:00.0").pri_enabled = True
    root = write_tree(sim, tmp_path / "host")
    snap = take_snapshot(HostRoot(root), policy=Policy())
    vf = snap.pci_devices[VF].config
    assert vf is not None and vf.pri_enabled is True
    report = evaluate(snap, Policy())
    [msg] = [f.message for f in report.findings if f.code == "VTD026"]
    assert "page requests (PRI) are enabled" in msg and msg.startswith(VF)
