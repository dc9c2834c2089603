"""The findings catalog (DESIGN.md §3): stable codes, severities and journald MESSAGE_IDs.

Codes are never renumbered and MESSAGE_IDs never change: operators match on them
(``journalctl MESSAGE_ID=...``) and the journald catalog in systemd/ documents each one.
"""

from __future__ import annotations

from vtdlud.frozen import frozen
from vtdlud.model.severity import Severity


@frozen
class CatalogEntry:
    code: str
    severity: Severity
    title: str
    hint: str
    message_id: str


def _e(code: str, severity: Severity, message_id: str, title: str, hint: str) -> CatalogEntry:
    return CatalogEntry(code, severity, title, hint, message_id)


S = Severity
CATALOG: dict[str, CatalogEntry] = {
    e.code: e
    for e in (
        _e(
            "VTD001",
            S.FAIL,
            "88180eab784e41748c1c84baa4f2120d",
            "preserved IOMMU record matches no DMAR unit address",
            "The outgoing kernel preserved state for a unit this host does not have; do not kexec.",
        ),
        _e(
            "VTD002",
            S.FAIL,
            "6207b67e3b5e4c19a0d046dc5257de6e",
            "unit has preserved devices but no live IOMMU hw record",
            "Re-preserve the devices (LUO session) before kexec; the new kernel cannot restore the unit.",
        ),
        _e(
            "VTD003",
            S.FAIL,
            "81a5d37c638d4073b91bc942a3570863",
            "IOMMU record inconsistent (type/token, flags, ref counts, devid, restored)",
            "The record is not as the kernel writes it (the message says which field): the next "
            "kernel would misread it; do not kexec, and report a kernel bug.",
        ),
        _e(
            "VTD010",
            S.FAIL,
            "1e4a2a0eabca4b64a49a5e8f23a83584",
            "preserved root_table differs from the live root table (RTADDR)",
            "The new kernel would reuse a stale root table; do not kexec, collect a bundle.",
        ),
        _e(
            "VTD011",
            S.FAIL,
            "275fdbd49af043ef9c7339cf5c4e87d6",
            "a context table holding a preserved device (or alias) is not marked preserved",
            "The device loses its translation at kexec; re-preserve it or do not kexec.",
        ),
        _e(
            "VTD012",
            S.NOTE,
            "ef67981218ec456290788c996859eb06",
            "context table allocated after the last preservation is not preserved",
            "Harmless: no preserved device uses it; it is dropped at kexec.",
        ),
        _e(
            "VTD013",
            S.FAIL,
            "bdcf2d19cd1749b3be251f7846be27d5",
            "bitmap bit set but the context table is absent or its page is not preserved",
            "The new kernel would restore a page it does not own; do not kexec.",
        ),
        _e(
            "VTD014",
            S.FAIL,
            "ad0df8f2a3d048709cadcf1a2983b785",
            "upper-table (odd) bitmap bit set on a legacy-mode unit",
            "Legacy mode has one context table per bus; the record is corrupt.",
        ),
        _e(
            "VTD015",
            S.FAIL,
            "df82a7149a564b1b8b76295e0df46d18",
            "debugfs and kcore disagree about the root/context tables",
            "The tables changed during the read or one source is wrong; re-run, then collect a bundle.",
        ),
        _e(
            "VTD016",
            S.FAIL,
            "d40681f1c06946958b40d21ec5615bd1",
            "a live root/context/PASID table pointer leads outside RAM or into another table",
            "The translation structures the hardware walks are corrupt (KHO cannot preserve a "
            "page outside RAM); do not kexec, collect a bundle with --memory.",
        ),
        _e(
            "VTD017",
            S.FAIL,
            "d322d5973a7c4cb6b7fe9de5abbd21ed",
            "a PASID directory, PASID table or page-table page of a preserved device is not "
            "KHO-preserved",
            "The next kernel cannot restore the tables the device translates with; do not kexec, "
            "collect a bundle with --memory.",
        ),
        _e(
            "VTD020",
            S.FAIL,
            "f0ca1c7eb3e7453c8153b149fe316363",
            "hw record ref_count differs from the device records pointing at it",
            "The unit would be unpreserved too early or never; report a kernel bug.",
        ),
        _e(
            "VTD021",
            S.FAIL,
            "3ce8f26aaa4a4d1b8c79629a98358691",
            "preserved device not present in sysfs",
            "The device was removed after preservation; unpreserve it before kexec.",
        ),
        _e(
            "VTD022",
            S.FAIL,
            "7e273b5d3cd945fbb99e83b64719d555",
            "device record points at another unit's record than sysfs says",
            "The device would be restored on the wrong IOMMU; do not kexec.",
        ),
        _e(
            "VTD023",
            S.FAIL,
            "d03f775c2863440ab2d30a929f53b2a7",
            "attachment_id differs from the DID in the live context/PASID entry of the device or of a "
            "DMA alias",
            "The new kernel would reserve the wrong domain ID; do not kexec.",
        ),
        _e(
            "VTD024",
            S.FAIL,
            "b5bd8d6bb88849118946d6f604701000",
            "pasid_table or max_pasid disagrees with the live context entry (the device's or a "
            "DMA alias's, scalable), or is set in legacy mode",
            "The new kernel would restore the wrong PASID directory (or BUG() on max_pasid); do "
            "not kexec.",
        ),
        _e(
            "VTD025",
            S.FAIL,
            "43b407eca8e1486091fb60087323a5e4",
            "device to preserve shares a DMA alias with a device that is not preserved",
            "The alias's context entry is cleared at kexec; preserve every device behind the bridge or none.",
        ),
        _e(
            "VTD026",
            S.FAIL,
            "1fd7bba0ccd44efa9499101c08e73008",
            "device to preserve cannot be preserved",
            "Bind it to vfio-pci and open it as a VFIO cdev bound to iommufd; legacy VFIO groups and PRI are not preserved.",
        ),
        _e(
            "VTD027",
            S.FAIL,
            "afe4570c27f547eeac967d59302438c0",
            "domain record disagrees with the live tables or points at a deleted slot",
            "The new kernel would restore the wrong page table; do not kexec.",
        ),
        _e(
            "VTD028",
            S.UNKNOWN,
            "49b88dc5b899497c8c8bf64efb9b6b7a",
            "device to preserve shares its IOMMU group with a device that is not preserved, "
            "for no DMA alias vtdlud knows",
            "The kernel builds IOMMU groups from DMA aliases: a peer may share a requester ID "
            "through a quirk this vtdlud does not know, and lose it at kexec. Preserve every "
            "device of the group, or make sure the peer's group membership comes from missing "
            "ACS isolation only.",
        ),
        _e(
            "VTD029",
            S.FAIL,
            "4d88ae8605f84d1384d6ca87b40c04c4",
            "live update is not armed for devices to preserve",
            "Boot with kho=on liveupdate and load the new kernel with kexec -s before the update.",
        ),
        _e(
            "VTD030",
            S.FAIL,
            "471710b900d5483f9ef056c0162eb6eb",
            "policy requires a device to be preserved, no record for it",
            "Preserve the device through its VMM's LUO session before kexec.",
        ),
        _e(
            "VTD031",
            S.WARN,
            "f8a027162310407c984c126330ad64ed",
            "a device is preserved that policy does not expect",
            "Check the policy's device list (/etc/vtdlud/vtdlud.toml).",
        ),
        _e(
            "VTD040",
            S.UNKNOWN,
            "d1f5c7102c6441019b5c32b87f707db2",
            "unknown FLB/LUO/KHO compatible string or version",
            "This vtdlud does not know this kernel's live-update ABI; upgrade vtdlud.",
        ),
        _e(
            "VTD041",
            S.FAIL,
            "92faef3469544c038adbb4afa752cafb",
            "corrupt record chain",
            "A loop, an over-capacity count or a pointer outside RAM; do not kexec, collect a bundle.",
        ),
        _e(
            "VTD050",
            S.UNKNOWN,
            "19077719b9434b2798022a01d63c907e",
            "a tier of visibility is unavailable",
            "Make it visible (the reason says how; README 'Tiers of visibility'), "
            "or relax the policy (gate.required_tiers, preserve.vmm_held).",
        ),
        _e(
            "VTD051",
            S.UNKNOWN,
            "858f4394eab342cf8e466183b9b51198",
            "an input could not be read or parsed",
            "Check the file named; run `vtdlud collect` and attach the bundle to a bug report.",
        ),
        _e(
            "VTD052",
            S.UNKNOWN,
            "bb2b93c6b00f4eebb4d4fe45789fb29f",
            "an input is in a format this version does not support",
            "This kernel prints an older or newer format; upgrade vtdlud or the kernel.",
        ),
        _e(
            "VTD060",
            S.FAIL,
            "b6535d76be284e5ba0b819a6bf28d912",
            "after kexec: a preserved unit was not restored",
            "The new kernel did not reclaim the preserved tables; check its log for 'DMAR: liveupdate:'.",
        ),
        _e(
            "VTD061",
            S.FAIL,
            "cab5b6d1262c4645aec36c9bd8a242a0",
            "after kexec: live root table differs from the ledger",
            "The new kernel did not reuse the preserved root table; DMA may be untranslated.",
        ),
        _e(
            "VTD062",
            S.FAIL,
            "fe8f9c4805a040859d8aa045bb903448",
            "after kexec: a preserved context table, or the entry of a preserved device or of its DMA "
            "alias, changed",
            "A preserved device lost or changed its translation; stop its guest and collect a bundle.",
        ),
        _e(
            "VTD063",
            S.FAIL,
            "0d601bf16bfb4f25b9e2f11e35beb703",
            "after kexec: DMAR faults from a preserved device",
            "The device is issuing DMA the new kernel does not translate; stop its guest.",
        ),
        _e(
            "VTD064",
            S.WARN,
            "a95d364868c040ceabc37334e461720d",
            "the ledger does not belong to this boot chain",
            "The ledger is from another boot or live update; it was not used.",
        ),
        _e(
            "VTD065",
            S.UNKNOWN,
            "e643f2ccba4b42f7a0a44992e80ca877",
            "after kexec: no ledger to verify the preserved state against",
            "Run the gate (`vtdlud check`, vtdlud-gate.service) before every live update: it "
            "writes the ledger when it passes.",
        ),
        _e(
            "VTD070",
            S.WARN,
            "febc1d0c341c47968a54ab98ba6c88ee",
            "translation disabled on a unit with devices",
            "DMA from these devices is not remapped; check intel_iommu= on the kernel command line.",
        ),
    )
}
