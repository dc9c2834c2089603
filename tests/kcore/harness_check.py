"""Development check in a real kernel (not run by pytest/CI): debugfs against a /proc/kcore walk.

In the guest of /work/shared/harness (root, full capabilities)::

    python3 tests/kcore/harness_check.py            # writes /out

parses the live ``iommu_regset`` and ``dmar_translation_struct`` with vtdlud's parsers, walks
every enabled unit's tables through /proc/kcore, compares them (VTD015 logic), renders the walk
as debugfs would print it, writes the pages read as an ELF core (``/out/kcore.img``) with copies
of the two debugfs files and ``/out/summary.json``, re-walks the written core, and prints a
summary.  Exit 0 when everything agrees.

Offline, on the returned folder::

    python -m tests.kcore.harness_check --replay DIR

walks ``DIR/kcore.img`` against ``DIR``'s debugfs copies and checks the result equals the
guest's ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import elftools

from vtdlud.host.corewriter import write_core
from vtdlud.host.kcore import PhysMem
from vtdlud.host.root import HostRoot
from vtdlud.model.crosscheck import compare_with_debugfs, debugfs_rows
from vtdlud.model.debugfs import TranslationStruct, TranslationUnit
from vtdlud.model.live import derive_unit_tables
from vtdlud.model.tables import Mode
from vtdlud.model.walk import WalkResult, walk_unit_tables
from vtdlud.parse.regset import parse_iommu_regset
from vtdlud.parse.translation import parse_dmar_translation_struct, render_dmar_translation_struct

DEBUGFS = "sys/kernel/debug/iommu/intel"
FILES = ("iommu_regset", "dmar_translation_struct")


def _walk_summary(walk: WalkResult) -> dict[str, Any]:
    devices = {}
    for _key, info in sorted(walk.devices.items()):
        devices[info.bdf] = {
            "context": f"{info.context_hi:#x}:{info.context_lo:#x}",
            "did": info.did,
            "pasids": {
                str(p): f"{e.val2:#x}:{e.val1:#x}:{e.val0:#x}"
                for p, e in sorted(info.pasid_entries.items())
            },
        }
    return {
        "root_table": f"{walk.root_table:#x}",
        "mode": walk.mode.value,
        "bits": sorted(walk.context_table_bits),
        "context_tables": {str(b): f"{a:#x}" for b, a in sorted(walk.context_tables.items())},
        "devices": devices,
        "table_pages": len(walk.table_pages),
        "problems": [p.message for p in walk.problems],
    }


def check(texts: dict[str, str], mem: PhysMem) -> tuple[dict[str, Any], bool]:
    """Walk and compare every enabled unit; returns (per-unit summary, all agree)."""
    regset = parse_iommu_regset(texts["iommu_regset"])
    trans = parse_dmar_translation_struct(texts["dmar_translation_struct"])
    units: dict[str, Any] = {}
    ok = True
    for tunit in trans.units:
        live = derive_unit_tables(regset.unit(tunit.name), tunit)
        if not tunit.enabled or live.root_table is None:
            units[tunit.name] = {"enabled": False}
            continue
        walk = walk_unit_tables(mem.read, live.root_table, live.mode is Mode.SCALABLE)
        disagreements = compare_with_debugfs(walk, live, tunit.rows)
        again = TranslationUnit(tunit.name, True, tunit.root_table, debugfs_rows(walk))
        identical = render_dmar_translation_struct(
            TranslationStruct((again,))
        ) == render_dmar_translation_struct(TranslationStruct((tunit,)))
        summary = _walk_summary(walk)
        summary |= {
            "debugfs_rows": len(tunit.rows),
            "debugfs_bits": sorted(live.context_table_bits),
            "debugfs_devices": len(live.devices),
            "kcore_rows": len(again.rows),
            "rendered_walk_equals_debugfs": identical,
            "disagreements": [f"{d.kind.value}: {d.message}" for d in disagreements],
        }
        ok = ok and walk.complete and not disagreements and identical
        units[tunit.name] = summary
    return units, ok


def _print(units: dict[str, Any]) -> None:
    for name, u in units.items():
        if not u.get("root_table"):
            print(f"{name}: translation not enabled")
            continue
        print(
            f"{name}: {u['mode']} root {u['root_table']} kcore bits {u['bits']} "
            f"(debugfs {u['debugfs_bits']}); devices kcore {len(u['devices'])} / debugfs "
            f"{u['debugfs_devices']}; rows kcore {u['kcore_rows']} / debugfs {u['debugfs_rows']}; "
            f"rendered walk == debugfs: {u['rendered_walk_equals_debugfs']}; "
            f"problems {len(u['problems'])}; disagreements {len(u['disagreements'])}"
        )
        for line in u["problems"] + u["disagreements"]:
            print(f"    {line}")


def live_run(out: Path) -> int:
    root = HostRoot("/")
    texts = {f: root.read_text(f"{DEBUGFS}/{f}") for f in FILES}
    t0 = time.perf_counter()
    with PhysMem.open(root) as mem:
        t_open = time.perf_counter() - t0
        units, ok = check(texts, mem)
        elapsed = time.perf_counter() - t0
        pages = dict(mem.captured_pages())
        segments = len(mem.layout.segments)
        ram = mem.layout.ram_bytes
        bytes_read = mem.bytes_read
    out.mkdir(parents=True, exist_ok=True)
    for f, text in texts.items():
        (out / f).write_text(text)
    size = write_core(out / "kcore.img", pages)
    with PhysMem.open_file(out / "kcore.img") as replay:
        units_again, ok_again = check(texts, replay)
    same = units_again == units
    result = {
        "python": sys.version.split()[0],
        "pyelftools": elftools.__version__,
        "ram_segments": segments,
        "ram_bytes": ram,
        "pages_read": len(pages),
        "bytes_read": bytes_read,
        "seconds_open": round(t_open, 4),
        "seconds_total": round(elapsed, 4),
        "core_bytes": size,
        "replay_in_guest_identical": same,
        "units": units,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(
        f"python {result['python']} pyelftools {result['pyelftools']}; kcore: {segments} RAM "
        f"segments, {ram >> 20} MiB; {len(pages)} pages read ({bytes_read} bytes) in "
        f"{elapsed:.3f} s (open {t_open:.3f} s); core written: {size} bytes"
    )
    _print(units)
    print(f"re-walk of /out/kcore.img in the guest identical: {same}")
    verdict = ok and ok_again and same
    print("AGREE" if verdict else "DISAGREE")
    return 0 if verdict else 1


def replay_run(folder: Path) -> int:
    texts = {f: (folder / f).read_text() for f in FILES}
    expected = json.loads((folder / "summary.json").read_text())
    t0 = time.perf_counter()
    with PhysMem.open_file(folder / "kcore.img") as mem:
        units, ok = check(texts, mem)
        pages = len(mem.pages_read)
    elapsed = time.perf_counter() - t0
    same = units == expected["units"]
    print(f"replay of {folder}/kcore.img: {pages} pages read in {elapsed:.3f} s")
    _print(units)
    print(f"identical to the guest's summary.json: {same}")
    print("AGREE" if ok and same else "DISAGREE")
    return 0 if ok and same else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--replay", type=Path, help="check a folder a guest run returned")
    ap.add_argument("--out", type=Path, default=Path("/out"))
    ns = ap.parse_args(argv)
    return replay_run(ns.replay) if ns.replay else live_run(ns.out)


if __name__ == "__main__":
    sys.exit(main())
