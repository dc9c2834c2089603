"""journald events: what changed between two envelopes, and the sink that survives journald
restarts (the real journald round trip is in test_run.py and test_bad_input.py)."""

from __future__ import annotations

from collections.abc import Iterable

from vtdlud.audit.catalog import CATALOG
from vtdlud.output import journal as events

F026 = {
    "code": "VTD026",
    "severity": "FAIL",
    "unit": None,
    "bdf": "0000:00:05.0",
    "message": "0000:00:05.0 cannot be preserved: bound to e1000e, not vfio-pci",
    "hint": CATALOG["VTD026"].hint,
    "message_id": CATALOG["VTD026"].message_id,
}
F070 = {
    "code": "VTD070",
    "severity": "WARN",
    "unit": "0xfed90000",
    "bdf": None,
    "message": "dmar0: translation disabled (GSTS.TES clear) with 3 device(s)",
    "hint": CATALOG["VTD070"].hint,
    "message_id": CATALOG["VTD070"].message_id,
}


def test_first_report_logs_every_finding() -> None:
    out = events.finding_events(None, [F026, F070], source="daemon", verdict="FAIL")
    assert [(e["MESSAGE_ID"], e["PRIORITY"], e["VTDLUD_STATE"]) for e in out] == [
        (CATALOG["VTD026"].message_id, "3", "new"),
        (CATALOG["VTD070"].message_id, "4", "new"),
    ]
    e026, e070 = out
    assert e026["VTDLUD_BDF"] == "0000:00:05.0" and e026["VTDLUD_UNIT"] == "none"
    assert e070["VTDLUD_UNIT"] == "0xfed90000" and e070["VTDLUD_BDF"] == "none"
    assert all(e["SYSLOG_IDENTIFIER"] == "vtdlud" for e in out)
    assert e026["VTDLUD_HINT"] == CATALOG["VTD026"].hint
    assert e026["VTDLUD_VERDICT"] == "FAIL" and e026["VTDLUD_SEVERITY"] == "FAIL"


def test_only_changes_are_logged() -> None:
    assert events.finding_events([F026, F070], [F070, F026], source="daemon", verdict="X") == []
    out = events.finding_events([F026, F070], [F070], source="daemon", verdict="WARN")
    assert [(e["MESSAGE_ID"], e["PRIORITY"], e["VTDLUD_CODE"]) for e in out] == [
        (events.FINDING_RESOLVED, "6", "VTD026")
    ]
    changed = dict(F070, message="dmar0: translation disabled (GSTS.TES clear) with 4 device(s)")
    out = events.finding_events([F070], [changed], source="gate", verdict="WARN")
    assert [(e["VTDLUD_STATE"], e["MESSAGE_ID"], e["PRIORITY"]) for e in out] == [
        ("changed", CATALOG["VTD070"].message_id, "4")
    ]
    assert out[0]["VTDLUD_PREVIOUS_MESSAGE"] == F070["message"]
    assert {e["VTDLUD_SOURCE"] for e in out} == {"gate"}
    # the same change again is not an event; a change in the details alone is
    assert events.finding_events([changed], [changed], source="gate", verdict="WARN") == []
    moved = dict(changed, details={"expected": "0x1000", "actual": "0x2000"})
    out = events.finding_events([changed], [moved], source="gate", verdict="WARN")
    assert [(e["VTDLUD_STATE"], e["VTDLUD_ACTUAL"]) for e in out] == [("changed", "0x2000")]


def test_verdict_event_only_on_change() -> None:
    assert events.verdict_event("PASS", "PASS", source="daemon", units=1, findings=0) is None
    ev = events.verdict_event("PASS", "FAIL", source="daemon", units=2, findings=1)
    assert ev is not None
    assert ev["MESSAGE_ID"] == events.VERDICT_CHANGED and ev["PRIORITY"] == "3"
    assert ev["VTDLUD_PREVIOUS_VERDICT"] == "PASS" and ev["VTDLUD_UNITS"] == "2"
    first = events.verdict_event(None, "PASS", source="daemon", units=1, findings=0)
    assert first is not None and first["PRIORITY"] == "6"


def test_not_applicable_verdict_event_says_what_it_is() -> None:
    ev = events.verdict_event(None, "NOT_APPLICABLE", source="daemon", units=0, findings=0)
    assert ev is not None and ev["PRIORITY"] == "6"  # info: nothing is wrong
    assert ev["MESSAGE"] == (
        "vtdlud daemon verdict NOT_APPLICABLE: no Intel VT-d on this host, nothing to audit"
    )
    assert ev["VTDLUD_VERDICT"] == "NOT_APPLICABLE"


def test_foreign_report_without_message_ids_uses_the_catalog() -> None:
    bare = {k: v for k, v in F026.items() if k != "message_id"}
    unknown = dict(bare, code="VTD999", message="from a newer vtdlud")
    out = events.finding_events(None, [bare, unknown], source="gate", verdict="FAIL")
    assert out[0]["MESSAGE_ID"] == CATALOG["VTD026"].message_id
    assert "MESSAGE_ID" not in out[1]


def test_report_events() -> None:
    old = {"verdict": "PASS", "findings": [], "units": [{}], "vtdlud": {"exit_status": 0}}
    new = {
        "verdict": "FAIL",
        "findings": [F026],
        "units": [{}],
        "vtdlud": {"exit_status": 1},
        "generated_at": "2026-01-01T00:00:00.000000Z",
    }
    out = events.report_events(old, new, source="gate", path="/run/vtdlud/gate.json")
    assert [e.get("MESSAGE_ID") for e in out] == [
        events.REPORT_PICKED_UP,
        events.VERDICT_CHANGED,
        CATALOG["VTD026"].message_id,
    ]
    assert out[0]["VTDLUD_EXIT_STATUS"] == "1"


class FlakyJournal:
    def __init__(self) -> None:
        self.up = True
        self.got: list[dict[str, str]] = []

    def __call__(self, fields: Iterable[str]) -> None:
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        self.got.append(dict(f.split("=", 1) for f in fields))


def test_sink_queues_while_journald_is_away_and_resends_in_order() -> None:
    journal = FlakyJournal()
    fallen: list[str] = []
    sink = events.JournalSink(lambda ev, exc: fallen.append(ev["MESSAGE"]), sender=journal)
    mk = [events.simple_event(f"m{i}", events.STARTED, events.INFO) for i in range(4)]
    assert sink.send(mk[0])
    journal.up = False
    assert not sink.send(mk[1]) and not sink.send(mk[2])
    assert fallen == ["m1", "m2"] and len(sink.backlog) == 2
    journal.up = True
    assert sink.send(mk[3])
    assert [g["MESSAGE"] for g in journal.got] == ["m0", "m1", "m2", "m3"]
    assert [g.get("VTDLUD_RESENT") for g in journal.got] == [None, "1", "1", None]
    assert not sink.backlog and sink.failed == 2


def test_sink_backlog_is_bounded() -> None:
    journal = FlakyJournal()
    journal.up = False
    sink = events.JournalSink(lambda ev, exc: None, backlog=3, sender=journal)
    for i in range(5):
        sink.send(events.simple_event(f"m{i}", events.STARTED, events.INFO))
    assert [e["MESSAGE"] for e in sink.backlog] == ["m2", "m3", "m4"] and sink.dropped == 2
    journal.up = True
    assert sink.flush() and [g["MESSAGE"] for g in journal.got] == ["m2", "m3", "m4"]
