"""The journald message catalog (``systemd/vtdlud.catalog``), rendered from the findings catalog.

One entry per code, keyed by its fixed MESSAGE_ID, so ``journalctl -x`` explains every event
vtdlud logs.  ``@VTDLUD_…@`` fields are filled in by journalctl from the event itself.
"""

from __future__ import annotations

from vtdlud.audit.catalog import CATALOG

HEADER = """\
#  vtdlud journald message catalog: one entry per finding code (VTDnnn).
#  Generated from vtdlud/audit/catalog.py by `python -m vtdlud.output.catalog`; do not edit.
#  Installed to /usr/lib/systemd/catalog/; run `journalctl --update-catalog` after installing.
"""


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
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_catalog(), end="")
