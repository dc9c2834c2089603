"""The versioned ``--json`` envelope of status, check and collect (DESIGN.md §4).

Addresses and raw registers are lowercase ``0x`` hex strings; bits are sorted lists of bit
indices; units are sorted by numeric address and devices by BDF.
"""

from __future__ import annotations

import json
import time
from json.encoder import encode_basestring_ascii
from typing import Any, cast

from vtdlud import __version__
from vtdlud.audit.report import Finding, Report, UnitReport, Wanted
from vtdlud.model.registers import decode_cap, decode_ecap
from vtdlud.model.snapshot import Snapshot
from vtdlud.model.tiers import Tier

# 1.1 added ``vtdlud.messages``, the envelope on error exits and the NOT_APPLICABLE verdict
# (fields and values only added: a 1.0 reader reads 1.1).
JSON_FORMAT_VERSION = (1, 1)
# smartctl's message severities.
INFORMATION, WARNING, ERROR = "information", "warning", "error"

JSON = dict[str, Any]


def hex_or_none(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def now_rfc3339() -> str:
    """UTC now with microseconds, "2026-12-05T06:40:00.123456Z" (time, not datetime: the
    datetime module is 1.2 ms of every cold start)."""
    seconds, ns = divmod(time.time_ns(), 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{ns // 1000:06d}Z"


def unit_json(u: UnitReport) -> JSON:
    return {
        "name": u.name,
        "address": hex_or_none(u.address),
        "version": u.version,
        "cap": {
            "raw": hex_or_none(u.cap),
            "fields": decode_cap(u.cap) if u.cap is not None else {},
        },
        "ecap": {
            "raw": hex_or_none(u.ecap),
            "fields": decode_ecap(u.ecap) if u.ecap is not None else {},
        },
        "mode": u.mode.value,
        "translation_enabled": u.translation_enabled,
        "root_table": hex_or_none(u.root_table),
        "devices": list(u.devices),
        "context_tables": None if u.context_tables is None else list(u.context_tables),
        "context_tables_source": u.context_tables_source,
        "preserved": preserved_json(u),
    }


def preserved_json(u: UnitReport) -> JSON | None:
    p = u.preserved
    if p is None:
        return None
    return {
        "ref_count": p.record.hdr.ref_count,
        "restored": bool(p.record.intel.restored),
        "root_table": f"{p.record.intel.root_table:#x}",
        "bitmap": list(p.bitmap),
        "required_bitmap": None if u.required_bitmap is None else list(u.required_bitmap),
        "located_by": p.located_by,
    }


def wanted_json(w: Wanted, report: Report, unit_of: dict[str, int | None]) -> JSON:
    """One device to preserve; ``unit_of``: the first unit listing each device (:func:`_unit_of`)."""
    dev = report.snapshot.pci_devices.get(w.bdf)
    unit = unit_of.get(w.bdf)
    return {
        "bdf": w.bdf,
        "unit": hex_or_none(unit),
        "driver": dev.driver if dev is not None else None,
        "by_policy": w.by_policy,
        "holders": [
            {
                "pid": h.pid,
                "name": h.name,
                "cmdline": list(h.cmdline),
                "vfio_cdevs": list(h.vfio_cdevs),
                "vfio_groups": list(h.vfio_groups),
                "iommufd": h.iommufd,
            }
            for h in w.holders
        ],
    }


def _unit_of(report: Report) -> dict[str, int | None]:
    """The address of the first unit (in report order) whose devices list each BDF."""
    out: dict[str, int | None] = {}
    for u in report.units:
        for bdf in u.devices:
            out.setdefault(bdf, u.address)
    return out


def finding_json(f: Finding) -> JSON:
    out: JSON = {
        "code": f.code,
        "severity": f.severity.value,
        "unit": hex_or_none(f.unit),
        "bdf": f.bdf,
        "message": f.message,
        "hint": f.hint,
        "message_id": f.message_id,
    }
    if f.details:  # optional: bus/devfn/bit/expected/actual, only the ones that apply
        out["details"] = dict(f.details)
    return out


def host_json(snapshot: Snapshot, root_label: str) -> JSON:
    return {
        "root": root_label,
        "kernel_release": snapshot.kernel_release,
        "boot_id": snapshot.boot_id,
        "tiers": {
            t.value: {
                "state": snapshot.tiers[t].status.value,
                "reason": snapshot.tiers[t].reason,
            }
            for t in Tier
            if t in snapshot.tiers
        },
    }


def _handover(snapshot: Snapshot) -> JSON | None:
    if snapshot.kho is None:
        return None
    from vtdlud.output.handover import handover_json  # noqa: PLC0415 - FDT parsing, lazily

    return handover_json(snapshot)


def message(severity: str, text: str, hint: str | None = None) -> JSON:
    """One entry of ``vtdlud.messages``: what smartctl's ``--json`` calls a message."""
    out: JSON = {"severity": severity, "text": text}
    if hint:
        out["hint"] = hint
    return out


def _about(argv: list[str], exit_status: int, messages: list[JSON]) -> JSON:
    """The envelope's first two members: its format version and what vtdlud says of the run."""
    return {
        "json_format_version": list(JSON_FORMAT_VERSION),
        "vtdlud": {
            "version": __version__,
            "argv": argv,
            "exit_status": exit_status,
            "messages": messages,
        },
    }


def report_messages(report: Report) -> list[JSON]:
    """The messages of a report that was produced: on a host without Intel VT-d, why."""
    if report.verdict.value == "NOT_APPLICABLE":
        return [message(INFORMATION, f"no Intel VT-d on this host: {report.not_applicable}")]
    return []


def error_envelope(
    *,
    argv: list[str],
    exit_status: int,
    root_label: str,
    text: str,
    hint: str | None = None,
) -> JSON:
    """The envelope of a command that could not produce a report (exit 2 or 4): every field a
    1.0 reader expects, empty or unknown (no units, no findings, every tier unavailable, the
    verdict UNKNOWN), and the error in ``vtdlud.messages``."""
    return {
        **_about(argv, exit_status, [message(ERROR, text, hint)]),
        "source": "live",
        "generated_at": now_rfc3339(),
        "host": {
            "root": root_label,
            "kernel_release": None,
            "boot_id": None,
            "tiers": {
                t.value: {"state": "unavailable", "reason": "not read: the command failed"}
                for t in Tier
            },
        },
        "units": [],
        "findings": [],
        "verdict": "UNKNOWN",
    }


def envelope(
    report: Report,
    *,
    argv: list[str],
    exit_status: int,
    root_label: str,
    source: str = "live",
    generated_at: str | None = None,
) -> JSON:
    def order(f: Finding) -> tuple[int, int, str, str]:
        return (-f.severity.rank, f.unit if f.unit is not None else -1, f.code, f.bdf or "")

    unit_of = _unit_of(report) if report.wanted else {}

    return {
        **_about(argv, exit_status, report_messages(report)),
        "source": source,
        "generated_at": generated_at or now_rfc3339(),
        "host": host_json(report.snapshot, root_label),
        "units": [unit_json(u) for u in report.units],
        "findings": [finding_json(f) for f in sorted(report.findings, key=order)],
        "preserve": [wanted_json(w, report, unit_of) for w in report.wanted],
        "handover": _handover(report.snapshot),
        "verdict": report.verdict.value,
    }


def dumps(doc: JSON) -> str:
    """``json.dumps(doc, indent=2) + "\n"``, byte for byte, about three times faster on a large
    host: containers are joined rather than streamed piecewise, and a list of strings met again
    at the same depth (every device a VMM holds repeats its holder's cdev list) is encoded once.
    Anything the encoder does not handle itself (another type, a reference loop) goes to
    ``json.dumps``, which gives the same text or raises the same error."""
    try:
        return _Indented().encode(doc, "") + "\n"
    except (_Unsupported, RecursionError):
        return json.dumps(doc, indent=2) + "\n"


class _Unsupported(Exception):
    """A value ``json.dumps`` would encode with ``default`` (or refuse)."""


_INF = float("inf")


def _float(value: float) -> str:
    """As ``json.encoder`` writes a float (allow_nan=True)."""
    if value != value:  # noqa: PLR0124 - NaN
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == -_INF:
        return "-Infinity"
    return float.__repr__(value)


def _key(key: object) -> str:
    """A dict key as ``json.dumps`` converts it (strings, floats, booleans, None, ints)."""
    if isinstance(key, str):
        return encode_basestring_ascii(key)
    if isinstance(key, float):
        return encode_basestring_ascii(_float(key))
    if key is True or key is False or key is None:
        return f'"{json.dumps(key)}"'
    if isinstance(key, int):
        return encode_basestring_ascii(int.__repr__(key))
    raise _Unsupported


class _Indented:
    """``json.dumps(indent=2)``'s layout: ``,`` and ``: `` separators, ASCII escapes, a newline
    and two more spaces per level, ``[]``/``{}`` for empty containers."""

    def __init__(self) -> None:
        self.lists: dict[tuple[str, ...], str] = {}  # (indent, *strings) -> text

    def encode(self, o: object, pad: str) -> str:
        if isinstance(o, str):
            return encode_basestring_ascii(o)
        if o is None:
            return "null"
        if o is True:
            return "true"
        if o is False:
            return "false"
        if isinstance(o, int):
            return int.__repr__(o)
        if isinstance(o, float):
            return _float(o)
        if isinstance(o, list | tuple):
            return self.array(o, pad)
        if isinstance(o, dict):
            if not o:
                return "{}"
            inner = pad + "  "
            items = [_key(k) + ": " + self.encode(v, inner) for k, v in o.items()]
            return "{\n" + inner + (",\n" + inner).join(items) + "\n" + pad + "}"
        raise _Unsupported

    def array(self, o: list[object] | tuple[object, ...], pad: str) -> str:
        if not o:
            return "[]"
        inner = pad + "  "
        if all(type(v) is str for v in o):
            key = cast("tuple[str, ...]", (pad, *o))
            text = self.lists.get(key)
            if text is None:
                body = (",\n" + inner).join(map(encode_basestring_ascii, key[1:]))
                text = self.lists[key] = "[\n" + inner + body + "\n" + pad + "]"
            return text
        items = [self.encode(v, inner) for v in o]
        return "[\n" + inner + (",\n" + inner).join(items) + "\n" + pad + "]"
