"""Every error exit: one line (and a hint) on stderr, and under --json the envelope on stdout
with ``vtdlud.exit_status`` and ``vtdlud.messages``, as smartctl's --json does."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, run_installed, validate
from tests.conftest import capture_tarball
from vtdlud.audit import evaluate as evaluate_module


def _envelope(out: str, code: int) -> dict[str, Any]:
    doc = validate(json.loads(out))
    assert doc["vtdlud"]["exit_status"] == code
    assert (doc["units"], doc["findings"], doc["verdict"]) == ([], [], "UNKNOWN")
    return doc


@pytest.mark.parametrize("command", ["status", "check", "collect"])
def test_usage_error_prints_the_envelope(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    rc, out, err = run_cli(command, "--json", "--root", str(missing))
    assert rc == 2
    assert err == f"vtdlud: error: --root {missing}: no such file or directory\n"
    doc = _envelope(out, 2)
    assert doc["vtdlud"]["argv"] == ["vtdlud", command, "--json", "--root", str(missing)]
    assert doc["vtdlud"]["messages"] == [
        {"severity": "error", "text": f"--root {missing}: no such file or directory"}
    ]
    assert doc["host"]["root"] == str(missing)
    # Without --json nothing goes to stdout.
    assert run_cli(command, "--root", str(missing))[1] == ""


def test_argument_error_prints_the_envelope() -> None:
    rc, out, err = run_cli("check", "--json", "--frobnicate")
    assert rc == 2 and err.splitlines()[-1] == "vtdlud: error: unrecognized arguments: --frobnicate"
    doc = _envelope(out, 2)
    assert doc["vtdlud"]["messages"][0]["text"] == "unrecognized arguments: --frobnicate"
    rc, out, err = run_cli("status", "--json", "--runtime-dir")
    assert rc == 2 and err.endswith(
        "vtdlud: error: status: argument --runtime-dir: expected one argument\n"
    )
    assert _envelope(out, 2)["vtdlud"]["messages"][0]["text"].startswith("status: argument")


def test_a_file_that_is_not_a_bundle_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a bundle\n")
    rc, out, err = run_cli("status", "--json", "--root", str(bad))
    assert rc == 2
    text = f"bundle {bad}: not a readable .tar.gz bundle (not a gzip-compressed tar archive)"
    assert (
        err == f"vtdlud: error: {text}\nvtdlud: hint: make bundles with `vtdlud collect -o FILE`\n"
    )
    [msg] = _envelope(out, 2)["vtdlud"]["messages"]
    assert msg == {
        "severity": "error",
        "text": text,
        "hint": "make bundles with `vtdlud collect -o FILE`",
    }


def test_internal_error_prints_the_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(evaluate_module, "evaluate", boom)
    rc, out, err = run_cli("status", "--json", "--live", "--root", str(capture_tarball("a_legacy")))
    assert rc == 4
    assert err.splitlines() == [
        "vtdlud: error: internal error: RuntimeError: a bug; over two lines",
        "vtdlud: hint: run `vtdlud collect` and attach the bundle to a bug report",
    ]
    [msg] = _envelope(out, 4)["vtdlud"]["messages"]
    assert msg["text"] == "internal error: RuntimeError: a bug; over two lines"


def test_a_missing_module_is_a_packaging_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`vtdlud run` without structlog: the message names the module and the package to install,
    not "internal error ... run vtdlud collect"."""
    monkeypatch.setitem(sys.modules, "structlog", None)  # `import structlog` now fails
    monkeypatch.delitem(sys.modules, "vtdlud.service.runtime", raising=False)
    monkeypatch.delitem(sys.modules, "vtdlud.service.daemon", raising=False)
    rc, out, err = run_cli("run", "--root", str(tmp_path), "--runtime-dir", str(tmp_path / "r"))
    assert rc == 4 and out == ""
    assert err.splitlines() == [
        "vtdlud: error: vtdlud is installed incompletely: the Python module 'structlog' is "
        "missing (a packaging error, not a bug in vtdlud)",
        "vtdlud: hint: install python3-structlog (Debian, Fedora) or `pip install structlog`",
    ]


def test_installed_command_prints_the_envelope_on_error(tmp_path: Path) -> None:
    """The console script in its own process: stdout is the envelope, stderr one line."""
    missing = tmp_path / "missing"
    proc = run_installed("collect", "--json", "--root", str(missing), "-o", str(tmp_path / "b"))
    assert proc.returncode == 2
    assert proc.stderr == f"vtdlud: error: --root {missing}: no such file or directory\n"
    _envelope(proc.stdout, 2)
