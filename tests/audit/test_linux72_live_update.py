"""A live update on Linux 7.2's KHO/LUO: status, the gate, the ledger's record addresses and the
post-kexec check that finds the records at them.

Model-backed (tests.kernelmodel.scenarios.linux72_host) until real captures land: kho-v4 with the cut
``kho/out/fdt`` (233 of 285 bytes, as measured), luo-v5, the test FLBs, no ``kho/out/fdt``
after the KHO boot, the incoming ``luo_ser`` and session blocks freed and reused early in the
new kernel's boot (Linux 7.2.13 kernel/liveupdate/kexec_handover.c, luo_core.c), while the
IOMMU records stay in their pages.  The gate runs on the tree before the kexec as in
tests/audit/test_postkexec.py (``HostRoot.is_live`` patched so that it writes the ledger).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, stand_for_this_host, validate
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import linux72_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.host.ledger import LEDGER_NAME, read_ledger
from vtdlud.model.abi import PAGE_SIZE

VFIO = "0000:00:05.0"


@pytest.fixture(autouse=True)
def live_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_for_this_host(monkeypatch)


def _host(scalable: bool = False, seed: int = 3) -> SimHost:
    host = linux72_host(scalable=scalable, seed=seed)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    return host


def _json(*args: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = run_cli(*args, "--json")
    assert out, err
    return rc, validate(json.loads(out))


def _gate(host: SimHost, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    state = tmp_path / "state"
    root = write_tree(host, tmp_path / "before")
    rc, doc = _json("check", "--root", str(root), "--state-dir", str(state))
    assert rc == 0, doc["findings"]
    return state, doc


def _post(
    host: SimHost, tmp_path: Path, state: Path, name: str = "after"
) -> tuple[int, dict[str, Any]]:
    root = write_tree(host, tmp_path / name)
    return _json("check", "--post-kexec", "--root", str(root), "--state-dir", str(state))


def _codes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["code"], f["severity"]) for f in doc["findings"]]


@pytest.mark.parametrize("scalable", [False, True], ids=["legacy", "scalable"])
def test_gate_reads_the_cut_root_through_kcore_and_records_addresses(
    tmp_path: Path, scalable: bool
) -> None:
    host = _host(scalable)
    state, doc = _gate(host, tmp_path)
    assert doc["verdict"] == "PASS" and doc["units"][0]["preserved"]["located_by"] == "signature"
    out = doc["handover"]["out"]
    assert out["fdt"] == {
        "state": "ok",
        "compatible": "kho-v4",
        "read_from": "kcore",
        "subsystems": ["LUO", "kexec-metadata"],
        "debugfs_size": 233,
        "totalsize": 285,
    }
    assert out["luo"]["compatible"] == "luo-v5" and out["luo"]["state"] == "ok"
    assert out["luo"]["flbs"] == [] and out["luo"]["sessions"] == []  # written only at kexec
    assert doc["handover"]["in"] is None
    ledger = read_ledger(state)
    assert ledger is not None and ledger.records is not None and ledger.records.variant == "v1"
    [unit] = ledger.units
    assert unit.hw_record is not None and unit.hw_record & ~(PAGE_SIZE - 1) in unit.record_pages
    assert len(unit.record_pages) == 3  # hw, device and domain array pages
    raw = json.loads((state / LEDGER_NAME).read_text())
    assert raw["ledger_format"] == 1 and raw["units"][0]["hw_record"] == f"{unit.hw_record:#x}"


@pytest.mark.parametrize("scalable", [False, True], ids=["legacy", "scalable"])
def test_post_kexec_finds_the_records_at_the_ledger_addresses(
    tmp_path: Path, scalable: bool
) -> None:
    host = _host(scalable)
    state, _ = _gate(host, tmp_path)
    host.kexec()
    rc, doc = _post(host, tmp_path, state)
    assert (rc, doc["findings"], doc["verdict"]) == (0, [], "PASS")
    assert doc["units"][0]["preserved"]["located_by"] == "ledger"
    assert doc["units"][0]["preserved"]["restored"] is True
    hand = doc["handover"]
    assert hand["out"]["fdt"]["state"] == "absent"  # not published after a KHO boot: no finding
    assert (
        hand["in"]["fdt"]["compatible"] == "kho-v4" and hand["in"]["fdt"]["read_from"] == "debugfs"
    )
    assert hand["in"]["kexec_metadata"] == {
        "version": 1,
        "previous_release": "7.2.13-amd64",
        "kexec_count": 1,
    }
    luo = hand["in"]["luo"]
    assert luo["state"] == "stale" and "freed the incoming LUO state" in luo["reason"]
    assert any("not published after a KHO boot" in n for n in hand["notes"])
    consumed = read_ledger(state)
    assert consumed is not None and consumed.consumed_by_boot_id == host.boot_id


def test_status_after_the_kexec_without_a_ledger_says_why(tmp_path: Path) -> None:
    host = _host()
    host.kexec()
    root = write_tree(host, tmp_path / "after")
    rc, doc = _json("status", "--live", "--root", str(root))
    assert rc == 0
    assert not [f for f in doc["findings"] if f["code"] in ("VTD040", "VTD041", "VTD051")]
    assert doc["units"][0]["preserved"] is None
    state = tmp_path / "none"
    rc, doc = _post(host, tmp_path, state, "post")
    assert rc == 3 and _codes(doc) == [("VTD065", "UNKNOWN")]


def test_ledger_without_addresses_leaves_the_records_unknown_with_the_reason(
    tmp_path: Path,
) -> None:
    host = _host()
    state, _ = _gate(host, tmp_path)
    doc = json.loads((state / LEDGER_NAME).read_text())
    del doc["records"]
    for u in doc["units"]:
        del u["hw_record"], u["record_pages"]
    (state / LEDGER_NAME).write_text(json.dumps(doc))
    host.kexec()
    rc, post = _post(host, tmp_path, state)
    assert rc == 3 and ("VTD060", "UNKNOWN") in _codes(post)
    [msg] = [f["message"] for f in post["findings"] if f["code"] == "VTD060"]
    assert "freed the incoming LUO state at boot" in msg and "no gate ledger" in msg
    assert not [c for c, _ in _codes(post) if c in ("VTD040", "VTD041", "VTD051")]


def test_reused_record_memory_is_unknown_not_a_false_chain(tmp_path: Path) -> None:
    host = _host()
    state, _ = _gate(host, tmp_path)
    ledger = read_ledger(state)
    assert ledger is not None and ledger.units[0].hw_record is not None
    host.kexec()
    slot = ledger.units[0].hw_record
    host.mem.write(slot + 8, (0xDEAD_0000).to_bytes(8, "little"))  # token: someone else's now
    rc, doc = _post(host, tmp_path, state)
    assert rc == 3 and ("VTD060", "UNKNOWN") in _codes(doc)
    [msg] = [f["message"] for f in doc["findings"] if f["code"] == "VTD060"]
    assert "ledger addresses" in msg and "memory was reused" in msg


def test_intact_freed_blob_still_leads_to_the_records_through_the_flb(tmp_path: Path) -> None:
    """If the freed pages were not reused yet, the FLB chain is followed (and proven by the
    records' signature); the test FLBs are reported, never a finding."""
    host = _host()
    host.reuse_freed_luo = False
    state, _ = _gate(host, tmp_path)
    host.kexec()
    rc, doc = _post(host, tmp_path, state)
    assert (rc, doc["findings"]) == (0, [])
    assert doc["units"][0]["preserved"]["located_by"] == "flb"
    luo = doc["handover"]["in"]["luo"]
    assert luo["state"] == "ok" and luo["compatible"] == "luo-v5" and luo["liveupdate_num"] == 0
    assert [(f["name"], f["role"]) for f in luo["flbs"]] == [
        ("liveupdate-test-flb-v0", "test"),
        ("liveupdate-test-flb-v1", "test"),
        ("liveupdate-test-flb-v2", "test"),
        ("iommu-liveupdate-v1", "iommu"),
    ]
    assert luo["flbs"][0]["data"] == "0xfeedf00dcafebee0"
    assert [s["name"] for s in luo["sessions"]] == ["vmm"]


def test_previous_kernel_other_than_the_ledgers_is_vtd064(tmp_path: Path) -> None:
    host = _host()
    state, _ = _gate(host, tmp_path)
    doc = json.loads((state / LEDGER_NAME).read_text())
    doc["kernel_release"] = "7.2.12-amd64"
    (state / LEDGER_NAME).write_text(json.dumps(doc))
    host.kexec()
    _, post = _post(host, tmp_path, state)
    assert _codes(post) == [("VTD064", "WARN")]
    assert "the previous kernel was 7.2.13-amd64" in post["findings"][0]["message"]


def test_cut_root_without_kcore_is_no_finding_and_unfindable_page_is_vtd051(tmp_path: Path) -> None:
    host = _host()
    root = write_tree(host, tmp_path / "nokcore", TreeOptions(kcore=False))
    _, doc = _json("status", "--live", "--root", str(root))
    assert doc["handover"]["out"]["fdt"]["state"] == "cut"
    assert doc["handover"]["out"]["fdt"]["subsystems"] == ["LUO", "kexec-metadata"]
    assert not [f for f in doc["findings"] if f["code"] in ("VTD040", "VTD041", "VTD051")]
    assert any("needs kcore" in n for n in doc["handover"]["notes"])
    # kcore there, but the debugfs copy matches no preserved page (say, the FDT changed)
    copy = bytearray((root / "sys/kernel/debug/kho/out/fdt").read_bytes())
    copy[126] ^= 0xFF  # a byte of the LUO node's preserved-data value
    opts = TreeOptions(overrides={"sys/kernel/debug/kho/out/fdt": bytes(copy)})
    root = write_tree(host, tmp_path / "changed", opts)
    _, doc = _json("status", "--live", "--root", str(root))
    [f] = [f for f in doc["findings"] if f["code"] == "VTD051"]
    assert "cut at 233 of 285 bytes" in f["message"]
    assert "could not be read through kcore" in f["message"]
    [why] = [f["message"] for f in doc["findings"] if f["code"] == "VTD030"]
    assert "records cannot be looked for by signature" in why
