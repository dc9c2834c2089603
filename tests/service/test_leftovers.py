"""Item 8 of issue #11: nothing is left behind, nothing is created that was not asked for, and
nothing stale is served.  On main: a killed writer's .tmp stayed for good, SIGTERM during
``--root BUNDLE`` left /tmp/vtdlud-bundle-*, ``collect -o`` and ``check --report`` created
missing parent directories, and a status.json the schema rejects was served as is."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.cli.helpers import daemon_of_this_process, run_cli, schema, status_json
from tests.conftest import CAPTURE_NAMES, capture_tarball
from vtdlud.host.atomic import STALE_SECONDS, atomic_file, sweep_temps, write_atomic
from vtdlud.service import state
from vtdlud.service.schema import KNOWN, envelope_error, schema_error


def _old(path: Path) -> None:
    t = time.time() - STALE_SECONDS - 1
    os.utime(path, (t, t))


def test_a_killed_writers_temp_is_swept_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    code = (
        "import os, signal, sys; from pathlib import Path; "
        "from vtdlud.host.atomic import atomic_file\n"
        "with atomic_file(Path(sys.argv[1])) as f:\n"
        "    f.write(b'half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    [left] = list(tmp_path.glob(".status.json.*.tmp"))
    fresh = tmp_path / ".status.json.0123456789ab.tmp"  # a writer at work right now
    fresh.write_bytes(b"")
    _old(left)
    write_atomic(target, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "status.json"]
    assert sweep_temps(target) == 1 and sorted(tmp_path.iterdir()) == [target]


def test_atomic_file_does_not_create_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "missing" / "x"):
        pass
    assert not (tmp_path / "missing").exists()


def test_collect_and_report_refuse_a_missing_directory(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    root = str(capture_root("a_legacy"))
    out = tmp_path / "missing" / "x.tar.gz"
    rc, _, err = run_cli("collect", "--root", root, "-o", str(out))
    assert rc == 2
    assert err.startswith(f"vtdlud: error: -o {out}: cannot write the bundle (No such file")
    report = tmp_path / "nope" / "gate.json"
    rc, _, err = run_cli("check", "--root", root, "--report", str(report))
    assert rc == 2
    assert err.startswith(f"vtdlud: error: --report {report}: cannot write (No such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _slow_bundle(path: Path) -> Path:
    """A real capture plus 256 MiB of zeros in one member: a second or two to open."""
    with tarfile.open(capture_tarball("a_legacy")) as src, tarfile.open(path, "w:gz") as out:
        for m in src.getmembers():
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        pad = tarfile.TarInfo("proc/padding")
        pad.size = 250 << 20
        out.addfile(pad, io.BufferedReader(_Zeros(pad.size)))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.n = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_a_bundle_is_open_removes_it(tmp_path: Path, sig: signal.Signals) -> None:
    bundle = _slow_bundle(tmp_path / "slow.tar.gz")
    private = tmp_path / "tmp"
    private.mkdir()
    env = dict(os.environ, TMPDIR=str(private))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtdlud", "status", "--root", str(bundle)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not list(private.glob("vtdlud-bundle-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "never opened the bundle"
        time.sleep(0.005)
    proc.send_signal(sig)
    assert proc.wait(30) == 128 + sig
    assert list(private.iterdir()) == []


# -- the daemon's cached status.json ------------------------------------------------------------
def _valid_envelope(name: str) -> dict[str, Any]:
    doc = status_json("--root", str(capture_tarball(name)))
    doc["source"] = "daemon"
    return doc


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_schema_check_agrees_with_jsonschema(name: str) -> None:
    """The runtime checker and jsonschema on the real captures' envelopes and mutants of them."""
    doc = _valid_envelope(name)
    assert envelope_error(doc) is None
    mutants: list[dict[str, Any]] = []
    for path, value in [
        (("verdict",), "MAYBE"),
        (("json_format_version",), [2, 0]),
        (("host", "tiers", "sysfs", "state"), "fine"),
        (("units", 0, "mode"), "paged"),
        (("units", 0, "address"), "fed90000"),
        (("units", 0, "context_tables"), [512]),
        (("units", 0, "cap", "raw"), 7),
        (("units", 0, "devices"), "0000:00:02.0"),
        (("findings",), [{"code": "VTD999"}]),
        (("generated_at",), 0),
        (("vtdlud", "exit_status"), True),
        (("units", 0, "extra"), 1),
    ]:
        m = copy.deepcopy(doc)
        node = m
        for key in path[:-1]:
            node = node[key]  # type: ignore[index]
        node[path[-1]] = value  # type: ignore[index]
        mutants.append(m)
    for m in mutants:
        expect = jsonschema.Draft202012Validator(schema()).is_valid(m)
        assert (envelope_error(m) is None) == expect, (envelope_error(m), m)
    assert all(envelope_error(m) is not None for m in mutants)


def test_schema_uses_only_keywords_the_checker_knows() -> None:
    seen: set[str] = set()

    def walk(node: object, in_props: bool = False) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not in_props:
                    seen.add(k)
                walk(v, k == "properties" and not in_props)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    walk(schema())
    assert seen <= KNOWN, seen - KNOWN
    assert schema_error(1, {"type": "integer", "maximum": 0}) == "$: above 0"


def test_schema_invalid_cache_is_evaluated_live(tmp_path: Path) -> None:
    doc = _valid_envelope("a_legacy")
    doc["findings"] = [{"code": "VTD011", "severity": "FAIL"}]  # lacks unit, bdf, message, ...
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    doc["host"]["root"] = "/"
    daemon_of_this_process(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps(doc))
    assert state.fresh_status(tmp_path, "/") is None
    doc["findings"] = []
    (tmp_path / "status.json").write_text(json.dumps(doc))
    assert state.fresh_status(tmp_path, "/") is not None  # the positive control
