"""Host side of the real-kernel live update: boot the guest under QEMU, collect what it sends.

``python3 tests/guest/run.py legacy|scalable [--fault NAME] [--abi v1|v2] OUTDIR`` (the
``scripts/guest-liveupdate`` entry point) builds what is missing (``build.sh``), boots Linux 7.2
under QEMU TCG on q35 with an emulated VT-d unit, lets ``flow.py`` run the live update inside
(stage 1, kexec, stage 2) and writes to OUTDIR what the guest sent on its second serial port:

  pre-status.json  pre-check.json  pre-check.rc  pre-collect.tar.gz     (the old kernel)
  post-status.json post-check.json post-check.rc post-collect.tar.gz    (the new kernel)
  iommu_regset.txt dmar_translation_struct.txt kho-out-fdt.bin          (raw, before the kexec)
  console.log  run.json (the run's figures)  pre/ post/ (everything each stage sent)

A stage that sends nothing is retried once in a fresh guest (under TCG a boot now and then
oopses early; seen once in scalable mode): ``run.json`` says so.  Stdlib only: it runs with the
machine's python3 before any venv exists.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
CACHE = Path(os.environ.get("VTDLUD_GUEST_CACHE", "/var/cache/vtdlud-guest"))
TIMEOUT = int(os.environ.get("VTDLUD_GUEST_TIMEOUT", "900"))
MEMORY = os.environ.get("VTDLUD_GUEST_MEM", "3G")

# The test driver's fault knob (tests/guest/patches/README.md).
FAULTS = {
    "none": "the driver writes the records as the IOMMU series does",
    "drop-bit": "the bit of the context table holding the preserved device's entry is left out",
    "unpreserve-table": "one context table page named by a set bit is not KHO-preserved",
    "wrong-did": "the device record's attachment_id is not the DID of its context entry",
    "bad-refcount": "the unit record's ref_count is not the number of device records on it",
}
MODES = {
    "legacy": ("intel-iommu,intremap=on,caching-mode=on", "intel_iommu=on"),
    "scalable": (
        "intel-iommu,intremap=on,caching-mode=on,x-scalable-mode=on,aw-bits=48",
        "intel_iommu=on,sm_on",
    ),
}
# Devices: an e1000e behind a PCIe root port (01:00.0, the one a VMM holds), two e1000 behind a
# PCIe-to-PCI bridge (their DMA aliases to the bridge's RID), a virtio-net behind a third port,
# and two virtio disks on the root bus (payload: bzImage + initrd for the kexec; state: the
# persistent /var/lib/vtdlud).
TOPOLOGY = [
    "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x4",
    "-device", "e1000e,bus=rp1",
    "-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2,addr=0x5",
    "-device", "pcie-pci-bridge,id=br1,bus=rp2",
    "-device", "e1000,bus=br1,addr=0x1",
    "-device", "e1000,bus=br1,addr=0x2",
    "-device", "pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3,addr=0x6",
    "-device", "virtio-net-pci,bus=rp3",
]  # fmt: skip
OUTPUTS = {
    "pre": ("pre-status.json", "pre-check.json", "pre-check.rc", "pre-collect.tar.gz",
            "pre-iommu_regset.txt", "pre-dmar_translation_struct.txt", "pre-kho-out-fdt.bin"),
    "post": ("post-status.json", "post-check.json", "post-check.rc", "post-collect.tar.gz"),
}  # fmt: skip
RESULT = re.compile(rb"===BEGIN-RESULT (\w+) sha256=([0-9a-f]{64})===\n(.*?)===END-RESULT===", re.S)


def log(msg: str) -> None:
    print(f"[guest] {msg}", file=sys.stderr, flush=True)


def project_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "vtdlud", "tests/guest"],
                         capture_output=True, check=True).stdout  # fmt: skip
    return [f for f in out.decode().split("\0") if f and (PROJECT / f).is_file()]


def make_initrd(run: Path) -> Path:
    """rootfs.cpio.gz + a cpio of /init and the project's work-tree files (later entries win)."""
    stage = run / "extra"
    for rel in project_files():
        dst = stage / "opt/vtdlud" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / rel, dst)
    shutil.copy2(HERE / "init", stage / "init")
    (stage / "out").mkdir()
    listing = subprocess.run(["find", "."], cwd=stage, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=stage,
                          input=b"\n".join(sorted(listing.splitlines())) + b"\n",
                          capture_output=True, check=True).stdout  # fmt: skip
    initrd = run / "initrd"
    with initrd.open("wb") as f:
        f.write((CACHE / "rootfs.cpio.gz").read_bytes())
        f.write(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True).stdout)
    shutil.rmtree(stage)
    return initrd


def make_disks(run: Path, initrd: Path) -> tuple[Path, Path]:
    payload = run / "payload.tar"
    with tarfile.open(payload, "w") as tar:
        tar.add(CACHE / "bzImage", arcname="bzImage")
        tar.add(initrd, arcname="initrd")
    state = run / "state.img"
    with state.open("wb") as f:
        f.truncate(1 << 20)
    return payload, state


def qemu_argv(mode: str, run: Path, initrd: Path, append: str) -> list[str]:
    iommu, _ = MODES[mode]
    payload, state = make_disks(run, initrd)
    return [
        "qemu-system-x86_64", "-machine", "q35,kernel-irqchip=split", "-accel", "tcg",
        "-cpu", "max", "-m", MEMORY, "-smp", "2", "-nodefaults", "-no-reboot", "-display", "none",
        "-device", iommu, *TOPOLOGY,
        "-drive", f"file={payload},format=raw,if=none,id=payload,readonly=on",
        "-device", "virtio-blk-pci,drive=payload,serial=vtdlud-payload",
        "-drive", f"file={state},format=raw,if=none,id=state",
        "-device", "virtio-blk-pci,drive=state,serial=vtdlud-state",
        "-kernel", str(CACHE / "bzImage"), "-initrd", str(initrd), "-append", append,
        "-serial", f"file:{run / 'console.log'}", "-serial", f"file:{run / 'results.txt'}",
    ]  # fmt: skip


def boot(mode: str, run: Path, args: argparse.Namespace) -> dict[str, Path]:
    """One guest: both stages.  Returns the stages whose results came back, unpacked."""
    for name in ("console.log", "results.txt"):
        (run / name).unlink(missing_ok=True)
    initrd = make_initrd(run)
    _, mode_arg = MODES[mode]
    append = (f"console=ttyS0 panic=-1 oops=panic kho=on liveupdate=1 {mode_arg} iommu=nopt "
              f"vtdlud_stage=1 vtdlud_iommu_lu.abi={args.abi} vtdlud_iommu_lu.fault={args.fault}")  # fmt: skip
    argv = qemu_argv(mode, run, initrd, append)
    (run / "qemu_cmdline.txt").write_text(" ".join(argv) + "\n")
    t0 = time.monotonic()
    with (run / "qemu.stderr").open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"{mode}: no poweroff after {TIMEOUT} s; stopping QEMU")
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log(f"{mode}: QEMU exited {proc.returncode} after {time.monotonic() - t0:.0f} s")
    got: dict[str, Path] = {}
    data = (run / "results.txt").read_bytes() if (run / "results.txt").exists() else b""
    for m in RESULT.finditer(data):
        stage, digest, body = m.group(1).decode(), m.group(2).decode(), m.group(3)
        blob = base64.decodebytes(body)
        if hashlib.sha256(blob).hexdigest() != digest:
            log(f"{mode}: result of {stage} is damaged (sha256 mismatch)")
            continue
        dest = run / "result"
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(dest, filter="data")
        got[stage] = dest / stage
    for path in initrd, run / "payload.tar", run / "state.img":
        path.unlink(missing_ok=True)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="guest-liveupdate",
        description="Run a real Linux 7.2 live update (LUO session, preserved memfd, KHO kexec) "
        "in a QEMU VT-d guest with vtdlud before and after it.",
        epilog="faults (the test driver's knob): "
        + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()),
    )
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--fault", choices=sorted(FAULTS), default="none")
    parser.add_argument("--abi", choices=("v1", "v2"), default="v2", help="IOMMU FLB ABI variant")
    parser.add_argument("--no-build", action="store_true", help="use the cached kernel and rootfs")
    args = parser.parse_args()
    figures: dict[str, object] = {"mode": args.mode, "fault": args.fault, "abi": args.abi}
    if not args.no_build:
        t0 = time.monotonic()
        subprocess.run(["bash", str(HERE / "build.sh")], check=True)
        figures["build_seconds"] = round(time.monotonic() - t0, 1)
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{args.mode}-", dir=runs))
    log(f"{args.mode}: run folder {run}")
    t0 = time.monotonic()
    got = boot(args.mode, run, args)
    attempts = 1
    if set(got) != {"pre", "post"}:
        log(f"{args.mode}: stages back: {sorted(got) or 'none'}; retrying once in a fresh guest")
        tail = (run / "console.log").read_text(errors="replace").splitlines()[-15:]
        log("console tail:\n" + "\n".join(tail))
        shutil.copy2(run / "console.log", run / "console.first-attempt.log")
        shutil.rmtree(run / "result", ignore_errors=True)
        got = boot(args.mode, run, args)
        attempts = 2
    figures["attempts"] = attempts
    figures["run_seconds"] = round(time.monotonic() - t0, 1)
    args.outdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / "console.log", args.outdir / "console.log")
    missing = []
    for stage, names in OUTPUTS.items():
        if stage not in got:
            missing.append(stage)
            continue
        shutil.copytree(got[stage], args.outdir / stage, dirs_exist_ok=True)
        for name in names:
            src = got[stage] / name
            dst = args.outdir / (
                name[4:] if name.startswith("pre-") and name.endswith((".txt", ".bin")) else name
            )
            if src.exists():
                shutil.copy2(src, dst)
    figures["stages_missing"] = missing
    (args.outdir / "run.json").write_text(json.dumps(figures, indent=2) + "\n")
    log(f"{args.mode}: {json.dumps(figures)}")
    if missing:
        log(
            f"{args.mode}: no result from stage(s) {missing}; console: {args.outdir / 'console.log'}"
        )
        return 125
    return 0


if __name__ == "__main__":
    sys.exit(main())
