"""sysfs/procfs attribute parsers: real capture values, bad values, and random input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtdlud.errors import ParseError
from vtdlud.model.pci import Bdf
from vtdlud.model.snapshot import ReservedRegion
from vtdlud.parse.sysfs import (
    cmdline_value,
    parse_bdf,
    parse_bool01,
    parse_cmdline,
    parse_dec,
    parse_group_type,
    parse_hex,
    parse_lockdown,
    parse_reserved_regions,
    parse_version,
    parse_word,
)

UNIT = "sys/class/iommu/dmar0/intel-iommu"


def test_capture_attributes(capture_root: Callable[[str], Path]) -> None:
    root = capture_root("a_legacy")
    assert parse_hex((root / UNIT / "address").read_text()) == 0xFED90000
    assert parse_hex((root / UNIT / "cap").read_text()) == 0xD2008C22260286
    assert parse_version((root / UNIT / "version").read_text()) == "1:0"
    assert parse_dec((root / UNIT / "domains_supported").read_text()) == 65536
    assert parse_dec((root / UNIT / "domains_used").read_text()) == 15
    assert parse_group_type((root / "sys/kernel/iommu_groups/7/type").read_text()) == "DMA"
    assert parse_reserved_regions(
        (root / "sys/kernel/iommu_groups/3/reserved_regions").read_text()
    ) == (ReservedRegion(0xFEE00000, 0xFEEFFFFF, "msi"),)
    params = parse_cmdline((root / "proc/cmdline").read_text())
    assert cmdline_value(params, "intel_iommu") == "on"
    assert cmdline_value(params, "iommu") == "nopt"
    assert cmdline_value(params, "liveupdate") is None


def test_cmdline_last_value_wins_and_bare_keys() -> None:
    params = parse_cmdline("kho=off liveupdate kho=on\n")
    assert cmdline_value(params, "kho") == "on" and cmdline_value(params, "liveupdate") == ""


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        (parse_hex, "", "line 1: empty file, expected a hexadecimal value"),
        (parse_hex, "fed9000g\n", "line 1: 'fed9000g' is not a hexadecimal value"),
        (parse_hex, "1\n2\n", "line 2: more than one line, expected a hexadecimal value"),
        (
            parse_hex,
            "12345678901234567\n",
            "line 1: '12345678901234567' is not a hexadecimal value",
        ),
        (parse_dec, "\x00\x01", "line 1: binary data, expected a decimal integer"),
        (parse_version, "1.0\n", "line 1: '1.0' is not a version 'major:minor'"),
        (
            parse_group_type,
            "DMA-XX\n",
            "line 1: 'DMA-XX' is not one of blocked, identity, unmanaged, DMA, DMA-FQ, DMA-SQ, unknown",
        ),
        (
            parse_reserved_regions,
            "0xfee00000 0xfeefffff msi\n",
            "line 1: '0xfee00000 0xfeefffff msi' is not '0x<start> 0x<end> direct|direct-relaxable|reserved|msi'",
        ),
        (parse_lockdown, "none integrity\n", "line 1: no [selected] lockdown mode"),
    ],
)
def test_bad_values(parser: Callable[[str], object], text: str, message: str) -> None:
    with pytest.raises(ParseError) as exc:
        parser(text)
    assert str(exc.value) == message


def test_small_parsers() -> None:
    assert parse_bool01("1\n", "kexec_loaded") is True
    with pytest.raises(ParseError, match="2 is not 0 or 1"):
        parse_bool01("2\n", "kexec_loaded")
    assert parse_lockdown("none [integrity] confidentiality\n") == "integrity"
    assert parse_word("6.12.117-iommudbg\n", "a kernel release") == "6.12.117-iommudbg"
    assert parse_bdf("0000:05:02.0") == Bdf(0, 5, 2, 0)
    assert parse_bdf("0000:05:02.0").devfn == 0x10  # (2 << 3) | 0
    assert str(parse_bdf("0001:ff:1f.7")) == "0001:ff:1f.7"
    with pytest.raises(ParseError, match="is not a PCI device name"):
        parse_bdf("0000:00:20.0")  # device numbers stop at 0x1f
    with pytest.raises(ParseError):
        parse_bdf("00:02.0")


PARSERS: list[Callable[[str], object]] = [
    parse_hex,
    parse_dec,
    parse_version,
    parse_cmdline,
    parse_reserved_regions,
    parse_group_type,
    parse_lockdown,
    lambda s: parse_bool01(s, "x"),
    lambda s: parse_word(s, "x"),
    parse_bdf,
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PARSERS),
    st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
)
def test_random_text_raises_only_parse_error(parser: Callable[[str], object], text: str) -> None:
    with contextlib.suppress(ParseError):
        parser(text)
