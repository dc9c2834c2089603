"""packaging/rpm/vtdlud.spec, checked as far as a Debian machine honestly can.

Debian's rpm has no pyproject-rpm-macros or systemd-rpm-macros, so they are stubbed with
``--define`` (Fedora's paths; scriptlet macros become an ``echo`` of their arguments) and the spec
is expanded with ``rpmspec -P``.  That it equals what the .deb installs is in test_debian.py.
"""

from __future__ import annotations

import re
import shutil
import tomllib

import pytest

from tests.needs import needs
from tests.packaging import (
    PACKAGING,
    REPO,
    SPEC,
    SPEC_STUBS,
    SYSTEM_PATH,
    expand_spec,
    spec_files,
    spec_sections,
)

pytestmark = needs(
    shutil.which("rpmspec", path=SYSTEM_PATH) is not None, "needs rpmspec (apt package rpm)"
)

# What may still start with '%' once expanded: section headers and %files directives.
ALLOWED_PERCENT = re.compile(
    r"^%(?:(?:description|prep|generate_buildrequires|build|install|check|post|preun|postun"
    r"|files|changelog|doc|license|dir)\b|config\(noreplace\) )"
)


def unexpanded(expanded: str) -> list[str]:
    """Lines where a macro was left as it was written (rpm leaves undefined macros alone)."""
    bad = []
    for line in expanded.splitlines():
        stripped = line.strip()
        if "%{" in line or (stripped.startswith("%") and not ALLOWED_PERCENT.match(stripped)):
            bad.append(line)
    return bad


@pytest.fixture(scope="module")
def expanded() -> str:
    return expand_spec()


def test_parses_with_the_fedora_macros_stubbed(expanded: str) -> None:
    assert unexpanded(expanded) == []
    sections = spec_sections(expanded)
    assert "BuildArch:      noarch" in sections[""]


def test_an_unstubbed_macro_is_caught() -> None:
    """Control for the test above: without the _unitdir stub the %files entry stays literal."""
    stubs = {k: v for k, v in SPEC_STUBS.items() if k != "_unitdir"}
    bad = unexpanded(expand_spec(stubs=stubs))
    assert bad and all("%{_unitdir}" in line for line in bad)


def test_uses_the_pyproject_macros(expanded: str) -> None:
    s = spec_sections(expanded)
    # rpmspec -P prints %generate_buildrequires' body without its header (after %prep's).
    assert re.search(r"^%generate_buildrequires\n%pyproject_buildrequires$", SPEC.read_text(), re.M)
    assert "echo pyproject_buildrequires" in s["%prep"]
    assert "echo pyproject_wheel" in s["%build"]
    assert "echo pyproject_install" in s["%install"]
    assert "echo pyproject_save_files vtdlud" in s["%install"]
    assert spec_files(expanded).file_lists == (SPEC_STUBS["pyproject_files"].replace(
        "%{_builddir}", _builddir(expanded)),)  # fmt: skip


def _builddir(expanded: str) -> str:
    m = re.search(r"^cd '([^']+)'$", expanded, re.M)  # %autosetup's first step
    assert m is not None
    return m.group(1)


def test_uses_the_systemd_macros_for_every_unit(expanded: str) -> None:
    s = spec_sections(expanded)
    units = {p.rsplit("/", 1)[1] for p in spec_files(expanded).files if "/systemd/system/" in p}
    assert units
    post = [line.split()[2:] for line in s["%post"] if line.startswith("echo systemd_post ")]
    preun = [line.split()[2:] for line in s["%preun"] if line.startswith("echo systemd_preun ")]
    postun = [line.split() for line in s["%postun"] if line.startswith("echo systemd_postun")]
    assert [set(c) for c in post] == [units] and [set(c) for c in preun] == [units]
    assert {c[1] for c in postun} == {"systemd_postun_with_restart", "systemd_postun"}
    assert {u for c in postun for u in c[2:]} == units
    assert any(line == "echo tmpfiles_create vtdlud.conf" for line in s["%post"])


def test_man_pages_and_completion_are_generated_at_build_time(expanded: str) -> None:
    build = "\n".join(spec_sections(expanded)["%build"])
    assert "-m vtdlud._build.manpage --out generated" in build
    assert "-m vtdlud._build.completion > generated/vtdlud" in build


def test_version_and_license_match_the_project(expanded: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    head = "\n".join(spec_sections(expanded)[""])
    assert re.search(rf"^Version:\s+{re.escape(project['version'])}$", head, re.M)
    assert re.search(rf"^License:\s+{re.escape(project['license']['text'])}$", head, re.M)
    changelog = "\n".join(spec_sections(expanded)["%changelog"])
    assert f" - {project['version']}-1" in changelog
    debian = (PACKAGING / "debian" / "changelog").read_text().splitlines()[0]
    assert debian.startswith(f"vtdlud ({project['version']})")


def test_spec_file_is_the_one_tested() -> None:
    assert SPEC == PACKAGING / "rpm" / "vtdlud.spec" and SPEC.is_file()


def test_one_maintainer_everywhere() -> None:
    """debian/control, the Debian changelog and the spec's %changelog name the same maintainer,
    so replacing the placeholder (packaging/README) is one consistent edit."""
    control = (PACKAGING / "debian" / "control").read_text()
    m = re.search(r"^Maintainer: (.+)$", control, re.M)
    assert m is not None
    maintainer = m.group(1)
    changelog = (PACKAGING / "debian" / "changelog").read_text()
    assert re.findall(r"^ -- (.+?>)  ", changelog, re.M) == [maintainer]
    assert re.findall(r"^\* \w{3} \w{3} \d\d \d{4} (.+?>) - ", SPEC.read_text(), re.M) == [
        maintainer
    ]
