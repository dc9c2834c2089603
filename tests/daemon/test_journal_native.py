"""vtdlud.output.journal_native, the pure-Python journal sender a `pip install` without
systemd-python uses, against the binding (systemd.journal.sendv, libsystemd's
sd_journal_sendv) on a real systemd-journald: the same fields sent both ways are stored the
same, including values with newlines, non-ASCII text, an implicit SYSLOG_IDENTIFIER and an
entry too large for a datagram (sent through a sealed memfd)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import systemd.journal

from tests.daemon.conftest import Journald
from vtdlud.output import journal as events
from vtdlud.output.journal_native import encode, sendv

# Fields journald adds itself (trusted `_` fields, cursors, timestamps) and the test's own.
SKIP = ("_", "__")
# Over the 8 MiB send buffer both raise their socket to: sent through a memfd by both.
BIG = 9 * 1024 * 1024


def _user_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith(SKIP) and k != "SENDER"}


CASES = {
    "plain": [
        "MESSAGE=vtdlud test",
        "PRIORITY=6",
        "SYSLOG_IDENTIFIER=vtdlud",
        "VTDLUD_CODE=VTD011",
    ],
    "newline": ["MESSAGE=line one\nline two\n", "SYSLOG_IDENTIFIER=vtdlud", "X=a=b"],
    "unicode": ["MESSAGE=résumé ✓ 0xfed90000", "SYSLOG_IDENTIFIER=vtdlud"],
    "no_identifier": ["MESSAGE=who am I"],
    "big": ["MESSAGE=big", "SYSLOG_IDENTIFIER=vtdlud", "VTDLUD_BLOB=" + "x" * BIG],
}


@pytest.mark.parametrize("case", CASES)
def test_same_entry_as_the_binding(
    journald: Journald, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    memfds: list[str] = []
    real_memfd = os.memfd_create

    def counted(name: str, flags: int = os.MFD_CLOEXEC) -> int:
        memfds.append(name)
        return real_memfd(name, flags)

    monkeypatch.setattr(os, "memfd_create", counted)  # observed, not replaced
    tag = uuid.uuid4().hex
    fields = [*CASES[case], f"VTDLUD_TEST={tag}"]
    systemd.journal.sendv(*fields, "SENDER=binding")
    sendv(*fields, "SENDER=native")
    assert memfds == (["journal-data"] if case == "big" else [])
    entries = journald.wait_for(lambda e: len(e) >= 2, VTDLUD_TEST=tag)
    by = {e["SENDER"]: e for e in entries}
    assert set(by) == {"binding", "native"}, entries
    assert _user_fields(by["native"]) == _user_fields(by["binding"])
    assert by["native"]["_PID"] == by["binding"]["_PID"]
    if case == "big":  # journalctl shows fields over 4 KiB as null without --all
        out = subprocess.run(
            ["journalctl", "--all", "-o", "json", f"VTDLUD_TEST={tag}", "SENDER=native"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out)["VTDLUD_BLOB"] == "x" * BIG


def test_the_sink_uses_it_without_systemd_python(
    journald: Journald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # `import systemd.journal` fails
    events._sendv.cache_clear()
    try:
        assert events._sendv() is sendv
        tag = uuid.uuid4().hex
        sink = events.JournalSink(lambda ev, exc: None)
        assert sink.send(events.simple_event("fallback", events.STARTED, 6, VTDLUD_TEST=tag))
        [entry] = journald.wait_for(bool, VTDLUD_TEST=tag)
        assert entry["MESSAGE_ID"] == events.STARTED and entry["SYSLOG_IDENTIFIER"] == "vtdlud"
    finally:
        events._sendv.cache_clear()


def test_errors_as_libsystemd(tmp_path: Path) -> None:
    sendv("MESSAGE=nobody listens", path=str(tmp_path / "absent"))  # ENOENT: dropped silently
    for bad in ("NOEQUALS", "=value", "BAD\nNAME=x"):
        with pytest.raises(OSError) as exc:
            encode((bad,))
        assert exc.value.errno == errno.EINVAL
    assert encode(("A=1", "B=x\ny", "SYSLOG_IDENTIFIER=v")) == (
        b"A=1\nB\n" + (3).to_bytes(8, "little") + b"x\ny\nSYSLOG_IDENTIFIER=v\n"
    )
