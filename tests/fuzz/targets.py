"""Fuzz targets: every parser and unpacker, fed raw bytes (atheris, coverage-guided).

Each target takes ``bytes`` and must either return or raise the project's own error type
(:class:`ParseError`, or :class:`PolicyError` for config text); anything else is a bug.  The
``bundle`` target (:mod:`tests.fuzz.bundle_target`) extracts the bytes as a bundle and also
fails on any write or link outside the destination.  The
same functions replay the regression corpus in ``tests/fuzz/regressions/<target>/`` in the
normal test run, so a crash the fuzzer once found stays fixed.

    python -m tests.fuzz.run [--seconds N] [TARGET ...]      # on demand, long
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from tests.fuzz.bundle_target import SEEDS as BUNDLE_SEEDS
from tests.fuzz.bundle_target import bundle
from vtdlud.audit.policy import PolicyError, parse_policy
from vtdlud.errors import ParseError, PhysReadError
from vtdlud.host.procs import facts_from_json
from vtdlud.model.abi import (
    V1,
    V2,
    IommuDeviceSerV1,
    IommuDomainSer,
    IommuHwSerV1,
    unpack_array_page,
)
from vtdlud.model.khomem import walk_preserved_memory
from vtdlud.model.records import walk_records
from vtdlud.model.walk import walk_unit_tables
from vtdlud.parse.debugfs import parse_dmar_translation_struct, parse_iommu_regset
from vtdlud.parse.dmar import parse_dmar
from vtdlud.parse.kcore import parse_kcore_layout
from vtdlud.parse.kho import parse_kho_root
from vtdlud.parse.luo import LuoBlob, parse_luo_blob, walk_luo
from vtdlud.parse.pciconfig import parse_pci_config
from vtdlud.parse.sysfs import parse_cmdline, parse_hex, parse_reserved_regions, parse_version
from vtdlud.service.ledger import ledger_from_json

PAGE = 4096


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def _memory(data: bytes) -> Callable[[int, int], bytes]:
    """A fake physical memory made of the input: pages 0x1000.. hold the bytes, the rest is
    outside RAM.  Lets one input drive a whole pointer chase."""
    pages = {
        PAGE * (1 + i): data[i * PAGE : (i + 1) * PAGE].ljust(PAGE, b"\0")
        for i in range(len(data) // PAGE + 1)
    }

    def read(addr: int, size: int) -> bytes:
        out = bytearray()
        for p in range(addr & ~(PAGE - 1), addr + size, PAGE):
            if p not in pages:
                raise PhysReadError(addr, size, "outside the fuzz memory", outside_ram=True)
            out += pages[p]
        off = addr & (PAGE - 1)
        return bytes(out[off : off + size])

    return read


def sysfs(data: bytes) -> None:
    text = _text(data)
    for parse in (parse_hex, parse_version, parse_reserved_regions, parse_cmdline):
        with contextlib.suppress(ParseError):
            parse(text)


def regset(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_iommu_regset(_text(data))


def translation(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_dmar_translation_struct(_text(data))


def dmar(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_dmar(data)


def pciconfig(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_pci_config(data)


def kho_fdt(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_kho_root(data)


def luo(data: bytes) -> None:
    """The blob is the first 512 bytes; the rest is the memory its pointers lead into."""
    try:
        blob = parse_luo_blob(data[:512])
    except ParseError:
        return
    if isinstance(blob, LuoBlob):
        walk_luo(blob, _memory(data[512:]))


def abi_records(data: bytes) -> None:
    for cls in (IommuHwSerV1, IommuDeviceSerV1, IommuDomainSer):
        try:
            rec = cls.unpack(data)
        except ParseError:
            continue
        assert cls.unpack(rec.pack()) == rec
    with contextlib.suppress(ParseError):
        unpack_array_page(data, IommuHwSerV1)
    with contextlib.suppress(ParseError):
        unpack_array_page(data, IommuDeviceSerV1)
    with contextlib.suppress(ParseError):
        unpack_array_page(data, IommuDomainSer)


def record_chains(data: bytes) -> None:
    """FLB at 0x1000, everything else wherever the input's pointers say."""
    mem = _memory(data)
    for variant in (V1, V2):
        walk_records(mem, PAGE, variant)


def kho_memory_map(data: bytes) -> None:
    mem = _memory(data)
    for compatible in ("kho-v1", "kho-v2"):
        walk_preserved_memory(mem, compatible, PAGE)


def table_walk(data: bytes) -> None:
    mem = _memory(data)
    for scalable in (False, True):
        walk_unit_tables(mem, PAGE, scalable)


def kcore_headers(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_kcore_layout(data)


def config(data: bytes) -> None:
    with contextlib.suppress(PolicyError):
        parse_policy([("fuzz.toml", _text(data))])


def json_records(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        ledger_from_json(data)
    with contextlib.suppress(ValueError, KeyError, TypeError):
        facts_from_json(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    f.__name__: f
    for f in (
        sysfs,
        regset,
        translation,
        dmar,
        pciconfig,
        kho_fdt,
        luo,
        abi_records,
        record_chains,
        kho_memory_map,
        table_walk,
        kcore_headers,
        config,
        json_records,
        bundle,
    )
}

# Seeds: tiny valid-looking inputs so the fuzzer starts inside each format.
SEEDS: dict[str, list[bytes]] = {
    "sysfs": [b"fed90000\n", b"1:0\n", b"0x00000000fee00000 0x00000000feefffff msi\n"],
    "regset": [b"IOMMU: dmar0 Register Base Address: fed90000\nName\t\t\tOffset\t\tContents\n"],
    "translation": [
        b"IOMMU dmar0: Root Table Address: 0x1a49000\n",
        b"DMA Remapping is not enabled on dmar0\n",
    ],
    "dmar": [b"DMAR" + struct.pack("<I", 48) + bytes(40)],
    "pciconfig": [bytes(256)],
    "kho_fdt": [b"\xd0\x0d\xfe\xed" + bytes(60)],
    "luo": [b"luo-v5\0\0" + bytes(24)],
    "kcore_headers": [b"\x7fELF\x02\x01\x01" + bytes(57)],
    "config": [b'[gate]\nfail_severity = "FAIL"\n'],
    "json_records": [b'{"ledger_format": 1}'],
    "bundle": BUNDLE_SEEDS,
}
