"""What the sandboxed daemon evaluates itself (``systemd/vtdlud.service``: no capabilities,
ProtectKernelTunables).

It never reads ``/proc/kcore`` (CAP_SYS_RAWIO) nor other users' file descriptors
(CAP_SYS_PTRACE, needed for ``preserve.vmm_held``), and it does not list ``/proc`` for VFIO
holders at all (in the unit the sandbox would confine that to its own processes).  It must not
say PASS for the checks whose inputs it does not see (DESIGN.md §3; issue #14 item 5: it used to
drop kcore from the required tiers and so said PASS on a host whose gate FAILs).  Its evaluation
uses the operator's policy as it is, except that ``vmm_held`` cannot be evaluated: the kcore
tier is reported ``unavailable`` ("not read by the daemon"), a VTD050 that blocks exactly as the
policy says (UNKNOWN verdict when the policy requires kcore, the default), and a VTD050 says the
VMM-held devices are not known (blocking when the policy has ``vmm_held``, the default); the
devices named in ``preserve.devices``/``ids`` are still checked.  The privileged oneshots
(``vtdlud-gate.service`` writing ``gate.json``, the post-kexec verification writing
``post-kexec.json``) see the rest; the daemon picks up their reports when they change and turns
them into events and metrics (source ``gate`` / ``post_kexec``), and whatever serves the
daemon's verdict (``status.json``, ``vtdlud status``) shows them beside it with their age
(``reports``, :func:`vtdlud.service.reports.beside`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vtdlud.audit.evaluate import evaluate
from vtdlud.audit.report import Report, finding
from vtdlud.host.root import HostRoot
from vtdlud.host.snapshot import take_snapshot
from vtdlud.model.policy import Policy
from vtdlud.model.snapshot import Snapshot

KCORE_REASON = (
    "not read by the daemon (sandboxed, no CAP_SYS_RAWIO): the IOMMU records, the exact tables "
    "and the KHO-preserved pages are not checked here; the gate reads it: see its report"
)
VMM_HELD_NOTE = (
    "vmm_held: not evaluated by the daemon (which process holds which VFIO device needs "
    "CAP_SYS_PTRACE): the VMM-held devices and their preconditions are not checked here; the "
    "gate's report covers them"
)


def daemon_policy(policy: Policy) -> Policy:
    """The operator's policy as the sandboxed daemon can apply it (see the module docstring):
    its required tiers unchanged (the kcore tier the daemon does not read blocks its verdict as
    it would block the gate's), ``vmm_held`` off (:func:`daemon_evaluate` says so)."""
    return replace(policy, vmm_held=False)


def daemon_snapshot(root: Path, policy: Policy | None = None) -> Snapshot:
    """A snapshot without kcore and without process facts: never opens /proc/kcore.  Nothing
    of what it reads is recorded (the daemon never collects a bundle): a storm's host would
    otherwise hold every config space read until the snapshot is built.  ``policy``: the one
    it is evaluated under (extended config space is read only of the devices a check needs)."""
    return take_snapshot(
        HostRoot(root, record=False), skip_kcore=KCORE_REASON, processes=False, policy=policy
    )


def daemon_evaluate(root: Path, policy: Policy) -> Report:
    """The daemon's report: its snapshot under its policy, and the VTD050 saying vmm_held was
    not evaluated when the operator's policy asks for it."""
    applied = daemon_policy(policy)
    report = evaluate(daemon_snapshot(root, applied), applied)
    if policy.vmm_held:
        note = finding("VTD050", VMM_HELD_NOTE, required=True)
        report = replace(report, findings=(*report.findings, note))
    return report
