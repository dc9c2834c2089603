"""Ready-made simulated hosts shaped like the real captures (QEMU q35 with intel-iommu).

:func:`q35_host` builds the captures' topology: host bridge, NICs, virtio, four root ports
(buses 1-4), an NVMe, a PCIe-to-PCI bridge 04:00.0 with two conventional devices behind it
(05:01.0 and 05:02.0 DMA as 05:00.0), the ICH9 functions 00:1f.x in one group, and 00:05.0
bound to vfio-pci.  :func:`two_unit_host` splits the devices over two DMAR units (the first with
an explicit device scope, the second INCLUDE_PCI_ALL).  Both return booted hosts.
"""

from __future__ import annotations

from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.kho import LuoGeneration
from tests.kernelmodel.pci import (
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_RC_END,
    PCI_EXP_TYPE_ROOT_PORT,
)
from vtdlud.model.snapshot import VFIO_PCI

REDHAT, INTEL, QEMU_VIRTIO = 0x1B36, 0x8086, 0x1AF4
ICH9_GROUP = 100  # an explicit group number for the 00:1f.x functions (no ACS between them)


def _q35_devices(host: SimHost, *, second_unit: str | None = None) -> None:
    rc: dict[str, object] = {"pcie_type": PCI_EXP_TYPE_RC_END}
    host.add_device(0, 0, 0x00, vendor=INTEL, device=0x29C0, pci_class=0x060000, pcie_type=None)
    host.add_device(0, 0, 0x02, device=0x10D3, driver="e1000e", **rc)
    host.add_device(0, 0, 0x03, vendor=QEMU_VIRTIO, device=0x1000, driver="virtio-pci", **rc)
    for func in range(4):
        host.add_device(
            0, 0, 0x04, func, vendor=REDHAT, device=0x000C, driver="pcieport",
            pcie_type=PCI_EXP_TYPE_ROOT_PORT, secondary_bus=func + 1,
        )  # fmt: skip
    host.add_device(0, 0, 0x05, device=0x10D3, driver=VFIO_PCI, **rc)
    for func, (dev_id, cls, drv) in enumerate(
        [(0x2918, 0x060100, None), (0, 0, None), (0x2922, 0x010601, "ahci"), (0x2930, 0x0C0500, "i801_smbus")]
    ):  # fmt: skip
        if dev_id:
            host.add_device(
                0, 0, 0x1F, func, device=dev_id, pci_class=cls, driver=drv, group=ICH9_GROUP,
                pcie_type=None,
            )  # fmt: skip
    unit: dict[str, object] = {"unit": second_unit} if second_unit else {}
    host.add_device(
        0, 1, 0, vendor=REDHAT, device=0x0010, pci_class=0x010802, driver="nvme", **unit
    )
    host.add_device(0, 2, 0, vendor=QEMU_VIRTIO, device=0x1042, driver="virtio-pci", **unit)
    host.add_device(
        0, 3, 0, device=0x10D3, driver="e1000e", pcie_type=PCI_EXP_TYPE_ENDPOINT, **unit
    )
    host.add_device(
        0, 4, 0, vendor=REDHAT, device=0x000E, pcie_type=PCI_EXP_TYPE_PCI_BRIDGE,
        secondary_bus=5, **unit,
    )  # fmt: skip
    host.add_device(
        0, 5, 1, vendor=QEMU_VIRTIO, device=0x1000, driver="virtio-pci", pcie_type=None, **unit
    )
    host.add_device(0, 5, 2, device=0x100E, driver="e1000", pcie_type=None, **unit)


LINUX72_RELEASE = "7.2.13-amd64"


def linux72_host(
    *, scalable: bool = False, seed: int = 0, flb_variant: str = "v1", test_flbs: bool = True
) -> SimHost:
    """:func:`q35_host` on the model of Linux 7.2's KHO/LUO (``kho-v4``, ``luo-v5``, the cut
    ``kho/out/fdt``, the incoming LUO state freed at boot; tests.kernelmodel.kho), with the kernel's
    test FLBs (``CONFIG_LIVEUPDATE_TEST``) as the 7.2 guest of the project's harness has them."""
    host = SimHost(
        seed=seed,
        flb_variant=flb_variant,
        luo_generation=LuoGeneration.LUO_V5,
        kho_abi="kho-v4",
        release=LINUX72_RELEASE,
    )
    host.test_flbs = test_flbs
    host.add_unit(reg_base=0xFED9_0000, scalable=scalable)
    _q35_devices(host)
    host.boot()
    return host


def q35_host(
    *,
    scalable: bool = False,
    seed: int = 0,
    flb_variant: str = "v1",
    luo_generation: LuoGeneration = LuoGeneration.FDT_FLB,
    identity: bool = False,
) -> SimHost:
    host = SimHost(
        seed=seed, flb_variant=flb_variant, luo_generation=luo_generation,
        identity_default=identity,
    )  # fmt: skip
    host.add_unit(reg_base=0xFED9_0000, scalable=scalable)
    _q35_devices(host)
    host.boot()
    return host


def two_unit_host(*, scalable: bool = False, seed: int = 0, flb_variant: str = "v1") -> SimHost:
    """dmar0 (0xfed90000) translates the root-bus devices through an explicit scope; dmar1
    (0xfed91000, INCLUDE_PCI_ALL) everything behind the root ports."""
    host = SimHost(seed=seed, flb_variant=flb_variant)
    host.add_unit(reg_base=0xFED9_0000, scalable=scalable, include_all=False)
    host.add_unit(reg_base=0xFED9_1000, scalable=scalable)
    _q35_devices(host, second_unit="dmar1")
    host.boot()
    return host
