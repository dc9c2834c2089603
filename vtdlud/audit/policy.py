"""The policy: which devices must survive a live update, and what the gate requires.

``/etc/vtdlud/vtdlud.toml`` then ``/etc/vtdlud/vtdlud.conf.d/*.toml`` in name order; a later file
replaces the keys it sets.  Pure: :func:`parse_policy` takes ``(name, text)`` pairs.  Every
mistake — TOML syntax, an unknown table or key, a wrong type, a bad BDF glob or vendor:device —
is a :class:`PolicyError` naming ``file:line``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import field
from typing import Any

from vtdlud.audit.catalog import Severity
from vtdlud.errors import UsageError
from vtdlud.frozen import frozen
from vtdlud.model.snapshot import Tier
from vtdlud.parse.nesting import too_deep

DEFAULT_CONFIG = "/etc/vtdlud/vtdlud.toml"
DEFAULT_CONFIG_DIR = "/etc/vtdlud/vtdlud.conf.d"

# A BDF glob: segment:bus:device.function, each part hex digits, '?', [classes] or '*'.
_GLOB_ATOM = re.compile(r"[0-9a-f?*]|\[!?[0-9a-f-]+\]")
_BDF_WIDTHS = (4, 2, 2, 1)
_ID = re.compile(r"([0-9a-f]{4}):([0-9a-f]{4}|\*)")
_LINE = re.compile(r"line (\d+)")

FAIL_SEVERITIES = ("NOTE", "WARN", "FAIL")


class PolicyError(UsageError):
    """A configuration mistake: one line naming file:line (exit 2)."""


@frozen
class DeviceId:
    vendor: int
    device: int | None  # None: any device of the vendor

    def matches(self, vendor: int | None, device: int | None) -> bool:
        return vendor == self.vendor and (self.device is None or device == self.device)

    def __str__(self) -> str:
        return f"{self.vendor:04x}:" + ("*" if self.device is None else f"{self.device:04x}")


@frozen
class Policy:
    """What must be preserved and what the gate requires (defaults as DESIGN.md §3)."""

    devices: tuple[str, ...] = ()  # BDF globs ("0000:03:00.0", "0000:81:*.*")
    ids: tuple[DeviceId, ...] = ()
    vmm_held: bool = True  # every device a VMM holds through a VFIO cdev + /dev/iommu
    fail_severity: Severity = Severity.FAIL
    required_tiers: frozenset[Tier] = frozenset({Tier.SYSFS, Tier.KHO_DEBUGFS, Tier.KCORE})
    sources: tuple[str, ...] = field(default=(), compare=False)


# table -> key -> the type it takes (the checks are in _check)
_SCHEMA: dict[str, dict[str, str]] = {
    "preserve": {"devices": "list of strings", "ids": "list of strings", "vmm_held": "boolean"},
    "gate": {"fail_severity": "string", "required_tiers": "list of strings"},
}


def bdf_glob_ok(glob: str) -> bool:
    """True when ``glob`` can only name PCI addresses: each part is as wide as the kernel
    prints it (``%04x:%02x:%02x.%x``) unless it holds a ``*``."""
    parts = re.split(r"[:.]", glob)
    if len(parts) != len(_BDF_WIDTHS) or glob.count(":") != 2 or glob.count(".") != 1:
        return False
    if not glob.rindex(":") < glob.index("."):
        return False
    for part, width in zip(parts, _BDF_WIDTHS, strict=True):
        atoms = _GLOB_ATOM.findall(part)
        if "".join(atoms) != part or not atoms:
            return False
        if "*" not in atoms and len(atoms) != width:
            return False
    return True


def _key_line(text: str, table: str, key: str | None) -> int:
    """1-based line of ``[table]`` (or of ``key`` inside it); 1 when not found."""
    current = ""
    header = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(?:#.*)?$")
    assign = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")
    for n, line in enumerate(text.splitlines(), 1):
        m = header.match(line)
        if m:
            current = m.group(1)
            if key is None and current == table:
                return n
            continue
        m = assign.match(line)
        if m and current == table and m.group(1) == key:
            return n
    return 1


class _File:
    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def error(self, table: str, key: str | None, message: str) -> PolicyError:
        line = _key_line(self.text, table, key)
        return PolicyError(f"{self.name}:{line}: {message}", hint="see vtdlud.toml(5)")


def _strings(f: _File, table: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise f.error(table, key, f"{table}.{key} must be a list of strings")
    return list(value)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but tab: not allowed in TOML text
_BARE_HEADER = re.compile(r"[ \t]*\[[ \t]*([A-Za-z0-9_-]+)[ \t]*\][ \t]*(?:#.*)?")


def _bare_tables(text: str) -> dict[str, Any] | None:
    """What ``tomllib.loads`` gives for a file of blank lines, comments and ``[table]`` headers
    alone (the shipped vtdlud.toml, whose keys are all commented out): each table empty.  None
    for anything else, which goes to tomllib (importing it is ~5 ms of a cold start)."""
    tables: dict[str, Any] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if _CONTROL.search(line):  # a lone \r included
            return None  # a control character: tomllib says which and where
        body = line.lstrip(" \t")
        if not body or body.startswith("#"):
            continue
        m = _BARE_HEADER.fullmatch(line)
        if m is None or m.group(1) in tables:
            return None
        tables[m.group(1)] = {}
    return tables


def _parse_one(f: _File, acc: dict[str, Any]) -> None:
    doc = _bare_tables(f.text)
    if doc is None:
        doc = _parse_toml(f)
    _apply(f, doc, acc)


def _parse_toml(f: _File) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - see _bare_tables

    try:
        return tomllib.loads(f.text)
    except tomllib.TOMLDecodeError as exc:
        m = _LINE.search(str(exc))
        line = m.group(1) if m else "1"
        reason = str(exc).split(" (at ")[0]
        raise PolicyError(f"{f.name}:{line}: TOML syntax error: {reason}") from exc
    except RecursionError:  # tomllib recurses per level of arrays and inline tables
        err = too_deep(f.text, toml=True)
        raise PolicyError(f"{f.name}:{err.line}: {err.reason}", hint="see vtdlud.toml(5)") from None


def _apply(f: _File, doc: dict[str, Any], acc: dict[str, Any]) -> None:
    for table, body in doc.items():
        if table not in _SCHEMA:
            known = ", ".join(f"[{t}]" for t in _SCHEMA)
            raise f.error(table, None, f"unknown table [{table}] (expected {known})")
        if not isinstance(body, dict):
            raise f.error(table, None, f"{table} must be a table [{table}]")
        for key, value in body.items():
            if key not in _SCHEMA[table]:
                known = ", ".join(_SCHEMA[table])
                raise f.error(table, key, f"unknown key {table}.{key} (expected one of {known})")
            acc[f"{table}.{key}"] = _check(f, table, key, value)


def _check(f: _File, table: str, key: str, value: Any) -> Any:
    match (table, key):
        case ("preserve", "devices"):
            globs = _strings(f, table, key, value)
            for g in globs:
                if not bdf_glob_ok(g):
                    raise f.error(
                        table,
                        key,
                        f"preserve.devices: {g!r} is not a PCI address or glob "
                        "(expected e.g. 0000:03:00.0 or 0000:81:*.*, lowercase hex)",
                    )
            return tuple(globs)
        case ("preserve", "ids"):
            ids = []
            for s in _strings(f, table, key, value):
                m = _ID.fullmatch(s)
                if m is None:
                    raise f.error(
                        table,
                        key,
                        f"preserve.ids: {s!r} is not vendor:device (expected e.g. 8086:1572 or 15b3:*)",
                    )
                dev = None if m.group(2) == "*" else int(m.group(2), 16)
                ids.append(DeviceId(int(m.group(1), 16), dev))
            return tuple(ids)
        case ("preserve", "vmm_held"):
            if not isinstance(value, bool):
                raise f.error(table, key, "preserve.vmm_held must be true or false")
            return value
        case ("gate", "fail_severity"):
            if value not in FAIL_SEVERITIES:
                raise f.error(
                    table, key, f"gate.fail_severity must be one of {', '.join(FAIL_SEVERITIES)}"
                )
            return Severity(value)
        case ("gate", "required_tiers"):
            names = _strings(f, table, key, value)
            tiers = {t.value: t for t in Tier}
            for n in names:
                if n not in tiers:
                    raise f.error(
                        table,
                        key,
                        f"gate.required_tiers: unknown tier {n!r} (expected {', '.join(tiers)})",
                    )
            return frozenset(tiers[n] for n in names)
    raise AssertionError((table, key))  # pragma: no cover - _SCHEMA lists every key


def parse_policy(files: Iterable[tuple[str, str]]) -> Policy:
    """Merge ``(name, text)`` config files in order into a :class:`Policy`."""
    acc: dict[str, Any] = {}
    names: list[str] = []
    for name, text in files:
        _parse_one(_File(name, text), acc)
        names.append(name)
    base = Policy()
    return Policy(
        devices=acc.get("preserve.devices", base.devices),
        ids=acc.get("preserve.ids", base.ids),
        vmm_held=acc.get("preserve.vmm_held", base.vmm_held),
        fail_severity=acc.get("gate.fail_severity", base.fail_severity),
        required_tiers=acc.get("gate.required_tiers", base.required_tiers),
        sources=tuple(names),
    )


def policy_wants(policy: Policy, bdf: str, vendor: int | None, device: int | None) -> bool:
    """Does the policy's device list or ID list name this device (vmm_held aside)?"""
    if policy.devices:
        from fnmatch import fnmatchcase  # noqa: PLC0415 - 3 ms of import, for device globs only

        if any(fnmatchcase(bdf, g) for g in policy.devices):
            return True
    return any(i.matches(vendor, device) for i in policy.ids)
