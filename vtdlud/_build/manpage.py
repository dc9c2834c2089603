"""vtdlud(8) from the argument parser and the findings catalog; vtdlud.toml(5) from the config
schema and the shipped, commented ``etc/vtdlud/vtdlud.toml``.

    python3 -m vtdlud._build.manpage --out DIR [--config FILE] [--units DIR] [--date YYYY-MM-DD]

writes ``DIR/vtdlud.8`` and ``DIR/vtdlud.toml.5``.  Every option, command, exit code, finding
and config key on the pages comes from the code; the shipped config supplies the prose for each
key and its example, and a key the schema has but the shipped file does not explain (or the
reverse) is an error, so the build fails instead of shipping a page that drifted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from vtdlud.frozen import frozen
from vtdlud import __version__
from vtdlud._build import roff
from vtdlud._build.argspec import Cli, Command, Option, describe
from vtdlud.audit.catalog import CATALOG
from vtdlud.parse.policy import _SCHEMA
from vtdlud.host.config import DEFAULT_CONFIG, DEFAULT_CONFIG_DIR
from vtdlud.parse.policy import FAIL_SEVERITIES, parse_policy
from vtdlud.model.policy import Policy
from vtdlud.cli.args import build_parser
from vtdlud.errors import ExitCode
from vtdlud.model.tiers import Tier

SOURCE_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = SOURCE_ROOT / "etc" / "vtdlud" / "vtdlud.toml"
UNIT_DIR = SOURCE_ROOT / "systemd"
CATALOG_FILE = "/usr/lib/systemd/catalog/vtdlud.catalog"

# What each exit code means to the operator; every ExitCode member must be here.
EXIT_MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "`status`, `collect`, `decode`, `abi`: done. `check`: the gate passed.",
    ExitCode.FAIL: "`check`: a finding at or above the gate's fail severity "
    "(gate.fail_severity in vtdlud.toml(5)); do not kexec.",
    ExitCode.USAGE: "Usage or configuration error; a policy mistake is reported as "
    "file:line: message.",
    ExitCode.UNKNOWN: "`check`: a required tier or input is missing or unreadable; the gate "
    "fails closed.",
    ExitCode.INTERNAL: "Internal error; run `vtdlud collect` and attach the bundle to a bug report.",
}

# Keys whose values the policy checks against a fixed set.
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("gate", "fail_severity"): FAIL_SEVERITIES,
    ("gate", "required_tiers"): tuple(t.value for t in Tier),
}


@frozen
class Unit:
    name: str
    description: str


def read_units(directory: Path) -> list[Unit]:
    """Every ``*.service`` in ``directory`` with its ``Description=``."""
    units = []
    for path in sorted(directory.glob("*.service")):
        m = re.search(r"^Description=(.+)$", path.read_text(), re.MULTILINE)
        if m is None:
            raise ValueError(f"{path}: no Description=")
        units.append(Unit(path.name, m.group(1).strip()))
    return units


# ---------------------------------------------------------------------------------- vtdlud(8)


def _usage_word(o: Option) -> str:
    if o.positional:
        word = roff.italic(_positional_name(o))
        return f"[{word}]" if o.optional else word
    flag = roff.bold(o.flags[-1] if len(o.flags[-1]) > 2 else o.flags[0])
    if o.takes_value:
        assert o.metavar is not None
        flag += " " + roff.italic(o.metavar)
    return "[" + flag + "]"


def _positional_name(o: Option) -> str:
    return o.dest.upper() if o.choices else (o.metavar or o.dest)


def _option_head(o: Option) -> str:
    if o.positional:
        return roff.italic(_positional_name(o))
    flags = ", ".join(roff.bold(f) for f in o.flags)
    if o.takes_value:
        assert o.metavar is not None
        flags += " " + roff.italic(o.metavar)
    return flags


def _option_text(o: Option) -> str:
    parts = [roff.sentence(o.help)] if o.help else []
    if o.choices and not all(c in o.help for c in o.choices):
        parts.append("One of: " + ", ".join(o.choices) + ".")
    if o.default is not None and "default" not in o.help.lower():
        parts.append(f"Default: {o.default}.")
    return roff.text(" ".join(parts)) if parts else ""


def _common(cli: Cli) -> list[Option]:
    """Options every command takes, with the same help (``--root``)."""
    first, *rest = cli.commands
    return [
        o
        for o in first.options
        if not o.is_help and not o.positional and all(o in c.options for c in rest)
    ]


def _command_options(c: Command, common: Sequence[Option]) -> list[Option]:
    return [o for o in c.options if not o.is_help and o not in common]


def _synopsis(cli: Cli, common: Sequence[Option]) -> list[str]:
    top = [o for o in cli.options if not o.is_help]
    lines = [" ".join([roff.bold(cli.prog), *map(_usage_word, top), r"\fICOMMAND\fR", "..."])]
    for c in cli.commands:
        words = [roff.bold(f"{cli.prog} {c.name}")]
        words += map(_usage_word, common)
        words += map(_usage_word, _command_options(c, common))
        lines += [".br", " ".join(words)]
    return [".SH SYNOPSIS", *lines]


def _options_block(options: Sequence[Option]) -> list[str]:
    out: list[str] = []
    for o in options:
        out += [".TP", _option_head(o)]
        body = _option_text(o)
        if body:
            out.append(body)
    return out


def _files(cli: Cli) -> list[str]:
    """Config files, then every absolute path an option defaults to, then the catalog."""
    entries: dict[str, list[str]] = {
        DEFAULT_CONFIG: ["The policy, see vtdlud.toml(5)."],
        DEFAULT_CONFIG_DIR + "/*.toml": ["Drop-ins read after it, in name order."],
    }
    for c in cli.commands:
        for o in c.options:
            if o.default and o.default.startswith("/") and o.default != "/" and o.flags:
                note = f"`{cli.prog} {c.name} {o.name}`"
                entries.setdefault(o.default, []).append(note)
    entries[CATALOG_FILE] = [
        "The journald message catalog: `journalctl -x` explains each finding with it."
    ]
    out = [".SH FILES"]
    for path, notes in entries.items():
        plain = [n for n in notes if not n.startswith("`")]
        users = [n for n in notes if n.startswith("`")]
        body = " ".join(plain)
        if users:
            body += ("" if not body else " ") + "Default of " + ", ".join(users) + "."
        out += [".TP", roff.bold(path), roff.text(body)]
    return out


def _findings() -> list[str]:
    out = [
        ".SH FINDINGS",
        roff.text(
            "Each finding has a fixed code and a journald MESSAGE_ID; the daemon logs it with "
            "VTDLUD_CODE, VTDLUD_UNIT and VTDLUD_BDF fields, and "
            "`journalctl -x MESSAGE_ID=...` shows the catalog's explanation. "
            "UNKNOWN means vtdlud could not see the input, never that it is fine."
        ),
    ]
    for code in sorted(CATALOG):
        e = CATALOG[code]
        out += [
            ".TP",
            f"{roff.bold(code)} ({e.severity.value})",
            roff.text(roff.sentence(e.title) + " " + e.hint),
            ".br",
            "MESSAGE_ID=" + e.message_id,
        ]
    return out


def render_vtdlud_8(
    parser: argparse.ArgumentParser,
    *,
    version: str = __version__,
    date: str = "",
    units: Sequence[Unit] = (),
) -> str:
    missing = [c.name for c in ExitCode if c not in EXIT_MEANING]
    if missing:
        raise ValueError(f"EXIT_MEANING lacks {', '.join(missing)}")
    cli = describe(parser)
    common = _common(cli)
    name_line = cli.description.rstrip(".")
    out = roff.header(cli.prog, 8, date, f"{cli.prog} {version}", "System Administration")
    out += [".SH NAME", f"{cli.prog} \\- {roff.text(name_line[:1].lower() + name_line[1:])}"]
    out += _synopsis(cli, common)
    out += [
        ".SH DESCRIPTION",
        roff.text(roff.sentence(cli.description)),
        ".PP",
        roff.text(
            "It reads what the kernel already decodes (DMAR units in sysfs, the ACPI DMAR "
            "table, intel-iommu and KHO debugfs, /proc/kcore) and reports each unit's mode, "
            "tables and devices with a verdict. Each command is described below."
        ),
        ".SH OPTIONS",
        *_options_block([o for o in cli.options]),
        ".PP",
        roff.text("Every command takes -h, --help and the options below:"),
        *_options_block(common),
        ".SH COMMANDS",
    ]
    for c in cli.commands:
        out += [f".SS {roff.quoted(cli.prog + ' ' + c.name)}"]
        out.append(roff.text(roff.sentence(c.help or c.description)))
        if c.description and c.help:
            out += [".PP", roff.text(roff.sentence(c.description))]
        out += _options_block(_command_options(c, common))
    out += [".SH EXIT STATUS"]
    for ec in ExitCode:
        out += [".TP", roff.bold(str(int(ec))), roff.text(EXIT_MEANING[ec])]
    out += _findings()
    out += _files(cli)
    if units:
        out += [".SH SYSTEMD UNITS"]
        for u in units:
            out += [".TP", roff.bold(u.name), roff.text(roff.sentence(u.description))]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        roff.bold("NO_COLOR"),
        roff.text("When set, the text output is never coloured (it is only on a terminal)."),
        ".SH SEE ALSO",
        r"\fBvtdlud.toml\fR(5), \fBjournalctl\fR(1), \fBsystemd.service\fR(5), "
        r"\fBsystemd\-tmpfiles\fR(8), \fBkexec\fR(8)",
    ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ vtdlud.toml(5)


@frozen
class KeyDoc:
    table: str
    key: str
    text: str  # the shipped file's comment for the key
    example: str  # the value on the key's (commented) line


@frozen
class TableDoc:
    name: str
    intro: str
    keys: tuple[KeyDoc, ...]


_TABLE = re.compile(r"^\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?$")
# A key's line, commented out ("#key = value", no space after '#', unlike the prose) or not.
_ASSIGN = re.compile(r"^#?([A-Za-z0-9_-]+)\s*=\s*(.+?)\s*$")


def _paragraphs(lines: list[str]) -> list[str]:
    paras: list[list[str]] = [[]]
    for line in lines:
        if line:
            paras[-1].append(line)
        elif paras[-1]:
            paras.append([])
    return [" ".join(p) for p in paras if p]


def read_shipped(text: str) -> tuple[list[str], list[TableDoc]]:
    """The shipped config's intro paragraphs and, per table, its intro and each key's comment.

    Raises ValueError when the file and the schema disagree: a table or key the schema lacks,
    a key the schema has that the file does not show, a key shown twice.
    """
    intro: list[str] = []
    tables: list[TableDoc] = []
    current: str | None = None
    pending: list[str] = []
    table_intro = ""
    keys: list[KeyDoc] = []

    def close() -> None:
        if current is not None:
            tables.append(TableDoc(current, table_intro, tuple(keys)))

    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _TABLE.match(line)
        if m:
            if current is None:
                intro = _paragraphs(pending)
            close()
            current, pending, table_intro, keys = m.group(1), [], "", []
            if current not in _SCHEMA:
                raise ValueError(f"line {n}: table [{current}] is not in the schema")
            continue
        a = _ASSIGN.match(line)
        if a and current is not None:
            key = a.group(1)
            if key not in _SCHEMA[current]:
                raise ValueError(f"line {n}: {current}.{key} is not in the schema")
            paras = _paragraphs(pending)
            if not keys and len(paras) > 1:
                table_intro = " ".join(paras[:-1])
                paras = paras[-1:]
            keys.append(KeyDoc(current, key, " ".join(paras), a.group(2)))
            pending = []
            continue
        if line.startswith("#") or not line:
            pending.append(line.lstrip("#").strip())
            continue
        raise ValueError(f"line {n}: neither a comment, a table nor a key: {raw!r}")
    close()
    if current is None:
        intro = _paragraphs(pending)

    seen = [(k.table, k.key) for t in tables for k in t.keys]
    dups = {f"{t}.{k}" for t, k in seen if seen.count((t, k)) > 1}
    if dups:
        raise ValueError("keys shown twice: " + ", ".join(sorted(dups)))
    missing = [f"{t}.{k}" for t, ks in _SCHEMA.items() for k in ks if (t, k) not in seen]
    if missing:
        raise ValueError("schema keys the shipped config does not explain: " + ", ".join(missing))
    return intro, tables


def _plain(value: Any) -> Any:
    """A Policy value as the TOML value that sets it."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, frozenset):
        items = list(value)
        enums = [i for i in items if isinstance(i, Enum)]
        if enums and len(enums) == len(items):
            order: list[Enum] = list(type(enums[0]).__members__.values())  # declaration order
            return [_plain(i) for i in sorted(enums, key=order.index)]
        return sorted(_plain(i) for i in items)
    if isinstance(value, tuple):
        return [_plain(i) if isinstance(i, (Enum, bool, str)) else str(i) for i in value]
    return value


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} as TOML")


def _key_entry(k: KeyDoc, default: Any) -> list[str]:
    kind = _SCHEMA[k.table][k.key]
    example = tomllib.loads(f"v = {k.example}")["v"]
    # The shown value must be valid: the generator checks it the way vtdlud reads it.
    parse_policy([(f"vtdlud.toml [{k.table}] {k.key}", f"[{k.table}]\n{k.key} = {k.example}\n")])
    parts = [roff.sentence(k.text)] if k.text else []
    allowed = ALLOWED_VALUES.get((k.table, k.key))
    if allowed and not all(v in k.text for v in allowed):
        parts.append("Values: " + ", ".join(allowed) + ".")
    body = [roff.text(" ".join(parts)), ".IP", roff.text(f"Default: `{_toml(default)}`")]
    if example != default:
        body += [".br", roff.text(f"Example: `{k.key} = {_toml(example)}`")]
    return [".TP", f"{roff.bold(k.key)} (\\fI{kind}\\fR)", *body]


def render_vtdlud_toml_5(shipped: str, *, version: str = __version__, date: str = "") -> str:
    intro, tables = read_shipped(shipped)
    defaults = {(t, k): _plain(getattr(Policy(), k)) for t, keys in _SCHEMA.items() for k in keys}
    out = roff.header("vtdlud.toml", 5, date, f"vtdlud {version}", "File Formats")
    out += [
        ".SH NAME",
        "vtdlud.toml \\- vtdlud policy: the devices a live update must preserve and what the "
        "pre\\-kexec gate requires",
        ".SH SYNOPSIS",
        roff.bold(DEFAULT_CONFIG),
        ".br",
        roff.bold(DEFAULT_CONFIG_DIR + "/*.toml"),
        ".SH DESCRIPTION",
    ]
    for i, p in enumerate(intro):
        if i == 0 and p.startswith(DEFAULT_CONFIG):
            continue  # the file's own title line
        out += [roff.text(p), ".PP"]
    out.append(
        roff.text(
            "The file is TOML. The tables and keys below are all there is; "
            "`vtdlud status --config FILE` reads FILE instead of these files."
        )
    )
    out.append(".SH OPTIONS")
    examples: list[str] = []
    for t in tables:
        out += [f".SS {roff.quoted('[' + t.name + ']')}"]
        if t.intro:
            out.append(roff.text(t.intro))
        chosen = []
        for k in t.keys:
            out += _key_entry(k, defaults[(t.name, k.key)])
            if tomllib.loads(f"v = {k.example}")["v"] != defaults[(t.name, k.key)]:
                chosen.append(f"{k.key} = {k.example}")
        if chosen:
            examples += [f"[{t.name}]", *chosen, ""]
    if examples:
        example_text = "\n".join(examples)
        parse_policy([("example", example_text)])
        out += [
            ".SH EXAMPLE",
            roff.text(
                "A drop-in such as /etc/vtdlud/vtdlud.conf.d/50-site.toml setting the "
                "example values above:"
            ),
            *roff.example(examples[:-1]),
        ]
    out += [
        ".SH DIAGNOSTICS",
        roff.text(
            "A mistake (TOML syntax, an unknown table or key, a wrong type, a bad address or "
            "ID) stops every command with one line naming file:line, and exit status 2."
        ),
        ".SH SEE ALSO",
        r"\fBvtdlud\fR(8)",
    ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vtdlud._build.manpage", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="directory for the two pages")
    ap.add_argument("--config", type=Path, default=SHIPPED_CONFIG, help="the shipped config")
    ap.add_argument("--units", type=Path, default=UNIT_DIR, help="directory of *.service")
    ap.add_argument("--date", default="", help="page date (e.g. from SOURCE_DATE_EPOCH)")
    ns = ap.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    pages = {
        "vtdlud.8": render_vtdlud_8(build_parser(), date=ns.date, units=read_units(ns.units)),
        "vtdlud.toml.5": render_vtdlud_toml_5(ns.config.read_text(), date=ns.date),
    }
    for name, page in pages.items():
        (ns.out / name).write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
