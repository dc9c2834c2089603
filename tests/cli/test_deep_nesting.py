"""Item 5 of issue #11: deeply nested TOML and JSON, and out-of-range daemon timings, end in the
documented clean error instead of exit 4 (on main: RecursionError, an OverflowError from
epoll for --backstop inf or > 24.8 days, a spinning core for nan)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import daemon_of_this_process, finding_messages, run_cli
from vtdlud.errors import ParseError
from vtdlud.host.procs import facts_from_json
from vtdlud.parse.ledger import ledger_from_json
from vtdlud.parse.nesting import deepest
from vtdlud.service import state
from vtdlud.service.reports import read_report

DEEP = 5000


@pytest.mark.parametrize(
    "value",
    ["[" * DEEP + "]" * DEEP, "{a = " * DEEP + "1" + "}" * DEEP],
    ids=["arrays", "inline-tables"],
)
def test_deep_toml_config_is_file_line_exit_2(
    capture_root: Callable[[str], Path], tmp_path: Path, value: str
) -> None:
    config = tmp_path / "vtdlud.toml"
    config.write_text(
        f'# a comment with [[[ brackets\n[preserve]\nids = ["[[["]\ndevices = {value}\n'
    )
    rc, out, err = run_cli(
        "status", "--root", str(capture_root("a_legacy")), "--config", str(config)
    )
    assert (rc, out) == (2, "")
    assert err.splitlines() == [
        f"vtdlud: error: {config}:4: nested {DEEP} levels deep, too deep to read",
        "vtdlud: hint: see vtdlud.toml(5)",
    ]


def test_deepest_skips_strings_and_comments() -> None:
    assert deepest('a = "[[[["\nb = [[1]]  # [[[[[', toml=True) == (2, 2)
    assert deepest("a = '''\n[[[[\n'''\nb = [1]", toml=True) == (1, 4)
    assert deepest('a = """\\"""[[[[""" \nb = [[[1]]]', toml=True) == (3, 2)
    assert deepest('{"a": "[[\\"[[", "b": [[[]]]}') == (4, 1)
    assert deepest("# [[[[]]]]\n[1]") == (4, 1)  # JSON has no comments


def _deep_json() -> bytes:
    return b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}"


def test_deep_json_ledger_is_vtd051(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(ParseError) as exc:
        ledger_from_json(_deep_json())
    assert str(exc.value) == f"line 1: nested {DEEP + 1} levels deep, too deep to read"
    (tmp_path / "ledger.json").write_bytes(_deep_json())
    rc, out, err = run_cli(
        "check",
        "--json",
        "--post-kexec",
        "--root",
        str(capture_root("a_legacy")),
        "--state-dir",
        str(tmp_path),
    )
    assert rc in (1, 3), err
    msgs = finding_messages(json.loads(out), "VTD051")
    assert f"{tmp_path}/ledger.json: line 1: nested {DEEP + 1} levels deep, too deep to read" in (
        msgs
    )


def test_deep_json_process_facts() -> None:
    with pytest.raises(ValueError, match="too deep to read"):
        facts_from_json(_deep_json())


def test_deep_json_reports_and_cache(tmp_path: Path) -> None:
    (tmp_path / "gate.json").write_bytes(_deep_json())
    rf = read_report("gate", tmp_path / "gate.json")
    assert rf.doc is None
    assert (
        rf.error == f"not a vtdlud report: line 1: nested {DEEP + 1} levels deep, too deep to read"
    )
    # A deep status.json beside a live daemon.json: not fresh, so status evaluates live.
    daemon_of_this_process(tmp_path)
    (tmp_path / "status.json").write_bytes(_deep_json())
    assert state.fresh_status(tmp_path, "/") is None


@pytest.mark.parametrize(
    ("option", "value", "low"),
    [
        ("--backstop", "inf", "above 0"),
        ("--backstop", "nan", "above 0"),
        ("--backstop", "2147484", "above 0"),
        ("--backstop", "1e10", "above 0"),
        ("--backstop", "0", "above 0"),
        ("--debounce", "nan", "0 or more"),
        ("--debounce-max", "inf", "0 or more"),
    ],
)
def test_daemon_timings_are_range_checked(option: str, value: str, low: str) -> None:
    rc, _, err = run_cli("run", "--root", "/nonexistent", option, value)
    assert rc == 2
    shown = float(value)
    assert err == (
        f"vtdlud: error: {option} {shown}: expected seconds, {low} and at most 2147483 "
        "(about 24.8 days)\n"
    )
