"""Every catalog code through the real journald: the finding event as the daemon sends it, read
back with ``journalctl --sync`` + ``journalctl -o json MESSAGE_ID=…``; the compiled catalog's
text on those entries (``journalctl -x``); the "changed" entry; the stderr fallback line."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import Journald, clean_env
from tests.needs import missing, needs
from vtdlud.audit.catalog import CATALOG
from vtdlud.audit.report import finding
from vtdlud.model.severity import Severity
from vtdlud.output import journal as events
from vtdlud.output.envelope import finding_json
from vtdlud.service.daemon import Daemon
from vtdlud.service.options import DaemonOptions
from vtdlud.service.runtime import configure_logging

SHIPPED_CATALOG = Path(__file__).parents[2] / "systemd" / "vtdlud.catalog"
UNIT = 0xFED90000
PRIORITY = {Severity.FAIL: "3", Severity.WARN: "4", Severity.UNKNOWN: "4", Severity.NOTE: "5"}


def _tag() -> str:
    """A VTDLUD_SOURCE unique to one test run, to read back only this test's entries."""
    return f"test-{uuid.uuid4().hex[:12]}"


def _code_finding(i: int, code: str) -> dict[str, Any]:
    """A finding of ``code`` on its own device 0000:<i>:03.2, with every detail."""
    bdf = f"0000:{i:02x}:03.2"
    f = finding(
        code,
        f"{code} injected on {bdf}",
        unit=UNIT,
        bdf=bdf,
        details={"bit": 2 * i + 1, "expected": f"{0x1000 + i:#x}", "actual": f"{0x2000 + i:#x}"},
    )
    return finding_json(f)


def _send(events_: Iterable[events.Event]) -> events.JournalSink:
    def fallback(ev: events.Event, exc: OSError) -> None:
        raise AssertionError(f"journald refused an entry: {exc}")

    sink = events.JournalSink(fallback)  # the real sender, systemd.journal.sendv
    sink.send_all(events_)
    return sink


def test_every_code_reaches_journald_with_its_fields(journald: Journald) -> None:
    tag = _tag()
    codes = sorted(CATALOG)
    findings = [_code_finding(i, code) for i, code in enumerate(codes, start=1)]
    sent = events.finding_events(None, findings, source=tag, verdict="FAIL")
    assert len(sent) == len(codes)
    assert _send(sent).sent == len(codes)
    for i, code in enumerate(codes, start=1):
        entry = CATALOG[code]
        got = journald.wait_for(
            lambda es: len(es) >= 1, MESSAGE_ID=entry.message_id, VTDLUD_SOURCE=tag
        )
        assert len(got) == 1, code
        e = got[0]
        assert e["MESSAGE_ID"] == entry.message_id
        assert e["PRIORITY"] == PRIORITY[entry.severity], code
        assert e["SYSLOG_IDENTIFIER"] == "vtdlud"
        assert e["VTDLUD_CODE"] == code and e["VTDLUD_STATE"] == "new"
        assert e["VTDLUD_SEVERITY"] == entry.severity.value
        assert e["VTDLUD_UNIT_ADDRESS"] == e["VTDLUD_UNIT"] == "0xfed90000"
        assert e["VTDLUD_BDF"] == f"0000:{i:02x}:03.2"
        assert e["VTDLUD_BUS"] == f"{i:#04x}" and e["VTDLUD_DEVFN"] == "0x1a"  # 03.2
        assert e["VTDLUD_BIT"] == str(2 * i + 1)
        assert e["VTDLUD_EXPECTED"] == f"{0x1000 + i:#x}"
        assert e["VTDLUD_ACTUAL"] == f"{0x2000 + i:#x}"
        assert e["VTDLUD_VERDICT"] == "FAIL"
        assert e["MESSAGE"] == f"{code} {entry.severity.value} (0000:{i:02x}:03.2): " + (
            f"{code} injected on 0000:{i:02x}:03.2"
        )


def test_resolved_entries_and_fields_absent_without_details(journald: Journald) -> None:
    tag = _tag()
    host_wide = finding_json(finding("VTD050", "kcore is not readable", severity=Severity.UNKNOWN))
    assert "details" not in host_wide
    _send(events.finding_events(None, [host_wide], source=tag, verdict="UNKNOWN"))
    _send(events.finding_events([host_wide], [], source=tag, verdict="PASS"))
    new = journald.wait_for(bool, MESSAGE_ID=CATALOG["VTD050"].message_id, VTDLUD_SOURCE=tag)
    assert [(e["PRIORITY"], e["VTDLUD_UNIT_ADDRESS"], e["VTDLUD_BDF"]) for e in new] == [
        ("4", "none", "none")
    ]
    assert not {"VTDLUD_BUS", "VTDLUD_DEVFN", "VTDLUD_BIT", "VTDLUD_EXPECTED"} & new[0].keys()
    gone = journald.wait_for(bool, MESSAGE_ID=events.FINDING_RESOLVED, VTDLUD_SOURCE=tag)
    assert [(e["PRIORITY"], e["VTDLUD_CODE"], e["VTDLUD_STATE"]) for e in gone] == [
        ("6", "VTD050", "resolved")
    ]


def test_changed_finding_is_logged_once(journald: Journald) -> None:
    tag = _tag()
    mid = CATALOG["VTD062"].message_id

    def did(actual: int) -> dict[str, Any]:
        return finding_json(
            finding(
                "VTD062",
                f"dmar0: 0000:00:05.0: live DID {actual}, the ledger's DID 7",
                unit=UNIT,
                bdf="0000:00:05.0",
                details={"expected": "7", "actual": str(actual)},
            )
        )

    first, second = did(9), did(11)
    reports = [[first], [first], [second], [second], [second]]
    previous: list[dict[str, Any]] | None = None
    for findings in reports:  # five evaluations: new, same, changed, same, same
        _send(events.finding_events(previous, findings, source=tag, verdict="FAIL"))
        previous = findings
    got = journald.wait_for(lambda es: len(es) >= 2, MESSAGE_ID=mid, VTDLUD_SOURCE=tag)
    assert [(e["VTDLUD_STATE"], e["VTDLUD_ACTUAL"], e["PRIORITY"]) for e in got] == [
        ("new", "9", "3"),
        ("changed", "11", "3"),
    ]
    assert got[1]["VTDLUD_PREVIOUS_MESSAGE"] == first["message"]
    assert got[1]["VTDLUD_EXPECTED"] == "7" and got[1]["VTDLUD_DEVFN"] == "0x28"
    assert journald.read(MESSAGE_ID=events.FINDING_RESOLVED, VTDLUD_SOURCE=tag) == []


HOST_CATALOG_DIR = Path("/var/lib/systemd/catalog")


@needs(shutil.which("unshare") is not None, "needs unshare (util-linux)")
def test_journalctl_x_shows_the_catalog_text(journald: Journald, tmp_path: Path) -> None:
    """The catalog compiled by ``journalctl --root=DIR --update-catalog`` (the host's
    /usr/lib/systemd/catalog is left alone), bind-mounted over /var/lib/systemd/catalog in a
    private mount namespace: ``journalctl -x`` on the running journal explains the entries,
    with their fields substituted."""
    tag = _tag()
    picked = ["VTD011", "VTD025", "VTD062", "VTD070"]
    codes = sorted(CATALOG)
    findings = [_code_finding(codes.index(c) + 1, c) for c in picked]
    _send(events.finding_events(None, findings, source=tag, verdict="FAIL"))
    journald.wait_for(lambda es: len(es) >= len(picked), VTDLUD_SOURCE=tag)

    cat = tmp_path / "usr/lib/systemd/catalog"
    cat.mkdir(parents=True)
    shutil.copy(SHIPPED_CATALOG, cat / "vtdlud.catalog")
    env = clean_env()
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, env=env)
    compiled = tmp_path / "var/lib/systemd/catalog"
    assert (compiled / "database").is_file()
    HOST_CATALOG_DIR.mkdir(parents=True, exist_ok=True)
    for code in picked:
        i = codes.index(code) + 1
        mid = CATALOG[code].message_id
        script = f"mount --bind {compiled} {HOST_CATALOG_DIR} && exec journalctl -x --no-pager "
        script += f"VTDLUD_SOURCE={tag} MESSAGE_ID={mid}"
        run = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if run.returncode != 0 and "mount" in run.stderr + run.stdout and code == picked[0]:
            missing(f"no private mount namespace here: {run.stderr.strip()}")
        assert run.returncode == 0, run.stderr
        out = run.stdout
        title = CATALOG[code].title
        assert f"Subject: vtdlud {code} ({CATALOG[code].severity.value}): {title}" in out, out
        where = f"vtdlud reported {code} on IOMMU unit 0xfed90000 (device 0000:{i:02x}:03.2):"
        assert where in out, out
        assert CATALOG[code].hint.splitlines()[0] in out


def test_stderr_fallback_then_resent(
    journald: Journald, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """journald refusing entries (a stale socket: ECONNREFUSED): the daemon logs each one as a
    single structlog JSON line on stderr, keeps it, and re-sends it once journald is back."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    tag = _tag()
    log = configure_logging("info")
    daemon = Daemon(DaemonOptions(argv=[], metrics=None), log)
    up = False

    def stale_then_real(fields: Iterable[str]) -> None:
        if not up:
            raise ConnectionRefusedError(111, "Connection refused")
        events._default_send(fields)

    daemon.sink = events.JournalSink(daemon._journal_fallback, sender=stale_then_real)
    f = _code_finding(5, "VTD013")
    capsys.readouterr()
    (ev,) = events.finding_events(None, [f], source=tag, verdict="FAIL")
    assert not daemon.sink.send(ev)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = json.loads(lines[0])
    assert line["level"] == "warning"
    assert line["event"] == "journald unavailable, entry queued for re-sending"
    assert line["error"].startswith("ConnectionRefusedError")
    assert line["journal"]["VTDLUD_CODE"] == "VTD013"
    assert line["journal"]["VTDLUD_BIT"] == "11" and line["journal"]["PRIORITY"] == "3"
    assert journald.read(VTDLUD_SOURCE=tag) == []
    up = True
    assert daemon.sink.flush() and not daemon.sink.backlog
    got = journald.wait_for(bool, MESSAGE_ID=CATALOG["VTD013"].message_id, VTDLUD_SOURCE=tag)
    assert [(e["VTDLUD_CODE"], e["VTDLUD_RESENT"], e["VTDLUD_BIT"]) for e in got] == [
        ("VTD013", "1", "11")
    ]
