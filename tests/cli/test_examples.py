"""The bundled example hosts (examples/, made by tools/make_examples.py from the kernel model):
the README's first command shows their status; a newcomer sees a PASS and a FAIL with its hint,
and `check` gates on them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import run_cli, validate

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_clean_example_passes_the_gate() -> None:
    rc, out, _ = run_cli("check", "--json", "--root", str(EXAMPLES / "1-preserved-clean.tar.gz"))
    doc = validate(json.loads(out))
    assert rc == 0 and doc["verdict"] == "PASS" and doc["findings"] == []
    assert all(t["state"] == "available" for t in doc["host"]["tiers"].values())
    [unit] = doc["units"]
    assert (
        unit["preserved"]["located_by"] == "signature" and unit["context_tables_source"] == "kcore"
    )
    assert [p["bdf"] for p in doc["preserve"]] == ["0000:00:05.0"]


def test_divergent_example_fails_with_its_hint() -> None:
    rc, out, _ = run_cli("check", "--root", str(EXAMPLES / "2-preserved-bit-missing.tar.gz"))
    assert rc == 1
    assert "  VTD011 FAIL 0000:00:05.0: " in out
    assert "hint: The device loses its translation at kexec" in out
    assert out.endswith("vtdlud check: FAIL: 1 blocking finding(s) (VTD011); exit 1\n")


def test_readme_first_command_shows_both_verdicts() -> None:
    """`vtdlud status` of each example: exit 0, the verdict, the divergence and its hint."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert 'do .venv/bin/vtdlud status --root "$host"; done' in readme.split("\n")[3]
    rc, out, _ = run_cli("status", "--root", str(EXAMPLES / "1-preserved-clean.tar.gz"))
    assert rc == 0 and out.endswith("Verdict: PASS\n") and "Findings" not in out
    rc, out, _ = run_cli("status", "--root", str(EXAMPLES / "2-preserved-bit-missing.tar.gz"))
    assert rc == 0 and out.endswith("Verdict: FAIL\n")
    assert "  VTD011 FAIL 0000:00:05.0: " in out
    assert "hint: The device loses its translation at kexec" in out
