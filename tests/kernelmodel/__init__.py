"""An executable model of the kernel's VT-d live-update behaviour that writes host trees.

Test infrastructure only: nothing here is used by vtdlud at run time.  Typical use::

    from tests.kernelmodel.faults import Fault, inject
    from tests.kernelmodel.scenarios import q35_host
    from tests.kernelmodel.tree import write_tree

    host = q35_host(scalable=True, seed=1)     # booted: units, devices, default domains
    host.vfio_attach("0000:00:05.0")           # VFIO cdev + iommufd HWPT
    host.preserve("0000:00:05.0")              # records, bitmap, preserved pages
    inject(host, Fault.BIT_MISSING)            # optional: one of DESIGN §3's faults
    write_tree(host, tmp_path / "before")      # sysfs, debugfs, KHO, kcore, processes
    host.kexec()                               # shutdown, KHO/LUO handover, restore
    write_tree(host, tmp_path / "after")

An independent reading of the kernel: it borrows none of the auditor's rules (no ABI mirror,
no alias code, no bit helpers, no debugfs renderers; tests/sim/test_independence.py checks
the imports), so the tests built on it compare two readings.

Modules: :mod:`.memory` (physical memory and page allocator), :mod:`.pci` (topology, groups,
config space), :mod:`.alias` (DMA aliases and their quirks), :mod:`.layout` (the record
layouts), :mod:`.pagetable` (I/O page tables), :mod:`.debugfs` (its debugfs text),
:mod:`.iommu` (a DMAR unit's registers, tables, DIDs), :mod:`.records` (the IOMMU live-update
records), :mod:`.kho` (KHO root FDT, preserved-memory map, LUO generations; with
``kho_abi="kho-v4"`` Linux 7.2's cut ``kho/out/fdt``, ``kexec-metadata`` and the incoming LUO
state freed at boot), :mod:`.kernel` (:class:`~tests.kernelmodel.kernel.SimHost`: boot, attach,
preserve, kexec), :mod:`.tree` (the written host root), :mod:`.acpi` (the DMAR table),
:mod:`.faults` (fault registry), :mod:`.scenarios` (hosts shaped
like the real captures; ``linux72_host`` on the 7.2 KHO/LUO model) and :mod:`.capture` (a host rebuilt from a real capture, to check the
model against the kernel).
"""
