"""The node_exporter textfile: exposition format, values from the envelope, atomic writes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.kernelmodel.scenarios import two_unit_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud import __version__
from vtdlud.audit.catalog import CATALOG
from vtdlud.model.policy import Policy
from vtdlud.output.envelope import envelope
from vtdlud.output.metrics import DaemonStats, SourceState, render_metrics, write_metrics
from vtdlud.service.sandbox import daemon_evaluate

SAMPLE = re.compile(r'([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+)')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict reading of the text format: TYPE before samples, no duplicate series."""
    typed: set[str] = set()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in typed
            typed.add(name)
            continue
        m = SAMPLE.fullmatch(line)
        assert m is not None, line
        assert m.group(1) in typed, line
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in out, line
        out[key] = float(m.group(3))
    return out


def get(series: dict[Any, float], metric: str, /, **labels: str) -> float:
    [value] = [v for (n, ls), v in series.items() if n == metric and set(labels.items()) <= ls]
    return value


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("host")
    write_tree(two_unit_host(seed=3), root, TreeOptions(kcore=False, processes=False))
    report = daemon_evaluate(root, Policy(devices=("0000:00:05.0",)))
    return envelope(report, argv=["vtdlud", "run"], exit_status=0, root_label="/", source="daemon")


def test_daemon_source(doc: dict[str, Any]) -> None:
    stats = DaemonStats(started_at=1000.0, evaluations=3, last_evaluation_at=2000.5)
    stats.last_evaluation_duration = 0.0123
    stats.uevents_relevant, stats.uevents_ignored = 5, 2
    stats.sources["daemon"] = SourceState(doc)
    s = parse(render_metrics(stats))
    verdicts = {v: get(s, "vtdlud_verdict", source="daemon", verdict=v) for v in
                ("PASS", "NOTE", "WARN", "FAIL", "UNKNOWN", "NOT_APPLICABLE")}  # fmt: skip
    assert verdicts[doc["verdict"]] == 1 and sum(verdicts.values()) == 1
    assert get(s, "vtdlud_dmar_units", source="daemon") == 2
    for u in doc["units"]:
        labels = {"source": "daemon", "address": u["address"], "dmar": u["name"]}
        assert get(s, "vtdlud_dmar_devices", **labels) == len(u["devices"])
        assert get(s, "vtdlud_dmar_context_tables", **labels) == len(u["context_tables"])
    assert get(s, "vtdlud_tier_available", source="daemon", tier="sysfs") == 1
    assert get(s, "vtdlud_tier_available", source="daemon", tier="kcore") == 0
    for code, entry in CATALOG.items():
        n = sum(f["code"] == code for f in doc["findings"])
        assert get(s, "vtdlud_findings", source="daemon", code=code,
                   severity=entry.severity.value) == n  # fmt: skip
    assert get(s, "vtdlud_evaluations_total") == 3
    assert get(s, "vtdlud_last_evaluation_timestamp_seconds") == 2000.5
    assert get(s, "vtdlud_last_evaluation_duration_seconds") == pytest.approx(0.0123)
    assert get(s, "vtdlud_uevents_total", relevant="no") == 2
    assert not any(n == "vtdlud_dmar_preserved_context_tables" for n, _ in s)
    assert get(s, "vtdlud_build_info", version=__version__) == 1


def test_preserved_record_counts_come_from_the_envelope(doc: dict[str, Any]) -> None:
    gate = dict(doc, units=[dict(doc["units"][0])])
    gate["units"][0]["preserved"] = {
        "ref_count": 2,
        "restored": False,
        "root_table": "0x1000",
        "bitmap": [0, 2, 6],
        "required_bitmap": [0, 6],
        "located_by": "signature",
    }
    stats = DaemonStats(sources={"gate": SourceState(gate), "post_kexec": SourceState()})
    s = parse(render_metrics(stats))
    u = gate["units"][0]
    labels = {"source": "gate", "address": u["address"]}
    assert get(s, "vtdlud_dmar_preserved_context_tables", **labels) == 3
    assert get(s, "vtdlud_dmar_required_context_tables", **labels) == 2
    assert get(s, "vtdlud_dmar_preserved_references", **labels) == 2
    assert not any(dict(ls).get("source") == "post_kexec" for _, ls in s)  # absent report


def test_unreadable_report_and_label_escaping() -> None:
    stats = DaemonStats(sources={"gate": SourceState(error="not JSON")})
    s = parse(render_metrics(stats))
    assert get(s, "vtdlud_report_valid", source="gate") == 0
    odd = {"verdict": "PASS", "units": [{"name": 'a"b\\c\nd', "address": "0x1"}], "findings": []}
    s = parse(render_metrics(DaemonStats(sources={"daemon": SourceState(odd)})))
    assert get(s, "vtdlud_dmar_devices", dmar='a\\"b\\\\c\\nd') == 0


def test_write_is_atomic_and_needs_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "vtdlud.prom"
    write_metrics(path, "a 1\n")
    write_metrics(path, "a 2\n")
    assert path.read_text() == "a 2\n"
    assert os.listdir(tmp_path) == ["vtdlud.prom"]  # no temp file left for the collector
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(FileNotFoundError):
        write_metrics(tmp_path / "missing" / "vtdlud.prom", "a 1\n")
    assert not (tmp_path / "missing").exists()
