"""The daemon and what it keeps: event loop, udev, sd_notify, the ledger's store."""
