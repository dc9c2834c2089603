"""`status` shows each unit's preserved record before (signature scan) and after (LUO FLB) a
kexec.  Backed only by the simulator (tests.kernelmodel): no real capture of the records exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli, status_json
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.scenarios import q35_host, two_unit_host
from tests.kernelmodel.tree import write_tree

VFIO = "0000:00:05.0"
BEHIND_PORT = "0000:03:00.0"


def _unit(doc: dict[str, Any], address: str) -> dict[str, Any]:
    return next(u for u in doc["units"] if u["address"] == address)


def _before_after(host: SimHost, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    write_tree(host, tmp_path / "before")
    before = status_json("--root", str(tmp_path / "before"))
    host.kexec()
    write_tree(host, tmp_path / "after")
    return before, status_json("--root", str(tmp_path / "after"))


@pytest.mark.parametrize("flb_variant", ["v1", "v2"])
@pytest.mark.parametrize("scalable", [False, True])
def test_one_device_before_and_after(tmp_path: Path, scalable: bool, flb_variant: str) -> None:
    host = q35_host(scalable=scalable, seed=3, flb_variant=flb_variant)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    before, after = _before_after(host, tmp_path)
    b, a = _unit(before, "0xfed90000"), _unit(after, "0xfed90000")
    # Every preservation adds every context table existing at that moment: the bitmap is the
    # set of present root halves, which kcore shows exactly.
    assert b["preserved"]["bitmap"] == b["context_tables"]
    assert b["preserved"]["required_bitmap"] == [0]  # 00:05.0 sits in bus 0's lower table
    assert (b["preserved"]["ref_count"], b["preserved"]["restored"]) == (1, False)
    assert b["preserved"]["located_by"] == "signature"
    assert a["preserved"]["located_by"] == "flb"
    assert a["preserved"]["restored"] is True
    assert a["preserved"]["root_table"] == b["preserved"]["root_table"] == b["root_table"]
    assert a["preserved"]["bitmap"] == b["preserved"]["bitmap"]
    # The old kernel zeroed every root half whose bit was clear: present halves == bits.
    assert a["context_tables"] == a["preserved"]["bitmap"]
    assert before["verdict"] in ("PASS", "NOTE") and after["verdict"] in ("PASS", "NOTE")


def test_two_units_and_ref_counts(tmp_path: Path) -> None:
    host = two_unit_host(scalable=False, seed=5)
    for bdf in (VFIO, BEHIND_PORT):
        host.vfio_attach(bdf)
        host.preserve(bdf)
    before, _ = _before_after(host, tmp_path)
    u0, u1 = _unit(before, "0xfed90000"), _unit(before, "0xfed91000")
    assert u0["preserved"]["ref_count"] == 1 and u1["preserved"]["ref_count"] == 1
    assert u1["preserved"]["required_bitmap"] == [6]  # bus 3 << 1


def test_unit_without_preserved_devices(tmp_path: Path) -> None:
    host = q35_host(scalable=True, seed=1)
    write_tree(host, tmp_path / "t")
    doc = status_json("--root", str(tmp_path / "t"))
    assert _unit(doc, "0xfed90000")["preserved"] is None


def test_text_shows_the_record(tmp_path: Path) -> None:
    host = q35_host(scalable=True, seed=2)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    write_tree(host, tmp_path / "t")
    rc, out, _ = run_cli("status", "--root", str(tmp_path / "t"))
    assert rc == 0
    assert "ref 1, 1 dev, 7 bits (signature)" in out


def test_gate_after_a_live_update_judges_the_new_outgoing_records(tmp_path: Path) -> None:
    """After a kexec the new kernel re-preserves the device for the next update: status (and so
    the gate) judges those outgoing records, found by signature, not the incoming ones."""
    host = q35_host(scalable=True, seed=4)
    host.vfio_attach(VFIO)
    host.preserve(VFIO)
    host.kexec()
    write_tree(host, tmp_path / "restored")
    assert (
        _unit(status_json("--root", str(tmp_path / "restored")), "0xfed90000")["preserved"][
            "located_by"
        ]
        == "flb"
    )
    host.preserve(VFIO)
    write_tree(host, tmp_path / "again")
    doc = status_json("--root", str(tmp_path / "again"))
    u = _unit(doc, "0xfed90000")
    assert u["preserved"]["located_by"] == "signature"
    assert u["preserved"]["restored"] is False
    assert doc["verdict"] in ("PASS", "NOTE")
