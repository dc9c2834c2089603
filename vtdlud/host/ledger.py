"""Read the ledger the gate wrote (``/var/lib/vtdlud/ledger.json``, :mod:`vtdlud.model.ledger`):
the post-kexec check's second input, beside the snapshot.  Written by
:mod:`vtdlud.service.ledger`."""

from __future__ import annotations

from pathlib import Path

from vtdlud.errors import ParseError
from vtdlud.host.root import describe_oserror
from vtdlud.model.ledger import Ledger, LedgerInput
from vtdlud.parse.ledger import ledger_from_json

LEDGER_NAME = "ledger.json"


def read_ledger(state_dir: Path) -> Ledger | None:
    """The ledger, None when there is none; ParseError/OSError for one that cannot be used."""
    try:
        data = (state_dir / LEDGER_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return ledger_from_json(data)


def read_ledger_input(state_dir: Path) -> LedgerInput:
    """The ledger for the post-kexec check, or why it cannot be used."""
    path = str(state_dir / LEDGER_NAME)
    try:
        return LedgerInput(path, read_ledger(state_dir))
    except ParseError as exc:
        return LedgerInput(path, None, str(exc))
    except OSError as exc:
        return LedgerInput(path, None, describe_oserror(exc))
