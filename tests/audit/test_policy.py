"""The policy files: defaults, merging, and one-line file:line errors for every mistake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cli.helpers import run_cli, status_json
from tests.conftest import capture_tarball
from vtdlud.model.policy import DeviceId, Policy, policy_wants
from vtdlud.model.severity import Severity
from vtdlud.model.tiers import Tier
from vtdlud.parse.policy import PolicyError, _bare_tables, parse_policy

ETC = Path(__file__).parents[2] / "etc" / "vtdlud" / "vtdlud.toml"


def test_shipped_file_is_all_defaults() -> None:
    assert parse_policy([("vtdlud.toml", ETC.read_text())]) == Policy()


def test_every_commented_example_parses() -> None:
    """Uncommenting each `#key = value` line of the shipped file gives a valid policy."""
    text = ETC.read_text()
    uncommented = re.sub(r"^#(\w+ = )", r"\1", text, flags=re.M)
    assert uncommented != text
    p = parse_policy([("vtdlud.toml", uncommented)])
    assert p.devices == ("0000:03:00.0", "0000:81:*.*")
    assert p.ids == (DeviceId(0x8086, 0x1572), DeviceId(0x15B3, None))
    assert p.vmm_held is True and p.fail_severity is Severity.FAIL


def test_drop_ins_replace_keys_in_order() -> None:
    p = parse_policy(
        [
            ("main", '[gate]\nfail_severity = "WARN"\nrequired_tiers = ["sysfs"]\n'),
            ("10-x.toml", '[gate]\nfail_severity = "NOTE"\n[preserve]\nvmm_held = false\n'),
        ]
    )
    assert p.fail_severity is Severity.NOTE
    assert p.required_tiers == frozenset({Tier.SYSFS})
    assert p.vmm_held is False
    assert p.sources == ("main", "10-x.toml")


def test_policy_wants() -> None:
    p = parse_policy([("f", '[preserve]\ndevices = ["0000:81:*.*"]\nids = ["15b3:*"]\n')])
    assert policy_wants(p, "0000:81:00.1", 0x8086, 0x1572)
    assert policy_wants(p, "0000:03:00.0", 0x15B3, 0x101B)
    assert not policy_wants(p, "0000:03:00.0", 0x8086, 0x1572)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gate\n", "f.toml:1: TOML syntax error: "),
        ("[preserv]\n", "f.toml:1: unknown table [preserv] (expected [preserve], [gate])"),
        (
            "# c\n[preserve]\nvmm_held = true\ndevice = []\n",
            "f.toml:4: unknown key preserve.device (expected one of devices, ids, vmm_held)",
        ),
        ("[preserve]\nvmm_held = 1\n", "f.toml:2: preserve.vmm_held must be true or false"),
        (
            '[preserve]\ndevices = "0000:03:00.0"\n',
            "f.toml:2: preserve.devices must be a list of strings",
        ),
        (
            '[preserve]\n\ndevices = ["0000:3:00.0"]\n',
            "f.toml:3: preserve.devices: '0000:3:00.0' is not a PCI address or glob "
            "(expected e.g. 0000:03:00.0 or 0000:81:*.*, lowercase hex)",
        ),
        (
            '[preserve]\ndevices = ["0000:00:00.["]\n',
            "f.toml:2: preserve.devices: '0000:00:00.[' is not a PCI address or glob "
            "(expected e.g. 0000:03:00.0 or 0000:81:*.*, lowercase hex)",
        ),
        (
            '[preserve]\nids = ["8086-1572"]\n',
            "f.toml:2: preserve.ids: '8086-1572' is not vendor:device (expected e.g. 8086:1572 or 15b3:*)",
        ),
        (
            '[gate]\nfail_severity = "fail"\n',
            "f.toml:2: gate.fail_severity must be one of NOTE, WARN, FAIL",
        ),
        (
            '[gate]\nrequired_tiers = ["sysfs", "debugfs"]\n',
            "f.toml:2: gate.required_tiers: unknown tier 'debugfs' "
            "(expected sysfs, iommu_debugfs, kho_debugfs, kcore)",
        ),
        ("gate = 3\n", "f.toml:1: gate must be a table [gate]"),
    ],
)
def test_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy([("f.toml", text)])
    assert exc.value.message.startswith(message)
    assert "\n" not in exc.value.message


def test_cli_config_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gate]\nrequired_tiers = ["kcore", 7]\n')
    rc, out, err = run_cli("status", "--root", str(tmp_path), "--config", str(bad))
    assert (rc, out) == (2, "")
    assert (
        err.splitlines()[0]
        == f"vtdlud: error: {bad}:2: gate.required_tiers must be a list of strings"
    )
    rc, _, err = run_cli("status", "--root", str(tmp_path), "--config", str(tmp_path / "nope.toml"))
    assert rc == 2 and "nope.toml: cannot read: no such file or directory" in err


def test_required_tiers_decide_unknown(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[gate]\nrequired_tiers = ["sysfs", "iommu_debugfs"]\n[preserve]\nvmm_held = false\n'
    )
    doc = status_json("--root", str(capture_tarball("a_legacy")), "--config", str(cfg))
    assert doc["verdict"] == "PASS"  # kho_debugfs/kcore missing but not required
    assert [f["code"] for f in doc["findings"]] == ["VTD050", "VTD050"]
    assert all(f["message"].endswith("(not required by policy)") for f in doc["findings"])


_TOML_PIECES = ["", " ", "\t", "#", "# note é", "[gate]", "[preserve]", " [ gate ] ", "[gate]#c",
                "[gate.x]", "[[gate]]", "[g\u00e9]", "x = 1", "\r", "\x00", "\x7f", "\x0c", "\"",
                "[gate", "gate]", "#\x01"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOML_PIECES), max_size=12), st.sampled_from(["\n", "\r\n"]))
def test_bare_tables_agrees_with_tomllib(pieces: list[str], newline: str) -> None:
    """The fast path for comment-and-header files gives tomllib's result or steps aside."""
    text = newline.join(pieces)
    fast = _bare_tables(text)
    try:
        expected: dict[str, object] | None = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        expected = None
    if fast is not None:
        assert fast == expected


def test_bare_tables_takes_the_shipped_file() -> None:
    assert _bare_tables(ETC.read_text()) == tomllib.loads(ETC.read_text()) != {}
    assert _bare_tables("") == {}
    assert _bare_tables("[gate]\nrequired_tiers = []\n") is None
