"""An executable model of the kernel's VT-d live-update behaviour that writes host trees.

Test infrastructure: simulated physical memory (:mod:`.memory`), DMAR units and their tables
(:mod:`.iommu`), PCI topology (:mod:`.pci`), the IOMMU live-update records (:mod:`.records`),
KHO/LUO (:mod:`.kho`), the host and its kexec (:mod:`.kernel`), the written tree (:mod:`.tree`),
faults (:mod:`.faults`) and the replay of real captures (:mod:`.capture`).  Nothing here is
used by vtdlud at run time.
"""
