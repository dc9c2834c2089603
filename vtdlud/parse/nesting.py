"""Where a JSON or TOML text nests deepest, for the error when a parser gives up on it.

``json.loads`` and ``tomllib.loads`` recurse once per level of arrays, objects and inline
tables, and raise RecursionError on a few hundred levels (no file vtdlud reads needs more than
four).  The parsers catch it and turn it into a :class:`ParseError` with the line this scan
finds: the first line where the nesting reaches its maximum.  Strings (TOML's four kinds, JSON's
one) and TOML comments are skipped, so brackets inside them do not count.
"""

from __future__ import annotations

from vtdlud.errors import ParseError

_OPEN = frozenset("[{")
_CLOSE = frozenset("]}")


def deepest(text: str, *, toml: bool = False) -> tuple[int, int]:
    """(the deepest nesting, the 1-based line where it is first reached)."""
    depth = best = 0
    line = best_line = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c in _OPEN:
            depth += 1
            if depth > best:
                best, best_line = depth, line
        elif c in _CLOSE:
            depth = max(depth - 1, 0)
        elif toml and c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c == '"' or (toml and c == "'"):
            i, line = _skip_string(text, i, line, toml)
            continue
        i += 1
    return best, best_line


def _skip_string(text: str, i: int, line: int, toml: bool) -> tuple[int, int]:
    """Past the string starting at ``text[i]``; returns (index after it, line there)."""
    q = text[i]
    if toml and text.startswith(q * 3, i):
        end = text.find(q * 3, i + 3)
        while q == '"' and end > 0 and _escaped(text, end):
            end = text.find(q * 3, end + 1)
        stop = len(text) if end < 0 else end + 3
        return stop, line + text.count("\n", i, stop)
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and q == '"':
            j += 2
            continue
        if c == q:
            return j + 1, line
        if c == "\n":  # an unterminated one-line string: the parser says so; go on from here
            return j, line
        j += 1
    return j, line


def _escaped(text: str, pos: int) -> bool:
    """Whether ``text[pos]`` is preceded by an odd number of backslashes."""
    k = pos
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (pos - k) % 2 == 1


def too_deep(text: str, *, toml: bool = False) -> ParseError:
    """The ParseError for a text its parser found nested too deeply (RecursionError)."""
    depth, line = deepest(text, toml=toml)
    return ParseError(f"nested {depth} levels deep, too deep to read", line=line)
