"""Run the fuzz targets with atheris, one subprocess per target.

    python -m tests.fuzz.run [--seconds N] [--runs N] [TARGET ...]

A crash leaves its input in tests/fuzz/crashes/<target>-crash-*; copy it to
tests/fuzz/regressions/<target>/ (with the fix) so the normal test run replays it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def child(target: str, seconds: int, runs: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["vtdlud"]):
        from tests.fuzz.targets import SEEDS, TARGETS
    fn = TARGETS[target]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    for i, seed in enumerate(SEEDS.get(target, [b""])):
        (corpus / f"seed{i}").write_bytes(seed)
    for reg in sorted((HERE / "regressions" / target).glob("*")):
        (corpus / reg.name).write_bytes(reg.read_bytes())
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/{target}-",
        "-max_len=8192",
        "-rss_limit_mb=1024",
        "-print_final_stats=1",
        str(corpus),
    ]
    if runs:
        args.insert(1, f"-runs={runs}")
    atheris.Setup(args, fn)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    ap.add_argument("--runs", type=int, default=0, help="stop after N inputs (default: time only)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("targets", nargs="*")
    ns = ap.parse_args(argv)
    if ns.child:
        child(ns.child, ns.seconds, ns.runs)
        return 0
    from tests.fuzz.targets import TARGETS

    failed = []
    for name in ns.targets or sorted(TARGETS):
        cmd = [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            "--child",
            name,
            "--seconds",
            str(ns.seconds),
        ]
        if ns.runs:
            cmd += ["--runs", str(ns.runs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        stats = [
            line
            for line in proc.stderr.splitlines()
            if line.startswith("stat::number_of_executed_units")
        ]
        print(f"{name}: exit {proc.returncode}; {stats[0] if stats else ''}")
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-3000:])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
