"""`vtdlud check --post-kexec`: the new kernel against the ledger a passing gate wrote.

Backed by the simulator (tests.kernelmodel) only: no real capture of a live update exists.  The gate
runs on the tree of the host before its kexec (``HostRoot.is_live`` is patched so that it writes
the ledger, and the process facts still come from the tree's processes.json); the host then
kexecs, one VTD06x fault is injected into the new kernel, and the post-kexec check runs on the
tree written after it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, stand_for_this_host, validate
from tests.kernelmodel.faults import Fault, inject
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host
from tests.kernelmodel.tree import TreeOptions, write_tree
from vtdlud.audit.catalog import CATALOG
from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.postkexec import post_kexec_findings
from vtdlud.cli.args import build_parser
from vtdlud.host.kmsg import read_kernel_log
from vtdlud.host.ledger import LEDGER_NAME, read_ledger
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.ledger import LedgerInput
from vtdlud.model.policy import Policy
from vtdlud.model.severity import Severity
from vtdlud.model.snapshot import KernelLog
from vtdlud.parse.kmsg import kmsg_lines, parse_dmar_faults

DMAR0 = "0xfed90000"
VFIO, NIC = "0000:00:05.0", "0000:00:02.0"
KMSG = "dev/kmsg"
FAULT_LINE = (
    "DMAR: [DMA Read NO_PASID] Request device [{}] fault addr 0xffffe000 [fault reason 0x06] "
    "PTE Read access is not set"
)


@pytest.fixture(autouse=True)
def live_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree stands for this host (ledger written and consumed), its processes.json too."""
    stand_for_this_host(monkeypatch)


def _host(scalable: bool = False) -> SimHost:
    host = q35_host(scalable=scalable, seed=3)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    return host


def _gate(host: SimHost, tmp_path: Path) -> Path:
    """The gate passes on the host before its kexec and writes the ledger."""
    state = tmp_path / "state"
    rc, _, err = run_cli(
        "check", "--root", str(write_tree(host, tmp_path / "before")), "--state-dir", str(state)
    )
    assert rc == 0, err
    return state


def _post(
    host: SimHost, tmp_path: Path, state: Path, options: TreeOptions | None = None
) -> tuple[int, dict[str, Any]]:
    root = write_tree(host, tmp_path / "after", options)
    rc, out, err = run_cli(
        "check", "--post-kexec", "--json", "--root", str(root), "--state-dir", str(state)
    )
    assert err == "" or rc != 0, err
    return rc, validate(json.loads(out))


def _keys(doc: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    return [(f["code"], f["severity"], f["unit"], f["bdf"]) for f in doc["findings"]]


@pytest.mark.parametrize("scalable", [False, True], ids=["legacy", "scalable"])
def test_clean_live_update_passes_and_consumes_the_ledger(tmp_path: Path, scalable: bool) -> None:
    host = _host(scalable)
    state = _gate(host, tmp_path)
    before = read_ledger(state)
    assert before is not None and not before.consumed and len(before.units) == 1
    host.kexec()
    rc, doc = _post(host, tmp_path, state)
    assert (rc, doc["findings"], doc["verdict"]) == (0, [], "PASS")
    after = read_ledger(state)
    assert after is not None and after.consumed_by_boot_id == host.boot_id
    assert dataclasses.replace(after, consumed_by_boot_id=None) == before  # nothing else changed
    # A second run in the same boot compares again and leaves the ledger as it is.
    assert _post(host, tmp_path, state)[0] == 0
    assert read_ledger(state) == after


CASES = [
    (Fault.NOT_RESTORED, False, ("VTD060", "FAIL", DMAR0, None)),
    (Fault.ROOT_TABLE_CHANGED, False, ("VTD061", "FAIL", DMAR0, None)),
    (Fault.CONTEXT_CHANGED, False, ("VTD062", "FAIL", DMAR0, VFIO)),
    (Fault.CONTEXT_CHANGED, True, ("VTD062", "FAIL", DMAR0, VFIO)),
    (Fault.DMAR_FAULT, False, ("VTD063", "FAIL", DMAR0, None)),
]


@pytest.mark.parametrize(
    "fault,scalable,want", CASES, ids=[f"{w[0]}-{f.value}-{s}" for f, s, w in CASES]
)
def test_each_post_kexec_fault(
    fault: Fault, scalable: bool, want: tuple[str, ...], tmp_path: Path
) -> None:
    host = _host(scalable)
    state = _gate(host, tmp_path)
    host.kexec()
    inject(host, fault)
    rc, doc = _post(host, tmp_path, state)
    assert (rc, _keys(doc)) == (1, [want]), [f["message"] for f in doc["findings"]]
    ledger = read_ledger(state)
    assert ledger is not None and ledger.consumed_by_boot_id == host.boot_id


def test_device_unpreserved_after_the_gate(tmp_path: Path) -> None:
    """VTD060: the VMM dropped the device after the gate passed; the kexec handed no IOMMU FLB
    over, so the unit of the ledger was not restored."""
    host = _host()
    state = _gate(host, tmp_path)
    host.unpreserve(VFIO)
    host.kexec()
    rc, doc = _post(host, tmp_path, state)
    assert rc == 1 and ("VTD060", "FAIL", DMAR0, None) in _keys(doc)
    assert "holds no IOMMU FLB" in doc["findings"][0]["message"]


def test_a_bit_whose_table_is_gone(tmp_path: Path) -> None:
    """VTD062: the new kernel lost a context table the ledger names (its root half zeroed)."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    unit = host.units["dmar0"]
    host.mem.set_u64(unit.root_table + 2 * 16, 0)  # bus 2's root entry: bit 4
    rc, doc = _post(host, tmp_path, state)
    assert (rc, _keys(doc)) == (1, [("VTD062", "FAIL", DMAR0, None)])
    assert "bit 4 (bus 02 lower) is absent" in doc["findings"][0]["message"]


def test_the_incoming_record_changed_since_the_gate(tmp_path: Path) -> None:
    """The incoming attachment_id is not the DID the gate recorded: VTD062 on the record."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    inject(host, Fault.WRONG_ATTACHMENT_ID)
    rc, doc = _post(host, tmp_path, state)
    assert (rc, _keys(doc)) == (1, [("VTD062", "FAIL", DMAR0, VFIO)])
    assert (
        "incoming record's attachment_id 265, the ledger's DID 9" in doc["findings"][0]["message"]
    )


def test_kernel_log_fault_lines_name_the_preserved_device(tmp_path: Path) -> None:
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    log = "\n".join(
        [
            "6,1,100,-;DMAR: IOMMU enabled",
            f"3,812,5123456,-;{FAULT_LINE.format('00:02.0')}",  # not preserved: not judged
            f"3,813,5123460,-;{FAULT_LINE.format('00:05.0')}",
            " SUBSYSTEM=pci",
            f"3,814,5123470,-;{FAULT_LINE.format('00:05.0')}",
        ]
    )
    rc, doc = _post(host, tmp_path, state, TreeOptions(overrides={KMSG: log.encode() + b"\n"}))
    assert (rc, _keys(doc)) == (1, [("VTD063", "FAIL", DMAR0, VFIO)])
    assert doc["findings"][0]["message"].startswith(f"{VFIO}: 2 DMAR fault line(s) in /dev/kmsg")


def test_gate_and_post_kexec_in_the_same_boot(tmp_path: Path) -> None:
    """VTD064: the ledger was written in this boot (no kexec yet): WARN, nothing compared, the
    ledger stays for the kexec to come."""
    host = _host()
    state = _gate(host, tmp_path)
    rc, doc = _post(host, tmp_path, state)
    assert (rc, _keys(doc)) == (0, [("VTD064", "WARN", None, None)])
    ledger = read_ledger(state)
    assert ledger is not None and not ledger.consumed


def test_a_live_update_skipped_in_between(tmp_path: Path) -> None:
    """VTD064: two kexecs since the gate (live-update count 2, the ledger's 0); the ledger is
    consumed all the same: no later boot can continue from it."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    host.kexec()
    rc, doc = _post(host, tmp_path, state)
    assert (rc, _keys(doc)) == (0, [("VTD064", "WARN", None, None)])
    assert "live-update count 2, the ledger's 0" in doc["findings"][0]["message"]
    ledger = read_ledger(state)
    assert ledger is not None and ledger.consumed_by_boot_id == host.boot_id


def test_not_a_live_update_boot(tmp_path: Path) -> None:
    """VTD064 when a ledger exists but this boot came through no kexec with KHO (pure)."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    snap = take_snapshot(HostRoot(write_tree(host, tmp_path / "after")))
    assert snap.kho is not None
    cold = dataclasses.replace(snap, kho=dataclasses.replace(snap.kho, incoming=None))
    result = post_kexec_findings(
        evaluate(cold, Policy()),
        LedgerInput(str(state), read_ledger(state)),
        KernelLog("/dev/kmsg", ()),
    )
    assert [(f.code, f.severity) for f in result.findings] == [("VTD064", Severity.WARN)]
    assert "not a live update (no kho/in)" in result.findings[0].message
    assert result.consume and not result.compared


def test_no_ledger_after_a_live_update_is_unknown(tmp_path: Path) -> None:
    host = _host()
    host.kexec()
    rc, doc = _post(host, tmp_path, tmp_path / "empty")
    assert (rc, _keys(doc)) == (3, [("VTD065", "UNKNOWN", None, None)])
    assert doc["findings"][0]["hint"] == CATALOG["VTD065"].hint


def test_no_ledger_on_a_boot_that_is_no_live_update_is_a_note(tmp_path: Path) -> None:
    rc, doc = _post(q35_host(seed=3), tmp_path, tmp_path / "empty")
    assert (rc, _keys(doc), doc["verdict"]) == (0, [("VTD065", "NOTE", None, None)], "NOTE")


def test_unreadable_ledger(tmp_path: Path) -> None:
    host = _host()
    host.kexec()
    state = tmp_path / "state"
    state.mkdir()
    (state / LEDGER_NAME).write_text("{torn")
    rc, doc = _post(host, tmp_path, state)
    assert (rc, [k[:2] for k in _keys(doc)]) == (3, [("VTD051", "UNKNOWN"), ("VTD065", "UNKNOWN")])
    assert doc["findings"][0]["message"].startswith(f"{state / LEDGER_NAME}: not JSON")


def test_ledger_consumed_by_an_earlier_boot(tmp_path: Path) -> None:
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    assert _post(host, tmp_path, state)[0] == 0
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    host.kexec()  # a second live update without a gate before it
    rc, doc = _post(host, tmp_path, state)
    assert (rc, _keys(doc)) == (3, [("VTD065", "UNKNOWN", None, None)])
    assert "already used by boot" in doc["findings"][0]["message"]


def _strip_record_addresses(state: Path) -> None:
    """The ledger as a vtdlud without record addresses wrote it (it must still load)."""
    doc = json.loads((state / LEDGER_NAME).read_text())
    assert "records" in doc and all("hw_record" in u for u in doc["units"])
    del doc["records"]
    for u in doc["units"]:
        del u["hw_record"], u["record_pages"]
    (state / LEDGER_NAME).write_text(json.dumps(doc))


def test_gate_codes_are_left_out_and_missing_records_are_unknown(tmp_path: Path) -> None:
    """The incoming FLB has a name this vtdlud does not know: `status` would also report the
    VMM-held device as unpreserved (VTD030, a gate code); post-kexec keeps VTD040.  With the
    ledger's record addresses the records are still found (VTD060 checked); with a ledger
    that has none (an older vtdlud's) VTD060 cannot be checked."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    inject(host, Fault.UNKNOWN_FLB_COMPATIBLE)
    root = write_tree(host, tmp_path / "status")
    assert "VTD030" in [f.code for f in evaluate(take_snapshot(HostRoot(root)), Policy()).findings]
    rc, doc = _post(host, tmp_path, state)
    assert rc == 3 and [k[:2] for k in _keys(doc)] == [("VTD040", "UNKNOWN")]
    assert doc["units"][0]["preserved"]["located_by"] == "ledger"
    _strip_record_addresses(state)
    ledger = read_ledger(state)
    assert ledger is not None and ledger.records is None and ledger.record_addresses() is None
    rc, doc = _post(host, tmp_path, state)
    assert rc == 3 and [k[:2] for k in _keys(doc)] == [("VTD040", "UNKNOWN"), ("VTD060", "UNKNOWN")]


def test_without_iommu_debugfs_the_live_checks_are_unknown(tmp_path: Path) -> None:
    """No RTADDR (so no kcore walk) and no regset: VTD061-063 are UNKNOWN and do not block
    under the default policy (iommu_debugfs not required); VTD060 is still checked."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    inject(host, Fault.NOT_RESTORED)
    rc, doc = _post(host, tmp_path, state, TreeOptions(iommu_debugfs=False))
    got = [(f["code"], f["severity"]) for f in doc["findings"] if f["code"] != "VTD050"]
    assert rc == 1 and sorted(got) == [
        ("VTD060", "FAIL"),
        ("VTD061", "UNKNOWN"),
        ("VTD062", "UNKNOWN"),
        ("VTD063", "UNKNOWN"),
    ]


def test_report_file_for_the_daemon(tmp_path: Path) -> None:
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    inject(host, Fault.NOT_RESTORED)
    report = tmp_path / "run" / "post-kexec.json"
    report.parent.mkdir()  # --report never creates directories (systemd's RuntimeDirectory does)
    root = write_tree(host, tmp_path / "after")
    rc, out, _ = run_cli(
        "check", "--post-kexec", "--json", "--root", str(root), "--state-dir", str(state),
        "--report", str(report),
    )  # fmt: skip
    assert rc == 1 and json.loads(report.read_text()) == json.loads(out)
    assert not (state / "ledger.json.tmp").exists()


def test_parse_dmar_faults() -> None:
    lines = [
        FAULT_LINE.format("03:00.0"),
        "DMAR: [DMA Write PASID 0x1] Request device [81:1f.7] fault addr 0x1000 [fault reason "
        "0x05] PTE Write access is not set",
        "DMAR: [DMA Read] Request device [00:02.0] fault addr 1000 [fault reason 06] PTE Read",
        "DMAR: [INTR-REMAP] Request device [00:1f.0] fault index 0x5 [fault reason 0x25] Bad",
        "DMAR: DRHD: handling fault status reg 2",
    ]
    assert [(f.bus, f.devfn) for f in parse_dmar_faults(lines)] == [
        (0x03, 0x00),
        (0x81, 0x1F << 3 | 7),
        (0x00, 0x10),
    ]


def test_read_kernel_log(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / KMSG).write_bytes(b"6,1,2,-;first\n SUBSYSTEM=pci\n4,2,3,c;second; with ;\n")
    log = read_kernel_log(HostRoot(tmp_path))
    assert (log.source, log.dmar_faults) == ("/dev/kmsg", ())
    (tmp_path / KMSG).write_bytes(
        b"6,1,2,-;first\n SUBSYSTEM=pci\n3,4,5,-;" + FAULT_LINE.format("05:00.0").encode() + b"\n"
    )
    assert [(f.bus, f.devfn) for f in read_kernel_log(HostRoot(tmp_path)).dmar_faults or ()] == [
        (5, 0)
    ]
    missing = read_kernel_log(HostRoot(tmp_path / "nowhere"))
    assert missing.dmar_faults is None and missing.reason == "no such file or directory"


def test_kmsg_lines() -> None:
    data = b"6,1,2,-;first\n SUBSYSTEM=pci\n4,2,3,c;second; with ;\n"
    assert kmsg_lines(data) == ("first", "second; with ;")


def test_the_boot_unit_runs_this_check_early() -> None:
    """systemd/vtdlud-post-kexec.service (verified by tests/systemd): the command line is this
    check with its report for the daemon, ordered after the file systems that hold the ledger."""
    unit = Path(__file__).parents[2] / "systemd" / "vtdlud-post-kexec.service"
    keys: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    [exec_start] = keys["ExecStart"]
    prog, *args = exec_start.split()
    ns = build_parser().parse_args(args)
    assert prog == "/usr/bin/vtdlud" and ns.command == "check" and ns.post_kexec
    assert ns.report == "/run/vtdlud/post-kexec.json"
    assert ns.state_dir in (None, "/var/lib/vtdlud")  # None: /var/lib/vtdlud on the live root
    assert keys["Type"] == ["oneshot"] and keys["DefaultDependencies"] == ["no"]
    assert keys["RequiresMountsFor"] == ["/var/lib/vtdlud"]
    assert "local-fs.target" in keys["After"][0].split()
    assert "sysinit.target" in keys["Before"][0].split() and keys["WantedBy"] == ["sysinit.target"]
    assert "CAP_SYS_RAWIO" in keys["CapabilityBoundingSet"][0].split()


def test_a_kernel_without_vtd(tmp_path: Path) -> None:
    """The new kernel came back without its DMAR units (e.g. booted with intel_iommu=off): with
    the gate's ledger pending that is a failure (VTD060: the unit is gone), not a host without
    VT-d.  Without a ledger, the same host is NOT_APPLICABLE and the check exits 0."""
    host = _host()
    state = _gate(host, tmp_path)
    host.kexec()
    root = write_tree(host, tmp_path / "after")
    (root / "sys/class/iommu/dmar0").unlink()  # a link to /sys/devices/virtual/iommu/dmar0
    argv = ["check", "--post-kexec", "--json", "--root", str(root), "--state-dir", str(state)]
    rc, out, _ = run_cli(*argv)
    doc = validate(json.loads(out))
    assert (rc, doc["verdict"]) == (1, "FAIL")
    assert ("VTD060", "FAIL", DMAR0, None) in _keys(doc)
    (state / LEDGER_NAME).unlink()
    rc, out, _ = run_cli(*argv)
    doc = validate(json.loads(out))
    assert (rc, doc["verdict"], doc["findings"]) == (0, "NOT_APPLICABLE", [])
