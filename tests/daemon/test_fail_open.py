"""The daemon never says PASS for what it did not see (issue #14 item 5).

On the bundled FAIL example (a host whose preserved record lacks the bit of 00:05.0's context
table: the gate FAILs with VTD011) the sandboxed daemon, which never reads kcore nor the VMM's
descriptors, used to say ``Verdict: PASS`` and ``vtdlud_verdict{source="daemon",verdict="PASS"}``
1 — fail open.  Now its verdict is UNKNOWN with the reasons, and `vtdlud status` served from it,
its JSON and the metrics show the gate's FAIL report beside it, with its age.  Fails on the main
of before issue #14 (PASS, and no report beside).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.helpers import run_cli, validate
from tests.daemon.conftest import DaemonFactory, clean_env
from tests.daemon.test_reports import metric

EXAMPLE = Path(__file__).parents[2] / "examples" / "2-preserved-bit-missing.tar.gz"


def test_daemon_is_unknown_on_the_fail_example_with_the_gate_beside(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(config="", args=("--root", str(EXAMPLE)))  # the default policy
    assert d.status()["verdict"] == "UNKNOWN"
    report = ("--report", str(d.runtime / "gate.json"))
    gate = subprocess.run(
        [sys.executable, "-m", "vtdlud", "check", "--root", str(EXAMPLE), "--no-ledger", *report],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert gate.returncode == 1, gate.stdout + gate.stderr
    d.wait_message(lambda m: "gate report FAIL" in m)

    where = ("--root", str(EXAMPLE), "--runtime-dir", str(d.runtime))
    rc, out, err = run_cli("status", "--json", *where)
    assert rc == 0, err
    doc = validate(json.loads(out))
    assert doc["source"] == "daemon" and doc["verdict"] == "UNKNOWN"
    kcore = [f for f in doc["findings"] if f["code"] == "VTD050" and "kcore" in f["message"]]
    assert kcore and "not read by the daemon" in kcore[0]["message"]
    beside = doc["reports"]["gate"]
    assert (beside["state"], beside["verdict"], beside["exit_status"]) == ("ok", "FAIL", 1)
    assert 0 <= beside["age_seconds"] < 600
    assert "VTD011" in {f["code"] for f in beside["findings"]}
    assert doc["reports"]["post_kexec"]["state"] == "absent"

    rc, text, _ = run_cli("status", *where)
    assert rc == 0
    assert "Verdict: UNKNOWN" in text and "Verdict: PASS" not in text
    assert "from the vtdlud daemon's evaluation" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("gate (vtdlud check)"))
    assert ": FAIL (generated " in line and " ago, exit 1" in line
    assert "VTD011 FAIL 0000:00:05.0" in text

    status_json = json.loads((d.runtime / "status.json").read_text())
    assert status_json["reports"]["gate"]["verdict"] == "FAIL"

    prom = d.metrics.read_text()
    assert metric(prom, "vtdlud_verdict", source="daemon", verdict="PASS") == 0
    assert metric(prom, "vtdlud_verdict", source="daemon", verdict="UNKNOWN") == 1
    assert metric(prom, "vtdlud_verdict", source="gate", verdict="FAIL") == 1
    age = metric(prom, "vtdlud_report_age_seconds", source="gate")
    assert age is not None and 0 <= age < 600
