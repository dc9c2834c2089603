"""The live update inside the guest: what a VMM and a live-update agent do, around vtdlud.

Runs as the guest's PID-1 child (``tests/guest/init``) with Debian's python3 and vtdlud from
``/opt/vtdlud``.  Two stages, told apart by ``vtdlud_stage=`` on the kernel command line:

stage 1 (the old kernel)
    1. bind the device to preserve (``vtdlud_guest.bdf=``, default the e1000e behind the first
       root port) to vfio-pci, open its VFIO cdev and ``/dev/iommu``, allocate an IOAS, bind the
       cdev to iommufd, attach it to the IOAS and map a sealed memfd into it: the device now has
       a paging domain with a DID, held by this process as a VMM holds it;
    2. log the test driver's knobs (``vtdlud_iommu_lu.{abi,fault}=`` on the command line, which
       the kexec passes on, so both kernels agree on the ABI);
    3. create a LUO session on ``/dev/liveupdate`` and preserve the memfd into it: the first
       preservation runs the FLBs' ``.preserve``, the IOMMU test FLB among them;
    4. ``kexec_file_load`` the same kernel (the gate runs with the next kernel loaded);
    5. run vtdlud: ``status --json``, ``check --json`` (the gate; on PASS it writes the ledger),
       ``collect --memory``; keep the raw debugfs files;
    6. save ``/var/lib/vtdlud`` to the state disk (the host's persistent /var/lib), send the
       results out on ttyS1, and ``reboot(LINUX_REBOOT_CMD_KEXEC)`` with the session fd open.
stage 2 (the new kernel)
    1. restore ``/var/lib/vtdlud`` from the state disk; retrieve the session and the memfd and
       check its bytes;
    2. run vtdlud: ``status --json``, ``check --post-kexec --json``, ``collect --memory``;
    3. send the results out on ttyS1 and power off.

ioctl numbers and layouts: Linux 7.2.13 include/uapi/linux/{liveupdate,iommufd,vfio}.h.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import termios
import time
from pathlib import Path

OUT = Path("/out")
PROJECT = Path("/opt/vtdlud")
STATE_DIR = Path("/var/lib/vtdlud")
DEBUGFS = Path("/sys/kernel/debug")
KNOBS = DEBUGFS / "vtdlud_iommu_lu"
SESSION_NAME = b"vtdlud-guest"
MEMFD_TOKEN = 0x7664_6C75_6400_0001
PATTERN = b"vtdlud live update " * 215  # 4085 bytes, checked after the kexec

# include/uapi/linux/liveupdate.h (type 0xBA)
LIVEUPDATE_IOCTL_CREATE_SESSION = 0xBA00
LIVEUPDATE_IOCTL_RETRIEVE_SESSION = 0xBA01
LIVEUPDATE_SESSION_PRESERVE_FD = 0xBA40
LIVEUPDATE_SESSION_RETRIEVE_FD = 0xBA41
# include/uapi/linux/iommufd.h (type ';' = 0x3B)
IOMMU_IOAS_ALLOC = 0x3B81
IOMMU_IOAS_MAP_FILE = 0x3B8F
IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
IOMMU_IOAS_MAP_READABLE = 1 << 2
IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
# include/uapi/linux/vfio.h (VFIO_TYPE ';', VFIO_BASE 100)
VFIO_DEVICE_BIND_IOMMUFD = 0x3B76
VFIO_DEVICE_ATTACH_IOMMUFD_PT = 0x3B77
# syscalls (x86-64) and reboot magic
SYS_KEXEC_FILE_LOAD = 320
SYS_REBOOT = 169
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543
MFD_ALLOW_SEALING = 0x2
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 0x1, 0x2, 0x4

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def log(msg: str) -> None:
    line = f"[guest-flow] {msg}"
    print(line, flush=True)
    with (OUT / "flow.log").open("a") as f:
        f.write(f"{time.monotonic():9.2f} {msg}\n")


def cmdline() -> dict[str, str]:
    args: dict[str, str] = {}
    for word in Path("/proc/cmdline").read_text().split():
        key, _, value = word.partition("=")
        args[key] = value
    return args


def write(path: Path | str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def ioctl(fd: int, request: int, buf: bytearray) -> None:
    fcntl.ioctl(fd, request, buf, True)


# --- the VMM's side: a device with a paging domain, held through iommufd ----------------------


def bind_vfio(bdf: str) -> str:
    dev = Path("/sys/bus/pci/devices") / bdf
    write(dev / "driver_override", "vfio-pci")
    if (dev / "driver").exists():
        write(dev / "driver" / "unbind", bdf)
    write("/sys/bus/pci/drivers_probe", bdf)
    names = sorted(p.name for p in (dev / "vfio-dev").iterdir())
    if not names:
        raise RuntimeError(f"{bdf}: no vfio-dev after binding vfio-pci")
    return names[0]


def hold_device(bdf: str, memfd: int) -> tuple[int, int]:
    """Open the cdev and iommufd, bind, attach to a new IOAS, map the memfd; return both fds."""
    cdev_name = bind_vfio(bdf)
    cdev = os.open(f"/dev/vfio/devices/{cdev_name}", os.O_RDWR)
    iommufd = os.open("/dev/iommu", os.O_RDWR)
    alloc = bytearray(struct.pack("<III", 12, 0, 0))
    ioctl(iommufd, IOMMU_IOAS_ALLOC, alloc)
    ioas = struct.unpack_from("<I", alloc, 8)[0]
    bind = bytearray(struct.pack("<IIiIQ", 24, 0, iommufd, 0, 0))
    ioctl(cdev, VFIO_DEVICE_BIND_IOMMUFD, bind)
    attach = bytearray(struct.pack("<IIII", 16, 0, ioas, 0))
    ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach)
    flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
    mapping = bytearray(struct.pack("<IIIiQQQ", 40, flags, ioas, memfd, 0, 1 << 16, 1 << 30))
    ioctl(iommufd, IOMMU_IOAS_MAP_FILE, mapping)
    log(f"{bdf}: {cdev_name} bound to iommufd, attached to IOAS {ioas}, 64 KiB memfd at IOVA 1 GiB")
    return cdev, iommufd


def make_memfd() -> int:
    fd = os.memfd_create("vtdlud-guest-memory", MFD_ALLOW_SEALING)
    os.ftruncate(fd, 1 << 16)
    os.pwrite(fd, PATTERN, 0)
    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
    return fd


# --- LUO --------------------------------------------------------------------------------------


def create_session(liveupdate: int) -> int:
    buf = bytearray(struct.pack("<Ii64s", 72, -1, SESSION_NAME))
    ioctl(liveupdate, LIVEUPDATE_IOCTL_CREATE_SESSION, buf)
    return int(struct.unpack_from("<i", buf, 4)[0])


def preserve_fd(session: int, fd: int) -> None:
    ioctl(
        session, LIVEUPDATE_SESSION_PRESERVE_FD, bytearray(struct.pack("<IiQ", 16, fd, MEMFD_TOKEN))
    )


def retrieve_memfd() -> bytes:
    liveupdate = os.open("/dev/liveupdate", os.O_RDWR)
    buf = bytearray(struct.pack("<Ii64s", 72, -1, SESSION_NAME))
    ioctl(liveupdate, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, buf)
    session = struct.unpack_from("<i", buf, 4)[0]
    fdbuf = bytearray(struct.pack("<IiQ", 16, -1, MEMFD_TOKEN))
    ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, fdbuf)
    memfd = struct.unpack_from("<i", fdbuf, 4)[0]
    return os.pread(memfd, len(PATTERN), 0)


# --- kexec ------------------------------------------------------------------------------------


def kexec_load(args: dict[str, str]) -> None:
    payload = Path("/run/payload")
    kernel = os.open(payload / "bzImage", os.O_RDONLY)
    initrd = os.open(payload / "initrd", os.O_RDONLY)
    words = Path("/proc/cmdline").read_text().split()
    line = " ".join("vtdlud_stage=2" if w.startswith("vtdlud_stage=") else w for w in words)
    raw = line.encode() + b"\0"
    rc = libc.syscall(SYS_KEXEC_FILE_LOAD, kernel, initrd, len(raw), ctypes.c_char_p(raw), 0)
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"kexec_file_load: {os.strerror(ctypes.get_errno())}")
    log(f"kexec_file_load: next kernel loaded, cmdline {line!r}")


def kexec_reboot() -> None:
    os.sync()
    libc.syscall(SYS_REBOOT, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, None)
    raise OSError(ctypes.get_errno(), "reboot(LINUX_REBOOT_CMD_KEXEC) returned")


# --- the disks the host attached: payload (bzImage, initrd) and state (/var/lib/vtdlud) ---------


def disk_by_serial(serial: str) -> Path:
    for block in Path("/sys/block").iterdir():
        ser = block / "serial"
        if ser.exists() and ser.read_text().strip() == serial:
            return Path("/dev") / block.name
    raise RuntimeError(f"no virtio disk with serial {serial}")


def unpack_payload() -> None:
    dest = Path("/run/payload")
    dest.mkdir(exist_ok=True)
    with (
        open(disk_by_serial("vtdlud-payload"), "rb") as disk,
        tarfile.open(fileobj=disk, mode="r|") as tar,
    ):
        tar.extractall(dest)


def save_state() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if STATE_DIR.exists():
            tar.add(STATE_DIR, arcname="vtdlud")
    data = buf.getvalue()
    fd = os.open(disk_by_serial("vtdlud-state"), os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<Q", len(data)) + data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    log(f"state disk: {len(data)} bytes of /var/lib/vtdlud saved")


def restore_state() -> None:
    with open(disk_by_serial("vtdlud-state"), "rb") as disk:
        (size,) = struct.unpack("<Q", disk.read(8))
        data = disk.read(size) if 0 < size < (64 << 20) else b""
    if not data:
        log("state disk: empty (no ledger from the previous kernel)")
        return
    STATE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(STATE_DIR.parent)
    names = sorted(p.name for p in STATE_DIR.iterdir()) if STATE_DIR.is_dir() else []
    log(f"state disk: /var/lib/vtdlud restored ({names})")


# --- vtdlud -----------------------------------------------------------------------------------


def vtdlud(name: str, *argv: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    t0 = time.monotonic()
    with (OUT / f"{name}.json").open("wb") as out, (OUT / f"{name}.stderr").open("wb") as err:
        rc = subprocess.run(
            [sys.executable, "-m", "vtdlud", *argv], stdout=out, stderr=err, env=env, check=False
        ).returncode
    (OUT / f"{name}.rc").write_text(f"{rc}\n")
    log(f"vtdlud {' '.join(argv)}: exit {rc} in {time.monotonic() - t0:.1f} s")
    return rc


def copy_raw(prefix: str) -> None:
    for name, src in (
        ("iommu_regset.txt", DEBUGFS / "iommu/intel/iommu_regset"),
        ("dmar_translation_struct.txt", DEBUGFS / "iommu/intel/dmar_translation_struct"),
        ("kho-out-fdt.bin", DEBUGFS / "kho/out/fdt"),
        ("kho-in-fdt.bin", DEBUGFS / "kho/in/fdt"),
    ):
        try:
            data = src.read_bytes()
        except OSError as exc:
            log(f"{src}: {exc.strerror}")
            continue
        (OUT / f"{prefix}{name}").write_bytes(data)


def tty_raw(fd: int) -> None:
    """No output processing (ONLCR would turn each newline into CR LF)."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def send_results(stage: str) -> None:
    """The whole /out as a tar.gz, base64, between markers on ttyS1 (the host's results file)."""
    (OUT / "dmesg.txt").write_bytes(
        subprocess.run(["dmesg"], capture_output=True, check=False).stdout
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(OUT, arcname=stage)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    with open("/dev/ttyS1", "wb") as tty:
        tty_raw(tty.fileno())
        tty.write(f"===BEGIN-RESULT {stage} sha256={digest}===\n".encode())
        tty.write(base64.encodebytes(data))
        tty.write(b"===END-RESULT===\n")
        tty.flush()
    log(f"results of {stage} sent ({len(data)} bytes)")


def stage1(args: dict[str, str]) -> None:
    unpack_payload()
    bdf = args.get("vtdlud_guest.bdf", "0000:01:00.0")
    memfd = make_memfd()
    held = hold_device(bdf, memfd)
    if KNOBS.is_dir():
        knobs = {k: (KNOBS / k).read_text().strip() for k in ("abi", "fault", "devices")}
        log(f"test driver knobs (from the command line): {knobs}")
    else:
        log(f"{KNOBS}: absent (kernel without the project's IOMMU test driver)")
    liveupdate = os.open("/dev/liveupdate", os.O_RDWR)
    session = create_session(liveupdate)
    preserve_fd(session, memfd)
    log(f"LUO session {SESSION_NAME.decode()} created, memfd preserved (token {MEMFD_TOKEN:#x})")
    kexec_load(args)
    copy_raw("pre-")
    vtdlud("pre-status", "status", "--json", "--live")
    vtdlud("pre-check", "check", "--json")
    vtdlud("pre-collect", "collect", "--memory", "-o", str(OUT / "pre-collect.tar.gz"), "--json")
    save_state()
    send_results("pre")
    log(f"kexec (holding {held} and session fd {session})")
    kexec_reboot()


def stage2(args: dict[str, str]) -> None:
    restore_state()
    try:
        data = retrieve_memfd()
        ok = data == PATTERN
        log(f"memfd retrieved: {'intact' if ok else 'CHANGED'}")
        (OUT / "memfd-intact").write_text(f"{int(ok)}\n")
    except OSError as exc:
        log(f"memfd retrieve failed: {exc}")
        (OUT / "memfd-intact").write_text("0\n")
    copy_raw("post-")
    vtdlud("post-status", "status", "--json", "--live")
    vtdlud("post-check", "check", "--post-kexec", "--json")
    vtdlud("post-collect", "collect", "--memory", "-o", str(OUT / "post-collect.tar.gz"), "--json")
    send_results("post")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    args = cmdline()
    stage = args.get("vtdlud_stage", "1")
    log(f"stage {stage}, kernel {os.uname().release}")
    try:
        if stage == "1":
            stage1(args)
        else:
            stage2(args)
    except Exception as exc:  # the host must see what failed, then the guest powers off
        log(f"FAILED: {type(exc).__name__}: {exc}")
        (OUT / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        send_results("pre" if stage == "1" else "post")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
