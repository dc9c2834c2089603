"""Just enough roff (man(7)) for the generated pages: escaping and a few macros."""

from __future__ import annotations

import re

_CODE = re.compile(r"`([^`]+)`")
# An option word in prose: -o, --runtime-dir (not the hyphen inside "pre-kexec").
_OPTION = re.compile(r"(?<![\w\\-])(--?[A-Za-z][\w-]*)")


def _minus(s: str) -> str:
    return s.replace("-", r"\-")


def _guard(line: str) -> str:
    """A line starting with '.' or "'" would be read as a request."""
    return "\\&" + line if line.startswith((".", "'")) else line


def text(s: str) -> str:
    """Prose: backslashes escaped, `code` in bold, option names with real minus signs."""
    s = s.replace("\\", r"\e")
    s = _CODE.sub(lambda m: r"\fB" + _minus(m.group(1)) + r"\fR", s)
    s = _OPTION.sub(lambda m: _minus(m.group(1)), s)
    return _guard(s)


def literal(s: str) -> str:
    """A word set in a font: escaped, hyphens as minus signs."""
    return _minus(s.replace("\\", r"\e"))


def bold(s: str) -> str:
    return r"\fB" + literal(s) + r"\fR"


def italic(s: str) -> str:
    return r"\fI" + literal(s) + r"\fR"


def quoted(s: str) -> str:
    """A macro argument in double quotes."""
    return '"' + literal(s).replace('"', r"\(dq") + '"'


def example(lines: list[str]) -> list[str]:
    """A no-fill, indented block shown as it is."""
    return [".PP", ".RS 4", ".nf", *(_guard(literal(line)) for line in lines), ".fi", ".RE"]


_WORD = re.compile(r"[a-z]+(?=[\s,:;]|$)")


def sentence(s: str) -> str:
    """Ending with a full stop; capitalised when it starts with a plain lower-case word (not a
    name like ``status.json``, ``node_exporter`` or ``vtdlud``)."""
    s = s.strip()
    if not s:
        return s
    if _WORD.match(s) and not s.startswith("vtdlud"):
        s = s[0].upper() + s[1:]
    return s if s.endswith((".", "!", "?")) else s + "."


def header(name: str, section: int, date: str, source: str, manual: str) -> list[str]:
    def q(s: str) -> str:  # .TH fields are printed as they are: no minus signs
        return '"' + s.replace("\\", r"\e").replace('"', r"\(dq") + '"'

    return [f".TH {q(name.upper())} {section} {q(date)} {q(source)} {q(manual)}"]
