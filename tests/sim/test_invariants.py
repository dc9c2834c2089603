"""Random sequences of attach / preserve / unpreserve / hot-plug / kexec keep the model's
invariants (Hypothesis; backed by the model only)."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.kernelmodel.iommu import DomainKind
from tests.kernelmodel.kernel import SimHost
from tests.kernelmodel.records import read_incoming
from tests.kernelmodel.scenarios import q35_host
from vtdlud.model.snapshot import VFIO_PCI
from vtdlud.model.tables import context_table_bit

CANDIDATES = ("0000:00:05.0", "0000:00:02.0", "0000:01:00.0", "0000:05:01.0", "0000:05:02.0")
KINDS = ["attach", "preserve", "preserve", "preserve", "unpreserve", "hotplug", "kexec"]
ACTIONS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, len(CANDIDATES) - 1)), max_size=16
)


def check_records(host: SimHost) -> None:
    """bitmap ⊇ the halves of preserved devices and their aliases; ref_count == live device
    records pointing at the hw record; every bit's table and the root table are preserved."""
    out = host.outgoing
    if out is None:
        return
    inc = read_incoming(host.mem, out.flb_phys, host.flb_variant)
    assert inc.complete
    for unit in host.units.values():
        slot = out.hw_slot.get(unit.reg_base)
        mine = [b for b in out.device_slot if host.device(b).unit == unit.name]
        if slot is None:
            assert not mine
            continue
        rec = out.hw.read(slot)
        bits = out.bits(slot)
        tables = unit.context_tables()
        for bdf in mine:
            for rid in host.topology.aliases(bdf):
                half = context_table_bit(rid.bus, rid.devfn if unit.scalable else 0)
                if half in tables:
                    assert half in bits, (bdf, rid)
        live = [r for s, r in inc.devices if r["domain_iommu_ser.iommu_phys"] == slot]
        assert rec["hdr.ref_count"] == len(live) == len(mine)
        assert unit.root_table in host.mem.preserved
        for bit in bits:
            assert tables[bit] in host.mem.preserved
        if not unit.scalable:
            assert all(bit % 2 == 0 for bit in bits)


def run(host: SimHost, actions: list[tuple[str, int]]) -> None:
    handed: list[int] = []  # every device slot ever used: append-only
    for action, index in actions:
        arg: int | str = 0x20 + index if action == "hotplug" else CANDIDATES[index]
        if action == "attach":
            if str(arg) not in host.preserved:  # a preserved device keeps its HWPT
                host.vfio_attach(str(arg))
        elif action == "preserve":
            if str(arg) in host.preserved:
                continue
            domain = host.attached.get(str(arg))
            bound = host.device(str(arg)).driver == VFIO_PCI
            if domain is None or domain.kind is not DomainKind.UNMANAGED or not bound:
                host.vfio_attach(str(arg))  # a group peer has the VMM's domain already
            host.preserve(str(arg))
            assert host.outgoing is not None
            slot = host.outgoing.device_slot[str(arg)]
            assert all(slot > s for s in handed if host.outgoing.devices.pages[0] <= s)
            handed.append(slot)
        elif action == "unpreserve":
            if str(arg) in host.preserved:
                host.unpreserve(str(arg))
        elif action == "hotplug":
            bdf = f"0000:{int(arg):02x}:00.0"
            if bdf not in host.topology.devices:
                host.hotplug(0, int(arg), 0, driver="e1000e")
        else:
            kexec_and_check(host)
            handed = []
        check_records(host)


def kexec_and_check(host: SimHost) -> None:
    """After the old kernel's shutdown, root halves present <=> bits set; after the restore,
    every preserved device keeps its context entry, its DID and the root table."""
    out = host.outgoing
    kept = {}
    event(f"kexec with {len(out.device_slot) if out else 0} preserved device(s)")
    if out is not None:
        for bdf in out.device_slot:
            dev, unit = host.device(bdf), host.unit_of(bdf)
            kept[bdf] = (unit.root_table, unit.read_context(dev.bus, dev.devfn))
    host.shutdown()
    for unit in host.units.values():
        if out is not None and unit.reg_base in out.hw_slot:
            assert set(unit.context_tables()) == out.bits(out.hw_slot[unit.reg_base])
    host.kexec()
    for bdf, (root, entry) in kept.items():
        dev, unit = host.device(bdf), host.unit_of(bdf)
        assert unit.root_table == root
        assert unit.read_context(dev.bus, dev.devfn) == entry
    if host.incoming is not None:
        assert all(r["intel.restored"] == 0 for _, r in host.incoming.hw)  # as handed over


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scalable=st.booleans(), actions=ACTIONS)
def test_random_sequences_keep_the_invariants(
    scalable: bool, actions: list[tuple[str, int]]
) -> None:
    run(q35_host(scalable=scalable, seed=11), actions)
