"""Every structure of the kernel and of a snapshot, pure: registers, table entries, debugfs, PCI,
the ACPI DMAR table, the ABI mirror and records, KHO/LUO, the ledger, the policy, the Snapshot."""
