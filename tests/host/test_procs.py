"""VFIO holders: a real /proc scan in a private mount namespace, and the bundle round trip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.cli.helpers import copy_tree, run_cli
from tests.needs import needs
from vtdlud.host.procs import PROCESSES_JSON, classify_fds, facts_from_json, facts_to_json
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.snapshot import ProcessFacts, VfioHolder

HOLDER = VfioHolder(
    pid=4242,
    name="qemu-system-x86",
    cmdline=(
        "qemu-system-x86_64",
        "-device",
        "vfio-pci,sysfsdev=/sys/bus/pci/devices/0000:00:05.0",
    ),
    vfio_cdevs=("vfio0",),
    vfio_groups=(),
    iommufd=True,
)


def test_classify() -> None:
    assert classify_fds(
        ["/dev/iommu", "/dev/vfio/devices/vfio3", "/dev/vfio/7", "/dev/vfio/vfio", "/dev/null"]
    ) == (("vfio3",), ("7",), True)


SCAN = """
import json, os, subprocess, sys, time
os.makedirs("/dev/vfio/devices")
for p in ("/dev/vfio/devices/vfio0", "/dev/vfio/7", "/dev/iommu"):
    open(p, "w").close()
holder = subprocess.Popen([sys.executable, "-c",
    "import time; a = [open(p) for p in ('/dev/vfio/devices/vfio0', '/dev/vfio/7', '/dev/iommu')];"
    "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "ready"
from vtdlud.host.procs import scan_live
facts = scan_live()
holder.kill()
mine = [h for h in facts.holders if h.pid == holder.pid]
print(json.dumps({"complete": facts.complete, "mine": [h.__dict__ for h in mine]}))
"""


@needs(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare(1)")
def test_real_scan_in_private_dev(tmp_path: Path) -> None:
    """A real process holding a VFIO cdev, a legacy group and /dev/iommu, seen through /proc.

    /dev is a private tmpfs in a new mount namespace, so the host's /dev is untouched; the
    device nodes are plain files there (readlink of the descriptors gives the same paths)."""
    script = tmp_path / "scan.py"
    script.write_text(SCAN)
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t tmpfs none /dev && exec {sys.executable} {script}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    [mine] = doc["mine"]
    assert mine["vfio_cdevs"] == ["vfio0"] and mine["vfio_groups"] == ["7"] and mine["iommufd"]
    assert mine["name"].startswith("python")


def test_bundle_round_trip(capture_root: Callable[[str], Path], tmp_path: Path) -> None:
    facts = ProcessFacts((HOLDER,), True, "open descriptors of every process")
    assert facts_from_json(facts_to_json(facts)) == facts
    root = copy_tree(capture_root("a_legacy"), tmp_path / "host")
    (root / "vtdlud").mkdir()
    (root / PROCESSES_JSON).write_bytes(facts_to_json(facts))
    assert take_snapshot(HostRoot(root)).processes == facts
    bundle = tmp_path / "b.tar.gz"
    assert run_cli("collect", "--root", str(root), "-o", str(bundle))[0] == 0
    other = tmp_path / "other.tar.gz"
    assert run_cli("collect", "--root", str(bundle), "-o", str(other))[0] == 0
    with tarfile.open(other) as tar:
        data = tar.extractfile(PROCESSES_JSON).read()  # type: ignore[union-attr]
    assert facts_from_json(data) == facts


def test_bundle_without_facts_and_bad_facts(
    capture_root: Callable[[str], Path], tmp_path: Path
) -> None:
    assert take_snapshot(HostRoot(capture_root("a_legacy"))).processes is None
    root = copy_tree(capture_root("a_legacy"), tmp_path / "host")
    (root / "vtdlud").mkdir()
    (root / PROCESSES_JSON).write_text('{"format": 9}')
    snap = take_snapshot(HostRoot(root))
    assert snap.processes is None
    assert [(p.path, p.reason) for p in snap.problems] == [
        (f"/{PROCESSES_JSON}", "not a vtdlud process record (format 9, expected 1)")
    ]
