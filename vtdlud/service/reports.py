"""The privileged oneshots' reports the daemon picks up from the runtime directory.

``gate.json`` (``vtdlud check --report /run/vtdlud/gate.json``, the pre-kexec gate, run as
root with CAP_SYS_RAWIO and CAP_SYS_PTRACE) and ``post-kexec.json`` (the post-kexec
verification at boot) are JSON envelopes (DESIGN.md §4).  They see what the sandboxed daemon
does not — physical memory through kcore, which VMM holds which VFIO device — and the daemon
turns them into journald events and metrics (source ``gate`` / ``post_kexec``).

A report is identified by its inode, size, mtime and ``generated_at``; the daemon acts only when
that changes.  A file that is not a version-1 envelope is "unreadable" with a reason; it never
stops the daemon.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from vtdlud.frozen import frozen
from vtdlud.host.files import check_regular, read_fd_capped
from vtdlud.host.limits import InputTooLarge
from vtdlud.parse.nesting import too_deep
from vtdlud.service.state import GATE_JSON, POST_KEXEC_JSON, report_age

SOURCES = {"gate": GATE_JSON, "post_kexec": POST_KEXEC_JSON}
MAX_REPORT_BYTES = 64 * 1024 * 1024
_VERDICTS = {"PASS", "NOTE", "WARN", "FAIL", "UNKNOWN"}

JSON = dict[str, Any]


@frozen
class ReportFile:
    source: str
    path: Path
    ident: tuple[int, int, int, str] | None  # (inode, size, mtime_ns, generated_at); None: absent
    doc: JSON | None
    error: str | None


def check_envelope(doc: object) -> str | None:
    """Why ``doc`` is not a version-1 envelope the daemon can use; None when it is."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    version = doc.get("json_format_version")
    if not (isinstance(version, list) and version[:1] == [1]):
        return f"json_format_version {version!r}, expected [1, x]"
    if doc.get("verdict") not in _VERDICTS:
        return f"verdict {doc.get('verdict')!r} is not one of {', '.join(sorted(_VERDICTS))}"
    findings = doc.get("findings")
    if not isinstance(findings, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("code"), str)
        and isinstance(f.get("severity"), str)
        for f in findings
    ):
        return "findings is not a list of {code, severity, ...} objects"
    if not isinstance(doc.get("units"), list):
        return "units is not a list"
    if not isinstance(doc.get("generated_at"), str):
        return "generated_at is missing"
    return None


def read_report(source: str, path: Path) -> ReportFile:
    try:
        # O_NONBLOCK and a regular file only: a FIFO here must not stall the daemon.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ReportFile(source, path, None, None, None)
    except OSError as exc:
        return ReportFile(source, path, (0, 0, 0, ""), None, f"cannot read: {exc.strerror or exc}")
    try:
        st = check_regular(fd, str(path))
        base = (st.st_ino, st.st_size, st.st_mtime_ns)
        data = read_fd_capped(fd, MAX_REPORT_BYTES, str(path))
    except InputTooLarge:
        return ReportFile(source, path, (*base, ""), None, f"larger than {MAX_REPORT_BYTES} bytes")
    except OSError as exc:
        return ReportFile(source, path, (0, 0, 0, ""), None, f"cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return ReportFile(source, path, (*base, ""), None, f"not JSON: {exc}")
    except RecursionError:
        err = too_deep(data.decode("utf-8", "replace"))
        return ReportFile(source, path, (*base, ""), None, f"not a vtdlud report: {err}")
    problem = check_envelope(doc)
    if problem is not None:
        return ReportFile(source, path, (*base, ""), None, f"not a vtdlud report: {problem}")
    return ReportFile(source, path, (*base, str(doc["generated_at"])), doc, None)


def _age(generated_at: object, now: float) -> float | None:
    age = report_age(generated_at, now)
    return None if age is None else round(age, 3)


def summary(rf: ReportFile, now: float) -> JSON:
    """One oneshot report as it is shown beside the daemon's own (the envelope's ``reports``):
    where it is, whether it could be used, its verdict, age, exit status, boot and findings."""
    doc = rf.doc or {}
    state = "absent" if rf.ident is None else ("unreadable" if rf.error else "ok")
    exit_status = (doc.get("vtdlud") or {}).get("exit_status")
    boot_id = (doc.get("host") or {}).get("boot_id")
    return {
        "path": str(rf.path),
        "state": state,
        "error": rf.error,
        "verdict": doc.get("verdict"),
        "generated_at": doc.get("generated_at"),
        "age_seconds": _age(doc.get("generated_at"), now),
        "exit_status": exit_status if isinstance(exit_status, int) else None,
        "boot_id": boot_id if isinstance(boot_id, str) else None,
        "findings": list(doc.get("findings") or []),
    }


def beside(runtime_dir: Path, now: float | None = None) -> JSON:
    """The latest gate and post-kexec reports in ``runtime_dir``, summarised (:func:`summary`)
    by source, for whatever serves the daemon's verdict: the daemon never reads kcore nor
    other processes' descriptors, these reports did (DESIGN.md §3)."""
    when = time.time() if now is None else now
    return {
        source: summary(read_report(source, runtime_dir / name), when)
        for source, name in SOURCES.items()
    }
