"""Tests of `vtdlud run`: the daemon, its events, metrics and runtime files."""
