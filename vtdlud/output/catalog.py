"""The journald message catalog (``systemd/vtdlud.catalog``), rendered from the findings catalog.

One entry per code, keyed by its fixed MESSAGE_ID, so ``journalctl -x`` explains every event
vtdlud logs.  ``@VTDLUD_…@`` fields are filled in by journalctl from the event itself.
"""

from __future__ import annotations

from vtdlud.audit.catalog import CATALOG
from vtdlud.output import journal

HEADER = """\
#  vtdlud journald message catalog: one entry per finding code (VTDnnn).
#  Generated from vtdlud/audit/catalog.py by `python -m vtdlud.output.catalog`; do not edit.
#  Installed to /usr/lib/systemd/catalog/; run `journalctl --update-catalog` after installing.
"""


# The daemon's own events (vtdlud/output/journal.py): MESSAGE_ID -> (subject, body).
DAEMON_EVENTS: dict[str, tuple[str, str]] = {
    journal.STARTED: (
        "vtdlud daemon started",
        "The daemon evaluated the host and is watching uevents.",
    ),
    journal.STOPPED: ("vtdlud daemon stopped", "The daemon exited on request."),
    journal.VERDICT_CHANGED: (
        "vtdlud verdict changed",
        "The overall verdict changed: @MESSAGE@\n\nRun `vtdlud status` for the findings.",
    ),
    journal.FINDING_RESOLVED: (
        "vtdlud finding resolved",
        "A finding reported earlier is no longer present: @MESSAGE@",
    ),
    journal.CONFIG_RELOADED: ("vtdlud policy reloaded", "SIGHUP: the new policy is in effect."),
    journal.CONFIG_REJECTED: (
        "vtdlud policy rejected",
        "SIGHUP: the new policy has an error (@MESSAGE@); the previous policy stays in effect.\n\n"
        "Fix the file named and reload again.",
    ),
    journal.REPORT_PICKED_UP: (
        "vtdlud picked up a gate or post-kexec report",
        "A privileged oneshot (vtdlud-gate or vtdlud-post-kexec) wrote a report: @MESSAGE@",
    ),
    journal.REPORT_UNREADABLE: (
        "vtdlud could not read a gate or post-kexec report",
        "@MESSAGE@\n\nRun the oneshot again, or `vtdlud check` by hand.",
    ),
}


def render_catalog() -> str:
    parts = [HEADER]
    for code in sorted(CATALOG):
        e = CATALOG[code]
        parts.append(
            f"-- {e.message_id}\n"
            f"Subject: vtdlud {code} ({e.severity.value}): {e.title}\n"
            "Defined-By: vtdlud\n"
            "Documentation: man:vtdlud(8)\n"
            "\n"
            f"vtdlud reported {code} on IOMMU unit @VTDLUD_UNIT@ (device @VTDLUD_BDF@):\n"
            "@MESSAGE@\n"
            "\n"
            f"{e.hint}\n"
        )
    for mid, (subject, body) in DAEMON_EVENTS.items():
        parts.append(
            f"-- {mid}\nSubject: {subject}\nDefined-By: vtdlud\nDocumentation: man:vtdlud(8)\n\n{body}\n"
        )
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_catalog(), end="")
