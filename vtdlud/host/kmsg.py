"""The kernel log of this boot, from ``/dev/kmsg`` (the post-kexec check looks for DMAR fault
lines of preserved devices, VTD063).

Read non-blocking (EAGAIN ends it; EPIPE — records overwritten while reading — is skipped),
bounded; needs CAP_SYSLOG when ``kernel.dmesg_restrict`` is set.  Under ``--root`` a regular file
``dev/kmsg`` (one ``prefix;text`` record per line) is read instead; bundles carry none.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from vtdlud.frozen import frozen
from vtdlud.host.files import check_regular
from vtdlud.host.root import HostRoot, describe_oserror


@frozen
class KernelLog:
    """This boot's kernel log lines (the text after ``;`` of each record), None: not readable."""

    source: str
    lines: tuple[str, ...] | None
    reason: str = ""


KMSG = "dev/kmsg"
MAX_LOG_BYTES = 16 << 20
MAX_READS = 1 << 20


def read_kernel_log(root: HostRoot) -> KernelLog:
    """This boot's kernel log from ``/dev/kmsg``, non-blocking (EAGAIN ends it; EPIPE, records
    overwritten while reading, is skipped), bounded by :data:`MAX_LOG_BYTES`."""
    source = f"/{KMSG}"
    try:
        path = Path(root.root) / root.resolve(KMSG)
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
    lines = []
    for record in data.decode("utf-8", "replace").split("\n"):
        if record and not record.startswith(" "):  # " KEY=value": a record's dictionary
            lines.append(record.partition(";")[2] if ";" in record else record)
    return KernelLog(source, tuple(lines))
