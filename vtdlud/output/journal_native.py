"""journald's native protocol in pure Python: ``sendv(*fields)`` as ``systemd.journal.sendv``.

vtdlud sends its journal entries through systemd-python (python3-systemd), which has no wheel
on PyPI: ``pip install`` would need a C compiler and libsystemd-dev.  Without it,
:mod:`vtdlud.output.journal` uses this module, which speaks the protocol ``sd_journal_sendv()``
speaks (systemd's src/libsystemd/sd-journal/journal-send.c and
https://systemd.io/JOURNAL_NATIVE_PROTOCOL/):

- one datagram to ``/run/systemd/journal/socket`` per entry; each ``FIELD=value`` is sent as
  ``FIELD=value\\n``, or, when the value holds a newline, as ``FIELD\\n``, the value's length
  as a little-endian u64, the value and ``\\n``;
- ``SYSLOG_IDENTIFIER`` is added (the process's short name) when no field sets it;
- an entry too large for a datagram (EMSGSIZE, ENOBUFS, EAGAIN) is written to a sealed memfd
  whose descriptor is sent instead (SCM_RIGHTS);
- no journald socket at all (ENOENT) drops the entry silently, as libsystemd does; any other
  error raises OSError (ECONNREFUSED: a journald that is restarting), and so does a field
  without ``=`` or with a newline in its name (EINVAL).

tests/daemon/test_journal_native.py sends the same entries both ways to a real journald and
compares what it stored.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SNDBUF_SIZE = 8 * 1024 * 1024  # libsystemd raises the socket's send buffer to this
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def encode(fields: tuple[str | bytes, ...]) -> bytes:
    """The datagram of one entry.  Raises OSError(EINVAL) on a malformed field."""
    out: list[bytes] = []
    identified = False
    for f in fields:
        raw = f.encode() if isinstance(f, str) else bytes(f)
        eq = raw.find(b"=")
        if eq <= 0:
            raise OSError(errno.EINVAL, f"journal field without a name: {raw[:40]!r}")
        nl = raw.find(b"\n")
        if 0 <= nl < eq:
            raise OSError(errno.EINVAL, f"newline in a journal field name: {raw[:40]!r}")
        identified = identified or raw[:eq] == b"SYSLOG_IDENTIFIER"
        if nl >= 0:
            value = raw[eq + 1 :]
            out += [raw[:eq], b"\n", len(value).to_bytes(8, "little"), value, b"\n"]
        else:
            out += [raw, b"\n"]
    if not identified:
        name = os.path.basename(sys.orig_argv[0] if sys.orig_argv else sys.executable)
        if name and name.isprintable():
            out += [b"SYSLOG_IDENTIFIER=", name.encode(), b"\n"]
    return b"".join(out)


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    for option in (socket.SO_SNDBUF, SO_SNDBUFFORCE):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= SNDBUF_SIZE:
                break
            sock.setsockopt(socket.SOL_SOCKET, option, SNDBUF_SIZE)
        except OSError:
            continue
    return sock


def sendv(*fields: str | bytes, path: str = JOURNAL_SOCKET) -> None:
    """Send one journal entry; see the module docstring for errors."""
    data = encode(fields)
    with _socket() as sock:
        try:
            sock.sendto(data, path)
            return
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # no journald: dropped, as libsystemd does
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS, errno.EAGAIN):
                raise
        fd = os.memfd_create("journal-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))]
            sock.sendmsg([], rights, 0, path)
        finally:
            os.close(fd)
