"""The daemon's runtime files, and how ``vtdlud status`` decides to serve them.

In the runtime directory (``/run/vtdlud``, ``--runtime-dir``):

- ``status.json``: the JSON envelope of the daemon's last evaluation (``source: "daemon"``),
  replaced atomically after every evaluation;
- ``daemon.json``: who wrote it and how the daemon is doing — pid, the process's start time in
  clock ticks (``/proc/<pid>/stat`` field 22, which tells a live daemon from a recycled pid),
  root, backstop interval, evaluation count, the last trigger, uevent counters and the reports
  picked up.  Written before ``status.json``.
- ``gate.json`` and ``post-kexec.json``: written by the privileged oneshots, read by the daemon.

**Fresh** (served by ``vtdlud status`` instead of evaluating): ``daemon.json`` names a process
that is alive with the recorded start time (so the pid was not recycled), the daemon audits the
same root as the ``status`` invocation, ``status.json`` is an envelope the shipped schema
accepts, and it was generated less than
2 x the daemon's backstop interval ago (the daemon re-evaluates at least once per backstop
interval, so an older file means it is stuck).  ``--live`` or ``--config`` always evaluate
directly.  Anything unreadable, malformed or stale means "not fresh": ``status`` then evaluates
itself, it never fails because of these files.

This module is imported by ``vtdlud status``: it must stay light (no pyudev, structlog, systemd).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from vtdlud.host.atomic import write_atomic
from vtdlud.host.files import read_regular
from vtdlud.host.limits import JSON_CAP

DEFAULT_RUNTIME_DIR = "/run/vtdlud"
STATUS_JSON = "status.json"
DAEMON_JSON = "daemon.json"
GATE_JSON = "gate.json"
POST_KEXEC_JSON = "post-kexec.json"
DAEMON_FORMAT = 1

JSON = dict[str, Any]


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time after boot, in clock ticks); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def write_daemon_json(runtime_dir: Path, daemon: JSON) -> None:
    data = json.dumps(daemon, indent=2, sort_keys=True) + "\n"
    write_atomic(runtime_dir / DAEMON_JSON, data.encode(), mode=0o644)


def write_state(runtime_dir: Path, status: JSON, daemon: JSON) -> None:
    """daemon.json first, then status.json; each atomically.  Raises OSError."""
    from vtdlud.output.envelope import dumps  # noqa: PLC0415 - the daemon's path, not status's

    write_daemon_json(runtime_dir, daemon)
    write_atomic(runtime_dir / STATUS_JSON, dumps(status).encode(), mode=0o644)


def _load(path: Path) -> JSON | None:
    try:
        doc = json.loads(read_regular(path, JSON_CAP))
    except (OSError, ValueError, RecursionError):  # nested too deeply: not ours either
        return None
    return doc if isinstance(doc, dict) else None


def read_daemon_json(runtime_dir: Path) -> JSON | None:
    doc = _load(runtime_dir / DAEMON_JSON)
    if doc is None or doc.get("format") != DAEMON_FORMAT:
        return None
    return doc


def report_age(generated_at: object, now: float) -> float | None:
    """Seconds from a report's ``generated_at`` (RFC 3339 UTC) to ``now``; None if unreadable."""
    if not isinstance(generated_at, str):
        return None
    try:
        ts = datetime.fromisoformat(generated_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return now - ts


def daemon_alive(daemon: JSON) -> bool:
    pid, ticks = daemon.get("pid"), daemon.get("start_ticks")
    if not isinstance(pid, int) or not isinstance(ticks, int) or pid <= 0:
        return False
    return proc_start_ticks(pid) == ticks


def fresh_status(runtime_dir: Path, root: str, *, now: float | None = None) -> JSON | None:
    """The daemon's status envelope when it is fresh (see the module docstring), else None."""
    daemon = read_daemon_json(runtime_dir)
    if daemon is None or not daemon_alive(daemon):
        return None
    if os.path.realpath(str(daemon.get("root", ""))) != os.path.realpath(root):
        return None
    backstop = daemon.get("backstop_seconds")
    if not isinstance(backstop, int | float) or backstop <= 0:
        return None
    doc = _load(runtime_dir / STATUS_JSON)
    if doc is None or doc.get("source") != "daemon" or not isinstance(doc.get("vtdlud"), dict):
        return None
    from vtdlud.service.schema import envelope_error  # noqa: PLC0415 - only with a daemon

    # A daemon older than json_format_version 1.1 wrote no vtdlud.messages: served with an empty
    # list (serve()), so checked with one; otherwise served as is, so the schema must take it.
    if "messages" not in doc["vtdlud"]:
        doc = dict(doc, vtdlud=dict(doc["vtdlud"], messages=[]))
    if envelope_error(doc) is not None:
        return None
    age = report_age(doc.get("generated_at"), time.time() if now is None else now)
    if age is None or not -5.0 <= age < 2 * backstop:  # a little clock skew is tolerated
        return None
    return doc


def serve(doc: JSON, argv: list[str], exit_status: int, reports: JSON | None = None) -> JSON:
    """The cached envelope with ``argv`` and ``exit_status`` of the current invocation, and
    ``reports``: the latest gate and post-kexec reports beside it
    (:func:`vtdlud.service.reports.beside`, read now, so their ages are now's)."""
    out = dict(doc)
    out["vtdlud"] = dict(doc["vtdlud"], argv=argv, exit_status=exit_status)
    out["vtdlud"].setdefault("messages", [])  # a daemon older than json_format_version 1.1
    if reports is not None:
        out["reports"] = reports
    return out


def serve_json(doc: JSON, argv: list[str], exit_status: int, reports: JSON | None = None) -> str:
    """:func:`serve`, printed as ``output.envelope.dumps`` prints an envelope (without
    importing the model: this is the fast path of ``vtdlud status --json``)."""
    return json.dumps(serve(doc, argv, exit_status, reports), indent=2) + "\n"


def _ago(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "age unknown"
    if seconds < 0:
        return "in the future (clock skew)"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def format_reports(reports: JSON, colour: bool, *, brief: bool = False) -> list[str]:
    """The privileged reports beside the daemon's verdict, for humans: one ``check : RESULT
    (reason)`` line per source, then (unless ``brief``) its findings that are not PASS."""
    from vtdlud.output.text import paint  # noqa: PLC0415 - human output only

    out = [
        "Beside it, the privileged reports (they read kcore and the VMMs' descriptors; "
        "the daemon does not)"
    ]
    names = {"gate": "gate (vtdlud check)", "post_kexec": "post-kexec check"}
    width = max(len(n) for n in names.values())
    for source, rep in reports.items():
        name = names.get(source, source).ljust(width)
        if rep.get("state") == "absent":
            out.append(f"  {name} : {paint('UNKNOWN', colour)} (no report: {rep.get('path')})")
            continue
        if rep.get("state") != "ok":
            why = f"{rep.get('path')}: {rep.get('error')}"
            out.append(f"  {name} : {paint('UNKNOWN', colour)} (unreadable report {why})")
            continue
        verdict = str(rep.get("verdict"))
        boot = f", boot {rep['boot_id']}" if rep.get("boot_id") else ""
        out.append(
            f"  {name} : {paint(verdict, colour)} (generated {rep.get('generated_at')}, "
            f"{_ago(rep.get('age_seconds'))}, exit {rep.get('exit_status')}{boot})"
        )
        for f in () if brief else rep.get("findings") or []:
            if isinstance(f, dict) and f.get("severity") != "PASS":
                where = f.get("bdf") or f.get("unit") or "host"
                sev = paint(str(f.get("severity")), colour)
                out.append(f"    {f.get('code')} {sev} {where}: {f.get('message')}")
    return out


def format_cached(
    doc: JSON, root_label: str, colour: bool, reports: JSON | None = None, *, brief: bool = False
) -> str:
    """Human output of a cached envelope, in the same layout as a direct ``status``, with the
    latest privileged reports beside it (``reports``, see :func:`serve`).

    The envelope has no drivers, groups or VFIO cdevs: those columns show ``-``; a last line
    says where the report came from."""
    from vtdlud.audit.report import DETAIL_KEYS, Finding, Report, UnitReport  # noqa: PLC0415
    from vtdlud.model.policy import Policy  # noqa: PLC0415
    from vtdlud.model.severity import Severity  # noqa: PLC0415 - human output only
    from vtdlud.model.snapshot import Snapshot  # noqa: PLC0415
    from vtdlud.model.tables import Mode  # noqa: PLC0415
    from vtdlud.model.tiers import Tier, TierState, TierStatus  # noqa: PLC0415
    from vtdlud.output.text import format_status  # noqa: PLC0415

    def num(v: object) -> int | None:
        return int(v, 16) if isinstance(v, str) else None

    host = doc.get("host") or {}
    tiers = {
        Tier(name): TierState(Tier(name), TierStatus(st["state"]), str(st.get("reason", "")))
        for name, st in (host.get("tiers") or {}).items()
        if name in {t.value for t in Tier}
    }
    units = tuple(
        UnitReport(
            name=str(u.get("name")),
            address=num(u.get("address")),
            version=u.get("version"),
            cap=num((u.get("cap") or {}).get("raw")),
            ecap=num((u.get("ecap") or {}).get("raw")),
            mode=Mode(u.get("mode", "unknown")),
            translation_enabled=u.get("translation_enabled"),
            root_table=num(u.get("root_table")),
            devices=tuple(u.get("devices") or ()),
            context_tables=None if u.get("context_tables") is None else tuple(u["context_tables"]),
            context_tables_source=u.get("context_tables_source"),
        )
        for u in doc.get("units") or []
    )
    # The envelope does not say which UNKNOWN findings were required: the verdict does.
    required = doc.get("verdict") == Severity.UNKNOWN.value
    findings = tuple(
        Finding(
            code=str(f["code"]),
            severity=Severity(f["severity"]),
            unit=num(f.get("unit")),
            bdf=f.get("bdf"),
            message=str(f.get("message", "")),
            required=required,
            details=tuple(
                (str(k), str(v))
                for k, v in (f.get("details") or {}).items()
                if k in DETAIL_KEYS and v is not None
            ),
        )
        for f in doc.get("findings") or []
    )
    snap = Snapshot(
        root=root_label,
        kernel_release=host.get("kernel_release"),
        boot_id=host.get("boot_id"),
        cmdline=None,
        kexec_loaded=None,
        lockdown=None,
        tiers=tiers,
        units=(),
        pci_devices={},
        groups={},
        dmar=None,
        regset=None,
        translation=None,
    )
    text = format_status(Report(snap, Policy(), units, findings), root_label, colour, brief=brief)
    text += (
        f"(from the vtdlud daemon's evaluation at {doc.get('generated_at')}; "
        "`vtdlud status --live` evaluates directly)\n"
    )
    if reports:
        text += "\n" + "\n".join(format_reports(reports, colour, brief=brief)) + "\n"
    return text
