"""output.envelope.dumps is json.dumps(indent=2) byte for byte (status/check --json pin it).

Lives beside the audit tests because the envelope is the audit report's JSON form."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtdlud.audit.evaluate import evaluate
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.snapshot import ProcessFacts, VfioHolder
from vtdlud.output.envelope import dumps, envelope


def _reference(doc: object) -> str:
    return json.dumps(doc, indent=2) + "\n"


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["", "0000:00:05.0", "vfio0", '\x00\n"\\', "é ✓ \U0001f600", "\ud800"])
)
_keys = st.text() | st.integers() | st.floats() | st.booleans() | st.none()
_docs = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(_keys, inner, max_size=6)
        | st.lists(st.sampled_from(["a", "b", "vfio7"]), max_size=4)  # repeated string lists
    ),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(_docs)
def test_same_text_as_json_dumps(doc: Any) -> None:
    assert dumps(doc) == _reference(doc)


def test_repeated_string_lists_at_different_depths() -> None:
    cdevs = [f"vfio{i}" for i in range(5)]
    doc = {"a": cdevs, "b": [{"c": list(cdevs)}, {"c": list(cdevs)}], "d": [cdevs, [cdevs]]}
    assert dumps(doc) == _reference(doc)


class _Opaque:
    pass


def test_what_json_refuses_is_refused_the_same_way() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"x": [1, _Opaque()]})
    with pytest.raises(TypeError, match="keys must be"):
        bad_key: Any = {(1, 2): 3}
        dumps(bad_key)
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps({"loop": loop})


def test_envelope_of_a_host_with_a_vmm(capture_root: Callable[[str], Path]) -> None:
    """A real capture's envelope, with a VMM holding its vfio-pci device (the preserve member
    repeats the holder's lists per device)."""
    snap = take_snapshot(HostRoot(capture_root("a_legacy")))
    vmm = VfioHolder(4242, "qemu", ("qemu", "-m", "4G"), ("vfio0", "vfio1"), ("7",), True)
    snap = dataclasses.replace(snap, processes=ProcessFacts((vmm,), True, "test"))
    doc = envelope(evaluate(snap), argv=["vtdlud"], exit_status=0, root_label="r")
    assert doc["preserve"], "the capture's vfio-pci device is held"
    assert dumps(doc) == _reference(doc)
