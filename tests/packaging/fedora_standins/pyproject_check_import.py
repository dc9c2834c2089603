"""Stand-in for %pyproject_check_import [-e GLOB]...: import every module of the installed
packages (from the buildroot's site-packages), except those the globs exclude.
argv: SITE [-e GLOB]..."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from fnmatch import fnmatchcase

site, *args = sys.argv[1:]
excluded = [args[i + 1] for i, a in enumerate(args) if a == "-e"]
sys.path.insert(0, site)
count = 0
for info in pkgutil.walk_packages([site]):
    if info.name.endswith("__main__") or any(fnmatchcase(info.name, g) for g in excluded):
        continue  # running a __main__ is no import check
    importlib.import_module(info.name)
    count += 1
assert count, f"nothing imported from {site}"
print(f"pyproject_check_import: {count} modules imported", file=sys.stderr)
