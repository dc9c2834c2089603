"""Fixtures for the daemon's tests with real components.

- ``testbed``: a umockdev testbed (needs the preload: pytest under ``umockdev-wrapper``) holding
  a simulated host written by :mod:`vtdlud.sim` — sysfs, iommu debugfs, KHO debugfs and
  ``/proc/cmdline`` — with each PCI function and DMAR unit registered so ``tb.uevent()`` can
  announce it.  The daemon subprocess sees this tree as ``/sys`` and receives the uevents.
- ``journald``: a real systemd-journald of the session's own, in a private mount namespace
  (see below), stopped by PID; ``read(**matches)`` syncs first (``journalctl --sync``).
- ``daemon_factory``: starts the real ``vtdlud run`` as a subprocess with a test NOTIFY_SOCKET
  and collects its sd_notify messages.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.needs import missing, need_tool
from vtdlud.sim.kernel import SimHost
from vtdlud.sim.scenarios import q35_host
from vtdlud.sim.tree import TreeOptions, write_tree

try:
    import gi

    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev
except (ImportError, ValueError):
    UMockdev = None

JOURNALD = "/lib/systemd/systemd-journald"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNALD_DROPIN = Path("/run/systemd/journald.conf.d/90-vtdlud-tests.conf")  # private tmpfs
MAX_DGRAM_QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")
PRELOAD_MISSING = (
    "needs umockdev: run pytest under `umockdev-wrapper` with PyGObject and "
    "gir1.2-umockdev-1.0 installed (scripts/test does)"
)
VFIO_DEVICE = "0000:00:05.0"  # bound to vfio-pci in the q35 scenario
# A policy the daemon can judge from sysfs alone: 00:05.0 must be preservable.
POLICY = f"""\
[preserve]
devices = ["{VFIO_DEVICE}"]
vmm_held = false

[gate]
required_tiers = ["sysfs"]
"""
STRIPPED_ENV = ("LD_PRELOAD", "UMOCKDEV_DIR")

JSON = dict[str, Any]


def preloaded() -> bool:
    return UMockdev is not None and "libumockdev-preload" in os.environ.get("LD_PRELOAD", "")


def clean_env() -> dict[str, str]:
    """The environment without umockdev's preload (for journald, journalctl, the CLI)."""
    return {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}


# -- the simulated host in a umockdev testbed --------------------------------------------------
class HostBed:
    """A umockdev testbed holding a simulated host; paths are testbed-relative ("/sys/...")."""

    def __init__(self, tb: Any, work: Path) -> None:
        self.tb = tb
        self.work = work
        self.root_dir = Path(tb.get_root_dir())
        self.sys_dir = Path(tb.get_sys_dir())

    def install(self, host: SimHost, options: TreeOptions | None = None) -> None:
        tree = self.work / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        write_tree(host, tree, options or TreeOptions(kcore=False, processes=False))
        shutil.copytree(tree / "sys", self.sys_dir, symlinks=True, dirs_exist_ok=True)
        (self.root_dir / "proc").mkdir(exist_ok=True)
        shutil.copy(tree / "proc" / "cmdline", self.root_dir / "proc" / "cmdline")
        for name in os.listdir(self.sys_dir / "bus/pci/devices"):
            self._register(self.real(f"/sys/bus/pci/devices/{name}"), "bus/pci", name)
        for name in os.listdir(self.sys_dir / "class/iommu"):
            self._register(self.real(f"/sys/class/iommu/{name}"), "class/iommu", None)

    def _register(self, devdir: Path, subsystem: str, slot: str | None) -> None:
        """What libudev needs to announce a device: its subsystem link and uevent file."""
        link = devdir / "subsystem"
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(self.sys_dir / subsystem, devdir))
        (devdir / "uevent").write_text(f"PCI_SLOT_NAME={slot}\n" if slot else "")

    def host_path(self, path: str) -> Path:
        """Where a /sys path of the simulated host lives on disk."""
        assert path.startswith("/sys/")
        return self.sys_dir / path[len("/sys/") :]

    def real(self, path: str) -> Path:
        return Path(os.path.realpath(self.host_path(path)))

    def devpath(self, bdf: str) -> str:
        """The /sys/devices/... path of a PCI function, as the daemon sees it."""
        return "/sys/" + str(self.real(f"/sys/bus/pci/devices/{bdf}").relative_to(self.sys_dir))

    def set_driver(self, bdf: str, driver: str) -> None:
        """Rebind (as far as sysfs shows it): the device's driver link."""
        link = self.real(f"/sys/bus/pci/devices/{bdf}") / "driver"
        target = self.sys_dir / "bus/pci/drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(".driver.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, link.parent))
        os.replace(tmp, link)

    def uevent(self, devpath: str, action: str) -> None:
        self.tb.uevent(devpath, action)

    def add_unrelated(self, subsystem: str, name: str) -> str:
        """A device of another subsystem (usb, block, ...); returns its devpath."""
        return str(self.tb.add_device(subsystem, name, None, [], []))


# Every testbed of the session, kept until the interpreter exits.  umockdev's Testbed finalizer
# unsets UMOCKDEV_DIR, whichever testbed is current then: a testbed of an earlier test that sits
# in a reference cycle is finalized whenever the garbage collector next runs, possibly in the
# middle of a later test, which then loses its fake /sys (seen in CI: "uevent_sender_send: No
# such device /sys/devices/usb1" and no uevent).  Held here, none is finalized mid-session; each
# is emptied at teardown, and their directories go when the finalizers run at exit (removing a
# directory by hand makes that finalizer abort the process).
_TESTBEDS: list[Any] = []


@pytest.fixture
def testbed(tmp_path: Path) -> Iterator[HostBed]:
    if not preloaded():
        missing(PRELOAD_MISSING)
    tb = UMockdev.Testbed.new()
    _TESTBEDS.append(tb)
    bed = HostBed(tb, tmp_path)
    bed.install(q35_host(scalable=False, seed=1))
    try:
        yield bed
    finally:
        tb.clear()


# -- journald -----------------------------------------------------------------------------------
# Each test session has a journald of its own.  The session enters a private mount namespace
# (unshare(CLONE_NEWNS) of the pytest process, every mount made private) and mounts empty
# tmpfs over journald's directories there: its sockets (/run/systemd/journal), a drop-in for
# volatile storage (/run/systemd/journald.conf.d) and its files (/run/log/journal).  The
# journald it starts, libsystemd's sends from this process and from the daemons it starts, and
# journalctl all meet at the usual paths, which no other process on the machine sees: a
# concurrent run (or the host's own journald) neither sees these entries nor is disturbed.
JOURNAL_DIRS = (
    Path("/run/systemd/journal"),
    Path("/run/systemd/journald.conf.d"),
    Path("/run/log/journal"),
)
CLONE_NEWNS = 0x00020000
_PRIVATE: list[bool] = []  # whether this process has its private mounts (once a session)


def journald_alive() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(JOURNAL_SOCKET)
    except OSError:  # ENOENT: never started; ECONNREFUSED: a stopped journald's stale socket
        return False
    finally:
        s.close()
    return True


def private_journal_mounts() -> None:
    """Enter a private mount namespace with empty journald directories (see above).  Raises
    OSError or CalledProcessError where that is not allowed."""
    if _PRIVATE:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    env = clean_env()
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, env=env)
    for d in JOURNAL_DIRS:
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "vtdlud-tests", str(d)],
            check=True,
            env=env,
        )
    _PRIVATE.append(True)


class Journald:
    """The session's own systemd-journald (started by :func:`journald`, stopped by PID)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.owned = True  # always: no journald of the host is ever used

    def start(self) -> None:
        JOURNALD_DROPIN.write_text(
            "[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\n"
        )
        self.proc = subprocess.Popen(
            [JOURNALD],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not journald_alive():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"systemd-journald did not come up (rc={self.proc.poll()})")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop it; its socket file stays (stale: sends fail with ECONNREFUSED)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def read(self, **matches: object) -> list[JSON]:
        env = clean_env()
        subprocess.run(["journalctl", "--sync"], check=True, env=env)
        out = subprocess.run(
            ["journalctl", "-o", "json", "--no-pager", *(f"{k}={v}" for k, v in matches.items())],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_for(
        self, pred: Callable[[list[JSON]], bool], timeout: float = 5.0, **matches: object
    ) -> list[JSON]:
        deadline = time.monotonic() + timeout
        while True:
            entries = self.read(**matches)
            if pred(entries) or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)


@pytest.fixture(scope="session")
def journald() -> Iterator[Journald]:
    if os.geteuid() != 0:
        missing("needs root: a private mount namespace for the session's own journald")
    if not os.path.exists(JOURNALD):
        missing("needs systemd-journald (Debian package systemd)")
    need_tool("journalctl", "needs journalctl (Debian package systemd)")
    need_tool("mount", "needs mount (util-linux)")
    try:
        private_journal_mounts()
    except (OSError, subprocess.CalledProcessError) as exc:
        missing(f"no private mount namespace for the session's journald: {exc}")
    j = Journald()
    j.start()
    try:
        yield j
    finally:
        if j.proc is not None:
            j.stop()


# -- the daemon ---------------------------------------------------------------------------------
class DaemonProc:
    """The real ``vtdlud run`` as a subprocess, with a test NOTIFY_SOCKET."""

    def __init__(
        self,
        work: Path,
        bed: HostBed,
        *,
        config: str | None = POLICY,
        args: tuple[str, ...] = (),
        watchdog_usec: int | None = None,
        launcher: tuple[str, ...] = (),
    ) -> None:
        self.work = work
        self.bed = bed
        self.runtime = work / "run"
        self.runtime.mkdir(exist_ok=True)
        self.metrics_dir = work / "textfile"
        self.metrics_dir.mkdir(exist_ok=True)
        self.metrics = self.metrics_dir / "vtdlud.prom"
        self.config = work / "vtdlud.toml"
        if config is not None:
            self.config.write_text(config)
        self.stderr_path = work / "daemon.stderr"
        self.messages: list[str] = []
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = work / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self.notify.bind(str(notify_path))
        self.notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        env = dict(os.environ)  # keeps LD_PRELOAD; UMOCKDEV_DIR was set in C, not os.environ
        env.update(UMOCKDEV_DIR=str(bed.root_dir), NOTIFY_SOCKET=str(notify_path))
        env.pop("WATCHDOG_USEC", None)
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        cmd = [
            *launcher,
            sys.executable,
            "-m",
            "vtdlud",
            "run",
            "--runtime-dir",
            str(self.runtime),
            "--metrics",
            str(self.metrics),
            "--log-level",
            "debug",
        ]
        if config is not None:
            cmd += ["--config", str(self.config)]
        cmd += list(args)
        self.cmd, self.env = cmd, env
        self.stderr = self.stderr_path.open("wb")
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self, *, ready: bool = True) -> DaemonProc:
        with raised_dgram_qlen():
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self.stderr,
                stderr=self.stderr,
            )
            if ready:
                self.wait_ready()
        return self

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "launch() first"
        return self.proc

    @property
    def pid(self) -> int:
        return self.running.pid

    def _recv(self, timeout: float) -> str | None:
        self.notify.settimeout(max(timeout, 0.001))
        try:
            msg = self.notify.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append(msg)
        return msg

    def wait_message(self, pred: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching sd_notify message in {timeout}s; got {self.messages[-5:]}; "
                    f"stderr: {self.stderr_text()[-2000:]}"
                )
            msg = self._recv(left)
            if msg is not None and pred(msg):
                return msg
            if self.running.poll() is not None:
                raise AssertionError(
                    f"daemon exited rc={self.running.returncode}: {self.stderr_text()[-2000:]}"
                )

    def wait_ready(self, timeout: float = 20.0) -> str:
        return self.wait_message(lambda m: "READY=1" in m.splitlines(), timeout)

    def evaluations(self) -> int:
        """The evaluation number of the last STATUS= seen."""
        for msg in reversed(self.messages):
            m = re.search(r"evaluation #(\d+)", msg)
            if m:
                return int(m.group(1))
        return 0

    def wait_evaluation(self, after: int, timeout: float = 5.0) -> str:
        """Wait for a STATUS= of an evaluation numbered above ``after``."""

        def newer(msg: str) -> bool:
            m = re.search(r"evaluation #(\d+)", msg)
            return m is not None and int(m.group(1)) > after

        return self.wait_message(newer, timeout)

    def collect(self, seconds: float) -> list[str]:
        """Every message sent within the next ``seconds``."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is not None:
                got.append(msg)
        return got

    def drain(self, quiet: float = 0.5) -> list[str]:
        """Collect messages until none arrives for ``quiet`` seconds."""
        got = []
        while (msg := self._recv(quiet)) is not None:
            got.append(msg)
        return got

    def status(self) -> JSON:
        doc: JSON = json.loads((self.runtime / "status.json").read_text())
        return doc

    def daemon_json(self) -> JSON:
        doc: JSON = json.loads((self.runtime / "daemon.json").read_text())
        return doc

    def status_devices(self) -> int:
        """Devices behind all units in status.json (0 while it cannot be read)."""
        try:
            return sum(len(u["devices"]) for u in self.status()["units"])
        except (OSError, ValueError):
            return 0

    def codes(self) -> set[str]:
        return {f["code"] for f in self.status()["findings"]}

    def stderr_text(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.running.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until it exited)."""
        t0 = time.monotonic()
        self.running.send_signal(signal.SIGTERM)
        rc = self.running.wait(timeout)
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()
        self.stderr.close()


@contextlib.contextmanager
def raised_dgram_qlen(value: int = 8192) -> Iterator[bool]:
    """umockdev delivers uevents over AF_UNIX datagram sockets and its sender aborts on EAGAIN;
    the receive queue length is fixed when the daemon creates its socket (from
    net.unix.max_dgram_qlen, default 10), so raise it while the daemon starts, then restore.
    Yields whether it could be raised."""
    try:
        old = MAX_DGRAM_QLEN.read_text()
        MAX_DGRAM_QLEN.write_text(str(value))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        MAX_DGRAM_QLEN.write_text(old)


def storms_possible() -> bool:
    try:
        return os.access(MAX_DGRAM_QLEN, os.W_OK) and int(MAX_DGRAM_QLEN.read_text()) > 0
    except OSError:
        return False


DaemonFactory = Callable[..., DaemonProc]


@pytest.fixture
def daemon_factory(testbed: HostBed, tmp_path: Path) -> Iterator[DaemonFactory]:
    started: list[DaemonProc] = []

    def start(*, ready: bool = True, **kwargs: Any) -> DaemonProc:
        work = tmp_path / f"d{len(started)}"
        work.mkdir()
        d = DaemonProc(work, testbed, **kwargs)
        started.append(d)
        return d.launch(ready=ready)

    try:
        yield start
    finally:
        for d in started:
            d.close()


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProc]) -> DaemonProc:
    return daemon_factory()
