"""Filesystem access: every path under one injectable root (the only room that opens files)."""
