"""CLI figures against their physical floors (issue: evidence, #15).  Prints; asserts nothing.

    python -m benchmarks.bench_cli [--quick] [--root DIR] [--baseline REV]

Every figure is measured from normal installs (``pip install --no-deps .`` into fresh venvs,
byte-compiled, no editable import hook: benchmarks/installs.py): the working tree, and with
``--baseline REV`` that git revision beside it, interleaved run by run, so a neighbour's burst
hits both alike.

- config-space bytes ``status`` and ``check`` read per PCI device (pread(2) bytes of every
  ``config``; a whole read counts its length), goal <= 256 on average;
- ``status --json`` wall time vs the raw-read floor: one minimal Python process that reads
  exactly the files, directories, links and physical ranges ``status`` read, recorded in a first
  in-process run of the baseline when given (the floor stays that of the baseline's read set),
  else of the working tree; goal <= 2.0x the strict floor;
- ``check`` end to end, wall and CPU (user+sys of the child), goal <= 250 ms CPU;
- cold ``vtdlud --version`` and ``vtdlud status`` vs ``python -c pass`` with the same
  interpreter, goal <= +45 ms for ``status`` on a small real capture;
- parser throughput: ``dmar_translation_struct`` rows/s; kcore table walk objects/s.

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

from benchmarks.installs import install_rev, normal_install

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

# Run by each install's own interpreter: what one snapshot reads (the plan of the floor) and
# the config-space bytes of a status-like and a check-like snapshot.  Works with the versions
# before pread (no bytes_pread, no policy argument: every config file read whole).
PLAN = r"""
import json, os, sys
from vtdlud.host.kcore import PhysMem
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.host.config import load_policy
root = sys.argv[1]
policy = load_policy(os.devnull)
def snap(**kw):
    hr = HostRoot(root)
    try:
        s = take_snapshot(hr, policy=policy, **kw)
    except TypeError:  # a version without the policy argument
        s = take_snapshot(hr, **kw)
    pread = getattr(hr, "bytes_pread", {})
    cfg = {p: n for p, n in pread.items() if p.endswith("/config")}
    for p, data in hr.contents.items():
        if p.endswith("/config"):
            cfg[p] = cfg.get(p, 0) + len(data)
    return hr, s, sum(cfg.values())
hr, s, status_bytes = snap()
_, _, check_bytes = snap(kernel_log=True)
offsets = []
if s.kcore_pages:
    with PhysMem.open(HostRoot(root)) as mem:
        for page in sorted(s.kcore_pages):
            offsets += [fr.offset for fr in mem.layout.translate(page, 4096)]
json.dump({
    "root": root,
    "files": sorted(hr.files_read),
    "dirs": sorted(hr.dirs_listed),
    "links": sorted(hr.links),
    "pages": len(s.kcore_pages or {}),
    "offsets": offsets,
    "devices": len(s.pci_devices),
    "status_config_bytes": status_bytes,
    "check_config_bytes": check_bytes,
}, sys.stdout)
"""


def _time(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def _cpu(cmd: list[str]) -> float:
    """User + system CPU seconds of one run of ``cmd`` (wait4's rusage of the child)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, ru = os.wait4(p.pid, 0)
    return ru.ru_utime + ru.ru_stime


def _plan(python: str, root: str) -> dict[str, object]:
    out = subprocess.run(
        [python, "-c", PLAN, root], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    return dict(json.loads(out))


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f})"


class Install:
    def __init__(self, name: str, vtdlud: Path) -> None:
        self.name, self.vtdlud = name, str(vtdlud)
        self.python = str(vtdlud.parent / "python")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", help="host root to measure (default: generate the large host)")
    ap.add_argument("--quick", action="store_true", help="few runs, small host (CI smoke test)")
    ap.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    args = ap.parse_args(argv)
    runs = 3 if args.quick else 11
    with tempfile.TemporaryDirectory() as tmp:
        installs = [Install("this tree", normal_install(TOP, Path(tmp) / "venv-new"))]
        if args.baseline:
            base = install_rev(args.baseline, Path(tmp) / "venv-base")
            installs.insert(0, Install(f"baseline {args.baseline}", base))
        root = args.root
        if root is None:
            from benchmarks.large_host import build
            from tests.kernelmodel.scenarios import q35_host
            from tests.kernelmodel.tree import write_tree

            host = q35_host(scalable=True, seed=1) if args.quick else build()
            root = f"{tmp}/host"
            write_tree(host, Path(root))
        print(
            f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}, root "
            f"{args.root or 'generated'}; installs: normal (pip install --no-deps ., "
            f"byte-compiled, no editable hook): {', '.join(i.name for i in installs)}"
        )
        plans = {i.name: _plan(i.python, root) for i in installs}
        for i in installs:
            p = plans[i.name]
            n = int(p["devices"]) or 1  # type: ignore[call-overload]
            print(
                f"[{i.name}] config space read: status {p['status_config_bytes']} bytes "
                f"({int(p['status_config_bytes']) / n:.0f} per device), check "  # type: ignore[call-overload]
                f"{p['check_config_bytes']} bytes ({int(p['check_config_bytes']) / n:.0f} per "  # type: ignore[call-overload]
                f"device) over {p['devices']} devices (goal <= 256 per device)"
            )
        plan = plans[installs[0].name]  # the floor: the baseline's read set when given
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        floor_py = Path(tmp) / "floor.py"
        floor_py.write_text(FLOOR)
        print(
            f"floor ({installs[0].name}'s read set): {len(plan['files'])} files, "  # type: ignore[arg-type]
            f"{len(plan['dirs'])} dirs, {len(plan['links'])} links, "  # type: ignore[arg-type]
            f"{plan['pages']} physical pages"
        )
        py = installs[-1].python
        status: dict[str, list[float]] = {i.name: [] for i in installs}
        floor, floor_open = [], []
        for _ in range(runs):  # interleaved, side by side
            for i in installs:
                status[i.name] += _time(
                    [i.vtdlud, "status", "--json", "--root", root, "--config", os.devnull], 1
                )
            floor += _time([py, str(floor_py), str(plan_file), "syscalls"], 1)
            floor_open += _time([py, str(floor_py), str(plan_file), "open"], 1)
        print(f"raw-read floor (syscalls): {_ms(floor)}; with open(): {_ms(floor_open)}")
        for i in installs:
            st = statistics.median(status[i.name])
            print(
                f"[{i.name}] status --json: {_ms(status[i.name])}, "
                f"{st / statistics.median(floor):.2f}x the strict floor (goal <= 2.0x), "
                f"{st / statistics.median(floor_open):.2f}x the open() floor"
            )
        chk: dict[str, list[float]] = {i.name: [] for i in installs}
        chk_cpu: dict[str, list[float]] = {i.name: [] for i in installs}
        for _ in range(runs):
            for i in installs:
                cmd = [i.vtdlud, "check", "--root", root, "--no-ledger", "--config", os.devnull]
                t = time.perf_counter()
                chk_cpu[i.name].append(_cpu(cmd))
                chk[i.name].append(time.perf_counter() - t)
        for i in installs:
            print(
                f"[{i.name}] check end to end: {_ms(chk[i.name])}, CPU {_ms(chk_cpu[i.name])} "
                "(goal <= 250 ms CPU)"
            )
        _cold(installs, Path(tmp), runs)
        _throughput(root)
    return 0


def _cold(installs: list[Install], tmp: Path, runs: int) -> None:
    empty = tmp / "empty"
    empty.mkdir()
    capture = tmp / "capture"  # a real kernel's files (a_legacy: every sysfs/debugfs tier)
    capture.mkdir()
    with tarfile.open(TOP / "tests/data/captures/a_legacy.tar.gz") as tar:
        tar.extractall(capture, filter="tar")
    base: dict[str, list[float]] = {i.name: [] for i in installs}
    ver: dict[str, list[float]] = {i.name: [] for i in installs}
    st_empty: dict[str, list[float]] = {i.name: [] for i in installs}
    st_cap: dict[str, list[float]] = {i.name: [] for i in installs}
    for _ in range(runs * 2):  # interleaved, so that a neighbour's burst hits all alike
        for i in installs:
            base[i.name] += _time([i.python, "-c", "pass"], 1)
            ver[i.name] += _time([i.vtdlud, "--version"], 1)
            st_empty[i.name] += _time(
                [i.vtdlud, "status", "--root", str(empty), "--config", os.devnull], 1
            )
            st_cap[i.name] += _time(
                [i.vtdlud, "status", "--root", str(capture), "--config", os.devnull], 1
            )
    for i in installs:

        def above(xs: list[float], name: str = i.name) -> str:
            return f"+{(statistics.median(xs) - statistics.median(base[name])) * 1000:.1f} ms"

        print(
            f"[{i.name}] cold start: python -c pass {_ms(base[i.name])}; vtdlud --version "
            f"{_ms(ver[i.name])} ({above(ver[i.name])}); vtdlud status, empty root "
            f"{_ms(st_empty[i.name])} ({above(st_empty[i.name])}), real capture a_legacy "
            f"{_ms(st_cap[i.name])} ({above(st_cap[i.name])}) (goal <= +45 ms)"
        )


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
