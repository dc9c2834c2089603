"""CLI figures against their physical floors (issue: evidence).  Prints; asserts nothing.

    python -m benchmarks.bench_cli [--quick] [--root DIR]

- ``status --json`` wall time vs the raw-read floor: one minimal Python process that reads
  exactly the files, directories, links and physical ranges ``status`` read (recorded by
  HostRoot/PhysMem in a first run), measured side by side; the ratio (goal <= 1.5x).
- cold ``vtdlud --version`` and ``vtdlud status`` vs ``python -c pass`` with the same
  interpreter (goal <= 60 ms above the floor).
- ``check`` end to end on the large host (goal <= 250 ms).
- parser throughput: ``dmar_translation_struct`` rows/s; kcore table walk objects/s.

The package is byte-compiled first, as an installed package is.
Without ``--root`` the large synthetic host (benchmarks/large_host.py) is generated first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PY = sys.executable
VTDLUD = str(Path(PY).parent / "vtdlud")
TOP = Path(__file__).resolve().parents[1]

# The raw-read floors: one minimal Python process reading exactly the files, directories, links
# and physical pages `status` read (recorded in a first run).  "syscalls" is the strict floor:
# open/read/close with os.* (no file objects), one read(2) a file unless it fills the 64 KiB
# buffer (stricter than vtdlud, which reads debugfs dumps to EOF); "open()" is the
# floor first recorded in RESULTS.md, with a Python file object per file.
FLOOR = r"""
import json, os, sys
plan = json.load(open(sys.argv[1]))
root = plan["root"].rstrip("/") + "/"
for d in plan["dirs"]:
    os.listdir(root + d)
for l in plan["links"]:
    os.readlink(root + l)
if sys.argv[2] == "open":
    for f in plan["files"]:
        with open(root + f, "rb") as fh:
            fh.read()
else:
    for f in plan["files"]:
        fd = os.open(root + f, os.O_RDONLY | os.O_CLOEXEC)
        if len(os.read(fd, 65536)) == 65536:  # a shorter read is taken as the end
            while os.read(fd, 65536):
                pass
        os.close(fd)
if plan["pages"]:
    fd = os.open(root + "proc/kcore", os.O_RDONLY)
    os.pread(fd, 65536, 0)
    for off in plan["offsets"]:
        os.pread(fd, 4096, off)
    os.close(fd)
"""


def _time(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def _plan(root: str) -> dict[str, object]:
    """Run the snapshot once in-process and record exactly what it read."""
    from vtdlud.host.kcore import PhysMem
    from vtdlud.host.root import HostRoot
    from vtdlud.host.snapshot import take_snapshot

    hr = HostRoot(root)
    snap = take_snapshot(hr)
    offsets: list[int] = []
    if snap.kcore_pages:
        with PhysMem.open(HostRoot(root)) as mem:
            for page in sorted(snap.kcore_pages):
                offsets += [fr.offset for fr in mem.layout.translate(page, 4096)]
    return {
        "root": root,
        "files": sorted(hr.files_read),
        "dirs": sorted(hr.dirs_listed),
        "links": sorted(hr.links),
        "pages": len(snap.kcore_pages or {}),
        "offsets": offsets,
    }


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", help="host root to measure (default: generate the large host)")
    ap.add_argument("--quick", action="store_true", help="few runs, small host (CI smoke test)")
    args = ap.parse_args(argv)
    runs = 3 if args.quick else 11
    # Installed packages run from bytecode (the .deb's py3compile, the RPM's .pyc files); so do
    # the measured runs, also where PYTHONDONTWRITEBYTECODE is set (then Python reads .pyc files
    # but would never write them, and every run would compile the package from source).
    import compileall

    import vtdlud

    compileall.compile_dir(str(Path(vtdlud.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from benchmarks.large_host import build
            from tests.kernelmodel.scenarios import q35_host
            from tests.kernelmodel.tree import write_tree

            host = q35_host(scalable=True, seed=1) if args.quick else build()
            root = f"{tmp}/host"
            write_tree(host, Path(root))
        plan = _plan(root)
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        floor_py = Path(tmp) / "floor.py"
        floor_py.write_text(FLOOR)
        print(
            f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}, root {args.root or 'generated'}"
        )
        print(
            f"inputs: {len(plan['files'])} files, {len(plan['dirs'])} dirs, {len(plan['links'])} links, "  # type: ignore[arg-type]
            f"{plan['pages']} physical pages"
        )
        status, floor, floor_open = [], [], []
        for _ in range(runs):  # interleaved, side by side
            status += _time([VTDLUD, "status", "--json", "--root", root, "--config", os.devnull], 1)
            floor += _time([PY, str(floor_py), str(plan_file), "syscalls"], 1)
            floor_open += _time([PY, str(floor_py), str(plan_file), "open"], 1)
        st = statistics.median(status)
        print(
            f"status --json: {_ms(status)}; raw-read floor (syscalls): {_ms(floor)}, ratio "
            f"{st / statistics.median(floor):.2f}x (goal <= 1.5x); floor with open(): "
            f"{_ms(floor_open)}, ratio {st / statistics.median(floor_open):.2f}x"
        )
        empty = Path(tmp) / "empty"
        empty.mkdir()
        capture = (
            Path(tmp) / "capture"
        )  # a real kernel's files (a_legacy: every sysfs/debugfs tier)
        capture.mkdir()
        with tarfile.open(TOP / "tests/data/captures/a_legacy.tar.gz") as tar:
            tar.extractall(capture, filter="tar")
        base: list[float] = []
        ver: list[float] = []
        st_empty: list[float] = []
        st_cap: list[float] = []
        for _ in range(runs * 2):  # interleaved, so that a neighbour's burst hits all alike
            base += _time([PY, "-c", "pass"], 1)
            ver += _time([VTDLUD, "--version"], 1)
            st_empty += _time([VTDLUD, "status", "--root", str(empty), "--config", os.devnull], 1)
            st_cap += _time([VTDLUD, "status", "--root", str(capture), "--config", os.devnull], 1)

        def above(xs: list[float]) -> str:
            return f"+{(statistics.median(xs) - statistics.median(base)) * 1000:.1f} ms"

        print(
            f"cold start: python -c pass {_ms(base)}; vtdlud --version {_ms(ver)} ({above(ver)}); "
            f"vtdlud status, empty root {_ms(st_empty)} ({above(st_empty)}), real capture "
            f"a_legacy {_ms(st_cap)} ({above(st_cap)}) (goal <= +60 ms)"
        )
        chk = _time([VTDLUD, "check", "--root", root, "--no-ledger", "--config", os.devnull], runs)
        print(f"check end to end: {_ms(chk)} (goal <= 250 ms)")
        _throughput(root)
    return 0


def _throughput(root: str) -> None:
    from vtdlud.host.kcore import PhysMem
    from vtdlud.host.root import HostRoot
    from vtdlud.model.live import derive_unit_tables
    from vtdlud.model.walk import walk_unit_tables
    from vtdlud.parse.regset import parse_iommu_regset
    from vtdlud.parse.translation import parse_dmar_translation_struct

    text = Path(root, "sys/kernel/debug/iommu/intel/dmar_translation_struct").read_text()
    t = time.perf_counter()
    ts = parse_dmar_translation_struct(text)
    dt = time.perf_counter() - t
    rows = sum(len(u.rows) for u in ts.units)
    print(f"dmar_translation_struct: {rows} rows in {dt * 1000:.1f} ms = {rows / dt:,.0f} rows/s")
    regset = parse_iommu_regset(Path(root, "sys/kernel/debug/iommu/intel/iommu_regset").read_text())
    hr = HostRoot(root)
    try:
        mem = PhysMem.open(hr)
    except Exception as exc:
        print(f"kcore walk: not measured ({exc})")
        return
    with mem:
        objects, t = 0, time.perf_counter()
        for r in regset.units:
            live = derive_unit_tables(r, ts.unit(r.name))
            assert live.root_table is not None
            walk = walk_unit_tables(mem.read, live.root_table, live.mode.value == "scalable")
            objects += (
                len(walk.root_entries)
                + len(walk.devices)
                + sum(len(p) for p in walk.pasid_tables.values())
            )
        dt = time.perf_counter() - t
    print(
        f"kcore table walk: {objects} objects in {dt * 1000:.1f} ms = {objects / dt:,.0f} objects/s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
