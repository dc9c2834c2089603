"""Single input files named on the command line (``decode dmar FILE``, or the host's ACPI DMAR
table under ``--root``): read here, like every other input, so that a read error is one line
naming the file."""

from __future__ import annotations

from vtdlud.errors import UsageError
from vtdlud.host.bundle import open_root
from vtdlud.host.root import describe_oserror

ACPI_DMAR = "sys/firmware/acpi/tables/DMAR"


def read_input_file(path: str, what: str) -> bytes:
    """The bytes of ``path``; UsageError ``"<what>: <path>: <reason>"`` when it cannot be read."""
    from vtdlud.host.files import read_regular  # noqa: PLC0415 - only decode needs it
    from vtdlud.host.limits import ACPI_TABLE_CAP  # noqa: PLC0415

    try:  # a regular file, opened without blocking, read up to the cap (never a FIFO or device)
        return read_regular(path, ACPI_TABLE_CAP)
    except OSError as exc:
        raise UsageError(f"{what}: {path}: {describe_oserror(exc)}") from exc


def read_acpi_dmar(root: str) -> tuple[str, bytes]:
    """(where, bytes) of the ACPI DMAR table of the host under ``root`` (a directory or a
    bundle); UsageError when it has none."""
    with open_root(root) as host:
        where = f"/{ACPI_DMAR}" if host.is_live else f"{root}: /{ACPI_DMAR}"
        try:
            return where, host.read_bytes(ACPI_DMAR)
        except FileNotFoundError as exc:
            raise UsageError(
                f"decode dmar: {where}: no such file (no ACPI DMAR table: not an Intel VT-d "
                "host, or VT-d is disabled in the firmware)"
            ) from exc
        except OSError as exc:
            raise UsageError(f"decode dmar: {where}: {describe_oserror(exc)}") from exc
