"""Compare two vtdlud installs' outputs byte for byte over every reference root.

    python -m tools.compare_outputs BASELINE_VTDLUD NEW_VTDLUD [--large]

(``python -m benchmarks.installs --rev REV VENV`` makes a baseline install.)  The roots: the
real 6.12 captures and the real Linux 7.2 bundles (tests/data/captures), the examples, and
kernel-model trees (tests.kernelmodel): a clean host and one per fault of the fault registry,
in the recipes tests/sim/test_faults.py builds them; with ``--large``, the 2,048-device host of
the benchmarks.  Each root is read with ``status --json``, ``status`` (text), ``status
--devices`` and ``check --json --no-ledger`` under three policies (none, devices named by
address and ID, vmm_held), and the help texts.  ``generated_at`` is the one field that may differ.  Prints each
difference and a count; exits 1 on any difference.  Performance work keeps this at zero.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from benchmarks.large_host import build as large_host
from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.tree import write_tree
from tests.sim.test_faults import build

TOP = Path(__file__).resolve().parents[1]
STAMP = re.compile(rb'"generated_at": "[^"]*"')

POLICIES = {
    "none": "",
    "named": '[preserve]\ndevices = ["0000:00:05.0", "0000:05:*"]\nids = ["8086:10d3"]\n',
    "vmm_held": "[preserve]\nvmm_held = true\n",
}
COMMANDS = (
    ("status", "--json"),
    ("status",),
    ("status", "--devices"),
    ("check", "--json", "--no-ledger"),
)


def _roots(work: Path, large: bool) -> list[Path]:
    roots: list[Path] = []
    for tgz in sorted(
        [
            *(TOP / "tests/data/captures").glob("*.tar.gz"),
            *(TOP / "tests/data/captures/linux72").glob("*.tar.gz"),
            *(TOP / "examples").glob("*.tar.gz"),
        ]
    ):
        dest = work / tgz.name.removesuffix(".tar.gz")
        dest.mkdir()
        with tarfile.open(tgz) as tar:
            tar.extractall(dest, filter="tar")
        roots.append(dest)
    for fault in [None, *Fault]:
        host = build(fault or Fault.BIT_MISSING)
        if fault is not None:
            inject(host, fault)
        name = f"model-{fault.value if fault else 'clean'}"
        roots.append(write_tree(host, work / name))
    if large:
        roots.append(write_tree(large_host(), work / "large"))
    return roots


def _run(vtdlud: str, cmd: tuple[str, ...], root: Path, config: Path) -> bytes:
    p = subprocess.run(
        [vtdlud, *cmd, "--root", str(root), "--config", str(config)],
        capture_output=True,
        check=False,
    )
    return STAMP.sub(b'"generated_at": ""', p.stdout + b"\0" + p.stderr) + b"rc=%d" % p.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("baseline", help="the baseline install's vtdlud")
    ap.add_argument("new", help="the new install's vtdlud")
    ap.add_argument("--large", action="store_true", help="also the 2,048-device host")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        configs = {}
        for name, text in POLICIES.items():
            configs[name] = work / f"{name}.toml"
            configs[name].write_text(text)
        roots = _roots(work, args.large)
        compared = differ = 0
        for root in roots:
            for policy, config in configs.items():
                for cmd in COMMANDS:
                    old = _run(args.baseline, cmd, root, config)
                    new = _run(args.new, cmd, root, config)
                    compared += 1
                    if old != new:
                        differ += 1
                        print(f"DIFFERS: {root.name} {' '.join(cmd)} (policy {policy})")
        for cmd in (("--help",), ("status", "--help"), ("check", "--help"), ("collect", "--help")):
            for columns in (None, "100"):
                env = dict(os.environ)
                env.pop("COLUMNS", None)
                if columns:
                    env["COLUMNS"] = columns
                out = [
                    subprocess.run([v, *cmd], capture_output=True, check=False, env=env).stdout
                    for v in (args.baseline, args.new)
                ]
                compared += 1
                if out[0] != out[1]:
                    differ += 1
                    print(f"DIFFERS: {' '.join(cmd)} (COLUMNS={columns})")
        print(f"{compared} outputs over {len(roots)} roots and the help texts: {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
