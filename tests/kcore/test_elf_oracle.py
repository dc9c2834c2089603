"""pyelftools as the oracle of parse/kcore.py's own ELF decoding, on every kcore the tests use.

vtdlud reads the ELF and program headers with :mod:`struct` (pyelftools is a test dependency
only).  Here each image is read both ways: pyelftools' ``PT_LOAD`` segments with a physical
address, kept and normalised by the rules of parse/kcore.py, must be exactly what
:func:`ram_segments` and :func:`parse_kcore_layout` give.  The images: the cores corewriter
builds in tests/kcore, the simulator's ``proc/kcore`` (compact and full-RAM, legacy and scalable,
each capture's model), the ``collect --memory`` cores of examples/, the fuzz seed, a
4,000-segment core, and random program header tables.
"""

from __future__ import annotations

import io
import random
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import CAPTURE_NAMES
from tests.fuzz.targets import SEEDS
from tests.kernelmodel.capture import host_from_capture
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.errors import ParseError
from vtdlud.host.corewriter import ExtraSegment, build_core
from vtdlud.parse.kcore import (
    EHDR_SIZE,
    KERNEL_TEXT_VADDR,
    NO_PADDR,
    KcoreLayout,
    Segment,
    normalise,
    parse_kcore_layout,
    ram_segments,
)

PAGE = 4096
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.tar.gz"))
PT_DYNAMIC = 2


def pyelftools_segments(data: bytes) -> list[Segment]:
    """What parse/kcore.py read through pyelftools before it decoded the headers itself."""
    elf = ELFFile(io.BytesIO(data))
    assert (elf["e_type"], elf["e_machine"], elf.elfclass, elf.little_endian) == (
        "ET_CORE",
        "EM_X86_64",
        64,
        True,
    )
    out: list[Segment] = []
    for i in range(elf.num_segments()):
        h = elf.get_segment(i).header
        size = min(int(h["p_filesz"]), int(h["p_memsz"]))
        if h["p_type"] == "PT_LOAD" and h["p_paddr"] != NO_PADDR and size:
            out.append(Segment(int(h["p_paddr"]), int(h["p_offset"]), size, int(h["p_vaddr"])))
    return out


def check_agree(data: bytes) -> KcoreLayout:
    """Both readers agree on the segments and the layout of a core vtdlud accepts."""
    layout = parse_kcore_layout(data)
    oracle = pyelftools_segments(data)
    assert ram_segments(data) == oracle
    assert layout == normalise(oracle)
    assert layout.segments == normalise(oracle).segments
    return layout


def _pages(*addrs: int) -> dict[int, bytes]:
    return {a: bytes([a >> 12 & 0xFF]) * PAGE for a in addrs}


@pytest.mark.parametrize(
    ("pages", "extra"),
    [
        ({}, []),
        (_pages(0x1000, 0x2000, 0x5000), []),
        (_pages(0x1000), [ExtraSegment(vaddr=0xFFFF_C900_0000_0000, data=bytes(PAGE))]),
        (
            _pages(0x1000, 0x2000, 0x3000),
            [
                ExtraSegment(
                    vaddr=KERNEL_TEXT_VADDR + 0x100_0000, data=b"T" * 4 * PAGE, paddr=0x2000
                )
            ],
        ),
        (_pages(0x8000), [ExtraSegment(vaddr=KERNEL_TEXT_VADDR, data=bytes(2 * PAGE), paddr=0)]),
    ],
)
def test_corewriter_cores(pages: dict[int, bytes], extra: list[ExtraSegment]) -> None:
    check_agree(build_core(pages, extra=extra))


def test_thousands_of_segments() -> None:
    """Scattered pages, one segment each (the large benchmark host's kcore has 4,245), plus a
    kernel-text segment over some of them: the overlap pass runs on a big table too."""
    rng = random.Random(5)
    addrs = sorted(rng.sample(range(1, 1 << 20), 4000))
    pages = {a * 2 * PAGE: bytes(PAGE) for a in addrs}
    assert len(check_agree(build_core(pages)).segments) == 4000
    text = ExtraSegment(vaddr=KERNEL_TEXT_VADDR, data=bytes(64 * PAGE), paddr=addrs[10] * 2 * PAGE)
    layout = check_agree(build_core(pages, extra=[text]))
    assert len(layout.segments) > 4000


_COMPACT, _FULL = TreeOptions(), TreeOptions(kcore_full_ram=True)


@pytest.mark.parametrize(
    ("host", "options"),
    [
        pytest.param(q35_host, _COMPACT, id="q35 legacy"),
        pytest.param(q35_host, _FULL, id="q35 legacy, full RAM"),
        pytest.param(lambda: q35_host(scalable=True, flb_variant="v2"), _COMPACT, id="q35 sm v2"),
        pytest.param(lambda: two_unit_host(scalable=True), _FULL, id="two units sm, full RAM"),
        pytest.param(two_unit_host, _COMPACT, id="two units legacy"),
    ],
)
def test_simulator_cores(tmp_path: Path, host: Callable[[], SimHost], options: TreeOptions) -> None:
    tree = write_tree(host(), tmp_path, options)
    assert check_agree((tree / "proc/kcore").read_bytes()).segments


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_capture_model_cores(
    capture_root: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    tree = write_tree(host_from_capture(capture_root(name)), tmp_path)
    assert check_agree((tree / "proc/kcore").read_bytes()).segments


@pytest.mark.parametrize("bundle", EXAMPLES, ids=lambda p: p.name)
def test_example_bundle_cores(bundle: Path) -> None:
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("proc/kcore"))
        f = tar.extractfile(member)
        assert f is not None
        assert check_agree(f.read()).segments


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("seed", SEEDS["kcore_headers"])
def test_fuzz_seed(seed: bytes) -> None:
    """The seed is refused by both: too short for a program header table pyelftools can read."""
    with pytest.raises(ParseError):
        parse_kcore_layout(seed)
    with pytest.raises(Exception):  # noqa: B017 - pyelftools raises its own types
        pyelftools_segments(seed)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6),
    st.binary(min_size=56 * 6, max_size=56 * 6),
    st.lists(st.sampled_from([0, 1, 1, 1, 2, 3, 4, 6, 7]), min_size=6, max_size=6),
    st.lists(
        st.sampled_from([0, 0x1000, 0xFFFF_FFFF_FFFF_FFFF, 1 << 63, (1 << 64) - 0x800]),
        min_size=6,
        max_size=6,
    ),
)
def test_random_program_headers(n: int, table: bytes, types: list[int], paddrs: list[int]) -> None:
    """Random tables (mostly PT_LOAD, some paddr -1 or at the limits): whenever pyelftools reads
    them, vtdlud gets the same segments or refuses an out-of-range one; vtdlud reads more only
    when pyelftools chokes on a PT_DYNAMIC segment (it looks for the dynamic section, which a
    kcore never has, and vtdlud ignores every type but PT_LOAD)."""
    head = bytearray(build_core({})[:EHDR_SIZE])
    struct.pack_into("<Q", head, 32, EHDR_SIZE)
    struct.pack_into("<HH", head, 54, 56, n)
    phdrs = bytearray(table[: 56 * n])
    for i in range(n):
        struct.pack_into("<I", phdrs, 56 * i, types[i])
        if paddrs[i]:
            struct.pack_into("<Q", phdrs, 56 * i + 24, paddrs[i])
    data = bytes(head + phdrs)
    try:
        oracle: list[Segment] | None = pyelftools_segments(data)
    except Exception:  # pyelftools raises many types on hostile bytes
        oracle = None
    try:
        mine: list[Segment] | None = ram_segments(data)
        parse_kcore_layout(data)
    except ParseError as exc:
        assert "program header" in str(exc)  # a range past 2**64 or any file: refused
        assert oracle is not None
        assert any(s.end > 1 << 64 or s.offset + s.memsz > 1 << 63 for s in oracle)
        return
    if oracle is None:
        assert PT_DYNAMIC in types[:n]
        return
    assert mine == oracle
    assert parse_kcore_layout(data) == normalise(oracle)
