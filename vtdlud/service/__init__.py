"""The daemon and its state: ledger, event loop, udev, sd_notify."""
