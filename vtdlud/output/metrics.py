"""Prometheus node_exporter textfile metrics (``vtdlud.prom``), rendered from JSON envelopes.

The daemon writes the file after every evaluation and whenever it picks up a oneshot's report,
by temp file + rename in the same directory (the textfile collector only reads ``*.prom``, and
never a half-written file), and removes it when it stops (``systemctl stop``, and so on package
removal): node_exporter then exports nothing rather than the last verdict forever.  A daemon that
died leaves the file, whose ``vtdlud_last_evaluation_timestamp_seconds`` then ages (the
``VtdludTextfileStale`` alert of ``packaging/prometheus/vtdlud.rules.yml``).

Names follow the Prometheus conventions (``promtool check metrics`` is clean, tested): base
units, ``_total`` only on counters, no ``_count``/``_sum``/``_bucket`` outside histograms, a
``_info`` metric for the build.  Series are labelled with ``source``: ``daemon`` for the
daemon's own (sandboxed, kcore-less) evaluation, ``gate`` for ``vtdlud check --report
/run/vtdlud/gate.json`` and ``post_kexec`` for the post-kexec verification's report.

Per source, from the envelope (DESIGN.md §4):

- ``vtdlud_verdict{source,verdict}``: 1 for the current verdict, 0 for the other five
  (``NOT_APPLICABLE``: a host without Intel VT-d);
- ``vtdlud_report_valid{source}``: 0 when the report file exists but could not be read;
- ``vtdlud_report_generated_timestamp_seconds{source}``, ``vtdlud_report_exit_status{source}``,
  ``vtdlud_report_age_seconds{source}`` (when the file was written: the gate's and post-kexec
  check's reports beside the daemon's own verdict, which never covers kcore);
- ``vtdlud_dmar_units{source}``: DMAR units in the report;
- ``vtdlud_findings{source,code,severity}``: every catalog code at its catalog severity (0 when
  absent) plus whatever the report holds;
- ``vtdlud_tier_available{source,tier}``: 1 available, 0 unavailable or denied;
- per DMAR unit (labels ``source``, ``dmar`` = the kernel's name ``dmarN``, ``address`` = its
  register base address, which is stable across kernels where ``dmarN`` is not):
  ``vtdlud_dmar_devices``, ``vtdlud_dmar_translation_enabled`` (when known),
  ``vtdlud_dmar_context_tables`` (context tables that exist now; the ``tables_source`` label says
  ``kcore`` (exact) or ``debugfs`` (a lower bound); absent when neither tier is visible), and
  from the unit's preserved live-update record (absent while the envelope's
  ``units[].preserved`` is ``null``: the daemon never reads kcore, so they come from the gate's
  report): ``vtdlud_dmar_preserved_context_tables`` (bits set in its ``context_tables_bitmap``),
  ``vtdlud_dmar_required_context_tables`` (``required_bitmap``: the halves holding preserved
  devices and their aliases) and ``vtdlud_dmar_preserved_references`` (its ``hdr.ref_count``).

Daemon-wide: ``vtdlud_build_info{version}`` (always 1), ``vtdlud_start_timestamp_seconds``,
``vtdlud_last_evaluation_timestamp_seconds``, ``vtdlud_last_evaluation_duration_seconds``,
``vtdlud_evaluations_total``, ``vtdlud_evaluation_errors_total``,
``vtdlud_uevents_total{relevant}``, ``vtdlud_uevent_overflows_total``,
``vtdlud_journal_backlog_entries``.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vtdlud import __version__
from vtdlud.audit.catalog import CATALOG
from vtdlud.host.atomic import write_atomic

VERDICTS = ("PASS", "NOTE", "WARN", "FAIL", "UNKNOWN", "NOT_APPLICABLE")
TIERS = ("sysfs", "iommu_debugfs", "kho_debugfs", "kcore")

JSON = dict[str, Any]


@dataclass
class SourceState:
    """What the daemon knows of one source: the envelope, or why it could not be read."""

    doc: JSON | None = None
    error: str | None = None


@dataclass
class DaemonStats:
    """The daemon's own counters and times, exported with the findings."""

    started_at: float = 0.0
    evaluations: int = 0
    evaluation_errors: int = 0
    last_evaluation_at: float | None = None
    last_evaluation_duration: float | None = None
    uevents_relevant: int = 0
    uevents_ignored: int = 0
    uevent_overflows: int = 0
    journal_backlog: int = 0
    sources: dict[str, SourceState] = field(default_factory=dict)


_HELP = {
    "vtdlud_build_info": ("gauge", "vtdlud's version (always 1)."),
    "vtdlud_verdict": ("gauge", "1 for the verdict of the source's last report, 0 otherwise."),
    "vtdlud_report_valid": ("gauge", "0 when the source's report file could not be read."),
    "vtdlud_report_generated_timestamp_seconds": (
        "gauge",
        "When the source's report was generated (Unix time).",
    ),
    "vtdlud_report_age_seconds": (
        "gauge",
        "Age of the source's report when this file was written (exact: time() - "
        "vtdlud_report_generated_timestamp_seconds).",
    ),
    "vtdlud_report_exit_status": ("gauge", "The exit status recorded in the source's report."),
    "vtdlud_dmar_units": ("gauge", "DMAR units in the source's report."),
    "vtdlud_findings": ("gauge", "Findings by code and severity in the source's report."),
    "vtdlud_tier_available": ("gauge", "1 when the tier of visibility was available."),
    "vtdlud_dmar_devices": ("gauge", "Devices behind the DMAR unit."),
    "vtdlud_dmar_translation_enabled": ("gauge", "1 when GSTS.TES is set on the DMAR unit."),
    "vtdlud_dmar_context_tables": ("gauge", "Context tables that exist now on the DMAR unit."),
    "vtdlud_dmar_preserved_context_tables": (
        "gauge",
        "Context tables marked preserved in the DMAR unit's live-update record bitmap.",
    ),
    "vtdlud_dmar_required_context_tables": (
        "gauge",
        "Context tables that must be preserved (preserved devices and their DMA aliases).",
    ),
    "vtdlud_dmar_preserved_references": (
        "gauge",
        "References held on the DMAR unit's preserved record (its hdr.ref_count).",
    ),
    "vtdlud_start_timestamp_seconds": ("gauge", "When the daemon started (Unix time)."),
    "vtdlud_last_evaluation_timestamp_seconds": (
        "gauge",
        "When the daemon last evaluated the host (Unix time).",
    ),
    "vtdlud_last_evaluation_duration_seconds": ("gauge", "How long the last evaluation took."),
    "vtdlud_evaluations_total": ("counter", "Evaluations since the daemon started."),
    "vtdlud_evaluation_errors_total": ("counter", "Evaluations that failed with an error."),
    "vtdlud_uevents_total": ("counter", "Kernel uevents received, by relevance."),
    "vtdlud_uevent_overflows_total": (
        "counter",
        "Times the uevent socket overflowed (events lost; a rescan followed).",
    ),
    "vtdlud_journal_backlog_entries": ("gauge", "journald entries waiting to be re-sent."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Out:
    def __init__(self) -> None:
        self.series: dict[str, list[str]] = {name: [] for name in _HELP}

    def add(self, metric: str, value: float, /, **labels: object) -> None:
        if labels:
            body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.series[metric].append(f"{metric}{{{body}}} {_num(value)}")
        else:
            self.series[metric].append(f"{metric} {_num(value)}")

    def text(self) -> str:
        lines = []
        for name, rows in self.series.items():
            if not rows:
                continue
            kind, help_text = _HELP[name]
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *rows]
        return "\n".join(lines) + "\n"


def _timestamp(rfc3339: object) -> float | None:
    if not isinstance(rfc3339, str):
        return None
    try:
        return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _source(out: _Out, source: str, doc: JSON, now: float) -> None:
    verdict = doc.get("verdict")
    for v in VERDICTS:
        out.add("vtdlud_verdict", 1 if v == verdict else 0, source=source, verdict=v)
    ts = _timestamp(doc.get("generated_at"))
    if ts is not None:
        out.add("vtdlud_report_generated_timestamp_seconds", ts, source=source)
        out.add("vtdlud_report_age_seconds", round(now - ts, 3), source=source)
    exit_status = (doc.get("vtdlud") or {}).get("exit_status")
    if isinstance(exit_status, int):
        out.add("vtdlud_report_exit_status", exit_status, source=source)
    units = [u for u in doc.get("units") or [] if isinstance(u, dict)]
    out.add("vtdlud_dmar_units", len(units), source=source)

    counts: dict[tuple[str, str], int] = {(c, e.severity.value): 0 for c, e in CATALOG.items()}
    for f in doc.get("findings") or []:
        if isinstance(f, dict):
            key = (str(f.get("code")), str(f.get("severity")))
            counts[key] = counts.get(key, 0) + 1
    for (code, severity), n in sorted(counts.items()):
        out.add("vtdlud_findings", n, source=source, code=code, severity=severity)

    tiers = (doc.get("host") or {}).get("tiers") or {}
    for tier in TIERS:
        state = tiers.get(tier)
        if isinstance(state, dict):
            out.add(
                "vtdlud_tier_available",
                1 if state.get("state") == "available" else 0,
                source=source,
                tier=tier,
            )

    for u in units:
        labels = {"source": source, "dmar": u.get("name"), "address": u.get("address") or "none"}
        out.add("vtdlud_dmar_devices", len(u.get("devices") or []), **labels)
        te = u.get("translation_enabled")
        if isinstance(te, bool):
            out.add("vtdlud_dmar_translation_enabled", te, **labels)
        ctx = u.get("context_tables")
        if isinstance(ctx, list):
            out.add(
                "vtdlud_dmar_context_tables",
                len(ctx),
                **labels,
                tables_source=u.get("context_tables_source") or "unknown",
            )
        pres = u.get("preserved")
        if isinstance(pres, dict):
            if isinstance(pres.get("bitmap"), list):
                out.add("vtdlud_dmar_preserved_context_tables", len(pres["bitmap"]), **labels)
            if isinstance(pres.get("required_bitmap"), list):
                out.add(
                    "vtdlud_dmar_required_context_tables", len(pres["required_bitmap"]), **labels
                )
            if isinstance(pres.get("ref_count"), int):
                out.add("vtdlud_dmar_preserved_references", pres["ref_count"], **labels)


def render_metrics(stats: DaemonStats, now: float | None = None) -> str:
    """The whole textfile, in the Prometheus text exposition format (``now``: the time the
    report ages are counted to, default the current time)."""
    when = time.time() if now is None else now
    out = _Out()
    out.add("vtdlud_build_info", 1, version=__version__)
    out.add("vtdlud_start_timestamp_seconds", round(stats.started_at, 3))
    for source, st in sorted(stats.sources.items()):
        if st.doc is None and st.error is None:
            continue  # no such report (yet)
        out.add("vtdlud_report_valid", 0 if st.error is not None else 1, source=source)
        if st.doc is not None:
            _source(out, source, st.doc, when)
    if stats.last_evaluation_at is not None:
        out.add("vtdlud_last_evaluation_timestamp_seconds", round(stats.last_evaluation_at, 3))
    if stats.last_evaluation_duration is not None:
        out.add("vtdlud_last_evaluation_duration_seconds", round(stats.last_evaluation_duration, 6))
    out.add("vtdlud_evaluations_total", stats.evaluations)
    out.add("vtdlud_evaluation_errors_total", stats.evaluation_errors)
    out.add("vtdlud_uevents_total", stats.uevents_relevant, relevant="yes")
    out.add("vtdlud_uevents_total", stats.uevents_ignored, relevant="no")
    out.add("vtdlud_uevent_overflows_total", stats.uevent_overflows)
    out.add("vtdlud_journal_backlog_entries", stats.journal_backlog)
    return out.text()


def write_metrics(path: Path, text: str) -> None:
    """Atomically replace ``path`` (temp file + rename in its directory, which must exist:
    creating /var/lib/prometheus/node-exporter on a host without node_exporter is not vtdlud's
    call).  Raises OSError."""
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "metrics directory does not exist", str(path.parent))
    write_atomic(path, text.encode(), mode=0o644)


def remove_metrics(path: Path) -> bool:
    """Remove the textfile (the daemon stops): True when there was one.  Raises OSError."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def source_states(sources: Mapping[str, SourceState]) -> dict[str, str]:
    """A short state per source for logs: the verdict, 'unreadable' or 'absent'."""
    return {
        s: (st.doc or {}).get("verdict", "absent") if st.error is None else "unreadable"
        for s, st in sources.items()
    }
