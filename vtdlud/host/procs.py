"""Which processes hold VFIO devices open: the facts behind the ``vmm_held`` policy.

A VMM that keeps a device across a live update holds its VFIO cdev
(``/dev/vfio/devices/vfioN``) and ``/dev/iommu`` (iommufd); a legacy user holds
``/dev/vfio/<group>`` and cannot be preserved.  On the live host the open file descriptors are
read from ``/proc/<pid>/fd`` (other users' need CAP_SYS_PTRACE; what could not be read is
counted, so "nobody holds it" is never claimed from a partial scan).  With ``--root`` the facts
come from the bundle's ``vtdlud/processes.json`` (written by ``collect``), never from the host
running vtdlud.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from vtdlud.host.root import HostRoot
from vtdlud.model.snapshot import ProcessFacts, VfioHolder
from vtdlud.parse.nesting import too_deep

PROCESSES_JSON = "vtdlud/processes.json"
PROCESSES_FORMAT = 1
DEV_IOMMU = "/dev/iommu"
VFIO_CDEV_PREFIX = "/dev/vfio/devices/"
VFIO_GROUP_PREFIX = "/dev/vfio/"


def classify_fds(targets: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """Descriptor targets -> (cdevs, groups, iommufd)."""
    cdevs, groups, iommufd = [], [], False
    for t in targets:
        if t == DEV_IOMMU:
            iommufd = True
        elif t.startswith(VFIO_CDEV_PREFIX):
            cdevs.append(t[len(VFIO_CDEV_PREFIX) :])
        elif t.startswith(VFIO_GROUP_PREFIX) and t[len(VFIO_GROUP_PREFIX) :].isdigit():
            groups.append(t[len(VFIO_GROUP_PREFIX) :])
    return tuple(sorted(set(cdevs))), tuple(sorted(set(groups))), iommufd


def _fd_targets(pid: int) -> list[str] | None:
    """Targets of /proc/<pid>/fd/*; None when denied (twice: a process that is changing
    credentials in exec is briefly unreadable); [] when it exited."""
    fd_dir = f"/proc/{pid}/fd"
    for _attempt in range(2):
        try:
            names = os.listdir(fd_dir)
        except PermissionError:
            continue
        except (FileNotFoundError, ProcessLookupError):
            return []
        targets = []
        for fd in names:
            try:
                targets.append(os.readlink(f"{fd_dir}/{fd}"))
            except (FileNotFoundError, PermissionError):
                continue  # closed while we looked
        return targets
    return None


def scan_live() -> ProcessFacts:
    """Walk /proc/<pid>/fd of every process (psutil lists the processes and their names)."""
    import psutil  # noqa: PLC0415 - only `status`/`check` on a live host pay for it

    holders = []
    denied = 0
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        pid = proc.info["pid"]
        targets = _fd_targets(pid)
        if targets is None:
            denied += 1
            continue
        cdevs, groups, iommufd = classify_fds(targets)
        if cdevs or groups:
            holders.append(
                VfioHolder(
                    pid=pid,
                    name=proc.info["name"] or "",
                    cmdline=tuple(proc.info["cmdline"] or ()),
                    vfio_cdevs=cdevs,
                    vfio_groups=groups,
                    iommufd=iommufd,
                )
            )
    note = "open descriptors of every process"
    if denied:
        note = f"{denied} process(es) not readable (other users' descriptors need CAP_SYS_PTRACE)"
    return ProcessFacts(tuple(holders), denied == 0, note)


def facts_to_json(facts: ProcessFacts) -> bytes:
    doc = {"format": PROCESSES_FORMAT, **asdict(facts)}
    return (json.dumps(doc, indent=2) + "\n").encode()


def facts_from_json(data: bytes) -> ProcessFacts:
    """Raises ValueError (incl. json.JSONDecodeError) or KeyError/TypeError on a bad file."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise too_deep(data.decode("utf-8", "replace")) from None
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, expected an object")
    if doc.get("format") != PROCESSES_FORMAT:
        raise ValueError(f"format {doc.get('format')!r}, expected {PROCESSES_FORMAT}")
    holders = tuple(
        VfioHolder(
            pid=int(h["pid"]),
            name=str(h["name"]),
            cmdline=tuple(str(a) for a in h["cmdline"]),
            vfio_cdevs=tuple(str(c) for c in h["vfio_cdevs"]),
            vfio_groups=tuple(str(g) for g in h["vfio_groups"]),
            iommufd=bool(h["iommufd"]),
        )
        for h in doc["holders"]
    )
    return ProcessFacts(holders, bool(doc["complete"]), str(doc["note"]))


def process_facts(root: HostRoot) -> tuple[ProcessFacts | None, str | None]:
    """(facts, problem): live scan on /, the bundle's file elsewhere, None when unknown."""
    if root.is_live:
        return scan_live(), None
    try:
        data = root.read_bytes(PROCESSES_JSON)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"/{PROCESSES_JSON}: {exc.strerror}"
    try:
        return facts_from_json(data), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"/{PROCESSES_JSON}: not a vtdlud process record ({exc})"
