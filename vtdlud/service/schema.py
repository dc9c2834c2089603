"""A JSON Schema check of the subset ``vtdlud/data/status.schema.json`` uses, for the daemon's
cached ``status.json``: ``vtdlud status`` serves that file as is, so a file the schema rejects
(hand-edited, written by another version, damaged) is evaluated live instead.  jsonschema is a
test dependency only; the tests hold this checker to it.

Keywords: type, enum, const, pattern, minimum, maximum, minLength, required, properties,
additionalProperties, prefixItems, items (a schema or false), minItems, oneOf, anyOf, minProperties, maxProperties; annotations (title,
description, $id, $schema) are ignored, and so is any other keyword (the tests fail when the
schema starts using one).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from vtdlud.host.files import read_regular
from vtdlud.host.limits import JSON_CAP

SCHEMA = Path(__file__).parents[1] / "data" / "status.schema.json"
KNOWN = frozenset(
    [
        "type",
        "enum",
        "const",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "oneOf",
        "anyOf",
        "minProperties",
        "maxProperties",
        "title",
        "description",
        "$id",
        "$schema",
    ]
)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}


@cache
def status_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_regular(SCHEMA, JSON_CAP))
    return loaded


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is(value: object, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def schema_error(doc: object, schema: dict[str, Any], at: str = "$") -> str | None:
    """The first place ``doc`` breaks ``schema`` ("$.units[0].mode: ..."), None when valid."""
    t = schema.get("type")
    if t is not None and not any(_is(doc, n) for n in ([t] if isinstance(t, str) else t)):
        return f"{at}: not of type {t}"
    if "enum" in schema and not any(_same(doc, e) for e in schema["enum"]):
        return f"{at}: not one of {schema['enum']}"
    if "const" in schema and not _same(doc, schema["const"]):
        return f"{at}: not {schema['const']!r}"
    if isinstance(doc, str):
        if "pattern" in schema and not _regex(schema["pattern"]).search(doc):
            return f"{at}: does not match {schema['pattern']}"
        if len(doc) < schema.get("minLength", 0):
            return f"{at}: shorter than {schema['minLength']}"
    if _is(doc, "number"):
        assert isinstance(doc, int | float)
        if "minimum" in schema and doc < schema["minimum"]:
            return f"{at}: below {schema['minimum']}"
        if "maximum" in schema and doc > schema["maximum"]:
            return f"{at}: above {schema['maximum']}"
    if isinstance(doc, dict):
        err = _object(doc, schema, at)
        if err is not None:
            return err
    if isinstance(doc, list):
        err = _array(doc, schema, at)
        if err is not None:
            return err
    if "oneOf" in schema:
        ok = sum(schema_error(doc, s, at) is None for s in schema["oneOf"])
        if ok != 1:
            return f"{at}: matches {ok} of oneOf's {len(schema['oneOf'])} schemas, not one"
    if "anyOf" in schema and all(schema_error(doc, s, at) is not None for s in schema["anyOf"]):
        return f"{at}: matches none of anyOf's schemas"
    return None


def _array(doc: list[Any], schema: dict[str, Any], at: str) -> str | None:
    if len(doc) < schema.get("minItems", 0):
        return f"{at}: fewer than {schema['minItems']} items"
    prefix: list[dict[str, Any]] = schema.get("prefixItems", [])
    for i, (item, sub) in enumerate(zip(doc, prefix, strict=False)):
        err = schema_error(item, sub, f"{at}[{i}]")
        if err is not None:
            return err
    items = schema.get("items")
    if items is False and len(doc) > len(prefix):
        return f"{at}: more than {len(prefix)} items"
    if isinstance(items, dict):
        for i, item in enumerate(doc[len(prefix) :], start=len(prefix)):
            err = schema_error(item, items, f"{at}[{i}]")
            if err is not None:
                return err
    return None


def _object(doc: dict[str, Any], schema: dict[str, Any], at: str) -> str | None:
    for key in schema.get("required", ()):
        if key not in doc:
            return f"{at}: lacks {key!r}"
    if len(doc) < schema.get("minProperties", 0):
        return f"{at}: fewer than {schema['minProperties']} members"
    if "maxProperties" in schema and len(doc) > schema["maxProperties"]:
        return f"{at}: more than {schema['maxProperties']} members"
    props: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in doc.items():
        sub = props.get(key)
        if sub is None:
            if extra is False:
                return f"{at}: unexpected member {key!r}"
            if isinstance(extra, dict):
                sub = extra
        if isinstance(sub, dict):
            err = schema_error(value, sub, f"{at}.{key}")
            if err is not None:
                return err
    return None


def _same(a: object, b: object) -> bool:
    """JSON equality: 1 and True differ, 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def envelope_error(doc: object) -> str | None:
    """Why ``doc`` is not a valid ``--json`` envelope (json_format_version 1.x), or None."""
    return schema_error(doc, status_schema())
