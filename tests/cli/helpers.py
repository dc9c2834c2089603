"""Helpers for the command-line tests: run vtdlud in-process or as the installed command."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from vtdlud.audit.evaluate import evaluate
from vtdlud.cli import main
from vtdlud.host import snapshot as host_snapshot
from vtdlud.host.procs import PROCESSES_JSON, facts_from_json
from vtdlud.host.root import FaultPlan, HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.snapshot import ProcessFacts
from vtdlud.output.envelope import envelope
from vtdlud.service import state

SCHEMA_PATH = Path(__file__).parents[2] / "vtdlud" / "data" / "status.schema.json"
VTDLUD = Path(sys.executable).parent / "vtdlud"


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def validate(doc: dict[str, Any]) -> dict[str, Any]:
    jsonschema.validate(doc, schema())
    return doc


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``vtdlud ARGS`` in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def status_json(*args: str) -> dict[str, Any]:
    rc, out, err = run_cli("status", "--json", *args)
    assert rc == 0, err
    return validate(json.loads(out))


def status_with_faults(root: Path, faults: FaultPlan) -> dict[str, Any]:
    """The status envelope of ``root`` with errors injected through the host layer."""
    report = evaluate(take_snapshot(HostRoot(root, faults=faults)))
    return validate(envelope(report, argv=["test"], exit_status=0, root_label=str(root)))


def run_installed(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script in a subprocess."""
    cmd = [str(VTDLUD), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def codes(doc: dict[str, Any]) -> list[str]:
    return [f["code"] for f in doc["findings"]]


def finding_messages(doc: dict[str, Any], code: str) -> list[str]:
    return [f["message"] for f in doc["findings"] if f["code"] == code]


def daemon_of_this_process(runtime_dir: Path) -> None:
    """A daemon.json in ``runtime_dir`` saying a daemon runs for the root / as this very process
    (its pid and start time), so a status.json beside it is served if fresh."""
    pid = os.getpid()
    daemon = {
        "format": state.DAEMON_FORMAT,
        "pid": pid,
        "start_ticks": state.proc_start_ticks(pid),
        "root": "/",
        "backstop_seconds": 600,
    }
    state.write_daemon_json(runtime_dir, daemon)


def _bundle_facts(root: HostRoot) -> tuple[ProcessFacts | None, str | None]:
    try:
        return facts_from_json(root.read_bytes(PROCESSES_JSON)), None
    except FileNotFoundError:
        return None, None


def stand_for_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a tree stand for the live host (its ledger written and consumed) and its
    processes.json for the process scan."""
    monkeypatch.setattr(HostRoot, "is_live", property(lambda self: True))
    monkeypatch.setattr(host_snapshot, "process_facts", _bundle_facts)
