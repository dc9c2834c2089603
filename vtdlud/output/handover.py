"""The KHO/LUO hand-over as status shows it: the ``handover`` member of the JSON envelope and a
few text lines.

Per side (``kho/out``, this kernel's outgoing state; ``kho/in``, what the previous kernel handed
over): the root FDT (its compatible, where it was read from, whether the debugfs copy was cut),
the subsystems, ``kexec-metadata``, and the LUO state: its compatible, live-update number,
sessions and FLBs.  Each FLB has a role: ``iommu`` (the IOMMU FLB), ``test`` (the kernel's
``liveupdate-test-flb-v<N>``, reported and never a finding) or ``other``.  A LUO state that the
running kernel freed at boot and that no longer reads soundly is ``stale`` with its reason
(Linux 7.2, vtdlud.parse.luo): that is normal and no finding.
"""

from __future__ import annotations

from typing import Any

from vtdlud.host.kho import KhoSide
from vtdlud.model.snapshot import Snapshot
from vtdlud.parse.kho import KhoRoot, UnknownKho
from vtdlud.parse.khocut import CutKhoRoot
from vtdlud.parse.luo import LuoBlob, LuoCorrupt, LuoFlb, LuoSession, StaleLuo, UnknownLuo

JSON = dict[str, Any]


def _fdt(side: KhoSide) -> JSON:
    root, cut = side.root, side.cut
    out: JSON = {
        "state": "absent",
        "compatible": None,
        "read_from": None,
        "subsystems": [b.name for b in side.blobs],
        "debugfs_size": cut.size if cut is not None else None,
        "totalsize": cut.totalsize if cut is not None else None,
    }
    if isinstance(root, KhoRoot):
        out.update(state="ok", compatible=root.compatible, read_from=root.read_from)
        out["subsystems"] = sorted(root.subsystems)
    elif isinstance(root, UnknownKho):
        out.update(state="unknown", compatible=root.compatible)
    elif isinstance(root, CutKhoRoot):
        out.update(state="cut", compatible=root.compatible)
        out["subsystems"] = sorted(n.name for n in root.children)
    return out


def _part_state(value: object) -> tuple[str, str | None]:
    if isinstance(value, StaleLuo):
        return "stale", value.reason
    if isinstance(value, UnknownLuo):
        return "unknown", value.reason
    if isinstance(value, LuoCorrupt):
        return "corrupt", f"{value.what}: {value.reason}"
    return "ok", None


def _sessions(value: object) -> list[JSON] | None:
    if not isinstance(value, tuple):
        return None
    out: list[JSON] = []
    for s in value:
        assert isinstance(s, LuoSession)
        out.append({"name": s.name, "files": None if s.files is None else len(s.files)})
    return out


def _flbs(value: object) -> list[JSON] | None:
    if not isinstance(value, tuple):
        return None
    out: list[JSON] = []
    for f in value:
        assert isinstance(f, LuoFlb)
        out.append({"name": f.name, "role": f.role, "count": f.count, "data": f"{f.data:#x}"})
    return out


def _luo(side: KhoSide) -> JSON | None:
    luo = side.luo
    if luo is None:
        return None
    state, reason = _part_state(luo)
    out: JSON = {
        "state": state,
        "reason": reason,
        "compatible": luo.compatible if isinstance(luo, LuoBlob | UnknownLuo) else None,
        "liveupdate_num": luo.liveupdate_num if isinstance(luo, LuoBlob) else None,
        "sessions": None,
        "flbs": None,
    }
    walked = side.luo_state
    if walked is not None:
        out["sessions"] = _sessions(walked.sessions)
        out["flbs"] = _flbs(walked.flbs)
        for part in (walked.sessions, walked.flbs, walked.iommu):
            part_state, why = _part_state(part)
            if part_state != "ok" and out["state"] == "ok":
                out["state"], out["reason"] = part_state, why
    return out


def _side(side: KhoSide | None) -> JSON | None:
    if side is None:
        return None
    meta = side.metadata
    return {
        "fdt": _fdt(side),
        "kexec_metadata": None
        if meta is None
        else {
            "version": meta.version,
            "previous_release": meta.previous_release,
            "kexec_count": meta.kexec_count,
        },
        "luo": _luo(side),
    }


def handover_json(snapshot: Snapshot) -> JSON | None:
    """The ``handover`` member (None when kho debugfs was not read)."""
    kho = snapshot.kho
    if kho is None:
        return None
    return {"out": _side(kho.outgoing), "in": _side(kho.incoming), "notes": list(kho.notes)}


def handover_lines(snapshot: Snapshot) -> list[str]:
    """A few lines for the text status (empty when kho debugfs was not read)."""
    doc = handover_json(snapshot)
    if doc is None:
        return []
    lines = ["KHO/LUO hand-over"]
    for name in ("out", "in"):
        side = doc[name]
        if side is None:
            continue
        fdt = side["fdt"]
        text = f"  {name}: root {fdt['compatible'] or '-'} ({fdt['state']}"
        if fdt["read_from"] == "kcore":
            text += f", read through kcore: debugfs copy {fdt['debugfs_size']} of "
            text += f"{fdt['totalsize']} bytes"
        text += ")"
        meta = side["kexec_metadata"]
        if name == "in" and meta is not None and meta["previous_release"]:
            text += f", from {meta['previous_release']} (kexec {meta['kexec_count']})"
        luo = side["luo"]
        if luo is not None:
            text += f"; LUO {luo['compatible'] or '-'} {luo['state']}"
            if luo["liveupdate_num"] is not None:
                text += f" #{luo['liveupdate_num']}"
        lines.append(text)
        if luo is not None and luo["reason"]:
            lines.append(f"    {luo['reason']}")
        flbs = (luo["flbs"] or []) if luo is not None else []
        for flb in flbs:
            lines.append(f"    FLB {flb['name']} ({flb['role']}), {flb['count']} file(s)")
    lines += [f"  note: {n}" for n in doc["notes"]]
    return [*lines, ""]
