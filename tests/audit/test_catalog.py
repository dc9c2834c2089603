"""The findings catalog and the journald catalog generated from it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.needs import needs
from vtdlud.audit.catalog import CATALOG
from vtdlud.model.severity import Severity
from vtdlud.output.catalog import DAEMON_EVENTS, render_catalog

SHIPPED = Path(__file__).parents[2] / "systemd" / "vtdlud.catalog"

# The codes of DESIGN.md §3 with their severities: codes are never renumbered.
DESIGN_CODES = {
    "VTD001": "FAIL", "VTD002": "FAIL", "VTD003": "FAIL", "VTD010": "FAIL", "VTD011": "FAIL",
    "VTD012": "NOTE", "VTD013": "FAIL", "VTD014": "FAIL", "VTD015": "FAIL", "VTD020": "FAIL",
    "VTD021": "FAIL", "VTD022": "FAIL", "VTD023": "FAIL", "VTD024": "FAIL", "VTD025": "FAIL",
    "VTD026": "FAIL", "VTD027": "FAIL", "VTD030": "FAIL", "VTD031": "WARN", "VTD040": "UNKNOWN",
    "VTD041": "FAIL", "VTD050": "UNKNOWN", "VTD051": "UNKNOWN", "VTD052": "UNKNOWN",
    "VTD060": "FAIL", "VTD061": "FAIL", "VTD062": "FAIL", "VTD063": "FAIL", "VTD064": "WARN",
    "VTD070": "WARN",
}  # fmt: skip


def test_design_codes_and_severities() -> None:
    for code, sev in DESIGN_CODES.items():
        assert CATALOG[code].severity is Severity(sev), code


def test_message_ids_unique_and_128_bit() -> None:
    ids = [e.message_id for e in CATALOG.values()] + list(DAEMON_EVENTS)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_shipped_catalog_is_generated() -> None:
    assert SHIPPED.read_text() == render_catalog(), (
        "run: python -m vtdlud.output.catalog > systemd/vtdlud.catalog"
    )


@needs(shutil.which("journalctl") is not None, "needs journalctl (systemd)")
def test_journalctl_accepts_the_catalog(tmp_path: Path) -> None:
    """The real journalctl compiles the catalog and lists every MESSAGE_ID."""
    cat = tmp_path / "usr/lib/systemd/catalog"
    cat.mkdir(parents=True)
    shutil.copy(SHIPPED, cat / "vtdlud.catalog")
    run = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--update-catalog"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert ids == {e.message_id for e in CATALOG.values()} | set(DAEMON_EVENTS)
    dumped = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--dump-catalog", CATALOG["VTD025"].message_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Subject: vtdlud VTD025 (FAIL): device to preserve shares a DMA alias" in dumped


def test_readme_finding_table_is_the_catalog() -> None:
    """README's finding table lists every code of the catalog, with its severity."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| (VTD\d{3}) \| (\w+) \| (.+) \|$", readme, re.MULTILINE)
    assert [code for code, _, _ in rows] == sorted(CATALOG)
    for code, sev, _ in rows:
        assert CATALOG[code].severity is Severity(sev), code
