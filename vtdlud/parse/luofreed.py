"""An incoming LUO blob that the running kernel has already freed (Linux 7.2).

What the kernel does with the incoming blob [C: Linux 7.2.13 luo_core.c]: ``luo_early_startup()``
(early_initcall) checks the compatible, reads the number and the two addresses, and frees the
``luo_ser`` page (``kho_restore_free``) whatever happened; the session blocks are freed once
``luo_session_deserialize()`` has read them (first open of ``/dev/liveupdate``); the FLB header
page is kept.  So on such a kernel ``kho/in/sub_fdts/LUO``, read from userspace, is freed memory:
:func:`read_freed_luo` decodes it only as far as it proves itself (the ``"luo-v5"`` string, a
sane FLB list) and otherwise says why it is stale (:class:`StaleLuo`), which is no finding
(neither VTD040 nor VTD041/VTD051): it is the reason given where the records were needed.

Tested with blobs written by hand and with the kernel model (vtdlud.sim): no real capture yet.
"""

from __future__ import annotations

from vtdlud.errors import ParseError
from vtdlud.parse.luo import (
    LUO_ABI_COMPATIBLE_V5,
    LUO_V5_COMPAT_LEN,
    LuoBlob,
    LuoCorrupt,
    LuoState,
    ReadPhys,
    StaleLuo,
    UnknownLuo,
    parse_luo_blob,
    walk_luo,
)


def read_freed_luo(
    data: bytes, read_phys: ReadPhys | None
) -> tuple[LuoBlob | StaleLuo, LuoState | None]:
    """An incoming blob the running kernel freed at boot (module doc): the blob when it still
    reads as a ``"luo-v5"`` ``luo_ser`` (else :class:`StaleLuo`), and the walk behind it, where
    every part that does not read soundly is :class:`StaleLuo` rather than corrupt.  A blob
    that still reads is no proof either: what it leads to is proven by the records' signature
    (:func:`vtdlud.model.relocate.signature_problem`)."""
    freed = "the kernel freed the incoming LUO state at boot (luo_early_startup)"
    want = LUO_ABI_COMPATIBLE_V5.encode()
    head = data[:LUO_V5_COMPAT_LEN]
    # The kernel's test: strncmp(compatible, "luo-v5", 8) == 0.
    if head[: len(want)] != want or (len(head) > len(want) and head[len(want)] != 0):
        return (
            StaleLuo(
                "blob",
                f"{freed}; what is there now is other memory: its first bytes ({head.hex()}) "
                f"are not the {LUO_ABI_COMPATIBLE_V5!r} compatible",
            ),
            None,
        )
    try:
        blob = parse_luo_blob(data)
    except ParseError as exc:
        return StaleLuo("blob", f"{freed}; what is there now is not a luo_ser: {exc}"), None
    if not isinstance(blob, LuoBlob):
        return StaleLuo("blob", f"{freed}; what is there now is not a luo_ser"), None
    if read_phys is None:
        return blob, None
    state = walk_luo(blob, read_phys)
    s, f, i = state.sessions, state.flbs, state.iommu
    sessions = _stale("sessions", s, freed) if isinstance(s, UnknownLuo | LuoCorrupt) else s
    flbs = _stale("FLBs", f, freed) if isinstance(f, UnknownLuo | LuoCorrupt) else f
    iommu = _stale("IOMMU FLB", i, freed) if isinstance(i, LuoCorrupt) else i
    return blob, LuoState(blob, sessions, flbs, iommu)


def _stale(part: str, value: UnknownLuo | LuoCorrupt, freed: str) -> StaleLuo:
    reason = value.reason if isinstance(value, UnknownLuo) else f"{value.what}: {value.reason}"
    return StaleLuo(part, f"{freed}; its {part} do not read soundly now: {reason}")
