"""The kernel log of this boot, from ``/dev/kmsg``, for the snapshot of the post-kexec check (it
looks for DMAR fault lines of preserved devices, VTD063; :mod:`vtdlud.parse.kmsg`).

Read non-blocking (EAGAIN ends it; EPIPE — records overwritten while reading — is skipped),
bounded; needs CAP_SYSLOG when ``kernel.dmesg_restrict`` is set.  Under ``--root`` a regular file
``dev/kmsg`` (one ``prefix;text`` record per line) is read instead; bundles carry none.
"""

from __future__ import annotations

import errno
import os

from vtdlud.host.files import check_regular
from vtdlud.host.root import HostRoot, describe_oserror
from vtdlud.model.snapshot import KernelLog
from vtdlud.parse.kmsg import kmsg_lines, parse_dmar_faults

KMSG = "dev/kmsg"
MAX_LOG_BYTES = 16 << 20
MAX_READS = 1 << 20


def read_kernel_log(root: HostRoot) -> KernelLog:
    """This boot's kernel log from ``/dev/kmsg``, non-blocking (EAGAIN ends it; EPIPE, records
    overwritten while reading, is skipped), bounded by :data:`MAX_LOG_BYTES`."""
    source = f"/{KMSG}"
    try:
        path = os.path.join(root.root_name, root.resolve(KMSG))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return KernelLog(source, None, describe_oserror(exc))
    if not root.is_live:  # a bundle's or a directory root's dev/kmsg is a file of records
        try:
            check_regular(fd, source)
        except OSError as exc:
            os.close(fd)
            return KernelLog(source, None, describe_oserror(exc))
    data = bytearray()
    try:
        for _ in range(MAX_READS):
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue
                return KernelLog(source, None, describe_oserror(exc))
            if not chunk or len(data) + len(chunk) > MAX_LOG_BYTES:
                break
            data += chunk  # /dev/kmsg: one record ("...;text\n" + dictionary) per read
    finally:
        os.close(fd)
    return KernelLog(source, tuple(parse_dmar_faults(kmsg_lines(bytes(data)))))
