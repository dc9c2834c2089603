"""KHO (Kexec HandOver) as vtdlud sees it: the root FDT of each ABI, Linux 7.2's cut copy of it,
``kexec-metadata``, and one side (``kho/out``, ``kho/in``) with its LUO blob.

Decoded by :mod:`vtdlud.parse.kho` and :mod:`vtdlud.parse.khocut`, read by
:mod:`vtdlud.host.kho`; the LUO structures are :mod:`vtdlud.model.luo`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from vtdlud.frozen import frozen
from vtdlud.model.khomem import PreservedMemory
from vtdlud.model.luo import LuoBlob, LuoState, StaleLuo, UnknownLuo
from vtdlud.model.tiers import InputProblem

KHO_COMPATIBLE_V1 = "kho-v1"
KHO_COMPATIBLE_V2 = "kho-v2"
KHO_COMPATIBLE_V3 = "kho-v3"
KHO_COMPATIBLE_V4 = "kho-v4"  # Linux 7.2
KHO_MEMORY_MAP_PROP = "preserved-memory-map"
# The sub-tree property by ABI: "fdt" (kho-v1) became "preserved-data" (kho-v2 on).
KHO_SUB_TREE_PROP = {
    KHO_COMPATIBLE_V1: "fdt",
    KHO_COMPATIBLE_V2: "preserved-data",
    KHO_COMPATIBLE_V3: "preserved-data",
    KHO_COMPATIBLE_V4: "preserved-data",
}


class KhoSubsystem(NamedTuple):
    """A root child: the physical address of the subsystem's preserved blob and its size
    (``blob-size``; None where the ABI has no size: kho-v1 and the first kho-v2)."""

    phys: int
    size: int | None


@frozen
class KhoRoot:
    """A KHO root FDT of a known ABI."""

    compatible: str  # "kho-v1" .. "kho-v4"
    preserved_memory_map: int | None  # phys of the tracker (kho-v1: absent before finalize)
    subsystems: dict[str, KhoSubsystem]  # child node name -> (phys, size)
    # Where the bytes came from: "debugfs", or "kcore" when the debugfs copy was cut and the
    # whole FDT was read from its preserved page at ``phys`` (vtdlud.parse.khocut).
    read_from: str = "debugfs"
    phys: int | None = None

    @property
    def sub_tree_prop(self) -> str:
        return KHO_SUB_TREE_PROP[self.compatible]


@frozen
class UnknownKho:
    """A KHO root FDT whose ``compatible`` this version does not decode (VTD040)."""

    compatible: str
    reason: str


@frozen
class KexecMetadata:
    """``sub_fdts/kexec-metadata``: the kernel that wrote it and its kexec count."""

    version: int
    previous_release: str | None  # None: a version this parser does not decode
    kexec_count: int | None


class ScratchRegion(NamedTuple):
    phys: int
    size: int


@frozen
class CutProp:
    """A property inside the copy: ``name`` None when the strings block holding it is cut,
    ``value`` None when the value itself is cut."""

    name: str | None
    length: int
    value: bytes | None


@frozen
class CutNode:
    name: str
    props: tuple[CutProp, ...]
    complete: bool  # its FDT_END_NODE lies inside the copy


@frozen
class CutKhoRoot:
    """A ``kho/out/fdt`` copy shorter than the FDT it shows (not an error: see the module)."""

    size: int  # bytes in the copy
    totalsize: int  # the FDT's, from its header
    root_props: tuple[CutProp, ...]
    children: tuple[CutNode, ...]  # nodes whose name lies inside the copy
    struct_complete: bool  # the whole structure block lies inside the copy
    prefix: bytes = dataclasses.field(repr=False, compare=False, default=b"")

    @property
    def compatible(self) -> str | None:
        """The root ``compatible``, when its name and value both lie inside the copy."""
        for p in self.root_props:
            if p.name == "compatible" and p.value and p.value.endswith(b"\x00"):
                return p.value[:-1].split(b"\x00")[0].decode("ascii", "backslashreplace")
        return None

    @property
    def map_candidates(self) -> tuple[int, ...]:
        """Root properties that may be ``preserved-memory-map``: 8 bytes long, named so or with
        the name cut.  Only :func:`recover_cut_root` uses them, and it proves the one it keeps."""
        out = []
        for p in self.root_props:
            if p.value is not None and p.length == 8 and p.name in (None, KHO_MEMORY_MAP_PROP):
                out.append(int.from_bytes(p.value, "little"))
        return tuple(dict.fromkeys(out))

    @property
    def unnamed(self) -> int:
        """Properties whose name is cut."""
        return sum(p.name is None for n in self.children for p in n.props) + sum(
            p.name is None for p in self.root_props
        )

    @property
    def reason(self) -> str:
        what = "the structure block is whole" if self.struct_complete else "the structure "
        what += "" if self.struct_complete else "block is cut too"
        return (
            f"the debugfs copy is cut at {self.size} of {self.totalsize} bytes (the kernel sized "
            f"kho/out/fdt when it registered it, and later subsystems grew the FDT in place); "
            f"{what}, {self.unnamed} property name(s) lie in the cut part"
        )


@frozen
class RecoveredRoot:
    """The whole root FDT read from its page.  ``root`` is a :class:`KhoRoot` (read_from
    "kcore", phys = the FDT page) with the map walked to find it, or an :class:`UnknownKho`
    when the page (proven by the copy's bytes) names a compatible this version does not know:
    that is VTD040, and its map is not used."""

    root: KhoRoot | UnknownKho
    memory_map: PreservedMemory | None
    page: int


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
