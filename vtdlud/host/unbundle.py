"""Opening a bundle: its members are checked and written one at a time as the archive is read.

Refused (exit 2, naming the member): absolute names (``.//tmp/x`` included), ``..`` components,
device files, FIFOs, hard links, sparse files, links to absolute paths, links that leave the
bundle, links whose target passes through another link, and members that would be written
beneath a link or a file.  No member is ever written through a symbolic link: each parent is
opened one component at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)`` from the destination.

Limits (:mod:`vtdlud.host.limits`) hold while the archive is read, so a bomb costs at most the
limit, not the archive: the member count, the declared sizes of the members' data, the size of
one member's tar headers (pax and GNU long-name data), and the total decompressed stream.  A
member larger than any input of its kind can be is cut one byte past that size: reading it then
reports the file as too large (VTD051) without inflating it onto the disk.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Protocol

from vtdlud.errors import UsageError
from vtdlud.host.files import NotRegularFile, check_regular
from vtdlud.host.limits import MAX_BUNDLE_BYTES, MAX_HEADER_BYTES, MAX_MEMBERS, member_cap

if TYPE_CHECKING:  # imported when a bundle is really opened
    import tarfile
    from pathlib import Path

_O_PARENT = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_MEMBER = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20
# The whole decompressed stream: the members' data plus, per member, a header and a pax header
# of a long name (three 512-byte blocks, with room to spare).
MAX_STREAM_BYTES = MAX_BUNDLE_BYTES + MAX_MEMBERS * 4096
HINT = "a bundle made by `vtdlud collect` has only files, directories and relative links"


class _Refused(Exception):
    """A member the extraction will not write (the reason; the caller names the member)."""


class _TooBig(Exception):
    """The archive passes one of the limits (the whole reason)."""


class _Stream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def seek(self, pos: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...
    def close(self) -> None: ...


class _Bounded:
    """The decompressed archive as tarfile reads it, counting every byte read or skipped.

    ``header_budget``, set while tarfile parses one member's headers, bounds what that parse
    may read (a pax header or GNU long name is read whole into memory): a read larger than
    what is left of it is refused before anything is read."""

    def __init__(self, raw: _Stream) -> None:
        self.raw = raw
        self.total = 0
        self.header_budget: int | None = None

    def _spend(self, n: int, *, header: bool = True) -> None:
        self.total += n
        if self.total > MAX_STREAM_BYTES:
            raise _TooBig(f"decompresses to more than {MAX_STREAM_BYTES} bytes")
        if header and self.header_budget is not None:
            self.header_budget -= n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = MAX_STREAM_BYTES - self.total + 1
        if self.header_budget is not None and n > self.header_budget:
            raise _TooBig(f"a member's tar headers hold more than {MAX_HEADER_BYTES} bytes")
        data = self.raw.read(n)
        self._spend(len(data))
        return data

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET and pos > self.raw.tell():
            self._spend(pos - self.raw.tell(), header=False)  # the last member's data
        return self.raw.seek(pos, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()


def _decompressed(f: BinaryIO) -> _Stream:
    """The archive inside ``f``: gzip (what collect writes), bzip2, xz, or a plain tar."""
    magic = f.read(6)
    f.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        import gzip  # noqa: PLC0415

        return gzip.GzipFile(fileobj=f, mode="rb")
    if magic.startswith(b"BZh"):
        import bz2  # noqa: PLC0415

        return bz2.BZ2File(f)
    if magic == b"\xfd7zXZ\x00":
        import lzma  # noqa: PLC0415

        return lzma.LZMAFile(f)
    return f


def _check_member(m: tarfile.TarInfo) -> str:
    """The member's root-relative name (no empty or "." components), or :class:`_Refused`."""
    # Leading "./" prefixes are dropped only as far as they are "./": ".//tmp/x" is "/tmp/x".
    lead = m.name
    while lead.startswith("./"):
        lead = lead[2:]
    name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
    if "\0" in m.name or "\0" in m.linkname:  # tarfile keeps a NUL of a pax header's name
        raise _Refused("has a NUL byte in its name or link target")
    if lead.startswith("/"):
        raise _Refused("has an absolute name")
    if ".." in name.split("/"):
        raise _Refused("has a '..' component")
    if m.ischr() or m.isblk():
        raise _Refused("is a device file")
    if m.isfifo():
        raise _Refused("is a FIFO")
    if m.islnk():
        raise _Refused("is a hard link")
    if m.issparse():
        raise _Refused("is a sparse file")
    if m.issym():
        if m.linkname.startswith("/"):
            raise _Refused(f"is a symbolic link to the absolute path {m.linkname!r}")
    elif not (m.isfile() or m.isdir()):
        raise _Refused("is not a file, directory or symbolic link")
    if not name and not m.isdir():
        raise _Refused("names the bundle's top directory")
    return name


class _Extraction:
    """Writes members beneath ``dest_fd`` and never through a symbolic link.

    Each member's parent is reached one component at a time with ``openat(O_NOFOLLOW |
    O_DIRECTORY)`` from the destination, so a link (``l3 -> l2/..`` or any other) is never
    followed while writing.  Links themselves are checked lexically, and a link whose target
    passes through another link member (``l2 -> l1/..``) is refused, in whichever order the two
    come: on disk every link then resolves where its text says, inside the bundle.
    """

    def __init__(self, dest_fd: int) -> None:
        self.dest_fd = dest_fd
        self.links: set[str] = set()  # names of the link members written so far
        self.through: dict[str, str] = {}  # path a link target passes through -> that link
        self._parent: tuple[str, int] | None = None  # the last parent opened (members cluster)

    def close(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _open_parent(self, parent: str) -> int:
        if self._parent is not None:
            if self._parent[0] == parent:
                return self._parent[1]
            self.close()
        fd = os.dup(self.dest_fd)
        done: list[str] = []
        try:
            for part in parent.split("/") if parent else ():
                done.append(part)
                try:
                    nfd = os.open(part, _O_PARENT, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, _O_PARENT, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(done)
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise _Refused(f"lies beneath the symbolic link {where!r}") from exc
                    raise _Refused(f"lies beneath {where!r}, which is not a directory") from exc
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self._parent = (parent, fd)
        return fd

    def _check_link(self, name: str, target: str) -> None:
        if name in self.through:
            raise _Refused(
                f"is a symbolic link where the target of {self.through[name]!r} passes through"
            )
        stack = name.split("/")[:-1]
        parts = [p for p in target.split("/") if p not in ("", ".")]
        passed: list[str] = []
        for i, part in enumerate(parts):
            if part == "..":
                if not stack:
                    raise _Refused(f"is a symbolic link ({target!r}) that leaves the bundle")
                stack.pop()
            else:
                stack.append(part)
            if i < len(parts) - 1 and stack:  # a component the resolution goes on from
                here = "/".join(stack)
                if here in self.links:
                    raise _Refused(
                        f"is a symbolic link ({target!r}) through the symbolic link {here!r}"
                    )
                passed.append(here)
        for here in passed:
            self.through.setdefault(here, name)
        self.links.add(name)

    def write(self, name: str, m: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parent, _, base = name.rpartition("/")
        if not base:
            return  # the top directory: it is dest
        if m.issym():
            self._check_link(name, m.linkname)
        pfd = self._open_parent(parent)
        try:
            if m.isdir():
                try:
                    os.mkdir(base, 0o755, dir_fd=pfd)
                except FileExistsError:
                    st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        raise _Refused("is a directory where an earlier member is not") from None
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=pfd)
            else:
                self._copy(name, m, tar, os.open(base, _O_MEMBER, 0o600, dir_fd=pfd))
        except FileExistsError as exc:
            raise _Refused("has the name of an earlier member") from exc

    @staticmethod
    def _copy(name: str, m: tarfile.TarInfo, tar: tarfile.TarFile, fd: int) -> None:
        """The member's data, cut one byte past the most an input of its kind can hold."""
        cap = member_cap(name)
        left = m.size if cap is None else min(m.size, cap)
        src = tar.extractfile(m)
        assert src is not None  # a regular file
        with src, os.fdopen(fd, "wb") as f:
            while left > 0:
                chunk = src.read(min(left, _COPY_CHUNK))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)


def _errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged archive raises (the decompressors' own errors included)."""
    import tarfile  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    errs: list[type[BaseException]] = [tarfile.TarError, EOFError, OSError, zlib.error]
    try:
        import lzma  # noqa: PLC0415

        errs.append(lzma.LZMAError)
    except ImportError:  # pragma: no cover - Python built without liblzma
        pass
    return tuple(errs)


def _next(tar: tarfile.TarFile, stream: _Bounded) -> tarfile.TarInfo | None:
    """The next member, its headers read within the budget.

    tarfile keeps every member it has read in ``members``; emptied here, so memory stays flat
    however many members there are."""
    members: list[tarfile.TarInfo] = tar.members  # type: ignore[attr-defined]
    stream.header_budget = MAX_HEADER_BYTES
    try:
        return tar.next()
    finally:
        stream.header_budget = None
        members.clear()


def _each_member(bundle: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """The members one at a time, as the archive is read, within the bundle's limits."""
    import tarfile  # noqa: PLC0415

    count = size = 0
    fd = os.open(bundle, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    try:
        check_regular(fd, str(bundle))
    except OSError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        stream = _Bounded(_decompressed(f))
        try:
            stream.header_budget = MAX_HEADER_BYTES  # opening reads the first member
            with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
                while (m := _next(tar, stream)) is not None:
                    count += 1
                    if count > MAX_MEMBERS:
                        raise _TooBig(f"has more than {MAX_MEMBERS} members")
                    size += max(m.size, 0)
                    if size > MAX_BUNDLE_BYTES:
                        raise _TooBig(f"unpacks to more than {MAX_BUNDLE_BYTES} bytes")
                    yield m, tar
        finally:
            stream.close()


def _is_gzip(bundle: Path) -> bool:
    """Whether ``bundle`` starts with the gzip magic (1f 8b); False when it cannot be read."""
    try:
        with open(bundle, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def extract_bundle(bundle: Path, dest: Path) -> None:
    """Extract ``bundle`` into ``dest`` (empty and private; the caller removes it on failure).

    Two passes over the archive: the first checks every member and the limits and writes
    nothing (a bomb is refused before a file is made), the second writes, refusing what only
    the members written before can show (a link through a link, a member beneath a link)."""

    def refused(m: tarfile.TarInfo, why: str) -> UsageError:
        return UsageError(
            f"bundle {bundle}: member {m.name!r} {why}; refusing to extract it", hint=HINT
        )

    try:
        for m, _ in _each_member(bundle):
            try:
                _check_member(m)
            except _Refused as exc:
                raise refused(m, str(exc)) from None
        out = _Extraction(os.open(dest, _O_PARENT))
        try:
            for m, tar in _each_member(bundle):
                try:
                    out.write(_check_member(m), m, tar)
                except _Refused as exc:
                    raise refused(m, str(exc)) from None
        finally:
            out.close()
            os.close(out.dest_fd)
    except _TooBig as exc:
        raise UsageError(
            f"bundle {bundle}: {exc}; refusing to extract it",
            hint="a bundle made by `vtdlud collect` is far smaller (see the README's limits)",
        ) from None
    except _errors() as exc:
        if isinstance(exc, FileNotFoundError) and not bundle.exists():
            raise UsageError(f"--root {bundle}: no such file or directory") from exc
        if isinstance(exc, NotRegularFile):
            raise UsageError(
                f"--root {bundle}: {exc.strerror}; expected a directory or a bundle"
            ) from exc
        why = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        if "could not be opened successfully" in why or not _is_gzip(bundle):
            why = "not a gzip-compressed tar archive"  # tarfile lists each method it tried
        raise UsageError(
            f"bundle {bundle}: not a readable .tar.gz bundle ({why})",
            hint="make bundles with `vtdlud collect -o FILE`",
        ) from exc
