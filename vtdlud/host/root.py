"""The one place vtdlud touches the filesystem: every path lives under an injectable root.

:class:`HostRoot` resolves paths itself, one component at a time, confined to the root (like
``openat2(RESOLVE_IN_ROOT)``): a symbolic link is followed relative to the root, and one that
would leave it is refused.  While resolving it records every link and file it touches, which is
what ``vtdlud collect`` packs, so a bundle holds exactly what the snapshot read; a reader that
packs nothing (the daemon) records nothing (``record=False``).

Tests inject errors (EACCES, EIO, ...) per path through :class:`FaultPlan`, since chmod does not
stop root.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from vtdlud.frozen import frozen
from vtdlud.host.files import (
    NotRegularFile,
    PreadDecoder,
    PreadFile,
    check_regular,
    pure_path,
    read_attribute,
    read_capped,
)
from vtdlud.host.limits import InputTooLarge, debugfs_cap, input_cap

if TYPE_CHECKING:  # pathlib is imported when a Path is asked for (HostRoot.root)
    from pathlib import Path

MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS

E = TypeVar("E", bound=BaseException)


@frozen
class Fault:
    """Inject ``err`` (an errno) for paths matching ``pattern`` (fnmatch, root-relative)."""

    pattern: str
    err: int
    on: str = "any"  # "any", "read", "list"


@dataclass
class FaultPlan:
    """The faults to inject, in order (the first whose pattern matches is raised)."""

    faults: list[Fault] = field(default_factory=list)

    def check(self, rel: str, op: str) -> None:
        if not self.faults:
            return
        import fnmatch  # noqa: PLC0415 - 3 ms of import, for fault injection only

        for f in self.faults:
            if f.on in ("any", op) and fnmatch.fnmatchcase(rel, f.pattern):
                raise OSError(f.err, os.strerror(f.err), rel)


def describe_oserror(exc: OSError) -> str:
    """A short reason for an OSError: "permission denied", "no such file", ..."""
    match exc.errno:
        case errno.ENOENT:
            return "no such file or directory"
        case errno.EACCES:
            return "permission denied (EACCES)"
        case errno.EPERM:
            return "operation not permitted (EPERM)"
        case errno.EIO:
            return "I/O error (EIO)"
        case errno.ENOTDIR:
            return "not a directory"
        case errno.ELOOP:
            return "too many levels of symbolic links"
        case errno.EXDEV:
            return "symbolic link leaves the root"
        case errno.EISDIR:
            return "is a directory"
        case errno.EFBIG:  # InputTooLarge: strerror names the cap
            return exc.strerror or "file too large"
        case _:
            return exc.strerror or f"errno {exc.errno}"


def _error_value(exc: E) -> E:
    """An OSError kept as a value (in :class:`DirEntries`, or returned), without its traceback.
    The traceback's frames reach their callers through ``f_back``, and one of those holds the
    error (``out.files[name] = exc``): a reference cycle through every frame up to the snapshot
    builder, so the reader, its caches and the half-built snapshot stayed alive until the cyclic
    collector's next full pass (the daemon had several hosts' reads alive at once).  Nothing
    looks at these tracebacks: only the error's type and errno are used."""
    return exc.with_traceback(None)


_O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _link_components(link: str, target: str, *, clamp: bool) -> list[str] | None:
    """The components of the link ``link``'s (resolved, root-relative) ``target``, ".." applied
    as the walk applies it (to the resolved directory, before the components are looked at);
    None when ".." would leave the root, unless ``clamp`` (the live root: "/.." is "/")."""
    directory = link.rpartition("/")[0]
    stack = [] if target.startswith("/") or not directory else directory.split("/")
    for part in target.split("/"):
        if part == "..":
            if stack:
                stack.pop()
            elif not clamp:
                return None
        elif part not in ("", "."):
            stack.append(part)
    return stack


def link_basename(target: str) -> str:
    """The last component of a link target ("vfio-pci" for ../../bus/pci/drivers/vfio-pci)."""
    return target.rstrip("/").rpartition("/")[2]


@frozen
class DirEntries:
    """What :meth:`HostRoot.read_entries` found, by entry name."""

    files: dict[str, bytes | OSError]
    links: dict[str, str | None]
    dirs: dict[str, list[str] | OSError]
    preads: dict[str, object] = field(default_factory=dict)  # what each decoder returned


class HostRoot:
    """Filesystem access under ``root``; paths are root-relative POSIX strings ("sys/class/iommu")."""

    def __init__(
        self, root: str | Path = "/", *, faults: FaultPlan | None = None, record: bool = True
    ) -> None:
        self.root_name = pure_path(os.fspath(root))  # as str(Path(root)) spells it
        self._prefix = self.root_name.rstrip("/") + "/"
        self._live = os.path.realpath(self.root_name) == "/"
        # Off the live kernel's trees a file can be a FIFO (open would block) or a device (read
        # would never end): open without blocking and refuse anything but a regular file.
        self._nonblock = 0 if self._live else os.O_NONBLOCK
        self.faults = faults or FaultPlan()
        # Every path resolved so far -> its resolved form (one look at the host: a link is read
        # once per snapshot).
        self._dir_cache: dict[str, str] = {"": ""}
        # What was touched, for `collect`: resolved files read, dirs listed, links with targets.
        # A reader that packs nothing keeps none of it (record=False: the daemon, where a
        # 4,000-function host's config spaces alone are 17 MB held until the snapshot is built).
        self.record = record
        self.files_read: set[str] = set()
        self.dirs_listed: set[str] = set()
        self.links: dict[str, str] = {}
        self.contents: dict[str, bytes] = {}
        self.listed: dict[str, list[str]] = {}
        self.unreadable: dict[str, str] = {}
        # Bytes read with pread(2) by resolved path (PreadFile: PCI config space).
        self.bytes_pread: dict[str, int] = {}
        # The cap of debugfs dumps and KHO blobs (vtdlud.host.limits), scaled to the host by
        # scale_to_host once the inventory is known.
        self.debugfs_cap = debugfs_cap(0, 0)

    @property
    def root(self) -> Path:
        from pathlib import Path  # noqa: PLC0415 - not on the status path

        return Path(self.root_name)

    @property
    def is_live(self) -> bool:
        return self._live

    def scale_to_host(self, units: int, devices: int) -> None:
        """Scale the debugfs cap to a host of ``units`` DMAR units and ``devices`` PCI devices."""
        self.debugfs_cap = debugfs_cap(units, devices)

    def cap(self, real: str) -> int | None:
        """How much of the resolved input ``real`` is read at most (vtdlud.host.limits)."""
        return input_cap(real, self.debugfs_cap)

    # -- resolution ------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return self._prefix + rel if rel else self._prefix

    def resolve(self, rel: str, *, follow_last: bool = True) -> str:
        """Resolve ``rel`` inside the root; returns the resolved root-relative path."""
        if follow_last:
            hit = self._dir_cache.get(rel)  # keys are normalised paths resolved before
            if hit is not None:
                return hit
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        return self._walk(parts, follow_last, 0)

    def _walk(self, parts: list[str], follow_last: bool, depth: int) -> str:
        cur = ""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "..":
                cur = cur.rpartition("/")[0]
                continue
            nxt = f"{cur}/{part}" if cur else part
            if last and not follow_last:
                cur = nxt
                break
            cached = self._dir_cache.get(nxt)
            if cached is not None:
                cur = cached
                continue
            try:
                st = os.lstat(self._abs(nxt))
            except FileNotFoundError:
                # The rest cannot exist; report the full path as missing.
                cur = "/".join([nxt, *parts[i + 1 :]])
                return cur
            if stat.S_ISLNK(st.st_mode):
                if depth >= MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), nxt)
                target = os.readlink(self._abs(nxt))
                if self.record:
                    self.links[nxt] = target
                stack = _link_components(nxt, target, clamp=self.is_live)
                if stack is None:
                    raise OSError(errno.EXDEV, "symbolic link leaves the root", nxt)
                resolved = self._walk(stack, True, depth + 1) if stack else ""
                self._dir_cache[nxt] = resolved
                cur = resolved
            else:
                self._dir_cache[nxt] = nxt
                cur = nxt
        return cur

    # -- access ----------------------------------------------------------------------------
    def _failed(self, rel: str, exc: OSError) -> None:
        """Remember a failure for the bundle manifest; absent optional files are not failures."""
        if exc.errno != errno.ENOENT:
            self.unreadable[rel] = describe_oserror(exc)

    def _in_resolved_dir(self, rel: str) -> str | None:
        """``rel`` with its directory resolved already, when it is (and no fault is planned):
        only its last component is left to look at.  None: take the walk."""
        if self.faults.faults:
            return None
        parent, _, name = rel.rpartition("/")
        real_parent = self._dir_cache.get(parent)
        if real_parent is None or name in ("", ".", ".."):
            return None
        return f"{real_parent}/{name}" if real_parent else name

    def _open_direct(self, rel: str) -> tuple[str, int] | None:
        """Fast path: the parent directory is already resolved and the file is no link
        (O_NOFOLLOW), so no lstat is needed.  None: take the resolving path."""
        real = self._in_resolved_dir(rel)
        if real is None:
            return None
        try:
            fd = os.open(self._abs(real), _O_FILE | self._nonblock)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the last component is a symbolic link
                return None
            raise
        return real, fd

    def _open_dir_fast(self, rel: str) -> tuple[str, int] | None:
        """Fast path for a directory reached through one relative symbolic link in a resolved
        directory, whose target's parent is resolved too (a sysfs device:
        ``sys/bus/pci/devices/<bdf>`` -> ``../../../devices/pci0000:00/.../<bdf>``): read the
        link, apply its target to the resolved directory, and open the last component
        O_NOFOLLOW|O_DIRECTORY (a link there fails and takes the walk), with no lstat of each
        component.  The same confinement as the walk: every component but the last is one the
        walk resolved.  None: take the walk."""
        link = None if rel in self._dir_cache else self._in_resolved_dir(rel)
        if link is None:
            return None
        try:
            target = os.readlink(self._abs(link))
        except OSError:
            return None  # not a link (EINVAL), or gone: the walk says what it is
        # leaving the root (refused by the walk, or clamped live) or an absolute target: walk
        stack = None if target.startswith("/") else _link_components(link, target, clamp=False)
        if not stack:
            return None
        last = stack.pop()
        real_up = self._dir_cache.get("/".join(stack))
        if real_up is None:
            return None
        real = f"{real_up}/{last}" if real_up else last
        try:
            dfd = os.open(self._abs(real), _O_DIR)
        except OSError:
            return None
        if self.record:
            self.links[link] = target
        self._dir_cache[link] = real
        self._dir_cache.setdefault(real, real)
        return real, dfd

    def _check_regular(self, fd: int, rel: str) -> None:
        """Off the live root, refuse a FIFO, a device or a socket (NotRegularFile)."""
        if self._nonblock:
            try:
                check_regular(fd, rel)
            except OSError:
                os.close(fd)
                raise

    def read_bytes(self, rel: str, *, limit: int | None = None) -> bytes:
        """Read a whole file (or its first ``limit`` bytes). Raises OSError."""
        try:
            direct = self._open_direct(rel)
            if direct is not None:
                real, fd = direct
            else:
                self.faults.check(rel, "read")
                real = self.resolve(rel)
                self.faults.check(real, "read")
                fd = os.open(self._abs(real), os.O_RDONLY | os.O_CLOEXEC | self._nonblock)
            self._check_regular(fd, rel)
            try:
                data = read_capped(fd, self.cap(real), limit, rel)
            finally:
                os.close(fd)
        except OSError as exc:
            self._failed(rel, exc)
            raise
        if self.record:
            self.files_read.add(real)
            if limit is None:
                self.contents[real] = data
        return data

    def read_entries(
        self,
        rel_dir: str,
        files: Sequence[str] = (),
        links: Sequence[str] = (),
        dirs: Sequence[str] = (),
        preads: Mapping[str, PreadDecoder] | None = None,
    ) -> DirEntries:
        """Many entries of one directory (a sysfs device: its attributes, links and
        subdirectories): the directory is resolved and opened once and each entry is reached
        relative to it.  Per entry, the same result (and record) as :meth:`read_bytes`,
        :meth:`readlink` and :meth:`listdir` give: the data or the OSError, a link's target
        or None.  ``preads``: files handed open to a decoder (:class:`PreadFile`); per entry, what
        it returned or the OSError (as :meth:`pread_path`)."""
        preads = preads or {}
        if self.faults.faults:  # injected faults go through the per-path methods
            return self._entries_by_path(rel_dir, files, links, dirs, preads)
        out = DirEntries({}, {}, {}, {})
        try:
            fast = self._open_dir_fast(rel_dir)
            if fast is not None:
                real, dfd = fast
            else:
                real = self.resolve(rel_dir)
                dfd = os.open(self._abs(real), _O_DIR)
        except OSError as exc:
            err = _error_value(exc)
            for name in files:
                out.files[name] = err
            out.links.update(dict.fromkeys(links))
            for name in dirs:
                out.dirs[name] = err
            for name in preads:
                out.preads[name] = err
            return out
        prefix = f"{real}/" if real else ""
        try:
            for name in files:
                try:
                    fd = os.open(name, _O_FILE | self._nonblock, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:  # the entry is a link: resolve it
                        out.files[name] = self._read_or_error(f"{rel_dir}/{name}")
                        continue
                    self._failed(f"{rel_dir}/{name}", exc)
                    out.files[name] = _error_value(exc)
                    continue
                try:
                    self._check_regular(fd, f"{rel_dir}/{name}")
                except OSError as exc:
                    self._failed(f"{rel_dir}/{name}", exc)
                    out.files[name] = _error_value(exc)
                    continue
                try:
                    data = read_attribute(fd, self.cap(prefix + name), f"{rel_dir}/{name}")
                except OSError as exc:
                    self._failed(f"{rel_dir}/{name}", exc)
                    out.files[name] = _error_value(exc)
                    continue
                finally:
                    os.close(fd)
                out.files[name] = data
                if self.record:
                    self.files_read.add(prefix + name)
                    self.contents[prefix + name] = data
            for name in links:
                try:
                    out.links[name] = target = os.readlink(name, dir_fd=dfd)
                except OSError:
                    out.links[name] = None
                    continue
                if self.record:
                    self.links[prefix + name] = target
            for name in dirs:
                out.dirs[name] = self._list_at(dfd, prefix, rel_dir, name)
            for name, decode in preads.items():
                try:
                    fd = os.open(name, _O_FILE | self._nonblock, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:  # the entry is a link: resolve it
                        out.preads[name] = self._pread_or_error(f"{rel_dir}/{name}", decode)
                        continue
                    self._failed(f"{rel_dir}/{name}", exc)
                    out.preads[name] = _error_value(exc)
                    continue
                out.preads[name] = self._pread_fd(fd, prefix + name, f"{rel_dir}/{name}", decode)
        finally:
            os.close(dfd)
        return out

    def _pread_fd(self, fd: int, real: str, rel: str, decode: PreadDecoder) -> object:
        """Hand the open file ``fd`` to ``decode`` (closing it after); the OSError on failure.
        The same checks as a whole read: off the live root a regular file only, and a file
        past its cap refused where a whole read would refuse it (one read(2) of 64 KiB takes
        a shorter attribute whole, see :func:`vtdlud.host.files.read_attribute`)."""
        try:
            try:
                st = os.fstat(fd)
                if self._nonblock and not stat.S_ISREG(st.st_mode):
                    raise NotRegularFile(st.st_mode, rel)
                cap = self.cap(real)
                if cap is not None and st.st_size > cap and st.st_size >= 65536:
                    raise InputTooLarge(cap, rel)
                f = PreadFile(fd, st.st_size, self._live)
                result = decode(f)
            finally:
                os.close(fd)
        except OSError as exc:
            self._failed(rel, exc)
            return _error_value(exc)
        if self.record:
            self.files_read.add(real)
            self.bytes_pread[real] = self.bytes_pread.get(real, 0) + f.bytes_read
        return result

    def pread_path(self, rel: str, decode: PreadDecoder) -> object:
        """Open ``rel`` (resolved as :meth:`read_bytes` does) and hand it to ``decode``: what it
        returned, or the OSError."""
        return self._pread_or_error(rel, decode)

    def _pread_or_error(self, rel: str, decode: PreadDecoder) -> object:
        try:
            self.faults.check(rel, "read")
            real = self.resolve(rel)
            self.faults.check(real, "read")
            fd = os.open(self._abs(real), os.O_RDONLY | os.O_CLOEXEC | self._nonblock)
        except OSError as exc:
            self._failed(rel, exc)
            return _error_value(exc)
        return self._pread_fd(fd, real, rel, decode)

    def _list_at(self, dfd: int, prefix: str, rel_dir: str, name: str) -> list[str] | OSError:
        try:
            fd = os.open(name, _O_LIST, dir_fd=dfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link (or not a directory)
                return self._list_or_error(f"{rel_dir}/{name}")
            self._failed(f"{rel_dir}/{name}", exc)
            return _error_value(exc)
        try:
            names = sorted(os.listdir(fd))
        except OSError as exc:
            self._failed(f"{rel_dir}/{name}", exc)
            return _error_value(exc)
        finally:
            os.close(fd)
        if self.record:
            self.dirs_listed.add(prefix + name)
            self.listed[prefix + name] = names
        return names

    def _entries_by_path(
        self,
        rel_dir: str,
        files: Sequence[str],
        links: Sequence[str],
        dirs: Sequence[str],
        preads: Mapping[str, PreadDecoder],
    ) -> DirEntries:
        return DirEntries(
            {name: self._read_or_error(f"{rel_dir}/{name}") for name in files},
            {name: self.link_target(f"{rel_dir}/{name}") for name in links},
            {name: self._list_or_error(f"{rel_dir}/{name}") for name in dirs},
            {name: self._pread_or_error(f"{rel_dir}/{name}", d) for name, d in preads.items()},
        )

    def _read_or_error(self, rel: str) -> bytes | OSError:
        try:
            return self.read_bytes(rel)
        except OSError as exc:
            return _error_value(exc)

    def _list_or_error(self, rel: str) -> list[str] | OSError:
        try:
            return self.listdir(rel)
        except OSError as exc:
            return _error_value(exc)

    def read_text(self, rel: str) -> str:
        """Read a text file; bytes that are not UTF-8 raise UnicodeDecodeError (a parse error)."""
        return self.read_bytes(rel).decode("utf-8")

    def listdir(self, rel: str) -> list[str]:
        """Sorted names in a directory. Raises OSError."""
        try:
            self.faults.check(rel, "list")
            real = self.resolve(rel)
            self.faults.check(real, "list")
            names = sorted(os.listdir(self._abs(real)))
        except OSError as exc:
            self._failed(rel, exc)
            raise
        if self.record:
            self.dirs_listed.add(real)
            self.listed[real] = names
        return names

    def readlink(self, rel: str) -> str:
        """The target of a symbolic link (not followed). Raises OSError."""
        self.faults.check(rel, "read")
        parent, _, name = rel.rpartition("/")
        real_parent = self.resolve(parent) if parent else ""
        link = f"{real_parent}/{name}" if real_parent else name
        target = os.readlink(self._abs(link))
        if self.record:
            self.links[link] = target
        return target

    def link_target(self, rel: str) -> str | None:
        """:meth:`readlink`, None when there is no such link (or it cannot be read)."""
        try:
            return self.readlink(rel)
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        try:
            self.faults.check(rel, "any")
            return os.path.lexists(self._abs(self.resolve(rel)))
        except OSError:
            return False

    def is_dir(self, rel: str) -> bool:
        try:
            self.faults.check(rel, "any")
            return os.path.isdir(self._abs(self.resolve(rel)))
        except OSError:
            return False

    def touched(self) -> Iterable[str]:
        yield from sorted(self.files_read | self.dirs_listed | set(self.links))
