"""The daemon under a seccomp filter equivalent to its unit's syscall restrictions.

systemd enforces ``SystemCallFilter=`` only when it runs the unit, which needs systemd as PID 1.
Here the same policy is built from the unit file and installed by a launcher before it execs
``vtdlud run``:

- ``SystemCallFilter=@system-service`` minus the ``~`` groups, with the groups' members taken
  from this machine's ``systemd-analyze syscall-filter`` (the definitions systemd itself
  would use) and the numbers from the kernel headers (asm/unistd_64.h); anything else fails
  with EPERM (``SystemCallErrorNumber=EPERM``);
- ``SystemCallArchitectures=native``: other architectures and the x32 ABI fail with EPERM;
- ``RestrictAddressFamilies=AF_UNIX AF_NETLINK``: socket() of any other family fails with
  EAFNOSUPPORT, as systemd does;
- ``MemoryDenyWriteExecute=yes``: the kernel's own equivalent, prctl(PR_SET_MDWE,
  PR_MDWE_REFUSE_EXEC_GAIN), where the kernel has it (6.3+).

Not reproduced: RestrictNamespaces, LockPersonality, RestrictRealtime and RestrictSUIDSGID
(further seccomp rules on clone/unshare/setns, personality, sched_setscheduler and chmod
arguments the daemon never uses), nor any of the namespace/mount directives.
"""

from __future__ import annotations

import ctypes
import errno
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import VFIO_DEVICE, DaemonFactory, HostBed, Journald
from tests.needs import needs
from vtdlud.output import journal as events

UNIT = Path(__file__).parents[2] / "systemd" / "vtdlud.service"
GATE_UNIT = UNIT.with_name("vtdlud-gate.service")
EXAMPLES = Path(__file__).parents[2] / "examples"
VTDLUD = Path(sys.executable).parent / "vtdlud"
UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AF_FAMILIES = {"AF_UNIX": 1, "AF_NETLINK": 16}
# classic BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
RET_K = 0x06
# struct seccomp_data offsets
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16

# The launcher: no_new_privs, MDWE, the filter, then exec.  argv: filter-file cmd...
LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
prog = open(sys.argv[1], "rb").read()
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("PR_SET_NO_NEW_PRIVS failed")
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.stderr.write("launcher: no MDWE on this kernel\\n")
fprog = Fprog(len(prog) // 8, prog)
if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    sys.exit("PR_SET_SECCOMP failed: errno %d" % ctypes.get_errno())
os.execv(sys.argv[2], sys.argv[2:])
"""


def unit_directives(name: str, unit: Path = UNIT) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in unit.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]


def syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(item: str, groups: dict[str, list[str]]) -> set[str]:
    if not item.startswith("@"):
        return {item}
    return set().union(*(expand(i, groups) for i in groups[item]))


def allowed_syscalls(unit: Path = UNIT) -> set[str]:
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in unit_directives("SystemCallFilter", unit):
        deny = value.startswith("~")
        names = set().union(*(expand(i, groups) for i in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def syscall_numbers() -> dict[str, int]:
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"#define __NR_(\w+) (\d+)", UNISTD.read_text())
    }


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def build_filter(unit: Path = UNIT) -> tuple[bytes, set[str]]:
    """The BPF program and the syscall names it allows."""
    numbers = syscall_numbers()
    names = {n for n in allowed_syscalls(unit) if n in numbers}
    families = [
        AF_FAMILIES[f] for v in unit_directives("RestrictAddressFamilies", unit) for f in v.split()
    ]
    assert unit_directives("SystemCallArchitectures", unit) == ["native"]
    assert unit_directives("SystemCallErrorNumber", unit) == ["EPERM"]
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    prog = [
        _insn(LD_W_ABS, OFF_ARCH),
        _insn(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        _insn(RET_K, eperm),
        _insn(LD_W_ABS, OFF_NR),
        _insn(JGE_K, X32_SYSCALL_BIT, 0, 1),
        _insn(RET_K, eperm),
        # socket(): only the unit's address families
        _insn(JEQ_K, numbers["socket"], 0, 3 + len(families)),
        _insn(LD_W_ABS, OFF_ARG0),
    ]
    for i, fam in enumerate(families):
        prog.append(_insn(JEQ_K, fam, len(families) - i, 0))
    prog += [
        _insn(RET_K, SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT),
        _insn(RET_K, SECCOMP_RET_ALLOW),
    ]
    for n in sorted(numbers[name] for name in names):
        prog += [_insn(JEQ_K, n, 0, 1), _insn(RET_K, SECCOMP_RET_ALLOW)]
    prog.append(_insn(RET_K, eperm))
    return b"".join(prog), names


needs_tools = needs(
    shutil.which("systemd-analyze") is not None and UNISTD.exists(),
    "needs systemd-analyze and the kernel headers (linux-libc-dev, pulled in by gcc)",
)


@pytest.fixture(scope="module")
def seccomp(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """The launcher prefix for a command run under the filter."""
    prog, _ = build_filter()
    path = tmp_path_factory.mktemp("seccomp") / "filter.bpf"
    path.write_bytes(prog)
    return (sys.executable, "-c", LAUNCHER, str(path))


def run_confined(seccomp: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*seccomp, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )


@needs_tools
def test_the_filter_is_the_units_policy() -> None:
    prog, names = build_filter()
    assert len(prog) // 8 < 4096  # BPF_MAXINSNS
    assert {"read", "epoll_wait", "recvmsg", "inotify_add_watch", "execve"} <= names
    assert not {"chroot", "mount", "reboot", "setuid", "setrlimit", "ptrace"} & names


@needs_tools
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import os\ntry:\n os.chroot('/')\nexcept OSError as e:\n print(e.errno)", errno.EPERM),
        (
            "import socket\ntry:\n socket.socket(socket.AF_INET)\nexcept OSError as e:\n print(e.errno)",
            errno.EAFNOSUPPORT,
        ),
        ("import socket\nsocket.socket(socket.AF_UNIX).close()\nprint(0)", 0),
    ],
    ids=["chroot", "AF_INET", "AF_UNIX"],
)
def test_the_filter_bites(seccomp: tuple[str, ...], code: str, expected: int) -> None:
    """Negative controls: the same launcher refuses what the unit refuses."""
    run = run_confined(seccomp, code)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) == expected


@needs_tools
def test_mdwe_refuses_writable_executable_memory(seccomp: tuple[str, ...]) -> None:
    code = (
        "import mmap\ntry:\n mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE|"
        "mmap.PROT_EXEC)\n print('mapped')\nexcept OSError as e:\n print(e.errno)"
    )
    run = run_confined(seccomp, code)
    if "no MDWE" in run.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (6.3+)")
    assert run.stdout.strip() == str(errno.EACCES), run.stdout + run.stderr


@needs_tools
def test_the_daemon_works_under_the_units_syscall_policy(
    daemon_factory: DaemonFactory,
    testbed: HostBed,
    journald: Journald,
    seccomp: tuple[str, ...],
) -> None:
    d = daemon_factory(launcher=seccomp, watchdog_usec=2_000_000)
    assert "verdict PASS" in d.messages[-1]
    n = d.evaluations()
    testbed.set_driver(VFIO_DEVICE, "e1000e")
    testbed.uevent(testbed.devpath(VFIO_DEVICE), "unbind")
    assert "verdict FAIL" in d.wait_evaluation(n)
    assert journald.wait_for(bool, _PID=d.pid, VTDLUD_CODE="VTD026")
    assert d.metrics.exists()
    (d.runtime / "gate.json").write_text("{}")  # inotify + an unreadable report
    assert journald.wait_for(bool, _PID=d.pid, MESSAGE_ID=events.REPORT_UNREADABLE)
    d.signal(signal.SIGHUP)
    d.wait_message(lambda m: "RELOADING=1" in m)
    d.wait_message(lambda m: "READY=1" in m)
    rc, elapsed = d.stop()
    assert rc == 0 and elapsed < 1.0
    text = d.stderr_text()
    assert "not permitted" not in text.lower() and "Traceback" not in text, text
    assert ctypes.sizeof(ctypes.c_void_p) == 8  # the filter is for x86-64


@needs_tools
def test_the_gate_works_under_its_units_syscall_policy(tmp_path: Path) -> None:
    """`vtdlud check` (vtdlud-gate.service: ~@privileged @raw-io @debug since #16) on a bundle
    with physical memory (the kcore tier) and on this live host (every process's descriptors
    through psutil), under the gate unit's seccomp policy."""
    prog, names = build_filter(GATE_UNIT)
    assert not {"chroot", "mount", "setuid", "ptrace", "pidfd_getfd", "iopl"} & names
    bpf = tmp_path / "gate.bpf"
    bpf.write_bytes(prog)
    launch = (sys.executable, "-c", LAUNCHER, str(bpf), str(VTDLUD))
    for root, ok in ((EXAMPLES / "1-preserved-clean.tar.gz", (0,)), (Path("/"), (0, 1, 3))):
        run = subprocess.run(
            [*launch, "check", "--json", "--no-ledger", "--root", str(root),
             "--state-dir", str(tmp_path / "state"), "--report", str(tmp_path / "gate.json")],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert run.returncode in ok, run.stderr
        assert "not permitted" not in run.stderr.lower() and "Traceback" not in run.stderr
        assert '"json_format_version"' in run.stdout
