"""Regenerate the bundled example hosts in examples/ (README's first command checks them).

Both are bundles made by `vtdlud collect --memory` from trees written by the kernel model
(tests.kernelmodel): a q35 host in scalable mode whose VMM holds 0000:00:05.0 through a VFIO cdev
bound to iommufd and has preserved it for a live update (every tier visible, kcore included).

- examples/1-preserved-clean.tar.gz: what the kernel should have written — the gate passes;
- examples/2-preserved-bit-missing.tar.gz: the same host whose record lacks the context-table
  bit of 00:05.0's table — the gate fails with VTD011 and its hint.

    python -m tools.make_examples
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import write_tree
from vtdlud.cli import main as vtdlud

EXAMPLES = Path(__file__).parents[1] / "examples"
VFIO = "0000:00:05.0"


def _bundle(fault: Fault | None, out: Path) -> None:
    host = q35_host(scalable=True, seed=2026)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    if fault is not None:
        inject(host, fault, VFIO)
    with tempfile.TemporaryDirectory() as tmp:
        write_tree(host, Path(tmp) / "host")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = vtdlud(["collect", "--memory", "--root", f"{tmp}/host", "-o", str(out)])
    if rc != 0:
        raise SystemExit(f"collect failed for {out}")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def main() -> int:
    EXAMPLES.mkdir(exist_ok=True)
    _bundle(None, EXAMPLES / "1-preserved-clean.tar.gz")
    _bundle(Fault.BIT_MISSING, EXAMPLES / "2-preserved-bit-missing.tar.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
