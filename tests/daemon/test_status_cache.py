"""`vtdlud status` serves the daemon's status.json while the daemon runs and the file is fresh;
`--live` (or `--config`) evaluates directly, and so does a status with no running daemon."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, validate
from tests.conftest import capture_tarball
from tests.daemon.conftest import VFIO_DEVICE, DaemonProc, HostBed
from vtdlud.output.envelope import dumps
from vtdlud.service import state


@cache
def _real_envelope_text() -> str:
    rc, out, err = run_cli("status", "--json", "--live", "--root", str(capture_tarball("a_legacy")))
    assert rc == 0, err
    return out


def _real_envelope() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_real_envelope_text())
    return doc


def status(runtime: Path, *args: str) -> dict[str, object]:
    rc, out, err = run_cli("status", "--json", "--runtime-dir", str(runtime), *args)
    assert rc == 0, err
    return validate(json.loads(out))


def test_status_serves_the_running_daemons_report(daemon: DaemonProc, testbed: HostBed) -> None:
    n = daemon.evaluations()
    testbed.set_driver(VFIO_DEVICE, "e1000e")
    testbed.uevent(testbed.devpath(VFIO_DEVICE), "unbind")
    daemon.wait_evaluation(n)
    cached = daemon.status()

    doc = status(daemon.runtime)
    assert doc["source"] == "daemon"
    assert doc["generated_at"] == cached["generated_at"]
    assert doc["findings"] == cached["findings"]
    assert doc["vtdlud"] == {
        "version": cached["vtdlud"]["version"],
        "argv": ["vtdlud", "status", "--json", "--runtime-dir", str(daemon.runtime)],
        "exit_status": 0,
        "messages": [],
    }

    live = status(daemon.runtime, "--live")
    assert live["source"] == "live"
    assert live["generated_at"] != cached["generated_at"]

    rc, text, _ = run_cli("status", "--runtime-dir", str(daemon.runtime))
    assert rc == 0
    assert "from the vtdlud daemon's evaluation at" in text
    assert "VTD026 FAIL 0000:00:05.0" in text and "Verdict: FAIL" in text

    assert daemon.stop()[0] == 0
    assert status(daemon.runtime)["source"] == "live"  # no daemon: evaluated directly


def _fake_daemon_files(runtime: Path, *, pid: int, ticks: int | None, age: float = 0.0) -> None:
    """A status.json as the daemon writes it (a real envelope, so it follows the schema of the
    day), generated at 2000-01-01T00:00:00Z for the root /, and its daemon.json."""
    doc = _real_envelope()
    doc.update(source="daemon", generated_at="2000-01-01T00:00:00.000000Z")
    doc["host"]["root"] = "/"
    daemon = {
        "format": state.DAEMON_FORMAT,
        "pid": pid,
        "start_ticks": ticks,
        "root": "/",
        "backstop_seconds": 600,
    }
    state.write_state(runtime, doc, daemon)


@pytest.mark.parametrize(
    ("case", "fresh"),
    [("alive", True), ("recycled pid", False), ("too old", False), ("other root", False)],
)
def test_freshness(tmp_path: Path, case: str, fresh: bool) -> None:
    pid = os.getpid()
    ticks = state.proc_start_ticks(pid)
    assert ticks is not None
    _fake_daemon_files(tmp_path, pid=pid, ticks=ticks + (1 if case == "recycled pid" else 0))
    generated = 946684800.0  # 2000-01-01T00:00:00Z
    now = generated + (1200.5 if case == "too old" else 1199.0)  # fresh below 2 x 600 s
    root = "/nonexistent" if case == "other root" else "/"
    assert (state.fresh_status(tmp_path, root, now=now) is not None) is fresh


def test_malformed_files_are_not_fresh(tmp_path: Path) -> None:
    pid = os.getpid()
    _fake_daemon_files(tmp_path, pid=pid, ticks=state.proc_start_ticks(pid))
    now = 946684800.0
    assert state.fresh_status(tmp_path, "/", now=now) is not None
    (tmp_path / "status.json").write_text("[1, 2")
    assert state.fresh_status(tmp_path, "/", now=now) is None
    (tmp_path / "daemon.json").write_text('{"format": 1, "pid": "1"}')
    assert state.fresh_status(tmp_path, "/", now=now) is None


def test_served_json_is_printed_like_an_envelope(tmp_path: Path) -> None:
    pid = os.getpid()
    _fake_daemon_files(tmp_path, pid=pid, ticks=state.proc_start_ticks(pid))
    doc = json.loads((tmp_path / "status.json").read_text())
    argv = ["vtdlud", "status", "--json"]
    assert state.serve_json(doc, argv, 0) == dumps(state.serve(doc, argv, 0))
