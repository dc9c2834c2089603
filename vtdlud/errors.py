"""The project's error types.

Parsers raise :class:`ParseError` (and nothing else) on bad input: they take ``str``/``bytes``
and know nothing of paths, so the ``host/`` layer adds the path when it turns the error into a
VTD051 finding.  :class:`UsageError` and :class:`InputError` end a command with a one-line
message (and a hint) and a documented exit code, in the spirit of mkosi's ``die()``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every command (DESIGN.md §4)."""

    OK = 0
    FAIL = 1  # check: a finding at or above the fail severity
    USAGE = 2  # usage or configuration error
    UNKNOWN = 3  # check: a required tier/input is missing or unreadable (fails closed)
    INTERNAL = 4  # internal error


class ParseError(ValueError):
    """Input that does not have the format a parser expects.

    ``line`` is 1-based for text inputs; ``offset`` is the byte offset for binary inputs.
    """

    def __init__(self, reason: str, *, line: int | None = None, offset: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.offset = offset

    def where(self) -> str:
        if self.line is not None:
            return f"line {self.line}"
        if self.offset is not None:
            return f"offset {self.offset:#x}"
        return ""

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.reason}" if where else self.reason


class UnsupportedFormat(ParseError):
    """Input in a format this version knows but does not decode (e.g. pre-5.2 debugfs)."""


class PhysReadError(ParseError):
    """Physical memory ``[addr, addr + size)`` cannot be read.

    ``outside_ram``: some byte lies in no RAM segment (a pointer to nowhere); otherwise the read
    itself failed (I/O error, truncated core, read budget spent).  It is a :class:`ParseError`
    (``reason`` is the short cause) so that every walker that takes a ``read_phys`` and treats
    an unreadable pointer as corrupt input (the table walk, :mod:`vtdlud.parse.luo`) can be given
    ``PhysMem.read`` as is.
    """

    def __init__(self, addr: int, size: int, reason: str, *, outside_ram: bool = False) -> None:
        super().__init__(reason)
        self.addr = addr
        self.size = size
        self.outside_ram = outside_ram

    def __str__(self) -> str:
        return f"physical {self.addr:#x}+{self.size:#x}: {self.reason}"


class VtdludError(Exception):
    """An error that ends the command with one line on stderr and ``exit_code``."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(VtdludError):
    """Bad arguments, a bad value on the command line, or a bad bundle/config (exit 2)."""

    exit_code = ExitCode.USAGE


# The Python modules vtdlud imports that are not its own: (distribution package, PyPI name).
# Debian and Fedora name the packages alike.
MODULE_PROVIDERS = {
    "pyudev": ("python3-pyudev", "pyudev"),
    "psutil": ("python3-psutil", "psutil"),
    "structlog": ("python3-structlog", "structlog"),
    "systemd": ("python3-systemd", "systemd-python"),
    "libfdt": ("python3-libfdt", "pylibfdt"),
}


def missing_module(exc: ModuleNotFoundError) -> tuple[str, str]:
    """(message, hint) for a module that cannot be imported: an incomplete installation (a
    packaging error), which running ``vtdlud collect`` would not help with."""
    name = exc.name or str(exc)
    top = name.split(".", 1)[0]
    if top == "vtdlud":
        return (
            f"vtdlud is installed incompletely: its own module {name!r} is missing",
            "reinstall vtdlud (apt-get install --reinstall vtdlud, dnf reinstall vtdlud, "
            "or pip install --force-reinstall vtdlud)",
        )
    package, pypi = MODULE_PROVIDERS.get(top, (None, top))
    where = (
        f"install {package} (Debian, Fedora) or `pip install {pypi}`"
        if package
        else (f"install the Python module {top!r}")
    )
    return (
        f"vtdlud is installed incompletely: the Python module {top!r} is missing "
        "(a packaging error, not a bug in vtdlud)",
        where,
    )
