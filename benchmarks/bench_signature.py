"""Benchmark: decode a kho-v2 preserved-memory map of 1,000,000 preserved pages and scan its
order-0 pages for the IOMMU records by signature (vtdlud.model.khomem, vtdlud.model.signature).

The memory is simulated and sparse: the radix tree's nodes and leaves and the record pages are
real 4 KiB pages in a dict; every other preserved page is synthesized on read from a small pool
of random pages (chosen by address), so a probe costs what a dict miss and a slice cost.  The
preserved set looks like a host with VMs whose memory is preserved too: most pages in 2 MiB
(order 9) and 64 KiB (order 4) folios, a share of scattered order-0 pages among which sit the
IOMMU FLB, its record pages and decoys.  Layouts: kexec_handover.h's radix tree and
include/linux/kho/abi/iommu.h's records, as the modules document them; no real capture.

    .venv/bin/python benchmarks/bench_signature.py [--pages N] [--order0 FRACTION] [--seed S]

Prints the map decode time, then the scan's pages/s, wall time and bytes probed.  A second run
with every page order 0 (the worst case for the scan) follows unless --order0 is given.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from vtdlud.model.abi import (
    IommuArrayHdrSer,
    IommuDeviceIntelSer,
    IommuDeviceSerV1,
    IommuDevMapSer,
    IommuDomainSer,
    IommuFlbSerV1,
    IommuHdrSer,
    IommuHwSerV1,
    IommuIntelSer,
    IommuTypeSer,
)
from vtdlud.model.khomem import KHO_V2, walk_preserved_memory
from vtdlud.model.signature import PROBE_SIZE, find_hw_records

T = TypeVar("T")

PAGE = 4096
UNITS = (0xFED9_0000, 0xFED9_1000)
POOL = 64
RAM_END = 1 << 40  # spread the preserved memory over 1 TiB of physical addresses


class SparseMemory:
    """Real pages in a dict; any other page is one of POOL random pages (or zeros)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.pages: dict[int, bytearray] = {}
        self.pool = [rng.randbytes(PAGE) for _ in range(POOL - 1)] + [bytes(PAGE)]
        self.next = RAM_END  # metadata pages above the preserved memory

    def alloc(self) -> int:
        self.next += PAGE
        self.pages[self.next] = bytearray(PAGE)
        return self.next

    def __call__(self, addr: int, size: int) -> bytes:
        page = addr & ~(PAGE - 1)
        off = addr - page
        real = self.pages.get(page)
        data = self.pool[(page >> 12) * 2654435761 % POOL] if real is None else real
        return bytes(data[off : off + size])


def build_radix(mem: SparseMemory, ranges: list[tuple[int, int]]) -> int:
    """The kho-v2 tree for (phys, order): leaves grouped first, then the tables above."""
    leaves: dict[int, bytearray] = defaultdict(lambda: bytearray(PAGE))
    for phys, order in ranges:
        key = 1 << (52 - order) | phys >> (12 + order)
        leaf = leaves[key >> 15]
        bit = key & 0x7FFF
        leaf[bit >> 3] |= 1 << (bit & 7)
    root = mem.alloc()
    for prefix, bitmap in leaves.items():
        node = root
        for level in range(5, 1, -1):
            index = (prefix >> (9 * (level - 1))) & 511
            (child,) = struct.unpack_from("<Q", mem.pages[node], index * 8)
            if not child:
                child = mem.alloc()
                struct.pack_into("<Q", mem.pages[node], index * 8, child)
            node = child
        leaf_addr = mem.alloc()
        mem.pages[leaf_addr] = bitmap
        struct.pack_into("<Q", mem.pages[node], (prefix & 511) * 8, leaf_addr)
    return root


def place_records(mem: SparseMemory, pages: list[int]) -> int:
    """FLB, one hw, one domain and one device page (two units, three devices) written at four
    of the preserved order-0 pages; returns the FLB's address."""
    flb, hw, dom, dev = pages[:4]
    for page in (flb, hw, dom, dev):
        mem.pages[page] = bytearray(PAGE)

    def write(page: int, records: list[bytes]) -> None:
        data = IommuArrayHdrSer(0, len(records)).pack() + b"".join(records)
        mem.pages[page][: len(data)] = data

    hdr = IommuHdrSer(1, 0)
    write(
        hw,
        [
            IommuHwSerV1(
                hdr, u, IommuTypeSer.IOMMU_INTEL, IommuIntelSer(0, bytes(7), u, 0, (0,) * 8)
            ).pack()
            for u in UNITS
        ],
    )
    write(dom, [IommuDomainSer(hdr, 0x1000 * i, 3, 48, 0, 0).pack() for i in range(3)])
    write(
        dev,
        [
            IommuDeviceSerV1(
                hdr,
                0x300 + i,
                0,
                IommuDevMapSer(10 + i, dom + 16 + 37 * i, hw + 16 + 112 * (i % 2)),
                IommuDeviceIntelSer(0, 0),
            ).pack()
            for i in range(3)
        ],
    )
    mem.pages[flb][:24] = IommuFlbSerV1(hw, dom, dev).pack()
    return flb


def preserved_set(
    rng: random.Random, total: int, order0_fraction: float
) -> tuple[list[tuple[int, int]], list[int]]:
    """(phys, order) ranges adding up to ``total`` 4 KiB pages, and the order-0 pages."""
    ranges: list[tuple[int, int]] = []
    order0 = int(total * order0_fraction)
    rest = total - order0
    big = int(rest * 0.95) // 512  # 2 MiB folios
    small = (rest - big * 512) // 16  # 64 KiB folios
    order0 += rest - big * 512 - small * 16
    used: set[int] = set()

    def pick(order: int) -> int:
        size = PAGE << order
        while True:
            phys = rng.randrange(0, RAM_END // size) * size
            if phys >> 21 not in used:  # one 2 MiB region holds one kind only
                used.add(phys >> 21)
                return phys

    ranges += [(pick(9), 9) for _ in range(big)]
    ranges += [(pick(4), 4) for _ in range(small)]
    singles: list[int] = []
    while len(singles) < order0:  # order-0 pages come in 2 MiB regions of up to 512
        region = pick(9)
        singles += [region + i * PAGE for i in sorted(rng.sample(range(512), 64))]
    singles = singles[:order0]
    ranges += [(p, 0) for p in singles]
    return ranges, singles


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run(total: int, order0_fraction: float, seed: int, *, pread: bool) -> None:
    rng = random.Random(seed)
    mem = SparseMemory(seed)
    ranges, singles = preserved_set(rng, total, order0_fraction)
    flb = place_records(mem, rng.sample(singles, 4))
    root = build_radix(mem, ranges)
    pm, t_map = timed(lambda: walk_preserved_memory(mem, KHO_V2, root))
    assert pm.page_count == total and not pm.problems, pm.problems[:3]
    pages = pm.order0_pages()
    probes = [0]
    with tempfile.TemporaryFile() as backing:
        # --pread: a pread(2) per probe on a sparse file stands in for /proc/kcore's per-read
        # cost (the bytes still come from the simulated memory, so the scan finds the same).
        backing.truncate(RAM_END)
        fd = backing.fileno()

        def probe(addr: int, size: int) -> bytes:
            probes[0] += 1
            if pread:
                os.pread(fd, size, addr)
            return mem(addr, size)

        scan, t_scan = timed(lambda: find_hw_records(mem, pages, set(UNITS), probe=probe))
    assert scan.flb_phys == flb and scan.state is not None
    assert len(scan.state.live_devices()) == 3 and probes[0] == len(pages)
    print(
        f"preserved pages {pm.page_count:,} in {pm.range_count:,} ranges "
        f"({len(pages):,} order-0), map decoded in {t_map:.2f} s "
        f"({pm.pages_read:,} tree pages read)"
    )
    how = "+ a pread(2) of a sparse file per page" if pread else "in-memory reads"
    print(
        f"signature scan ({how}): {scan.pages_scanned:,} pages in {t_scan:.2f} s = "
        f"{scan.pages_scanned / t_scan:,.0f} pages/s; probed {scan.bytes_probed:,} bytes "
        f"({PROBE_SIZE} per page), {scan.full_reads} whole page(s) read; found the FLB at "
        f"{scan.flb_phys:#x}, {len(scan.state.hw)} hw, {len(scan.state.devices)} device records"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=1_000_000)
    parser.add_argument("--order0", type=float, default=None, help="share of order-0 pages")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pread",
        action="store_true",
        help="also run with a pread(2) of a sparse temporary file per probe (a syscall-cost "
        "proxy, not /proc/kcore)",
    )
    args = parser.parse_args()
    fractions = [args.order0] if args.order0 is not None else [0.25, 1.0]
    for fraction in fractions:
        print(f"== {args.pages:,} preserved pages, {fraction:.0%} of them order 0")
        for pread in (False, True) if args.pread else (False,):
            run(args.pages, fraction, args.seed, pread=pread)


if __name__ == "__main__":
    main()
