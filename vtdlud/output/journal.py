"""journald events of the daemon: what changed between two reports, as structured entries.

Events are computed from JSON envelopes (DESIGN.md §4), so the daemon's own evaluation and the
reports of the privileged oneshots it picks up (``/run/vtdlud/gate.json``, the post-kexec
report) go through one path.  Nothing is logged per evaluation; an entry is sent when

- the daemon starts (:data:`STARTED`) and stops (:data:`STOPPED`);
- a finding appears: one entry per finding, ``MESSAGE_ID`` = the finding code's fixed id from
  :mod:`vtdlud.audit.catalog` (so ``journalctl -x`` shows the catalog text), ``PRIORITY`` by
  severity (FAIL 3 err, WARN and UNKNOWN 4 warning, NOTE 5 notice);
- a finding clears: :data:`FINDING_RESOLVED`, PRIORITY 6 info, same ``VTDLUD_CODE``;
- the verdict changes (:data:`VERDICT_CHANGED`, PRIORITY of the new verdict; NOT_APPLICABLE, a
  host without Intel VT-d, is PRIORITY 6 info and says so);
- the configuration is reloaded or rejected, and a oneshot's report is picked up or unreadable.

A finding is identified by (code, unit, bdf, context-table bit): when its severity, message or
details differ from the previous report it gets a "changed" entry (its code's MESSAGE_ID and
PRIORITY, ``VTDLUD_STATE=changed``, ``VTDLUD_PREVIOUS_MESSAGE``), once.

Every entry carries ``SYSLOG_IDENTIFIER=vtdlud`` and ``VTDLUD_SOURCE`` (``daemon``, ``gate`` or
``post_kexec``); finding entries carry ``VTDLUD_CODE``, ``VTDLUD_SEVERITY``,
``VTDLUD_UNIT_ADDRESS`` (register base address, ``none`` for host-wide findings; also as
``VTDLUD_UNIT``, its earlier name), ``VTDLUD_BDF`` (``none`` when no device applies),
``VTDLUD_STATE`` (``new``, ``changed`` or ``resolved``), ``VTDLUD_VERDICT`` and, when the finding
has them, ``VTDLUD_BUS``, ``VTDLUD_DEVFN``, ``VTDLUD_BIT``, ``VTDLUD_EXPECTED`` and
``VTDLUD_ACTUAL`` (the JSON finding's ``details``); the catalog text uses ``@VTDLUD_UNIT@``,
``@VTDLUD_BDF@`` and ``@MESSAGE@``.

:class:`JournalSink` sends through ``systemd.journal.sendv`` (imported on first use: the CLI
never pays for it), or without systemd-python through :mod:`vtdlud.output.journal_native`.
journald that is restarting leaves a stale socket behind and ``sendv`` raises
``ConnectionRefusedError``: the entry is handed to a fallback (the daemon logs it to stderr),
kept in a bounded backlog and re-sent, oldest first, before the next entry once journald
accepts entries again.  With no journald socket at all libsystemd drops entries
silently; nothing can be done about that from here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

SYSLOG_IDENTIFIER = "vtdlud"

# MESSAGE_IDs of the daemon's own events (the findings use the catalog's).  Fixed forever, like
# the catalog's: operators match on them.
STARTED = "189e9ef90ff540b08f8eef8bb8f567fa"
VERDICT_CHANGED = "9535beb8e82f4ca999a8b3d4178038f3"
FINDING_RESOLVED = "0a97f456d0fa4bc6bdf02aa6b8adf36a"
CONFIG_RELOADED = "031e711ae9894a03a2d26ff62021c833"
CONFIG_REJECTED = "b394ec50701a4d0194d7702176e55d2d"
REPORT_PICKED_UP = "7b0442a422a7458b9101ed55e66cbcfc"
REPORT_UNREADABLE = "85343c7396014e10addf2934e7a3f3b9"
STOPPED = "16ad83ea22f14c37b8cb54793e25a3e9"

# syslog priorities (sd-journal PRIORITY=)
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6
PRIORITY = {
    "FAIL": ERR,
    "WARN": WARNING,
    "UNKNOWN": WARNING,
    "NOTE": NOTICE,
    "PASS": INFO,
    "NOT_APPLICABLE": INFO,
}

JSON = dict[str, Any]
Event = dict[str, str]


def priority_of(severity: str) -> int:
    return PRIORITY.get(severity, WARNING)


@dataclass(frozen=True, order=True)
class FindingKey:
    """What a finding is about: the same key in two reports is the same finding, whose
    severity, message or details may have changed."""

    code: str
    unit: str | None
    bdf: str | None
    bit: str | None

    @classmethod
    def of(cls, f: Mapping[str, Any]) -> FindingKey:
        unit, bdf = f.get("unit"), f.get("bdf")
        bit = _details(f).get("bit")
        return cls(
            code=str(f.get("code", "")),
            unit=None if unit is None else str(unit),
            bdf=None if bdf is None else str(bdf),
            bit=bit,
        )


def _details(f: Mapping[str, Any]) -> dict[str, str]:
    """The finding's ``details`` (bus/devfn derived from the BDF when a foreign report has
    none)."""
    from vtdlud.audit.report import DETAIL_KEYS, bdf_details  # noqa: PLC0415

    raw = f.get("details")
    d = bdf_details(f.get("bdf")) if f.get("bdf") is not None else {}
    if isinstance(raw, Mapping):
        d.update({str(k): str(v) for k, v in raw.items() if k in DETAIL_KEYS and v is not None})
    return d


def _content(f: Mapping[str, Any]) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return (
        str(f.get("severity", "")),
        str(f.get("message", "")),
        tuple(sorted(_details(f).items())),
    )


def _event(message: str, message_id: str, priority: int, source: str, **fields: object) -> Event:
    ev = {"MESSAGE": message}
    if message_id:
        ev["MESSAGE_ID"] = message_id
    ev.update(PRIORITY=str(priority), SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, VTDLUD_SOURCE=source)
    for k, v in fields.items():
        if v is not None:
            ev[k] = str(v)
    return ev


def _where(k: FindingKey) -> str:
    return k.bdf or k.unit or "host"


def _finding_fields(k: FindingKey, f: Mapping[str, Any], state: str, verdict: str) -> JSON:
    d = _details(f)
    unit = k.unit or "none"
    return {
        "VTDLUD_CODE": k.code,
        "VTDLUD_SEVERITY": str(f.get("severity", "")),
        "VTDLUD_UNIT_ADDRESS": unit,
        "VTDLUD_UNIT": unit,  # the field's name before VTDLUD_UNIT_ADDRESS; kept for matches
        "VTDLUD_BDF": k.bdf or "none",
        "VTDLUD_BUS": d.get("bus"),
        "VTDLUD_DEVFN": d.get("devfn"),
        "VTDLUD_BIT": d.get("bit"),
        "VTDLUD_EXPECTED": d.get("expected"),
        "VTDLUD_ACTUAL": d.get("actual"),
        "VTDLUD_STATE": state,
        "VTDLUD_VERDICT": verdict,
    }


def _message_id(code: str, f: Mapping[str, Any]) -> str:
    message_id = str(f.get("message_id") or "")
    if not _is_message_id(message_id):
        from vtdlud.audit.catalog import CATALOG  # noqa: PLC0415 - only for foreign reports

        entry = CATALOG.get(code)
        message_id = entry.message_id if entry is not None else ""  # a code we do not know
    return message_id


def _pair(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> tuple[
    list[tuple[FindingKey, Mapping[str, Any]]],
    list[tuple[FindingKey, Mapping[str, Any], Mapping[str, Any]]],
    list[tuple[FindingKey, Mapping[str, Any]]],
]:
    """(resolved, changed (key, old, new), appeared): findings of the same key that are equal
    match first; the others of that key pair up in order as changed; the rest resolve or
    appear."""
    groups: dict[FindingKey, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {}
    for f in old:
        groups.setdefault(FindingKey.of(f), ([], []))[0].append(f)
    for f in new:
        groups.setdefault(FindingKey.of(f), ([], []))[1].append(f)
    resolved, changed, appeared = [], [], []
    for k in sorted(groups):
        before, after = groups[k]
        b_rest = sorted(before, key=_content)
        a_rest = []
        for f in sorted(after, key=_content):
            same = next((i for i, o in enumerate(b_rest) if _content(o) == _content(f)), None)
            if same is None:
                a_rest.append(f)
            else:
                del b_rest[same]
        n = min(len(b_rest), len(a_rest))
        changed += [(k, o, f) for o, f in zip(b_rest[:n], a_rest[:n], strict=True)]
        resolved += [(k, o) for o in b_rest[n:]]
        appeared += [(k, f) for f in a_rest[n:]]
    return resolved, changed, appeared


def finding_events(
    old: Sequence[Mapping[str, Any]] | None,
    new: Sequence[Mapping[str, Any]],
    *,
    source: str,
    verdict: str,
) -> list[Event]:
    """One entry per finding that cleared since ``old``, changed (severity, message or
    details) or appeared in ``new`` (``old`` None: nothing was known before, every finding is
    new).  Resolved entries come first, then changed ones, then new ones, each group sorted,
    so the order is stable."""
    resolved, changed, appeared = _pair(old or (), new)
    out: list[Event] = []
    for k, f in resolved:
        msg = str(f.get("message", ""))
        out.append(
            _event(
                f"{k.code} resolved ({_where(k)}): {msg}",
                FINDING_RESOLVED,
                INFO,
                source,
                **_finding_fields(k, f, "resolved", verdict),
            )
        )
    for k, was, f in changed:
        sev, msg = str(f.get("severity", "")), str(f.get("message", ""))
        out.append(
            _event(
                f"{k.code} {sev} changed ({_where(k)}): {msg}",
                _message_id(k.code, f),
                priority_of(sev),
                source,
                **_finding_fields(k, f, "changed", verdict),
                VTDLUD_PREVIOUS_SEVERITY=was.get("severity"),
                VTDLUD_PREVIOUS_MESSAGE=was.get("message"),
                VTDLUD_HINT=f.get("hint"),
            )
        )
    for k, f in appeared:
        sev, msg = str(f.get("severity", "")), str(f.get("message", ""))
        out.append(
            _event(
                f"{k.code} {sev} ({_where(k)}): {msg}",
                _message_id(k.code, f),
                priority_of(sev),
                source,
                **_finding_fields(k, f, "new", verdict),
                VTDLUD_HINT=f.get("hint"),
            )
        )
    return out


def _is_message_id(s: str) -> bool:
    return len(s) == 32 and all(c in "0123456789abcdef" for c in s)


def verdict_event(
    old: str | None, new: str, *, source: str, units: int, findings: int
) -> Event | None:
    """An entry when the verdict changed (or is first known); None when it did not change."""
    if old == new:
        return None
    was = f" (was {old})" if old is not None else ""
    what = f"{units} DMAR unit(s), {findings} finding(s)"
    if new == "NOT_APPLICABLE":
        what = "no Intel VT-d on this host, nothing to audit"
    return _event(
        f"vtdlud {source} verdict {new}{was}: {what}",
        VERDICT_CHANGED,
        priority_of(new),
        source,
        VTDLUD_VERDICT=new,
        VTDLUD_PREVIOUS_VERDICT=old or "none",
        VTDLUD_UNITS=units,
        VTDLUD_FINDINGS=findings,
    )


def report_events(old: JSON | None, new: JSON, *, source: str, path: str) -> list[Event]:
    """A oneshot's report was picked up: a summary entry, the verdict change and the findings
    that differ from the previous report of the same source."""
    verdict = str(new.get("verdict", "UNKNOWN"))
    findings = new.get("findings") or []
    exit_status = (new.get("vtdlud") or {}).get("exit_status")
    out = [
        _event(
            f"vtdlud picked up the {source} report {path}: verdict {verdict}, "
            f"exit status {exit_status}, {len(findings)} finding(s)",
            REPORT_PICKED_UP,
            INFO,
            source,
            VTDLUD_VERDICT=verdict,
            VTDLUD_EXIT_STATUS=exit_status,
            VTDLUD_GENERATED_AT=new.get("generated_at"),
            VTDLUD_PATH=path,
        )
    ]
    units = len(new.get("units") or [])
    v = verdict_event(
        None if old is None else str(old.get("verdict")),
        verdict,
        source=source,
        units=units,
        findings=len(findings),
    )
    if v is not None:
        out.append(v)
    out += finding_events(
        None if old is None else (old.get("findings") or []),
        findings,
        source=source,
        verdict=verdict,
    )
    return out


def simple_event(
    message: str, message_id: str, priority: int, *, source: str = "daemon", **fields: object
) -> Event:
    return _event(message, message_id, priority, source, **fields)


@cache
def _sendv() -> Callable[..., None]:
    """systemd-python's ``sendv``, or the pure-Python native protocol where it is not installed
    (:mod:`vtdlud.output.journal_native`, which stores the same entries)."""
    try:
        import systemd.journal  # noqa: PLC0415 - the daemon path only
    except ImportError:
        from vtdlud.output.journal_native import sendv  # noqa: PLC0415

        return sendv
    send: Callable[..., None] = systemd.journal.sendv
    return send


def _default_send(fields: Iterable[str]) -> None:
    _sendv()(*fields)


class JournalSink:
    """Send entries to journald; keep what could not be sent and re-send it later."""

    def __init__(
        self,
        fallback: Callable[[Event, OSError], None],
        *,
        backlog: int = 1000,
        sender: Callable[[Iterable[str]], None] = _default_send,
    ) -> None:
        self._fallback = fallback
        self._send = sender
        self.backlog: deque[Event] = deque(maxlen=backlog)
        self.sent = 0
        self.failed = 0
        self.dropped = 0  # pushed out of the full backlog

    def _try(self, ev: Event) -> OSError | None:
        try:
            self._send([f"{k}={v}" for k, v in ev.items()])
        except OSError as exc:
            return exc
        self.sent += 1
        return None

    def flush(self) -> bool:
        """Re-send the backlog, oldest first; True when it is empty afterwards."""
        while self.backlog:
            ev = self.backlog[0]
            resent = dict(ev, VTDLUD_RESENT="1")
            if self._try(resent) is not None:
                return False
            self.backlog.popleft()
        return True

    def send(self, ev: Event) -> bool:
        """True when the entry reached journald now."""
        exc = self._try(ev) if self.flush() else OSError("journald backlog not yet re-sent")
        if exc is None:
            return True
        self.failed += 1
        if len(self.backlog) == self.backlog.maxlen:
            self.dropped += 1
        self.backlog.append(ev)
        self._fallback(ev, exc)
        return False

    def send_all(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.send(ev)
