"""Reading the host: every path under one injectable root, into a Snapshot (and the ledger)."""
