"""Watch the runtime directory for the oneshots' reports with inotify(7), via libc (ctypes).

The gate writes ``gate.json`` by temp file + rename (IN_MOVED_TO), a plain writer closes it
(IN_CLOSE_WRITE); removal is IN_DELETE / IN_MOVED_FROM.  Only the names asked for are reported.
An event-queue overflow (IN_Q_OVERFLOW) reports every name.  If the directory itself goes
away (IN_IGNORED) the watch is gone: :attr:`DirWatch.lost` is set and the daemon re-arms it at
its next evaluation.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class DirWatch:
    def __init__(self, directory: Path, names: frozenset[str]) -> None:
        self.directory = directory
        self.names = names
        self.lost = False
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "inotify_init1")
        self._fd: int = fd
        try:
            self._add()
        except OSError:
            os.close(fd)
            raise

    def _add(self) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(self.directory), MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(self.directory))
        self.lost = False

    def rearm(self) -> bool:
        """Watch the directory again after it was removed and re-created."""
        try:
            self._add()
        except OSError:
            return False
        return True

    def fileno(self) -> int:
        return self._fd

    def read(self) -> set[str]:
        """The watched names that changed since the last read (non-blocking)."""
        changed: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            if not data:
                return changed
            off = 0
            while off + _HEADER.size <= len(data):
                _wd, mask, _cookie, length = _HEADER.unpack_from(data, off)
                raw = data[off + _HEADER.size : off + _HEADER.size + length]
                off += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    changed |= self.names
                if mask & IN_IGNORED:
                    self.lost = True
                name = raw.split(b"\0", 1)[0].decode(errors="replace")
                if name in self.names:
                    changed.add(name)

    def close(self) -> None:
        os.close(self._fd)
