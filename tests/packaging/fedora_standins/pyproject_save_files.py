"""Stand-in for %pyproject_save_files NAME...: write the %files list of the named top-level
packages and their .dist-info directory.  argv: BUILDROOT SITELIB LISTFILE NAME..."""

from __future__ import annotations

import sys
from pathlib import Path

buildroot, sitelib, listfile, *names = sys.argv[1:]
site = Path(buildroot + sitelib)
lines = []
for name in names:
    assert (site / name).is_dir(), f"no package {name} in {site}"
    lines.append(f"{sitelib}/{name}/")
(info,) = site.glob("*.dist-info")
lines.append(f"{sitelib}/{info.name}/")
Path(listfile).write_text("\n".join(lines) + "\n")
