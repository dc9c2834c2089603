"""Every textfile the daemon can write passes Debian's real `promtool check metrics` (the
Prometheus text format and its naming lint), for each kind of report the daemon exports: its
own evaluation, a gate report with a preserved record (where `_ref_count` used to fail), a
failing one, a host without VT-d and an unreadable report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli
from tests.kernelmodel.scenarios import two_unit_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from tests.tools import require_tool
from vtdlud.model.policy import Policy
from vtdlud.output.envelope import envelope
from vtdlud.output.metrics import DaemonStats, SourceState, render_metrics
from vtdlud.service.sandbox import daemon_evaluate

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def check_metrics(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _check_json(root: Path) -> dict[str, Any]:
    _, out, _ = run_cli("check", "--json", "--root", str(root))
    doc: dict[str, Any] = json.loads(out)
    return doc


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SourceState]:
    host = tmp_path_factory.mktemp("host")
    write_tree(two_unit_host(seed=3), host, TreeOptions(kcore=False, processes=False))
    daemon = envelope(
        daemon_evaluate(host, Policy(devices=("0000:00:05.0",))),
        argv=["vtdlud", "run"],
        exit_status=0,
        root_label="/",
        source="daemon",
    )
    gate = _check_json(EXAMPLES / "1-preserved-clean.tar.gz")
    assert gate["units"][0]["preserved"]["ref_count"] >= 1  # the series that broke promtool
    failed = _check_json(EXAMPLES / "2-preserved-bit-missing.tar.gz")
    assert failed["verdict"] == "FAIL"
    amd = tmp_path_factory.mktemp("amd")
    (amd / "sys/class/iommu/ivhd0").mkdir(parents=True)
    not_applicable = _check_json(amd)
    assert not_applicable["verdict"] == "NOT_APPLICABLE"
    return {
        "daemon": SourceState(daemon),
        "gate": SourceState(gate),
        "post_kexec": SourceState(failed),
        "not_applicable": SourceState(not_applicable),
        "unreadable": SourceState(error="not JSON"),
    }


def _stats(states: dict[str, SourceState]) -> DaemonStats:
    stats = DaemonStats(started_at=1_700_000_000.0, evaluations=3, evaluation_errors=1)
    stats.last_evaluation_at, stats.last_evaluation_duration = 1_700_000_600.25, 0.0421
    stats.uevents_relevant, stats.uevents_ignored = 12, 4000
    stats.sources.update(states)
    return stats


@pytest.mark.parametrize(
    "which", ["daemon", "gate", "post_kexec", "not_applicable", "unreadable", "all"]
)
def test_textfile_passes_promtool(
    promtool: str, sources: dict[str, SourceState], which: str
) -> None:
    states = sources if which == "all" else {which: sources[which]}
    text = render_metrics(_stats(states))
    run = check_metrics(promtool, text)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", ""), run.stdout + run.stderr
    if which == "gate":
        assert "vtdlud_dmar_preserved_references{" in text
    if which == "not_applicable":
        assert 'vtdlud_verdict{source="not_applicable",verdict="NOT_APPLICABLE"} 1' in text


def test_promtool_rejects_the_old_names(promtool: str) -> None:
    """Control: the name #16 reported (a gauge with the `_count` suffix) fails the lint."""
    old = (
        "# HELP vtdlud_unit_preserved_ref_count ref_count of the unit's preserved record.\n"
        "# TYPE vtdlud_unit_preserved_ref_count gauge\n"
        'vtdlud_unit_preserved_ref_count{source="gate",unit="0xfed90000",name="dmar0"} 1\n'
    )
    run = check_metrics(promtool, old)
    assert run.returncode != 0 and "_count" in run.stdout + run.stderr
