"""The ledger file (``ledger.json``): its JSON, both ways (:mod:`vtdlud.model.ledger`)."""

from __future__ import annotations

import json
from typing import Any

from vtdlud.errors import ParseError
from vtdlud.model.ledger import LEDGER_FORMAT, Ledger, LedgerDevice, LedgerRecords, LedgerUnit
from vtdlud.parse.nesting import too_deep


def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def _unit_json(u: LedgerUnit) -> dict[str, Any]:
    out: dict[str, Any] = {
        "address": _hex(u.address),
        "root_table": _hex(u.root_table),
        "bits": list(u.bits),
        "devices": [
            {"bdf": d.bdf, "did": d.did, "pasid_table": _hex(d.pasid_table)} for d in u.devices
        ],
    }
    if u.hw_record is not None:
        out["hw_record"] = _hex(u.hw_record)
        out["record_pages"] = [_hex(p) for p in u.record_pages]
    return out


def ledger_to_json(ledger: Ledger) -> bytes:
    doc: dict[str, Any] = {
        "ledger_format": LEDGER_FORMAT,
        "created_at": ledger.created_at,
        "vtdlud_version": ledger.vtdlud_version,
        "kernel_release": ledger.kernel_release,
        "boot_id": ledger.boot_id,
        "liveupdate_count": ledger.liveupdate_count,
        "consumed_by_boot_id": ledger.consumed_by_boot_id,
        "units": [_unit_json(u) for u in ledger.units],
    }
    r = ledger.records
    if r is not None:
        doc["records"] = {
            "variant": r.variant,
            "flb": _hex(r.flb),
            "heads": {
                "hw": [_hex(p) for p in r.hw],
                "domain": [_hex(p) for p in r.domain],
                "device": [_hex(p) for p in r.device],
            },
        }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ParseError(f"{what}: {v!r} is not a number")
    if isinstance(v, int):
        return v
    try:
        return int(v, 16)
    except ValueError:
        raise ParseError(f"{what}: {v!r} is not a 0x hex number") from None


def _opt_str(v: Any, what: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ParseError(f"{what}: {v!r} is not a string")
    return v


def ledger_from_json(data: bytes) -> Ledger:
    """Parse a ledger; anything else (torn, foreign, other format) is a ParseError."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParseError(f"not JSON ({exc})") from None
    except RecursionError:
        raise too_deep(data.decode("utf-8", "replace")) from None
    if not isinstance(doc, dict) or doc.get("ledger_format") != LEDGER_FORMAT:
        fmt = doc.get("ledger_format") if isinstance(doc, dict) else None
        raise ParseError(f"ledger_format {fmt!r}, expected {LEDGER_FORMAT}")
    try:
        units = tuple(
            LedgerUnit(
                address=_int(u["address"], "address"),
                root_table=_int(u["root_table"], "root_table"),
                bits=tuple(_int(b, "bits") for b in u["bits"]),
                devices=tuple(
                    LedgerDevice(
                        bdf=str(d["bdf"]),
                        did=_int(d["did"], "did"),
                        pasid_table=None
                        if d.get("pasid_table") is None
                        else _int(d["pasid_table"], "pasid_table"),
                    )
                    for d in u["devices"]
                ),
                hw_record=None if u.get("hw_record") is None else _int(u["hw_record"], "hw_record"),
                record_pages=tuple(_int(p, "record_pages") for p in u.get("record_pages") or ()),
            )
            for u in doc["units"]
        )
        count = doc["liveupdate_count"]
        return Ledger(
            created_at=str(doc["created_at"]),
            vtdlud_version=str(doc["vtdlud_version"]),
            kernel_release=_opt_str(doc["kernel_release"], "kernel_release"),
            boot_id=_opt_str(doc["boot_id"], "boot_id"),
            liveupdate_count=None if count is None else _int(count, "liveupdate_count"),
            units=units,
            consumed_by_boot_id=_opt_str(doc.get("consumed_by_boot_id"), "consumed_by_boot_id"),
            records=_records(doc.get("records")),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ParseError(f"missing or malformed member {exc}") from None


def _records(r: Any) -> LedgerRecords | None:
    if r is None:
        return None
    heads = r["heads"]
    return LedgerRecords(
        variant=str(r["variant"]),
        flb=None if r.get("flb") is None else _int(r["flb"], "records.flb"),
        hw=tuple(_int(p, "records.heads.hw") for p in heads["hw"]),
        domain=tuple(_int(p, "records.heads.domain") for p in heads["domain"]),
        device=tuple(_int(p, "records.heads.device") for p in heads["device"]),
    )
