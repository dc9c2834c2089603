"""`vtdlud decode`: registers, entries as debugfs prints them, and DMAR tables (text and JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli
from tests.conftest import capture_tarball


def test_cap_text_is_pinned() -> None:
    rc, out, err = run_cli("decode", "cap", "0xd2008c22260286")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "CAP_REG"
    assert lines[1] == "  CAP_REG = 0x00d2008c22260286"
    assert lines[2] == (
        "    ndoms              [  2:0] = 65536 (0x10000)        number of domain IDs: 1 << (4 + 2*ND)"
    )
    assert "    mgaw               [21:16] = 39 (0x27)" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ecap", "480080f00f4a"), {"smts": True, "slts": True, "pasid": False, "qis": True}),
        (("gsts", "0xc7000000"), {"tes": True, "rtps": True, "fls": False, "ires": True}),
        (("rtaddr", "0x1b65400"), {"rta": 0x1B65000, "ttm": 1, "smt": True}),
        (
            ("root-entry", "0x0000000001b76001:0x0000000001b68001", "--mode", "scalable"),
            {"lctp_present": True, "lctp": 0x1B68000, "uctp_present": True, "uctp": 0x1B76000},
        ),
        (
            # Legacy mode (the default): one context table per bus, hi reserved.
            ("root-entry", "0x0:0x0000000001b68001"),
            {"present": True, "ctp": 0x1B68000, "reserved": 0},
        ),
        (
            ("context-entry", "0x0000000000000901:0x0000000002933001"),
            {"present": True, "fpd": False, "tt": 0, "slptptr": 0x2933000, "aw": 1, "did": 9},
        ),
        (
            ("context-entry", "0x0:0x1a4b401", "--mode", "scalable"),
            # 0x401: present, PDTS = 0x401 >> 9 & 7 = 2
            {"present": True, "dte": False, "paside": False, "pre": False, "pdts": 2},
        ),
        (
            ("pasid-entry", "0x0000000000000000:0x0000000000000002:0x0000000001a6a089"),
            # 0x089: present, AW = 0x89 >> 2 & 7 = 2, PGTT = 0x89 >> 6 & 7 = 2; DID in val[1]
            {"present": True, "aw": 2, "pgtt": 2, "did": 2, "slptptr": 0x1A6A000},
        ),
    ],
)
def test_json(args: tuple[str, ...], expected: dict[str, object]) -> None:
    rc, out, err = run_cli("decode", *args, "--json")
    assert rc == 0, err
    fields = json.loads(out)["fields"]
    assert {k: fields[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("cap", "zz"),
            "decode cap: 'zz' is not a 64-bit hexadecimal word (e.g. 0xd2008c22260286)",
        ),
        (
            ("root-entry", "0x1a53001"),
            "decode root-entry: '0x1a53001' has 1 word(s), expected 2 "
            "(0xHI:0xLO as dmar_translation_struct prints it)",
        ),
        (
            ("cap", "0x1ffffffffffffffff"),
            "decode cap: '0x1ffffffffffffffff' is not a 64-bit hexadecimal word (e.g. 0xd2008c22260286)",
        ),
    ],
)
def test_bad_values(args: tuple[str, ...], message: str) -> None:
    assert run_cli("decode", *args) == (2, "", f"vtdlud: error: {message}\n")


def test_dmar_file(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    table = capture_root("a_legacy") / "sys/firmware/acpi/tables/DMAR"
    rc, out, _ = run_cli("decode", "dmar", str(table), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert json.dumps(doc).count("0xfed90000") == 1  # the one DRHD's register base
    rc, out, _ = run_cli("decode", "dmar", str(table))
    assert rc == 0 and "DRHD" in out
    short = tmp_path / "short"
    short.write_bytes(table.read_bytes()[:0x38])
    rc, out, err = run_cli("decode", "dmar", str(short))
    assert rc == 2 and out == "" and err.startswith(f"vtdlud: error: decode dmar: {short}: offset ")
    rc, _, err = run_cli("decode", "dmar", str(tmp_path / "nope"))
    assert (
        rc == 2
        and err == f"vtdlud: error: decode dmar: {tmp_path / 'nope'}: no such file or directory\n"
    )


def test_root_entry_follows_mode() -> None:
    """A legacy root entry has one table pointer and a reserved hi word; a scalable one has a
    lower and an upper table.  The same value decodes differently by --mode."""
    value = "0x0000000001b76001:0x0000000001b68001"
    _, legacy, _ = run_cli("decode", "root-entry", value)
    _, scalable, _ = run_cli("decode", "root-entry", value, "--mode", "scalable")
    assert legacy.startswith("root entry [legacy mode]\n")
    assert "    ctp                [63:12] = 0x1b68000" in legacy
    assert "reserved           [ 63:0] = 28794881 (0x1b76001)" in legacy  # reserved bits set
    assert scalable.startswith("root entry [scalable mode]\n")
    assert "    uctp               [63:12] = 0x1b76000" in scalable
    assert "uctp" not in legacy and "reserved" not in scalable


def test_dmar_of_a_root(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    """Without FILE, `decode dmar` reads the host's table under --root (a directory or a bundle)."""
    table = capture_root("a_legacy") / "sys/firmware/acpi/tables/DMAR"
    _, from_file, _ = run_cli("decode", "dmar", str(table))
    for root in (capture_root("a_legacy"), capture_tarball("a_legacy")):
        rc, out, err = run_cli("decode", "dmar", "--root", str(root))
        assert rc == 0 and out == from_file, err
    (tmp_path / "sys").mkdir()
    rc, out, err = run_cli("decode", "dmar", "--root", str(tmp_path))
    assert rc == 2 and out == ""
    assert err.startswith(
        f"vtdlud: error: decode dmar: {tmp_path}: /sys/firmware/acpi/tables/DMAR: no such file"
    )
    rc, _, err = run_cli("decode", "dmar", str(table), "--root", str(tmp_path))
    assert (rc, err) == (2, "vtdlud: error: decode dmar: give a FILE or --root, not both\n")


def test_root_is_refused_where_it_means_nothing() -> None:
    rc, out, err = run_cli("decode", "cap", "0x1", "--root", "/")
    assert rc == 2 and out == ""
    assert err == (
        "vtdlud: error: decode cap: --root applies to `decode dmar` only; a value is decoded "
        "as given\n"
    )
    rc, _, err = run_cli("abi", "--root", "/")
    assert rc == 2 and err.endswith("vtdlud: error: unrecognized arguments: --root /\n")
    rc, _, err = run_cli("decode", "cap")
    assert (rc, err) == (2, "vtdlud: error: decode cap: the VALUE to decode is missing\n")
