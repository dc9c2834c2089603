"""Read the ledger the gate wrote (``/var/lib/vtdlud/ledger.json``, :mod:`vtdlud.model.ledger`):
the post-kexec check's second input, beside the snapshot.  Written by
:mod:`vtdlud.service.ledger`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtdlud.errors import ParseError
from vtdlud.host.files import read_regular
from vtdlud.host.limits import JSON_CAP
from vtdlud.host.root import describe_oserror
from vtdlud.model.ledger import Ledger, LedgerInput
from vtdlud.model.relocate import RecordAddresses
from vtdlud.parse.ledger import ledger_from_json

if TYPE_CHECKING:  # pathlib is imported by the callers that make paths
    from pathlib import Path

LEDGER_NAME = "ledger.json"


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


def ledger_record_hints(state_dir: Path) -> RecordAddresses | None:
    """The record addresses of the ledger in ``state_dir``, for a snapshot after a live update;
    None when there is no usable ledger (the post-kexec check itself says why, VTD065/VTD051)."""
    ledger = read_ledger_input(state_dir).ledger
    return ledger.record_addresses() if ledger is not None else None


def read_ledger_input(state_dir: Path) -> LedgerInput:
    """The ledger for the post-kexec check, or why it cannot be used."""
    path = str(state_dir / LEDGER_NAME)
    try:
        return LedgerInput(path, read_ledger(state_dir))
    except ParseError as exc:
        return LedgerInput(path, None, str(exc))
    except OSError as exc:
        return LedgerInput(path, None, describe_oserror(exc))
