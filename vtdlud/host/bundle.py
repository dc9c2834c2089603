"""``vtdlud collect`` bundles: write one from what a snapshot read, and open one as a root.

A bundle is a ``.tar.gz`` laid out exactly like the host root (``sys/...``, ``proc/...``) plus
``vtdlud-manifest.json``; symbolic links are kept as relative links.  Opening a bundle extracts it
into a private temporary directory after checking every member: absolute names, ``..``
components, device files, FIFOs, hard links, links that leave the root and links whose target
passes through another link are refused, and no member is written through a link (each parent
is opened component by component with ``O_NOFOLLOW`` beneath the destination).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtdlud import __version__
from vtdlud.errors import UsageError
from vtdlud.frozen import frozen
from vtdlud.host.atomic import atomic_file
from vtdlud.host.root import HostRoot

if TYPE_CHECKING:  # tarfile, tempfile and shutil are imported when a bundle is really used:
    import tarfile  # `status --root DIR` and `status` on the live host need none of them

MANIFEST = "vtdlud-manifest.json"
MANIFEST_FORMAT = 1
MAX_BUNDLE_BYTES = 1 << 30  # refuse to unpack more than 1 GiB
MAX_MEMBERS = 200_000
NEVER_COLLECT = ("proc/kcore",)  # physical memory: tiers are probed, never packed


@frozen
class CollectResult:
    path: Path
    files: int
    links: int
    dirs: int
    unreadable: int  # entries in the manifest's "unreadable" list


def _relative_link(link: str, target: str) -> str:
    """A link target made relative to the link's directory (absolute = root-relative)."""
    if not target.startswith("/"):
        return target
    return posixpath.relpath(target.lstrip("/") or ".", posixpath.dirname(link) or ".")


def _parents(rel: str) -> Iterator[str]:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def write_bundle(
    root: HostRoot,
    out: Path,
    *,
    manifest: dict[str, Any],
    extra: dict[str, bytes] | None = None,
) -> CollectResult:
    """Pack what ``root`` recorded, plus ``extra`` files, into ``out`` (temp name, then rename)."""
    import io  # noqa: PLC0415 - see the note at the imports
    import tarfile  # noqa: PLC0415

    files = {p: d for p, d in root.contents.items() if p not in NEVER_COLLECT}
    files.update(extra or {})
    links = dict(root.links)
    dirs: set[str] = set(root.dirs_listed)
    # Entries of listed directories that are themselves links or directories, so listing the
    # bundle gives the same names (unread regular files are left out: no invented contents).
    for d in sorted(root.dirs_listed):
        for name in root.listed.get(d, ()):
            child = f"{d}/{name}" if d else name
            full = root.root / child
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) and child not in links:
                links[child] = os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                dirs.add(child)
    for p in list(files) + list(links) + list(dirs):
        dirs.update(_parents(p))
    dirs.discard("")
    now = int(time.time())

    def info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = kind, mode, now, "root", "root"
        return ti

    with atomic_file(out, mode=0o600) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for d in sorted(dirs - set(links) - set(files)):
            tar.addfile(info(d, tarfile.DIRTYPE, 0o755))
        for link, target in sorted(links.items()):
            ti = info(link, tarfile.SYMTYPE, 0o777)
            ti.linkname = _relative_link(link, target)
            tar.addfile(ti)
        for path, data in sorted(files.items()):
            ti = info(path, tarfile.REGTYPE, 0o444)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
        body = (json.dumps(manifest, indent=2) + "\n").encode()
        ti = info(MANIFEST, tarfile.REGTYPE, 0o444)
        ti.size = len(body)
        tar.addfile(ti, io.BytesIO(body))
    return CollectResult(out, len(files), len(links), len(dirs), len(manifest["unreadable"]))


def make_manifest(
    root_label: str, kernel_release: str | None, boot_id: str | None, unreadable: dict[str, str]
) -> dict[str, Any]:
    return {
        "manifest_format": MANIFEST_FORMAT,
        "vtdlud_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "root": root_label,
        "kernel_release": kernel_release,
        "boot_id": boot_id,
        "unreadable": [{"path": f"/{p}", "reason": r} for p, r in sorted(unreadable.items())],
    }


# -- reading a bundle --------------------------------------------------------------------------
_O_PARENT = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_MEMBER = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Refused(Exception):
    """A member the extraction will not write (the reason; the caller names the member)."""


def _check_member(m: tarfile.TarInfo) -> str:
    """The member's root-relative name (no empty or "." components), or :class:`_Refused`."""
    # Leading "./" prefixes are dropped only as far as they are "./": ".//tmp/x" is "/tmp/x".
    lead = m.name
    while lead.startswith("./"):
        lead = lead[2:]
    name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
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
        import shutil  # noqa: PLC0415 - see the note at the imports

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
                src = tar.extractfile(m)
                assert src is not None
                with src, os.fdopen(os.open(base, _O_MEMBER, 0o600, dir_fd=pfd), "wb") as f:
                    shutil.copyfileobj(src, f)
        except FileExistsError as exc:
            raise _Refused("has the name of an earlier member") from exc


def extract_bundle(bundle: Path, dest: Path) -> None:
    """Check every member first, then extract into ``dest`` (which must be empty and private)."""
    import tarfile  # noqa: PLC0415 - see the note at the imports

    def refused(m: tarfile.TarInfo, why: str) -> UsageError:
        return UsageError(
            f"bundle {bundle}: member {m.name!r} {why}; refusing to extract it",
            hint="a bundle made by `vtdlud collect` has only files, directories and relative links",
        )

    try:
        with tarfile.open(bundle, "r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise UsageError(
                    f"bundle {bundle}: {len(members)} members, more than {MAX_MEMBERS}"
                )
            checked: list[tuple[str, tarfile.TarInfo]] = []
            for m in members:
                try:
                    checked.append((_check_member(m), m))
                except _Refused as exc:
                    raise refused(m, str(exc)) from None
            if sum(m.size for _, m in checked if m.isfile()) > MAX_BUNDLE_BYTES:
                raise UsageError(f"bundle {bundle}: unpacks to more than {MAX_BUNDLE_BYTES} bytes")
            out = _Extraction(os.open(dest, _O_PARENT))
            try:
                for name, m in checked:
                    try:
                        out.write(name, m, tar)
                    except _Refused as exc:
                        raise refused(m, str(exc)) from None
            finally:
                out.close()
                os.close(out.dest_fd)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) and not bundle.exists():
            raise UsageError(f"--root {bundle}: no such file or directory") from exc
        why = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        if isinstance(exc, tarfile.ReadError) and "could not be opened successfully" in why:
            why = "not a gzip-compressed tar archive"  # tarfile lists each method it tried
        raise UsageError(
            f"bundle {bundle}: not a readable .tar.gz bundle ({why})",
            hint="make bundles with `vtdlud collect -o FILE`",
        ) from exc


@contextmanager
def open_root(arg: str) -> Iterator[HostRoot]:
    """``--root DIR|BUNDLE``: a directory is used in place, a bundle is extracted privately."""
    path = Path(arg)
    if path.is_dir():
        yield HostRoot(path)
        return
    if not path.exists():
        raise UsageError(f"--root {arg}: no such file or directory")
    import shutil  # noqa: PLC0415 - see the note at the imports
    import tempfile  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="vtdlud-bundle-"))
    try:
        extract_bundle(path, tmp)
        yield HostRoot(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
