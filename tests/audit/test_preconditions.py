"""The kernel's preconditions for preserving a device, on copies of the real a_legacy capture.

The topology and sysfs are real (00:05.0 is bound to vfio-pci with cdev vfio0; 05:01.0 and
05:02.0 sit behind the pcie-pci-bridge 04:00.0 and share its alias 05:00.0); the process facts
and command lines are written by the tests.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import copy_tree, run_cli, status_json
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.report import Finding
from vtdlud.host.procs import PROCESSES_JSON, facts_to_json
from vtdlud.host.root import Fault, FaultPlan, HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.policy import Policy
from vtdlud.model.snapshot import ProcessFacts, VfioHolder
from vtdlud.parse.policy import parse_policy

VFIO_DEV = "0000:00:05.0"
ARMED = "console=ttyS0 intel_iommu=on kho=on liveupdate\n"


def _holder(
    cdevs: tuple[str, ...] = ("vfio0",), groups: tuple[str, ...] = (), iommufd: bool = True
) -> VfioHolder:
    return VfioHolder(4242, "qemu-system-x86", ("qemu-system-x86_64",), cdevs, groups, iommufd)


@pytest.fixture
def host(capture_root: Callable[[str], Path], tmp_path: Path) -> Path:
    return copy_tree(capture_root("a_legacy"), tmp_path / "host")


def _run(
    root: Path,
    holders: tuple[VfioHolder, ...] = (),
    *,
    cmdline: str = ARMED,
    kexec_loaded: str | None = "1\n",
    policy: Policy | None = None,
    faults: FaultPlan | None = None,
) -> list[Finding]:
    (root / "vtdlud").mkdir(exist_ok=True)
    (root / PROCESSES_JSON).write_bytes(facts_to_json(ProcessFacts(holders, True, "test")))
    (root / "proc/cmdline").unlink()
    (root / "proc/cmdline").write_text(cmdline)
    if kexec_loaded is not None:
        (root / "sys/kernel/kexec_loaded").write_text(kexec_loaded)
    snap = take_snapshot(HostRoot(root, faults=faults))
    report = evaluate(snap, policy or Policy())
    return [f for f in report.findings if f.code != "VTD050"]


def _pairs(findings: list[Finding]) -> list[tuple[str, str, str | None]]:
    return [(f.code, f.severity.value, f.bdf) for f in findings]


def test_clean_vmm_held_device(host: Path) -> None:
    assert _run(host, (_holder(),)) == []


def test_not_armed(host: Path) -> None:
    [f] = _run(host, (_holder(),), cmdline="console=ttyS0 intel_iommu=on\n", kexec_loaded="0\n")
    assert f.code == "VTD029" and f.severity.value == "FAIL"
    assert f.message == (
        "live update is not armed for 1 device(s) to preserve: kho=on is not on the kernel "
        "command line; liveupdate is not on the kernel command line; no kexec image is loaded "
        "(/sys/kernel/kexec_loaded is 0)"
    )
    # kho=off after kho=on: the kernel takes the last value
    [f] = _run(host, (_holder(),), cmdline="kho=on liveupdate kho=off\n")
    assert f.message.endswith(": kho=on is not on the kernel command line")


def test_nothing_to_preserve_needs_no_arming(host: Path) -> None:
    assert _run(host, (), cmdline="quiet\n", kexec_loaded="0\n") == []


def test_legacy_group_user(host: Path) -> None:
    [f] = _run(host, (_holder(cdevs=(), groups=("7",)),))
    assert (f.code, f.bdf) == ("VTD026", VFIO_DEV)
    assert f.message == (
        "0000:00:05.0 cannot be preserved: held through the legacy VFIO group API "
        "(/dev/vfio/7) by qemu-system-x86[4242]"
    )


def test_cdev_without_iommufd(host: Path) -> None:
    [f] = _run(host, (_holder(iommufd=False),))
    assert f.message.endswith(
        "its VFIO cdev is open by qemu-system-x86[4242] without /dev/iommu (not bound to iommufd)"
    )


def test_policy_device_behind_the_bridge(host: Path) -> None:
    policy = parse_policy([("p", '[preserve]\ndevices = ["0000:05:01.0"]\n')])
    findings = _run(host, (_holder(),), policy=policy)
    assert _pairs(findings) == [
        ("VTD026", "FAIL", "0000:05:01.0"),
        ("VTD025", "FAIL", "0000:05:01.0"),
    ]
    assert findings[0].message == (
        "0000:05:01.0 cannot be preserved: bound to virtio-pci, not vfio-pci; "
        "no process holds its VFIO cdev"
    )
    assert findings[1].message == (
        "0000:05:01.0 shares DMA alias 0000:05:00.0 with 0000:05:02.0, which is not preserved: "
        "its context entry is cleared at kexec"
    )
    # Preserving both devices behind the bridge removes the alias conflict.
    both = parse_policy([("p", '[preserve]\ndevices = ["0000:05:0[12].0"]\n')])
    assert "VTD025" not in [f.code for f in _run(host, (_holder(),), policy=both)]


def test_unreadable_bridge_config_makes_aliases_unknown(host: Path) -> None:
    policy = parse_policy([("p", '[preserve]\ndevices = ["0000:05:01.0"]\nvmm_held = false\n')])
    faults = FaultPlan(
        [Fault("sys/devices/pci0000:00/0000:00:04.3/0000:04:00.0/config", errno.EACCES)]
    )
    findings = _run(host, (), policy=policy, faults=faults)
    alias = [f for f in findings if f.code == "VTD025"]
    assert _pairs(alias) == [("VTD025", "UNKNOWN", "0000:05:01.0")]
    assert "VTD051" in [f.code for f in findings]


def test_pri_enabled(host: Path) -> None:
    cfg = bytearray((host / "sys/bus/pci/devices" / VFIO_DEV / "config").read_bytes())
    # Replace the extended capability list with a single PRI capability, PRI Control = Enable.
    cfg[0x100:0x104] = struct.pack("<I", 0x0013 | 1 << 16)  # PCI_EXT_CAP_ID_PRI, version 1
    cfg[0x104:0x106] = struct.pack("<H", 0x0001)  # PCI_PRI_CTRL_ENABLE
    path = host / "sys/devices/pci0000:00" / VFIO_DEV / "config"
    path.unlink()
    path.write_bytes(bytes(cfg))
    [f] = _run(host, (_holder(),))
    assert (f.code, f.message) == (
        "VTD026",
        "0000:00:05.0 cannot be preserved: page requests (PRI) are enabled",
    )


def test_status_reports_the_devices_to_preserve_and_their_holders(host: Path) -> None:
    _run(host, (_holder(),))  # writes the process facts, the armed command line
    doc = status_json("--root", str(host))
    assert doc["preserve"] == [
        {
            "bdf": VFIO_DEV,
            "unit": "0xfed90000",
            "driver": "vfio-pci",
            "by_policy": False,
            "holders": [
                {
                    "pid": 4242,
                    "name": "qemu-system-x86",
                    "cmdline": ["qemu-system-x86_64"],
                    "vfio_cdevs": ["vfio0"],
                    "vfio_groups": [],
                    "iommufd": True,
                }
            ],
        }
    ]
    rc, out, _ = run_cli("status", "--root", str(host))
    assert rc == 0
    assert "  0000:00:05.0  vfio-pci  vmm-held  qemu-system-x86[4242] qemu-system-x86_64" in out
