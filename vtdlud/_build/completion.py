"""Bash completion for ``vtdlud``, generated from :func:`vtdlud.cli.args.build_parser`.

    python3 -m vtdlud._build.completion > /usr/share/bash-completion/completions/vtdlud

The script needs bash only (no bash-completion helpers): commands, each command's options,
``choices`` (``decode KIND``, ``--mode``, ``--variant``, ``--log-level``), and file or directory
names for options whose metavar says FILE, BUNDLE or DIR.  ``--opt=value`` works as well.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence

from vtdlud._build.argspec import Cli, Command, Option, describe
from vtdlud.cli.args import build_parser


def _value_kind(o: Option) -> str:
    """'choices', 'files', 'dirs' or 'none' for what the option's value completes to."""
    if o.choices:
        return "choices"
    words = set(re.split(r"[^A-Z]+", o.metavar or ""))
    if words & {"FILE", "BUNDLE"}:
        return "files"
    if "DIR" in words:
        return "dirs"
    return "none"


def _complete_value(o: Option, indent: str) -> list[str]:
    kind = _value_kind(o)
    if kind == "choices":
        return [f'{indent}COMPREPLY=($(compgen -W {shlex.quote(" ".join(o.choices))} -- "$cur"))']
    if kind == "files":
        return [f"{indent}_vtdlud_files -f"]
    if kind == "dirs":
        return [f"{indent}_vtdlud_files -d"]
    return [f"{indent}COMPREPLY=()"]


def _flags(options: Sequence[Option]) -> list[str]:
    return [f for o in options for f in o.flags]


def _command_case(c: Command) -> list[str]:
    valued = [o for o in c.options if o.flags and o.takes_value]
    positionals = [o for o in c.options if o.positional]
    out = [f"        {c.name})"]
    if valued:
        out.append('            case "$prev" in')
        for o in valued:
            out.append(f"                {'|'.join(o.flags)})")
            out += _complete_value(o, "                    ")
            out.append("                    return ;;")
        out.append("            esac")
    flags = " ".join(_flags(c.options))
    out += [
        "            if [[ $cur == -* ]]; then",
        f'                COMPREPLY=($(compgen -W {shlex.quote(flags)} -- "$cur"))',
        "                return",
        "            fi",
    ]
    if positionals:
        skip = "|".join(f for o in valued for f in o.flags)
        out += [
            "            local npos=0 skip=0",
            "            for ((i = cmd_at + 1; i < COMP_CWORD; i++)); do",
            "                if ((skip)); then [[ ${COMP_WORDS[i]} == = ]] || skip=0; continue; fi",
            '                case "${COMP_WORDS[i]}" in',
            *([f"                    {skip}) skip=1 ;;"] if skip else []),
            "                    -*) ;;",
            "                    *) npos=$((npos + 1)) ;;",
            "                esac",
            "            done",
            '            case "$npos" in',
        ]
        for n, o in enumerate(positionals):
            out.append(f"                {n})")
            out += _complete_value(o, "                    ")
            out.append("                    ;;")
        out += ["            esac"]
    out.append("            ;;")
    return out


def render_bash(cli: Cli) -> str:
    prog = cli.prog
    commands = " ".join(c.name for c in cli.commands)
    top_flags = " ".join(_flags(cli.options))
    top_valued = "|".join(f for o in cli.options if o.takes_value for f in o.flags)
    lines = [
        f"# bash completion for {prog}",
        "# Generated from vtdlud.cli.args.build_parser() by `python3 -m vtdlud._build.completion`;",
        "# do not edit.",
        "",
        "_vtdlud_files() {",
        "    compopt -o filenames 2>/dev/null",
        '    COMPREPLY=($(compgen "$1" -- "$cur"))',
        "}",
        "",
        "_vtdlud() {",
        "    local cur prev cmd='' cmd_at=0 i skip=0",
        "    cur=${COMP_WORDS[COMP_CWORD]}",
        "    prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    # --opt=value: bash splits it into --opt, = and value",
        "    if [[ $cur == = ]]; then",
        "        prev=${COMP_WORDS[COMP_CWORD-1]}",
        "        cur=''",
        "    elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then",
        "        prev=${COMP_WORDS[COMP_CWORD-2]}",
        "    fi",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        if ((skip)); then [[ ${COMP_WORDS[i]} == = ]] || skip=0; continue; fi",
        '        case "${COMP_WORDS[i]}" in',
        *([f"            {top_valued}) skip=1 ;;"] if top_valued else []),
        "            -*) ;;",
        "            *) cmd=${COMP_WORDS[i]}; cmd_at=$i; break ;;",
        "        esac",
        "    done",
        '    case "$cmd" in',
        "        '')",
        "            if [[ $cur == -* ]]; then",
        f'                COMPREPLY=($(compgen -W {shlex.quote(top_flags)} -- "$cur"))',
        "            else",
        f'                COMPREPLY=($(compgen -W {shlex.quote(commands)} -- "$cur"))',
        "            fi",
        "            ;;",
    ]
    for c in cli.commands:
        lines += _command_case(c)
    lines += [
        "    esac",
        "}",
        "",
        f"complete -F _vtdlud {prog}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vtdlud._build.completion", description=__doc__)
    ap.parse_args(argv)
    sys.stdout.write(render_bash(describe(build_parser())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
