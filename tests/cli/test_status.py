"""`vtdlud status` on the real captures: the JSON envelope, checked against hand-derived values."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.helpers import codes, run_cli, run_installed, status_json
from tests.conftest import CAPTURE_NAMES, capture_tarball
from vtdlud.output.text import use_colour

A_LEGACY_DEVICES = [
    "0000:00:00.0",
    "0000:00:02.0",
    "0000:00:03.0",
    "0000:00:04.0",
    "0000:00:04.1",
    "0000:00:04.2",
    "0000:00:04.3",
    "0000:00:05.0",
    "0000:00:1f.0",
    "0000:00:1f.2",
    "0000:00:1f.3",
    "0000:01:00.0",
    "0000:02:00.0",
    "0000:03:00.0",
    "0000:04:00.0",
    "0000:05:01.0",
    "0000:05:02.0",
]


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_every_capture_validates_and_reads_cleanly(name: str) -> None:
    doc = status_json("--root", str(capture_tarball(name)))
    # Nothing unreadable or unparsed in a real capture: only the two tiers a capture lacks, and
    # the process facts (a capture has no vtdlud/processes.json) that vmm_held needs.
    assert codes(doc) == ["VTD050", "VTD050", "VTD050"]
    assert doc["findings"][2]["message"] == (
        "vmm_held: which processes hold VFIO devices is not known "
        "(a bundle without vtdlud/processes.json)"
    )
    assert doc["host"]["tiers"]["sysfs"]["state"] == "available"
    assert doc["host"]["tiers"]["iommu_debugfs"]["state"] == "available"
    assert doc["host"]["tiers"]["kho_debugfs"]["state"] == "unavailable"
    assert doc["host"]["tiers"]["kcore"]["state"] == "unavailable"
    assert doc["verdict"] == "UNKNOWN"  # kho_debugfs and kcore are required by default
    assert doc["source"] == "live"
    assert doc["vtdlud"]["exit_status"] == 0
    [unit] = doc["units"]
    assert unit["name"] == "dmar0" and unit["address"] == "0xfed90000"  # sysfs "fed90000"
    assert unit["version"] == "1:0"
    assert unit["devices"] == A_LEGACY_DEVICES  # same topology in every capture
    assert unit["preserved"] is None


def test_a_legacy_values(capture_root: Callable[[str], Path]) -> None:
    doc = status_json("--root", str(capture_root("a_legacy")))
    [u] = doc["units"]
    assert u["cap"]["raw"] == "0xd2008c22260286"
    cap = u["cap"]["fields"]
    # ND = 6 -> 1 << 16; MGAW field 0x26 + 1; FRO 0x22 * 16; NFR 0 + 1
    assert (cap["ndoms"], cap["mgaw"], cap["fault_reg_offset"], cap["num_fault_regs"]) == (
        65536,
        39,
        0x220,
        1,
    )
    assert cap["caching_mode"] is True and cap["sagaw"] == 2 and cap["pgsel_inv"] is True
    assert u["ecap"]["raw"] == "0xf00f4a"
    ecap = u["ecap"]["fields"]
    assert ecap["qis"] is True and ecap["ir_support"] is True and ecap["pass_through"] is True
    assert ecap["iotlb_offset"] == 0xF0 and ecap["smts"] is False  # (0xf00f4a >> 8 & 0x3ff) * 16
    assert u["mode"] == "legacy"  # RTADDR 0x1a49000: bit 10 clear
    assert u["translation_enabled"] is True  # GSTS 0xc7000000: bit 31
    assert u["root_table"] == "0x1a49000"
    # rows on buses 00..05, legacy: bit = bus << 1
    assert u["context_tables"] == [0, 2, 4, 6, 8, 10]
    assert u["context_tables_source"] == "debugfs"


def test_b_scalable_values(capture_root: Callable[[str], Path]) -> None:
    doc = status_json("--root", str(capture_root("b_scalable")))
    [u] = doc["units"]
    assert u["mode"] == "scalable"  # RTADDR 0x1a48400: bit 10 (DMA_RTADDR_SMT) set
    assert u["root_table"] == "0x1a48000"  # 0x1a48400 & ~0xfff
    assert u["ecap"]["fields"]["smts"] is True  # 0x480080f00f4a bit 43
    # bus 00 root 0x1a58001:0x1a4c001 -> lower (bit 0) and upper (bit 1) present;
    # buses 01..05 show only the lower half: bits 2, 4, 6, 8, 10
    assert u["context_tables"] == [0, 1, 2, 4, 6, 8, 10]


def test_text_output(capture_root: Callable[[str], Path]) -> None:
    rc, out, err = run_cli("status", "--root", str(capture_root("b_scalable")))
    assert rc == 0 and err == ""
    assert "  tier sysfs         : PASS (available: 1 DMAR unit(s))" in out
    assert "  dmar0  0xfed90000  1:0  scalable  yes  0x1a48000   17       7 (debugfs)" in out
    assert out.splitlines()[1] == (
        "Summary: verdict UNKNOWN; 1 DMAR unit, 17 devices, 0 to preserve, 0 unit(s) with a "
        "preserved record, 3 findings (3 UNKNOWN)"
    )
    # The per-device table only on request.
    assert "Devices: 17 behind the DMAR units (`--devices` lists them)" in out
    assert "vfio-pci" not in out
    assert out.endswith("Verdict: UNKNOWN\n")
    assert "\x1b[" not in out  # no colour when not a terminal
    rc, full, _ = run_cli("status", "--devices", "--root", str(capture_root("b_scalable")))
    assert rc == 0 and "  0000:00:05.0  dmar0  vfio-pci    7      vfio0" in full
    assert len(full.splitlines()) == len(out.splitlines()) + 17 + 1  # header + 17 rows, no note


def test_brief_is_the_summary_and_the_findings(capture_root: Callable[[str], Path]) -> None:
    rc, out, _ = run_cli("status", "--brief", "--root", str(capture_root("b_scalable")))
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2 + 3 + 1, out
    assert lines[1].startswith("Summary: verdict UNKNOWN; ")
    assert all(line.startswith("  VTD050 UNKNOWN host: ") for line in lines[2:5])
    assert lines[5] == "Verdict: UNKNOWN"


def test_check_says_check(capture_root: Callable[[str], Path]) -> None:
    rc, out, _ = run_cli("check", "--root", str(capture_root("b_scalable")))
    assert rc == 3 and out.startswith("vtdlud check: root ")


@pytest.mark.parametrize(
    ("env", "colour"),
    [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)],
)
def test_colour_only_on_a_capable_terminal(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], colour: bool
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert use_colour(Tty()) is colour
    assert use_colour(io.StringIO()) is False


def test_installed_command_and_errors(tmp_path: Path) -> None:
    proc = run_installed("status", "--root", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert (
        proc.stderr == f"vtdlud: error: --root {tmp_path / 'missing'}: no such file or directory\n"
    )
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    proc = run_installed("status", "--root", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"vtdlud: error: bundle {bad}: not a readable .tar.gz bundle")
    assert "Traceback" not in proc.stderr
    proc = run_installed("status", "--bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_empty_root_is_a_report_not_a_crash(tmp_path: Path) -> None:
    doc = status_json("--root", str(tmp_path))
    assert doc["units"] == []
    assert doc["host"]["tiers"]["sysfs"] == {
        "state": "unavailable",
        "reason": "sysfs not mounted at /sys",
    }
    assert doc["verdict"] == "UNKNOWN"


def test_generated_at_is_utc_now_with_microseconds(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    doc = status_json("--root", str(tmp_path), "--config", "/dev/null")
    after = datetime.now(UTC)
    stamp = doc["generated_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z") <= after
