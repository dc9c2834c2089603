"""``vtdlud collect`` bundles: write one from what a snapshot read, and open one as a root.

A bundle is a ``.tar.gz`` laid out exactly like the host root (``sys/...``, ``proc/...``) plus
``vtdlud-manifest.json``; symbolic links are kept as relative links.  Opening a bundle extracts it
into a private temporary directory, member by member as the archive is read, with the checks and
limits of :mod:`vtdlud.host.unbundle`.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vtdlud import __version__
from vtdlud.errors import UsageError
from vtdlud.frozen import frozen
from vtdlud.host.atomic import atomic_file
from vtdlud.host.root import HostRoot
from vtdlud.host.unbundle import extract_bundle

if TYPE_CHECKING:  # tarfile, tempfile, shutil and pathlib are imported when a bundle is really
    import tarfile  # used: `status --root DIR` and `status` on the live host need none of them
    from pathlib import Path

MANIFEST = "vtdlud-manifest.json"
MANIFEST_FORMAT = 1
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


@contextmanager
def open_root(arg: str) -> Iterator[HostRoot]:
    """``--root DIR|BUNDLE``: a directory is used in place, a bundle is extracted privately."""
    if os.path.isdir(arg):
        yield HostRoot(arg)
        return
    if not os.path.exists(arg):
        raise UsageError(f"--root {arg}: no such file or directory")
    import shutil  # noqa: PLC0415 - see the note at the imports
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    path = Path(arg)

    with _exit_on_signals():
        tmp: Path | None = None
        try:
            with _signals_held():  # a signal between mkdtemp and the assignment: after it
                tmp = Path(tempfile.mkdtemp(prefix="vtdlud-bundle-"))
            extract_bundle(path, tmp)
            yield HostRoot(tmp)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGTERM and SIGHUP in the block; one that came meanwhile is handled at its end."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def _exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) while a bundle is open, so the
    temporary directory is removed (their default action ends the process on the spot).  A
    handler installed inside (the daemon's own) takes precedence while it is installed."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        for s in old:  # leaving now: a second signal must not interrupt the cleanup
            signal.signal(s, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    old = {  # only where the default would end the process (not under nohup's SIG_IGN)
        s: signal.signal(s, leave)
        for s in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(s) is signal.SIG_DFL
    }
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
