"""A large synthetic host for the benchmarks, built with the kernel model (tests.kernelmodel).

8 DMAR units in scalable mode, 2,048 endpoint functions (every devfn 0x00-0xff on one bus per
unit, so half of them sit in upper context tables, as SR-IOV VFs do), each unit behind its own
root port; 200 devices preserved on dmar0 (device records span three array pages) and 8 on
each other unit.  Generated in seconds, never committed as a blob.

    python -m benchmarks.large_host DIR      # writes the before-kexec tree into DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.tree import write_tree

UNITS = 8
FUNCS_PER_UNIT = 256
PCI_EXP_TYPE_ENDPOINT = 0
PCI_EXP_TYPE_ROOT_PORT = 4


def build(*, preserve_first: int = 200, preserve_others: int = 8, seed: int = 7) -> SimHost:
    host = SimHost(seed=seed)
    for u in range(UNITS):
        host.add_unit(reg_base=0xFED9_0000 + u * 0x1000, scalable=True)
    for u in range(UNITS):
        bus = 0x10 * (u + 1)
        unit = f"dmar{u}"
        host.add_device(
            0,
            0,
            u + 1,
            0,
            pcie_type=PCI_EXP_TYPE_ROOT_PORT,
            secondary_bus=bus,
            unit=unit,
            driver="pcieport",
        )
        for devfn in range(FUNCS_PER_UNIT):
            host.add_device(
                0,
                bus,
                devfn >> 3,
                devfn & 7,
                pcie_type=PCI_EXP_TYPE_ENDPOINT,
                unit=unit,
                driver="ixgbevf",
            )
    host.boot()
    for u in range(UNITS):
        bus = 0x10 * (u + 1)
        count = preserve_first if u == 0 else preserve_others
        for devfn in range(count):
            bdf = f"0000:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"
            host.vfio_attach(bdf)
            host.preserve(bdf)
    return host


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.large_host DIR", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    host = build()
    t1 = time.perf_counter()
    write_tree(host, Path(argv[0]))
    t2 = time.perf_counter()
    print(f"built the model in {t1 - t0:.2f} s, wrote {argv[0]} in {t2 - t1:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
