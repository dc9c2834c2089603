"""Read ``/sys/kernel/debug/kho/{out,in}`` through :class:`HostRoot` into :mod:`vtdlud.parse.kho`
and :mod:`vtdlud.parse.luo`.

Two debugfs generations exist (reference/kernel-interfaces.md §3.1):

* older (``kernel/kexec_handover.c`` of 6.16): ``out/finalize`` exists; ``out/fdt`` and
  ``out/sub_fdts/*`` appear only once finalize reads ``1``;
* newer (``kernel/liveupdate/kexec_handover_debugfs.c``): no ``finalize``; the root FDT and the
  subsystem blobs are published as they are added.

``in/`` exists only after a KHO kexec and holds the previous kernel's root ``fdt`` and one
``sub_fdts/<child node name>`` blob per subsystem.  The LUO entry is ``sub_fdts/LUO``: an FDT or a
raw ``struct luo_ser`` depending on the kernel (detected by the FDT magic).

Linux 7.2 (kho-v4; Linux 7.2.13 kernel/liveupdate/kexec_handover.c, kexec_handover_debugfs.c,
luo_core.c):

* ``out/fdt`` is cut (its length was fixed before LUO added its node): what the copy holds is
  read, and with kcore the whole FDT is read from its preserved page
  (:mod:`vtdlud.parse.khocut`); without kcore the root stays a :class:`CutKhoRoot` and a note
  says so (the kcore tier's own VTD050 stands for what needs it); with kcore but no page found,
  an input problem (VTD051) gives the reason.
* after a KHO boot ``out/fdt`` is not published at all (``kho_init()`` returns right after
  exposing ``kho/in``): a note, not a problem.
* ``in/sub_fdts/LUO`` is freed memory once this kernel has booted (the incoming root being
  kho-v4 means this kernel is of that generation: ``kho_populate()`` accepts only its own
  compatible; that 7.2's successors keep freeing it is inferred): it is read with
  :func:`~vtdlud.parse.luofreed.read_freed_luo`, and what does not read soundly is stale, no problem.
* ``sub_fdts/kexec-metadata`` names the kernel that wrote it (:class:`KexecMetadata`).

A file that cannot be read or parsed becomes an :class:`InputProblem` naming its path (VTD051);
an unknown compatible is not a problem but a result (:class:`UnknownKho`/:class:`UnknownLuo`,
VTD040).  Nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from vtdlud.errors import ParseError
from vtdlud.frozen import frozen
from vtdlud.host.root import HostRoot, describe_oserror
from vtdlud.model.khomem import PreservedMemory
from vtdlud.model.snapshot import InputProblem, Tier
from vtdlud.parse.kho import (
    KHO_COMPATIBLE_V4,
    KHO_METADATA_NODE_NAME,
    KHO_SUB_TREE_PROP,
    KexecMetadata,
    KhoRoot,
    ScratchRegion,
    UnknownKho,
    is_fdt,
    parse_finalize,
    parse_kexec_metadata,
    parse_scratch,
)
from vtdlud.parse.khocut import (
    CutKhoRoot,
    RecoveredRoot,
    parse_kho_debugfs_root,
    recover_cut_root,
)
from vtdlud.parse.luo import (
    LUO_KHO_ENTRY_NAME,
    LuoBlob,
    LuoState,
    ReadPhys,
    StaleLuo,
    UnknownLuo,
    parse_luo_blob,
    walk_luo,
)
from vtdlud.parse.luofreed import read_freed_luo

T = TypeVar("T")
V = TypeVar("V")

KHO_DEBUGFS = "sys/kernel/debug/kho"
MAX_BLOB = 64 << 20  # debugfs KHO blobs are a few pages; a bigger file is not one


@frozen
class SubBlob:
    """One file of ``sub_fdts/``."""

    name: str
    size: int
    is_fdt: bool


@frozen
class KhoSide:
    """``kho/out`` (this kernel's outgoing state) or ``kho/in`` (what the previous one handed over)."""

    side: str  # "out" or "in"
    finalized: bool | None  # out/finalize (older debugfs only); None when there is no such file
    # None: no fdt (yet), or unreadable (see problems).  CutKhoRoot: the debugfs copy is cut
    # and the whole FDT could not be read through kcore (see ``cut`` for a root that was).
    root: KhoRoot | UnknownKho | CutKhoRoot | None
    scratch: tuple[ScratchRegion, ...] | None  # out only
    blobs: tuple[SubBlob, ...]
    # sub_fdts/LUO decoded; None when absent or unreadable; StaleLuo: freed memory (Linux 7.2)
    luo: LuoBlob | UnknownLuo | StaleLuo | None
    luo_state: LuoState | None  # the LUO blob walked through read_phys, when one was given
    cut: CutKhoRoot | None = None  # the debugfs copy of the root, when it was cut
    memory_map: PreservedMemory | None = None  # walked to read a cut root through kcore
    metadata: KexecMetadata | None = None  # sub_fdts/kexec-metadata
    luo_freed: bool = False  # in/: this kernel freed the LUO blob at boot (Linux 7.2)


@frozen
class KhoState:
    outgoing: KhoSide | None  # None: no kho/out
    incoming: KhoSide | None  # None: no kho/in (this boot was not a KHO kexec)
    has_finalize: bool  # the older debugfs generation (out/finalize exists)
    problems: tuple[InputProblem, ...]
    notes: tuple[str, ...] = ()  # what is normal for the kernel but limits what is visible


class _Reader:
    def __init__(self, root: HostRoot, read_phys: ReadPhys | None, probe: ReadPhys | None) -> None:
        self.root = root
        self.read_phys = read_phys
        self.probe = probe
        self.problems: list[InputProblem] = []
        self.notes: list[str] = []
        self.has_finalize = False

    def problem(self, rel: str, reason: str) -> None:
        self.problems.append(InputProblem(f"/{rel}", reason, Tier.KHO_DEBUGFS))

    def read(self, rel: str, *, required: bool) -> bytes | None:
        """The file's bytes; None (and a problem unless absent and optional) on failure."""
        try:
            data = self.root.read_bytes(rel)
        except FileNotFoundError:
            if required:
                self.problem(rel, "no such file")
            return None
        except OSError as exc:
            self.problem(rel, describe_oserror(exc))
            return None
        if len(data) > MAX_BLOB:
            self.problem(rel, f"{len(data)} bytes, larger than any KHO blob ({MAX_BLOB})")
            return None
        return data

    def parse(self, rel: str, value: V, parser: Callable[[V], T]) -> T | None:
        try:
            return parser(value)
        except ParseError as exc:
            self.problem(rel, str(exc))
            return None

    def text(self, rel: str, data: bytes) -> str | None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem(rel, f"not text (byte {exc.start:#x} is not UTF-8)")
            return None

    def listdir(self, rel: str) -> list[str] | None:
        try:
            return self.root.listdir(rel)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problem(rel, describe_oserror(exc))
            return None

    def side(self, side: str, *, kho_boot: bool = False) -> KhoSide | None:
        base = f"{KHO_DEBUGFS}/{side}"
        if self.listdir(base) is None:
            return None
        finalized: bool | None = None
        scratch: tuple[ScratchRegion, ...] | None = None
        if side == "out":
            finalized = self._finalize(f"{base}/finalize")
            scratch = self._scratch(base)
        # Older debugfs: out/fdt exists only once finalized.  The newer one (no finalize file)
        # publishes the root FDT when KHO starts, but not after a KHO boot (Linux 7.2.13
        # kho_init() returns right after exposing kho/in).  in/ always has its fdt: a missing
        # one there means the records cannot be looked for, which must not read as "none".
        newer = side == "out" and finalized is None and not self.has_finalize
        fdt_required = side == "in" or (finalized is not False and not (newer and kho_boot))
        raw = self.read(f"{base}/fdt", required=fdt_required)
        if raw is None and newer and kho_boot:
            self.notes.append(
                "kho/out/fdt is not published after a KHO boot (Linux 7.2 kho_init()): this "
                "kernel's outgoing root FDT and its preserved-memory map are not visible"
            )
        root, cut, memory_map = self._root(f"{base}/fdt", raw)
        freed = side == "in" and isinstance(root, KhoRoot) and root.compatible == KHO_COMPATIBLE_V4

        blobs: list[SubBlob] = []
        luo: LuoBlob | UnknownLuo | StaleLuo | None = None
        luo_state: LuoState | None = None
        metadata: KexecMetadata | None = None
        for name in self.listdir(f"{base}/sub_fdts") or []:
            rel = f"{base}/sub_fdts/{name}"
            data = self.read(rel, required=True)
            if data is None:
                continue
            blobs.append(SubBlob(name, len(data), is_fdt(data)))
            if name == KHO_METADATA_NODE_NAME:
                metadata = self.parse(rel, data, parse_kexec_metadata)
            if name != LUO_KHO_ENTRY_NAME:
                continue
            try:
                if freed:
                    luo, luo_state = read_freed_luo(data, self.read_phys)
                    continue
                luo = self.parse(rel, data, parse_luo_blob)
                if isinstance(luo, LuoBlob) and self.read_phys is not None:
                    luo_state = walk_luo(luo, self.read_phys)
            except OSError as exc:
                self.problems.append(InputProblem("/proc/kcore", describe_oserror(exc), Tier.KCORE))
        return KhoSide(
            side,
            finalized,
            root,
            scratch,
            tuple(blobs),
            luo,
            luo_state,
            cut=cut,
            memory_map=memory_map,
            metadata=metadata,
            luo_freed=freed,
        )

    def _root(
        self, rel: str, raw: bytes | None
    ) -> tuple[KhoRoot | UnknownKho | CutKhoRoot | None, CutKhoRoot | None, PreservedMemory | None]:
        """The root FDT; a cut copy read whole through kcore when it can be (module doc)."""
        root = None if raw is None else self.parse(rel, raw, parse_kho_debugfs_root)
        if not isinstance(root, CutKhoRoot):
            return root, None, None
        cut = root
        compatible = cut.compatible
        if compatible is not None and compatible not in KHO_SUB_TREE_PROP:
            reason = f"unknown KHO compatible {compatible!r} (read from the cut copy)"
            return UnknownKho(compatible, reason), cut, None
        if self.read_phys is None:
            self.notes.append(f"/{rel}: {cut.reason}; reading the whole FDT needs kcore")
            return cut, cut, None
        try:
            found = recover_cut_root(cut, self.read_phys, probe=self.probe)
        except OSError as exc:
            found = f"kcore: {describe_oserror(exc)}"
        if isinstance(found, RecoveredRoot):
            self.notes.append(
                f"/{rel}: {cut.reason}; the whole FDT ({cut.totalsize} bytes) was read through "
                f"kcore from its preserved page {found.page:#x}"
            )
            return found.root, cut, found.memory_map
        self.problem(rel, f"{cut.reason}; the whole FDT could not be read through kcore: {found}")
        return cut, cut, None

    def _finalize(self, rel: str) -> bool | None:
        self.has_finalize = self.root.exists(rel)
        data = self.read(rel, required=False)
        text = None if data is None else self.text(rel, data)
        return None if text is None else self.parse(rel, text, parse_finalize)

    def _scratch(self, base: str) -> tuple[ScratchRegion, ...] | None:
        phys = self.read(f"{base}/scratch_phys", required=True)
        size = self.read(f"{base}/scratch_len", required=True)
        if phys is None or size is None:
            return None
        phys_text = self.text(f"{base}/scratch_phys", phys)
        size_text = self.text(f"{base}/scratch_len", size)
        if phys_text is None or size_text is None:
            return None
        try:
            return parse_scratch(phys_text, size_text)
        except ParseError as exc:
            # A count mismatch involves both files; a bad line names its own file.
            rel = "scratch_len" if str(exc).startswith("scratch_len") else "scratch_phys"
            self.problem(f"{base}/{rel}", str(exc))
            return None


def read_kho(
    root: HostRoot, read_phys: ReadPhys | None = None, probe: ReadPhys | None = None
) -> KhoState:
    """Everything under ``sys/kernel/debug/kho``; ``read_phys`` (the kcore reader) also walks the
    LUO blob's sessions and FLBs and reads a cut root FDT whole (``probe``: the small
    non-caching read for the page search; default ``read_phys``).  Absent directories give
    None sides and no problems: whether the tier itself is there is
    :meth:`SnapshotBuilder.kho_tier`'s call."""
    reader = _Reader(root, read_phys, probe)
    kho_boot = root.exists(f"{KHO_DEBUGFS}/in")
    outgoing = reader.side("out", kho_boot=kho_boot)
    incoming = reader.side("in")
    problems, notes = tuple(reader.problems), tuple(reader.notes)
    return KhoState(outgoing, incoming, reader.has_finalize, problems, notes)
