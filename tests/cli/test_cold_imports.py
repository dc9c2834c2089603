"""What `vtdlud status` imports (issue #15: cold start): the stdlib modules a status never needs
stay unimported, on a host with every tier (kcore, KHO, records) and on the live-host path."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud import cli

# Modules a status needs none of: inspect (with ast, dis, tokenize: dataclasses' one use of it
# is deferred), pathlib (with urllib.parse, ipaddress), shutil (argparse's formatter is sized
# without it), tarfile and tempfile (bundles only).
NOT_NEEDED = ("inspect", "ast", "dis", "pathlib", "urllib.parse", "shutil", "tarfile", "tempfile")

CODE = """
import contextlib, io, json, sys
before = set(sys.modules)
from vtdlud.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["status", *sys.argv[2:], "--root", sys.argv[1], "--config", "/dev/null"])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = q35_host(scalable=True, seed=2)
    sim.vfio_attach("0000:00:05.0")
    sim.preserve("0000:00:05.0")
    return write_tree(sim, tmp_path_factory.mktemp("imports") / "host")


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_status_imports_only_what_it_needs(host: Path, args: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(host), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = set(json.loads(proc.stdout.splitlines()[-1]))
    assert "vtdlud.host.kcore" in imported  # the kcore tier was read
    assert sorted(imported & set(NOT_NEEDED)) == []


def test_one_shot_commands_collect_rarely_and_restore_the_collector(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status/check raise the young-generation threshold while they run (the collector's full
    passes over a large host's objects were ~10 % of a check) and put it back on return."""
    seen: list[tuple[int, int, int]] = []
    real = cli.cmd_status

    def spy(ns: object, argv: list[str]) -> int:
        seen.append(gc.get_threshold())
        return real(ns, argv)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "cmd_status", spy)
    before = gc.get_threshold()
    assert cli.main(["status", "--root", str(host), "--config", "/dev/null"]) == 0
    assert seen and seen[0][0] >= 50_000
    assert gc.get_threshold() == before
