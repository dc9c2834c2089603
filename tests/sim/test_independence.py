"""The kernel model is an independent reading of the kernel (issue #14).

If the model computed DMA aliases with the auditor's code, wrote records with the auditor's ABI
mirror or its bit helpers, the tests built on it would prove nothing about those rules: the
model imports none of them.  What it may share: the snapshot's plain types, the ELF core writer,
the process-facts JSON, and the debugfs renderers with their row types (themselves checked
byte for byte against the real captures, tests/parse/test_debugfs_render.py).  The capture
replay (capture.py) reads real captures with vtdlud's parsers: that is input, not a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vtdlud.sim as model

FORBIDDEN = (
    "vtdlud.audit",
    "vtdlud.model.abi",
    "vtdlud.model.alias",
    "vtdlud.model.quirks",
    "vtdlud.model.records",
    "vtdlud.model.signature",
    "vtdlud.model.walk",
    "vtdlud.model.pagetable",
    "vtdlud.model.khomem",
    "vtdlud.model.crosscheck",
    "vtdlud.model.bitfield",
    "vtdlud.parse.pciconfig",
)
REGISTER_DECODERS = ("vtdlud.model.registers",)  # the model decodes CAP/ECAP itself
ALLOWED_NAMES = {"vtdlud.model.tables": {"RootEntry", "PasidEntry"}}  # the renderer's rows


def _imports(path: Path) -> list[tuple[str, set[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, {a.name for a in node.names}))
        elif isinstance(node, ast.Import):
            out += [(a.name, set()) for a in node.names]
    return out


def test_the_model_borrows_no_rule_of_the_auditor() -> None:
    files = sorted(Path(model.__file__).parent.glob("*.py"))
    assert len(files) > 10
    bad = []
    for path in files:
        for module, names in _imports(path):
            if module.startswith(FORBIDDEN) or (
                module.startswith(REGISTER_DECODERS) and path.name != "capture.py"
            ):
                bad.append(f"{path.name}: {module}")
            elif module in ALLOWED_NAMES and not names <= ALLOWED_NAMES[module]:
                bad.append(f"{path.name}: {module} {sorted(names - ALLOWED_NAMES[module])}")
    assert bad == []
