"""Store the ledger (``/var/lib/vtdlud/ledger.json``, :mod:`vtdlud.model.ledger`): written when
``vtdlud check`` passes, marked consumed by the first post-kexec check of the boot that follows.

Writes are atomic (temp file, fsync, rename, fsync dir) and serialized with an flock; a killed
writer leaves the old or the new ledger, never a torn one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from vtdlud.audit.report import Report, finding
from vtdlud.host.atomic import write_atomic
from vtdlud.host.files import check_regular
from vtdlud.host.ledger import LEDGER_NAME, read_ledger
from vtdlud.host.root import describe_oserror
from vtdlud.model.ledger import Ledger
from vtdlud.parse.ledger import ledger_to_json

LOCK_NAME = ".ledger.lock"
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


def mark_consumed(state_dir: Path, boot_id: str) -> Ledger | None:
    with _locked(state_dir):
        current = read_ledger(state_dir)
        if current is None or current.consumed:
            return current
        done = replace(current, consumed_by_boot_id=boot_id)
        _sweep_temps(state_dir)
        write_atomic(state_dir / LEDGER_NAME, ledger_to_json(done), mode=0o644)
        return done


def consume_ledger(report: Report, state_dir: Path) -> Report:
    """Mark the ledger consumed by this boot when the post-kexec ``report`` says it was this
    boot's to consume; a failure to do so is a VTD051 that does not block."""
    boot_id = report.snapshot.boot_id
    if not report.consume_ledger or boot_id is None:
        return report
    try:
        mark_consumed(state_dir, boot_id)
    except OSError as exc:
        msg = f"{state_dir / LEDGER_NAME}: cannot mark it consumed ({describe_oserror(exc)})"
        extra = finding("VTD051", msg, required=False)
        return dataclasses.replace(report, findings=(*report.findings, extra))
    return report
