"""The kernel model is an independent reading of the kernel (issue #14).

If the model computed DMA aliases with the auditor's code, wrote records with the auditor's ABI
mirror or its bit helpers, the tests built on it would prove nothing about those rules: the
model imports none of them, nor vtdlud's debugfs renderers, register decoders or PCI
constants (it renders debugfs itself: tests/sim/test_capture_replay.py checks its text against
the real captures byte for byte).  The capture replay (capture.py) reads real captures with
vtdlud's parsers: that is input, not a rule; it still never touches the auditor's rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tests.kernelmodel as model

# Outside capture.py the model takes from vtdlud only plain types and writers of files whose
# format is not a live-update rule: the snapshot's types, the ELF core writer, the process-facts
# JSON, @frozen and the error type.
ALLOWED = (
    "tests.kernelmodel",
    "vtdlud.model.snapshot",
    "vtdlud.host.corewriter",
    "vtdlud.host.procs",
    "vtdlud.frozen",
    "vtdlud.errors",
)
NEVER = ("vtdlud.audit", "vtdlud.model.abi", "vtdlud.model.alias", "vtdlud.model.quirks")


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
        for module, _names in _imports(path):
            if not module.startswith("vtdlud"):
                continue
            if module.startswith(NEVER) or (
                path.name != "capture.py" and not module.startswith(ALLOWED)
            ):
                bad.append(f"{path.name}: {module}")
    assert bad == []
