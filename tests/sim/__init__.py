"""Tests of the simulated host (tests.kernelmodel), and helpers they share.

Tests here are backed by the model only unless their docstring says they compare with a real
capture: no real capture of KHO/LUO blobs or IOMMU records exists yet.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

from tests.kernelmodel.debugfs import regset_text, translation_text
from tests.kernelmodel.kernel import SimHost
from vtdlud.cli import main
from vtdlud.model.debugfs import Regset, TranslationStruct
from vtdlud.parse.regset import parse_iommu_regset
from vtdlud.parse.translation import parse_dmar_translation_struct


def status_json(root: Path) -> dict[str, Any]:
    """``vtdlud status --json --root ROOT`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["status", "--json", "--root", str(root)])
    assert rc == 0, err.getvalue()
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def codes(doc: dict[str, Any]) -> list[str]:
    return sorted(f["code"] for f in doc["findings"])


def tree_contents(root: Path) -> dict[str, bytes]:
    """Every file (its bytes) and symbolic link (``-> target``) under ``root``."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = b"-> " + os.readlink(path).encode()
            elif path.is_file():
                out[rel] = path.read_bytes()
    return out


def changed_files(a: Path, b: Path) -> set[str]:
    ca, cb = tree_contents(a), tree_contents(b)
    return {k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)}


def regset(host: SimHost) -> Regset:
    """The model's ``iommu_regset``, read back with vtdlud's parser."""
    return parse_iommu_regset(regset_text(host.units.values()))


def translation(host: SimHost) -> TranslationStruct:
    """The model's ``dmar_translation_struct``, read back with vtdlud's parser."""
    return parse_dmar_translation_struct(translation_text(host.units.values()))
