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
from vtdlud.model.snapshot import InputProblem, Tier
from vtdlud.parse.kho import (
    KhoRoot,
    ScratchRegion,
    UnknownKho,
    is_fdt,
    parse_finalize,
    parse_kho_root,
    parse_scratch,
)
from vtdlud.parse.luo import (
    LUO_KHO_ENTRY_NAME,
    LuoBlob,
    LuoState,
    ReadPhys,
    UnknownLuo,
    parse_luo_blob,
    walk_luo,
)

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
    root: KhoRoot | UnknownKho | None  # None: no fdt yet, or unreadable (see problems)
    scratch: tuple[ScratchRegion, ...] | None  # out only
    blobs: tuple[SubBlob, ...]
    luo: LuoBlob | UnknownLuo | None  # sub_fdts/LUO decoded; None when absent or unreadable
    luo_state: LuoState | None  # the LUO blob walked through read_phys, when one was given


@frozen
class KhoState:
    outgoing: KhoSide | None  # None: no kho/out
    incoming: KhoSide | None  # None: no kho/in (this boot was not a KHO kexec)
    has_finalize: bool  # the older debugfs generation (out/finalize exists)
    problems: tuple[InputProblem, ...]


class _Reader:
    def __init__(self, root: HostRoot) -> None:
        self.root = root
        self.problems: list[InputProblem] = []
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

    def side(self, side: str, read_phys: ReadPhys | None) -> KhoSide | None:
        base = f"{KHO_DEBUGFS}/{side}"
        if self.listdir(base) is None:
            return None
        finalized: bool | None = None
        scratch: tuple[ScratchRegion, ...] | None = None
        if side == "out":
            finalized = self._finalize(f"{base}/finalize")
            scratch = self._scratch(base)
        # Older debugfs: out/fdt exists only once finalized.  The newer one (no finalize file)
        # publishes the root FDT when KHO starts, and in/ always has its fdt: a missing one
        # there means the records cannot be looked for, which must not read as "none".
        fdt_required = side == "in" or finalized is not False
        raw = self.read(f"{base}/fdt", required=fdt_required)
        root = None if raw is None else self.parse(f"{base}/fdt", raw, parse_kho_root)

        blobs: list[SubBlob] = []
        luo: LuoBlob | UnknownLuo | None = None
        luo_state: LuoState | None = None
        for name in self.listdir(f"{base}/sub_fdts") or []:
            rel = f"{base}/sub_fdts/{name}"
            data = self.read(rel, required=True)
            if data is None:
                continue
            blobs.append(SubBlob(name, len(data), is_fdt(data)))
            if name != LUO_KHO_ENTRY_NAME:
                continue
            luo = self.parse(rel, data, parse_luo_blob)
            if isinstance(luo, LuoBlob) and read_phys is not None:
                try:
                    luo_state = walk_luo(luo, read_phys)
                except OSError as exc:
                    self.problems.append(
                        InputProblem("/proc/kcore", describe_oserror(exc), Tier.KCORE)
                    )
        return KhoSide(side, finalized, root, scratch, tuple(blobs), luo, luo_state)

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


def read_kho(root: HostRoot, read_phys: ReadPhys | None = None) -> KhoState:
    """Everything under ``sys/kernel/debug/kho``; ``read_phys`` (the kcore reader) also walks the
    LUO blob's sessions and FLBs.  Absent directories give None sides and no problems: whether the
    tier itself is there is :meth:`SnapshotBuilder.kho_tier`'s call."""
    reader = _Reader(root)
    outgoing = reader.side("out", read_phys)
    incoming = reader.side("in", read_phys)
    return KhoState(outgoing, incoming, reader.has_finalize, tuple(reader.problems))
