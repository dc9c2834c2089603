"""The runtime directory: reading the oneshots' reports and watching for them with inotify."""

from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path

import pytest

from vtdlud.host.atomic import write_atomic
from vtdlud.service.inotify import DirWatch
from vtdlud.service.reports import check_envelope, read_report

GOOD = {
    "json_format_version": [1, 0],
    "vtdlud": {"version": "0.1.0", "argv": ["vtdlud", "check"], "exit_status": 3},
    "source": "live",
    "generated_at": "2026-11-24T06:00:00.000000Z",
    "host": {"root": "/", "tiers": {}},
    "units": [],
    "findings": [{"code": "VTD050", "severity": "UNKNOWN", "message": "m"}],
    "verdict": "UNKNOWN",
}


def test_read_report(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    assert read_report("gate", path).ident is None  # absent
    path.write_text(json.dumps(GOOD))
    rf = read_report("gate", path)
    assert rf.error is None and rf.doc == GOOD and rf.ident is not None
    assert read_report("gate", path).ident == rf.ident
    path.write_text(json.dumps(dict(GOOD, generated_at="2026-11-24T06:00:01.000000Z")))
    assert read_report("gate", path).ident != rf.ident


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([], "not a JSON object"),
        (dict(GOOD, json_format_version=[2, 0]), "json_format_version"),
        (dict(GOOD, verdict="MAYBE"), "verdict"),
        (dict(GOOD, findings=[{"code": 1}]), "findings"),
        (dict(GOOD, units={}), "units"),
        ({k: v for k, v in GOOD.items() if k != "generated_at"}, "generated_at"),
    ],
)
def test_not_an_envelope(doc: object, why: str, tmp_path: Path) -> None:
    problem = check_envelope(doc)
    assert problem is not None and why in problem
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(doc))
    rf = read_report("gate", path)
    assert rf.doc is None and rf.error is not None and why in rf.error


def test_garbage_and_binary(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    path.write_bytes(b"\xff\x00garbage")
    assert "not JSON" in (read_report("gate", path).error or "")


def _wait(watch: DirWatch) -> set[str]:
    ready, _, _ = select.select([watch.fileno()], [], [], 2.0)
    assert ready, "no inotify event"
    time.sleep(0.01)
    return watch.read()


def test_dir_watch_sees_atomic_replacement_only_for_its_names(tmp_path: Path) -> None:
    watch = DirWatch(tmp_path, frozenset({"gate.json", "post-kexec.json"}))
    try:
        write_atomic(tmp_path / "status.json", b"{}")  # the daemon's own file: ignored
        write_atomic(tmp_path / "gate.json", b"{}")  # rename into place
        assert _wait(watch) == {"gate.json"}
        (tmp_path / "post-kexec.json").write_text("{}")  # plain write: IN_CLOSE_WRITE
        assert _wait(watch) == {"post-kexec.json"}
        os.unlink(tmp_path / "gate.json")
        assert _wait(watch) == {"gate.json"}
        assert watch.read() == set()  # non-blocking when nothing happened
    finally:
        watch.close()


def test_dir_watch_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DirWatch(tmp_path / "missing", frozenset({"gate.json"}))


def test_dir_watch_notices_its_directory_going(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    watch = DirWatch(d, frozenset({"gate.json"}))
    try:
        d.rmdir()
        _wait(watch)
        assert watch.lost
        d.mkdir()
        assert watch.rearm() and not watch.lost
        (d / "gate.json").write_text("{}")
        assert _wait(watch) == {"gate.json"}
    finally:
        watch.close()
