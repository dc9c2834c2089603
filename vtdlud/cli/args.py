"""The command line of ``vtdlud``: its parser (the commands in :mod:`vtdlud.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from vtdlud import __version__
from vtdlud.errors import UsageError

PROG = "vtdlud"
DEFAULT_STATE_DIR = "/var/lib/vtdlud"


class ArgumentError(UsageError):
    """argparse's own complaint (unknown option, bad choice), as a one-line usage error."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


def _columns() -> int:
    """The width ``shutil.get_terminal_size()`` gives: $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized as argparse sizes it, without importing shutil (and
    with it zlib, bz2, lzma and fnmatch, ~2 ms): argparse makes one for every add_argument."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so that ``main`` prints the one-line error and,
    under ``--json``, the envelope (subcommand parsers are of the same class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(self, message)


def _root_parent() -> Parser:
    p = Parser(add_help=False)
    p.add_argument(
        "--root",
        default="/",
        metavar="DIR|BUNDLE",
        help="read the host under DIR, or a bundle made by `vtdlud collect` (default: /)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    root = _root_parent()
    parser = Parser(
        prog=PROG,
        description="Audit Intel VT-d IOMMU state preserved across a kernel live update (KHO/LUO).",
        epilog="exit codes: 0 ok (check: gate passed, or NOT_APPLICABLE on a host without "
        "Intel VT-d), 1 check failed, 2 usage/config error, 3 required input missing (check "
        "fails closed), 4 internal error or incomplete installation",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    st = sub.add_parser("status", parents=[root], help="show DMAR units, tiers and findings")
    st.add_argument("--json", action="store_true", help="print the versioned JSON envelope")
    st.add_argument(
        "--config",
        metavar="FILE",
        help="policy file (default: /etc/vtdlud/vtdlud.toml and vtdlud.conf.d/*.toml)",
    )
    _text_options(st)
    st.add_argument(
        "--live",
        action="store_true",
        help="evaluate directly even when the daemon's status.json is fresh",
    )
    st.add_argument(
        "--runtime-dir",
        default="/run/vtdlud",
        metavar="DIR",
        help="where `vtdlud run` keeps status.json (default: /run/vtdlud); it is served when "
        "the daemon runs and the file is fresh, unless --live or --config is given",
    )

    ch = sub.add_parser(
        "check",
        parents=[root],
        help="the pre-kexec gate: exit 0 pass, 1 fail, 3 cannot tell (fails closed)",
    )
    ch.add_argument("--json", action="store_true", help="print the versioned JSON envelope")
    _text_options(ch)
    ch.add_argument("--config", metavar="FILE", help="policy file (default: /etc/vtdlud/...)")
    ch.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the ledger is written when the gate passes, and read (then marked "
        "consumed) by --post-kexec (default: /var/lib/vtdlud; for a bundle made by collect, "
        "the ledger it carries)",
    )
    ch.add_argument(
        "--post-kexec",
        action="store_true",
        help="the first check after a live update (vtdlud-post-kexec.service): compare this "
        "kernel with the ledger the gate wrote (VTD060-VTD065) and mark it consumed; never "
        "writes a ledger",
    )
    ch.add_argument(
        "--no-ledger", action="store_true", help="do not write the ledger even when the gate passes"
    )
    ch.add_argument(
        "--report",
        metavar="FILE",
        help="also write the JSON envelope to FILE atomically (the daemon reads /run/vtdlud/gate.json)",
    )

    co = sub.add_parser(
        "collect", parents=[root], help="pack every input vtdlud reads into a .tar.gz bundle"
    )
    co.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="bundle path (default: vtdlud-<kernel>-<UTC time>.tar.gz in the current directory)",
    )
    co.add_argument("--json", action="store_true", help="print the JSON envelope")
    co.add_argument(
        "--memory",
        action="store_true",
        help="add proc/kcore: an ELF core of only the physical pages vtdlud read (root/context/"
        "PASID tables, live-update records), so the bundle replays the kcore tier; off by "
        "default because memory contents are sensitive",
    )
    co.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="the ledger to carry in the bundle (vtdlud/ledger.json) and, after a kexec, whose "
        "record addresses to read (default: /var/lib/vtdlud)",
    )

    de = sub.add_parser(
        "decode",
        help="decode a register, a table entry or an ACPI DMAR table",
        description="Decode CAP/ECAP/GSTS/RTADDR/FSTS register values, root/context entries "
        "(0xHI:0xLO as debugfs prints them), PASID entries (val2:val1:val0), or an ACPI DMAR "
        "table: a FILE, or without one the host's /sys/firmware/acpi/tables/DMAR (under --root).",
    )
    de.add_argument(
        "kind",
        choices=[
            "cap",
            "ecap",
            "gsts",
            "rtaddr",
            "fsts",
            "root-entry",
            "context-entry",
            "pasid-entry",
            "dmar",
        ],
    )
    de.add_argument("value", metavar="VALUE|FILE", nargs="?")
    de.add_argument(
        "--mode",
        choices=["legacy", "scalable"],
        default="legacy",
        help="root- and context-entry layout (default: legacy)",
    )
    de.add_argument(
        "--root",
        metavar="DIR|BUNDLE",
        help="decode dmar only: read the ACPI DMAR table of the host under DIR, or of a bundle "
        "(default: /)",
    )
    de.add_argument("--json", action="store_true", help="print JSON")

    rn = sub.add_parser(
        "run",
        parents=[root],
        help="the daemon: re-evaluate on uevents, write status.json, metrics and journald events",
        description="Event-driven daemon for systemd (Type=notify, watchdog, SIGHUP reloads the "
        "config).  Sandboxed: it never reads /proc/kcore nor other users' descriptors, and "
        "picks up the privileged oneshots' reports (gate.json, post-kexec.json) instead.",
    )
    rn.add_argument("--config", metavar="FILE", help="policy file (default: /etc/vtdlud/...)")
    rn.add_argument(
        "--runtime-dir",
        default="/run/vtdlud",
        metavar="DIR",
        help="status.json and daemon.json are written here, gate.json and post-kexec.json "
        "read from here (default: /run/vtdlud)",
    )
    rn.add_argument(
        "--metrics",
        default="/var/lib/prometheus/node-exporter/vtdlud.prom",
        metavar="FILE",
        help="node_exporter textfile (default: /var/lib/prometheus/node-exporter/vtdlud.prom; "
        "not written when its directory does not exist; '' disables it)",
    )
    rn.add_argument(
        "--backstop",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="rescan at least this often, for changes no uevent announces (default: 600)",
    )
    rn.add_argument(
        "--debounce",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="evaluate this long after the last relevant uevent of a burst (default: 0.2)",
    )
    rn.add_argument(
        "--debounce-max",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="but no later than this after the burst's first uevent; the limit doubles (up "
        "to 32 s) while a storm goes on and resets once it is over (default: 2)",
    )
    rn.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default: $SYSTEMD_LOG_LEVEL, else info)",
    )

    ab = sub.add_parser("abi", help="print the live-update ABI struct layouts (like pahole)")
    ab.add_argument("--variant", choices=["v1", "v2"], default="v1")
    ab.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _text_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--devices",
        action="store_true",
        help="list every device behind the DMAR units (by default only their number)",
    )
    p.add_argument(
        "--brief",
        action="store_true",
        help="only the summary line, one line per finding and the verdict",
    )
