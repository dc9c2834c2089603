"""Stand-in for %pyproject_install: install the built wheel into BUILDROOT with Fedora's layout
(purelib SITELIB, scripts /usr/bin).  argv: BUILDROOT SITELIB WHEELDIR."""

from __future__ import annotations

import sys
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

buildroot, sitelib, wheeldir = sys.argv[1:4]
scheme = {
    "purelib": sitelib,
    "platlib": sitelib,
    "headers": "/usr/include",
    "scripts": "/usr/bin",
    "data": "/usr",
}
destination = SchemeDictionaryDestination(
    scheme, interpreter="/usr/bin/python3", script_kind="posix", destdir=buildroot
)
(wheel,) = Path(wheeldir).glob("*.whl")
with WheelFile.open(wheel) as source:
    install(source, destination, additional_metadata={"INSTALLER": b"rpm\n"})
