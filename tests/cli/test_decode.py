"""`vtdlud decode`: registers, entries as debugfs prints them, and DMAR tables (text and JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli


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
            ("root-entry", "0x0000000001b76001:0x0000000001b68001"),
            {"lctp_present": True, "lctp": 0x1B68000, "uctp_present": True, "uctp": 0x1B76000},
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
        and err == f"vtdlud: error: decode dmar: {tmp_path / 'nope'}: No such file or directory\n"
    )
