"""Pure data and decoding: registers, translation-table entries, the ACPI DMAR table, the ABI."""
