"""The context entries of a preserved device's DMA aliases (issue #14 item 2).

Behind a PCIe-to-PCI bridge, or with a quirk alias, the hardware looks up the device's DMA under
another requester ID than its own: that RID's context entry decides the translation, so it must
carry what the record says the device's does.  What the kernel programs there (Linux 7.2.13,
``drivers/iommu/intel/iommu.c`` and ``pasid.c``):

- legacy mode: ``domain_context_mapping()`` programs the device's own entry and every alias's
  (``pci_for_each_dma_alias()``) with the domain's DID and page table, leaving an entry already
  present alone.  So every RID of the device must have a present entry with the DID of the
  record's ``attachment_id`` (VTD023 before kexec, VTD062 after): an entry with another DID is
  another domain's, one the new kernel does not reserve; a missing one translates nothing.
- scalable mode: ``intel_pasid_setup_sm_context()`` gives the device's own RID and its quirk
  aliases (``dma_alias_mask``: the callback's ``pdev`` is the device itself) the device's PASID
  directory; ``pci_pasid_table_setup()`` skips a bridge's alias (its ``pdev`` is the bridge), so
  the bridge alias has no entry of the device's (the real capture g_scalable_alias_fault shows
  the resulting DMA faults on 6.12): there is no translation to lose and no finding.  An alias
  entry that is present must name a PASID directory the records preserve — the device's own
  ``pasid_table`` or another preserved device's (VTD024 before kexec, VTD062 after); a quirk
  alias's entry must be present.

An entry absent from a view that is not exact (debugfs rows, or a walk that stopped) proves
nothing: UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from vtdlud.audit.mirror import LiveView
from vtdlud.frozen import frozen
from vtdlud.model.alias import Rid
from vtdlud.model.tables import Mode, context_table_bit


@frozen
class AliasProblem:
    rid: Rid
    message: str  # what is wrong with the alias's entry, for "<device>: <message>"
    unknown: bool  # the entry is not visible: UNKNOWN, not FAIL
    details: tuple[tuple[str, str], ...] = ()


def alias_problems(
    rids: Sequence[Rid],
    own: Collection[Rid],
    mode: Mode,
    live: LiveView,
    *,
    did: int,
    pasid_dir: int | None,
    preserved_dirs: Collection[int] = (),
) -> list[AliasProblem]:
    """Problems with the context entries of ``rids[1:]`` (``rids``: the device's own RID, then
    its DMA aliases; ``own``: the device's own RIDs, its RID and quirk aliases), against
    ``did`` (legacy) or ``pasid_dir`` (scalable; None: not known, not judged)."""
    out: list[AliasProblem] = []
    for rid in dict.fromkeys(rids[1:]):
        if rid == rids[0]:
            continue
        key = (rid.bus, rid.devfn)
        info = live.devices.get(key)
        bit = context_table_bit(rid.bus, rid.devfn if mode is Mode.SCALABLE else 0)
        walked = live.exact and bit not in live.unwalked and key not in live.incomplete
        if mode is Mode.LEGACY:
            if info is None:
                if walked:
                    msg = f"its DMA uses alias {rid}, which has no live context entry "
                    msg += f"(per {live.source}): that DMA is not translated"
                    gone = (("bit", str(bit)), ("expected", str(did)), ("actual", "none"))
                    out.append(AliasProblem(rid, msg, False, gone))
                else:
                    msg = f"the context entry of its DMA alias {rid} is not visible ({live.source})"
                    out.append(AliasProblem(rid, msg, True))
            elif info.did != did:
                msg = f"its DMA uses alias {rid}, whose live context entry has DID {info.did}, "
                msg += f"not {did}: the hardware translates that DMA with another domain "
                msg += f"(per {live.source})"
                cmp = (("expected", str(did)), ("actual", str(info.did)))
                out.append(AliasProblem(rid, msg, False, cmp))
        elif mode is Mode.SCALABLE and pasid_dir is not None:
            if info is None:
                if rid not in own:
                    continue  # a bridge's alias: never programmed in scalable mode (see above)
                if walked:
                    msg = f"its quirk alias {rid} has no live context entry (per {live.source}): "
                    msg += "its DMA under that requester ID is not translated"
                    gone = (("bit", str(bit)), ("expected", f"{pasid_dir:#x}"), ("actual", "none"))
                    out.append(AliasProblem(rid, msg, False, gone))
                else:
                    msg = f"the context entry of its quirk alias {rid} is not visible "
                    out.append(AliasProblem(rid, msg + f"({live.source})", True))
            elif info.pasid_dir != pasid_dir and info.pasid_dir not in preserved_dirs:
                shown = "none" if info.pasid_dir is None else f"{info.pasid_dir:#x}"
                msg = f"its DMA uses alias {rid}, whose live context entry names PASID directory "
                msg += f"{shown}, not the preserved {pasid_dir:#x} (per {live.source}): that "
                msg += "directory and its tables are not preserved"
                cmp = (("expected", f"{pasid_dir:#x}"), ("actual", shown))
                out.append(AliasProblem(rid, msg, False, cmp))
    return out
