"""Item 4 of issue #11: a FIFO or a device where vtdlud expects a file never blocks or streams
forever.  Off the live root every input is opened O_NONBLOCK and refused unless regular (VTD051
naming it); the operator's files (--config, the ledger, cached reports, --root itself, a DMAR
table to decode) are refused with one line.  On main each FIFO case below blocked forever (the
alarm turns that into a failure) and the character device was read without end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.cli.helpers import finding_messages, run_cli, status_json
from tests.needs import need_root
from vtdlud.host.files import NotRegularFile, read_regular
from vtdlud.host.kmsg import read_kernel_log
from vtdlud.host.root import HostRoot
from vtdlud.service.ledger import Ledger, write_ledger
from vtdlud.service.reports import read_report
from vtdlud.service.state import read_daemon_json

CAP = "sys/devices/virtual/iommu/dmar0/intel-iommu/cap"
TRANSLATION = "sys/kernel/debug/iommu/intel/dmar_translation_struct"


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A blocked open(2) is interrupted by SIGALRM and the test fails instead of hanging."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("blocked for 20 s: a FIFO or device was waited on")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def host(capture_root: Callable[[str], Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(capture_root("b_scalable"), tmp_path / "host", symlinks=True))


def _replace_with_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def test_fifo_attribute_is_vtd051(host: Path) -> None:
    _replace_with_fifo(host / CAP)
    doc = status_json("--root", str(host))
    msg = "/sys/class/iommu/dmar0/intel-iommu/cap: a FIFO, not a regular file"
    assert msg in finding_messages(doc, "VTD051")


def test_fifo_debugfs_dump_is_vtd051(host: Path) -> None:
    _replace_with_fifo(host / TRANSLATION)
    doc = status_json("--root", str(host))
    assert f"/{TRANSLATION}: a FIFO, not a regular file" in finding_messages(doc, "VTD051")


def test_character_device_is_vtd051(host: Path) -> None:
    """/dev/zero's major:minor under a directory root: never read."""
    need_root("mknod needs CAP_MKNOD")
    (host / TRANSLATION).unlink()
    os.mknod(host / TRANSLATION, 0o444 | stat.S_IFCHR, os.makedev(1, 5))
    doc = status_json("--root", str(host))
    assert f"/{TRANSLATION}: a character device, not a regular file" in finding_messages(
        doc, "VTD051"
    )


def test_fifo_pci_attribute_read_in_batch(host: Path) -> None:
    """read_entries (a device's attributes through one directory descriptor) refuses it too."""
    hr = HostRoot(host)
    dev = hr.resolve("sys/bus/pci/devices/0000:00:02.0")
    _replace_with_fifo(host / dev / "vendor")
    got = hr.read_entries("sys/bus/pci/devices/0000:00:02.0", ["vendor", "device"])
    assert isinstance(got.files["vendor"], NotRegularFile)
    assert isinstance(got.files["device"], bytes)


def test_fifo_kcore_and_kmsg(host: Path) -> None:
    (host / "proc").mkdir(exist_ok=True)
    (host / "dev").mkdir(exist_ok=True)
    os.mkfifo(host / "proc/kcore")
    os.mkfifo(host / "dev/kmsg")
    doc = status_json("--root", str(host))
    assert doc["host"]["tiers"]["kcore"] == {
        "state": "unavailable",
        "reason": "/proc/kcore is not a regular file",
    }
    log = read_kernel_log(HostRoot(host))
    assert log.lines is None and log.reason == "a FIFO, not a regular file"


def test_fifo_config_is_one_line_exit_2(host: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "vtdlud.toml"
    os.mkfifo(fifo)
    rc, out, err = run_cli("status", "--root", str(host), "--config", str(fifo))
    assert (rc, out) == (2, "")
    assert err == f"vtdlud: error: {fifo}: cannot read: a FIFO, not a regular file\n"


def test_fifo_root_is_one_line_exit_2(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.tar.gz"
    os.mkfifo(fifo)
    rc, _, err = run_cli("status", "--root", str(fifo))
    assert rc == 2
    assert err == (
        f"vtdlud: error: --root {fifo}: a FIFO, not a regular file; expected a directory or a "
        "bundle\n"
    )


def test_fifo_decode_dmar(tmp_path: Path) -> None:
    fifo = tmp_path / "DMAR"
    os.mkfifo(fifo)
    rc, _, err = run_cli("decode", "dmar", str(fifo))
    assert rc == 2
    assert err == f"vtdlud: error: decode dmar: {fifo}: a FIFO, not a regular file\n"


def test_fifo_ledger(host: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "ledger.json")
    rc, out, err = run_cli(
        "check", "--json", "--post-kexec", "--root", str(host), "--state-dir", str(state)
    )
    assert rc in (1, 3), err
    assert any(
        f"{state}/ledger.json" in m and "a FIFO, not a regular file" in m
        for m in finding_messages(json.loads(out), "VTD051")
    ), out


def test_fifo_ledger_lock(tmp_path: Path) -> None:
    """The ledger's lock file is opened O_NONBLOCK: a FIFO there (no reader) fails at once."""
    os.mkfifo(tmp_path / ".ledger.lock")
    with pytest.raises(OSError):
        write_ledger(tmp_path, Ledger("2026-01-01T00:00:00Z", "0", None, None, None, ()))


def test_fifo_reports_and_cache(tmp_path: Path) -> None:
    for name in ("gate.json", "daemon.json", "status.json"):
        os.mkfifo(tmp_path / name)
    rf = read_report("gate", tmp_path / "gate.json")
    assert rf.doc is None and rf.error == "cannot read: a FIFO, not a regular file"
    assert read_daemon_json(tmp_path) is None


def test_read_regular(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "f", 10) == b"x" * 10
    with pytest.raises(OSError, match="larger than 9 bytes"):
        read_regular(tmp_path / "f", 9)
    with pytest.raises(NotRegularFile, match="a directory"):
        read_regular(tmp_path, 9)


def test_dev_null_config_is_no_settings(host: Path) -> None:
    """The one device allowed: ``--config /dev/null`` is the usual "no settings"."""
    assert read_regular("/dev/null", 10, allow_null=True) == b""
    with pytest.raises(NotRegularFile, match="a character device"):
        read_regular("/dev/null", 10)
    rc, _, err = run_cli("status", "--root", str(host), "--config", "/dev/null")
    assert rc == 0, err
