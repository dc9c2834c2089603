"""The ledger (``/var/lib/vtdlud/ledger.json``): what the gate promised would survive the kexec.

Written when ``vtdlud check`` passes: per unit the register base, the root table, the bitmap
bits and the preserved devices with their DIDs, plus the kernel release, boot id and live-update
count.  The first evaluation after the kexec compares the new kernel with it (VTD06x) and marks
it consumed.

Where the records were (when the gate found them by signature): ``records`` holds the layout
they were decoded with, the ``iommu_flb_ser`` address and the first page of each chain, and each
unit its ``hw_record`` slot and ``record_pages`` (the array pages holding its hw record, its
device records and their domain records).  After the kexec, ``vtdlud check --post-kexec`` looks
for the incoming records at these physical addresses (:mod:`vtdlud.model.relocate`): on Linux
7.2 the incoming LUO chain is gone by the time userspace runs.  These members are optional: a
ledger without them (an older vtdlud's) still loads, and then only the incoming LUO chain can
locate the records.  Writes are atomic (temp file, fsync, rename, fsync dir) and serialized with an
flock; a killed writer leaves the old or the new ledger, never a torn one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtdlud import __version__
from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.host.atomic import write_atomic
from vtdlud.host.files import check_regular, read_regular
from vtdlud.host.limits import JSON_CAP
from vtdlud.model.records import ChainHeads
from vtdlud.model.relocate import RecordAddresses, UnitRecordAddress, record_addresses
from vtdlud.parse.luo import LuoBlob
from vtdlud.parse.nesting import too_deep

if TYPE_CHECKING:
    from vtdlud.audit.report import Report
    from vtdlud.model.snapshot import Snapshot

LEDGER_FORMAT = 1
LEDGER_NAME = "ledger.json"
LOCK_NAME = ".ledger.lock"
DEFAULT_STATE_DIR = Path("/var/lib/vtdlud")


@frozen
class LedgerDevice:
    bdf: str
    did: int
    pasid_table: int | None = None  # scalable mode: the PASID directory


@frozen
class LedgerUnit:
    address: int
    root_table: int
    bits: tuple[int, ...]
    devices: tuple[LedgerDevice, ...]
    hw_record: int | None = None  # physical address of its iommu_hw_ser slot
    record_pages: tuple[int, ...] = ()  # the array pages its records are in


@frozen
class LedgerRecords:
    """Where the gate found the records, beyond each unit's own addresses."""

    variant: str  # the ABI layout's name (vtdlud.model.abi)
    flb: int | None  # iommu_flb_ser
    hw: tuple[int, ...]  # first page of each chain walked
    domain: tuple[int, ...]
    device: tuple[int, ...]


@frozen
class Ledger:
    created_at: str
    vtdlud_version: str
    kernel_release: str | None
    boot_id: str | None
    liveupdate_count: int | None
    units: tuple[LedgerUnit, ...]
    consumed_by_boot_id: str | None = None  # set by the first evaluation after the kexec
    records: LedgerRecords | None = None

    @property
    def consumed(self) -> bool:
        return self.consumed_by_boot_id is not None

    def record_addresses(self) -> RecordAddresses | None:
        """Where to look for the records after the kexec (None: the ledger does not say)."""
        r = self.records
        units = tuple(
            UnitRecordAddress(u.address, u.hw_record, u.record_pages)
            for u in self.units
            if u.hw_record is not None
        )
        if r is None or not units:
            return None
        return RecordAddresses(r.variant, r.flb, ChainHeads(r.hw, r.domain, r.device), units)


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


def liveupdate_count(snapshot: Snapshot) -> int | None:
    """The LUO live-update number this kernel reports (outgoing blob first, else incoming)."""
    kho = snapshot.kho
    for side in (kho.outgoing, kho.incoming) if kho is not None else ():
        if (
            side is not None
            and isinstance(side.luo, LuoBlob)
            and side.luo.liveupdate_num is not None
        ):
            return side.luo.liveupdate_num
    return None


def ledger_from_report(report: Report) -> Ledger:
    """What the passing gate promises: the preserved units as the audit saw them, and where
    their records are when the gate found this kernel's outgoing records (by signature)."""
    snap = report.snapshot
    units = [u.ledger for u in report.units if u.ledger is not None]
    state = snap.preserved.state if snap.preserved is not None else None
    found = (
        record_addresses(state, (u.address for u in units))
        if state is not None and state.located_by == "signature"
        else None
    )
    records = None
    if found is not None:
        h = found.heads
        records = LedgerRecords(found.variant, found.flb_phys, h.hw, h.domain, h.device)
        at = {a.unit: a for a in found.units}
        units = [
            replace(u, hw_record=at[u.address].hw_record, record_pages=at[u.address].pages)
            if u.address in at
            else u
            for u in units
        ]
    return Ledger(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        vtdlud_version=__version__,
        kernel_release=snap.kernel_release,
        boot_id=snap.boot_id,
        liveupdate_count=liveupdate_count(snap),
        units=tuple(units),
        records=records,
    )


def ledger_record_hints(state_dir: Path) -> RecordAddresses | None:
    """The record addresses of the ledger in ``state_dir``, for the snapshot of the post-kexec
    check; None when there is no usable ledger (the check itself says why, VTD065/VTD051)."""
    try:
        ledger = read_ledger(state_dir)
    except (ParseError, OSError):
        return None
    return ledger.record_addresses() if ledger is not None else None


_O_LOCK = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    # O_NONBLOCK: a FIFO in its place must not block the gate (opening it fails with ENXIO,
    # or check_regular refuses it).
    lock = os.open(state_dir / LOCK_NAME, _O_LOCK, 0o600)
    try:
        check_regular(lock, str(state_dir / LOCK_NAME))
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        os.close(lock)


def _sweep_temps(state_dir: Path) -> None:
    """Remove temp files a killed writer left behind (the lock is held: no writer is live)."""
    for stale in state_dir.glob(f".{LEDGER_NAME}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_ledger(state_dir: Path, ledger: Ledger) -> None:
    with _locked(state_dir):
        _sweep_temps(state_dir)
        write_atomic(state_dir / LEDGER_NAME, ledger_to_json(ledger), mode=0o644)


def read_ledger(state_dir: Path) -> Ledger | None:
    """The ledger, None when there is none; ParseError/OSError for one that cannot be used."""
    try:
        data = read_regular(state_dir / LEDGER_NAME, JSON_CAP)
    except FileNotFoundError:
        return None
    return ledger_from_json(data)


def ledger_bytes(state_dir: Path) -> bytes | None:
    """The ledger file as it is, for ``collect``; None when there is none or it cannot be read."""
    try:
        return (state_dir / LEDGER_NAME).read_bytes()
    except OSError:
        return None


def mark_consumed(state_dir: Path, boot_id: str) -> Ledger | None:
    with _locked(state_dir):
        current = read_ledger(state_dir)
        if current is None or current.consumed:
            return current
        done = replace(current, consumed_by_boot_id=boot_id)
        _sweep_temps(state_dir)
        write_atomic(state_dir / LEDGER_NAME, ledger_to_json(done), mode=0o644)
        return done
