"""The ``vtdlud`` command line.

Exit codes (DESIGN.md §4): 0 report produced (status) / gate passed (check); 1 a finding at or
above the fail severity (check); 2 usage or configuration error; 3 a required input missing
(check fails closed); 4 internal error.  Heavy modules are imported inside the commands so
``vtdlud --version`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vtdlud.cli.args import DEFAULT_STATE_DIR, PROG, ArgumentError, build_parser
from vtdlud.errors import ExitCode, UsageError, VtdludError

if TYPE_CHECKING:  # pathlib is imported where a path is made: `status` needs none
    from pathlib import Path

    from vtdlud.host.root import HostRoot

# The commands whose --json prints the envelope, on every exit (like smartctl's --json).
ENVELOPE_COMMANDS = ("status", "check", "collect")


def _write(text: str) -> None:
    sys.stdout.write(text)


def _cached_status(ns: argparse.Namespace, argv: list[str]) -> str | None:
    """The daemon's fresh status.json, rendered; None when it must be evaluated directly."""
    if ns.live or ns.config is not None:
        return None
    from pathlib import Path

    from vtdlud.service.state import fresh_status

    doc = fresh_status(Path(ns.runtime_dir), ns.root)
    if doc is None:
        return None
    # The daemon never reads kcore nor the VMMs' descriptors: its verdict is served with the
    # latest gate and post-kexec reports beside it, read now (issue #14 item 5).
    from vtdlud.service.reports import beside

    reports = beside(Path(ns.runtime_dir))
    try:
        if ns.json:
            from vtdlud.service.state import serve_json

            return serve_json(doc, argv, ExitCode.OK, reports)
        from vtdlud.output.text import use_colour
        from vtdlud.service.state import format_cached

        return format_cached(doc, ns.root, use_colour(sys.stdout), reports, brief=ns.brief)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a malformed file: evaluate instead


def cmd_status(ns: argparse.Namespace, argv: list[str]) -> int:
    cached = _cached_status(ns, argv)
    if cached is not None:
        _write(cached)
        return ExitCode.OK
    from vtdlud.audit.evaluate import evaluate
    from vtdlud.host.bundle import open_root
    from vtdlud.host.config import load_policy
    from vtdlud.host.snapshot import take_snapshot

    policy = load_policy(ns.config)
    with open_root(ns.root) as root:
        report = evaluate(take_snapshot(root, policy=policy), policy)
    if ns.json:
        from vtdlud.output.envelope import dumps, envelope

        doc = envelope(report, argv=argv, exit_status=ExitCode.OK, root_label=ns.root)
        _write(dumps(doc))
    else:
        from vtdlud.output.text import format_status, use_colour

        colour = use_colour(sys.stdout)
        _write(format_status(report, ns.root, colour, devices=ns.devices, brief=ns.brief))
    return ExitCode.OK


def cmd_check(ns: argparse.Namespace, argv: list[str]) -> int:
    from vtdlud.audit.evaluate import evaluate
    from vtdlud.audit.gate import gate_exit, gate_summary
    from vtdlud.host.bundle import open_root
    from vtdlud.host.config import load_policy
    from vtdlud.host.snapshot import take_snapshot
    from vtdlud.output.envelope import dumps, envelope

    policy = load_policy(ns.config)
    with open_root(ns.root) as root:
        live = root.is_live
        state_dir = _state_dir(ns.state_dir, root)
        found = None
        if ns.post_kexec:  # the ledger the gate wrote, and where it says the records were
            from vtdlud.host.ledger import read_ledger_input

            found = read_ledger_input(state_dir)
        hints = found.ledger.record_addresses() if found and found.ledger else None
        snap = take_snapshot(root, record_hints=hints, kernel_log=ns.post_kexec, policy=policy)
        report = evaluate(snap, policy, found, gate=True)
    if ns.post_kexec and live:
        from vtdlud.service.ledger import consume_ledger

        report = consume_ledger(report, state_dir)
    code = gate_exit(report)
    doc = envelope(report, argv=argv, exit_status=code, root_label=ns.root)
    if ns.report:
        from pathlib import Path

        from vtdlud.host.atomic import write_atomic

        try:
            write_atomic(Path(ns.report), dumps(doc).encode())
        except OSError as exc:
            raise UsageError(f"--report {ns.report}: cannot write ({exc.strerror or exc})") from exc
    if code is ExitCode.OK and live and not ns.no_ledger and not ns.post_kexec:
        from vtdlud.audit.ledger import ledger_from_report
        from vtdlud.service.ledger import write_ledger

        try:
            write_ledger(state_dir, ledger_from_report(report))
        except OSError as exc:
            raise UsageError(
                f"--state-dir {ns.state_dir}: cannot write the ledger ({exc.strerror or exc})",
                hint="the gate passed but nothing was recorded; run it as root or use --no-ledger",
            ) from exc
    if ns.json:
        _write(dumps(doc))
    else:
        from vtdlud.output.text import format_status, use_colour

        colour = use_colour(sys.stdout)
        _write(
            format_status(
                report, ns.root, colour, command="check", devices=ns.devices, brief=ns.brief
            )
        )
        _write(gate_summary(report, code) + "\n")
    return code


def _default_bundle_name(kernel_release: str | None) -> Path:
    import time
    from pathlib import Path

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path(f"vtdlud-{kernel_release or 'unknown'}-{stamp}.tar.gz")


BUNDLE_STATE_DIR = "vtdlud"  # a bundle carries the ledger as vtdlud/ledger.json


def _state_dir(given: str | None, root: HostRoot) -> Path:
    """--state-dir, else the ledger a bundle carries (collect puts it there), else the host's."""
    from pathlib import Path

    if given is not None:
        return Path(given)
    if not root.is_live:
        return root.root / BUNDLE_STATE_DIR
    return Path(DEFAULT_STATE_DIR)


def cmd_collect(ns: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from vtdlud.audit.evaluate import evaluate
    from vtdlud.host.bundle import make_manifest, open_root, write_bundle
    from vtdlud.host.ledger import LEDGER_NAME, ledger_bytes, ledger_record_hints
    from vtdlud.host.procs import PROCESSES_JSON, facts_to_json
    from vtdlud.host.snapshot import PROC_KCORE, take_snapshot
    from vtdlud.model.tiers import Tier

    with open_root(ns.root) as root:
        state_dir = Path(ns.state_dir) if root.is_live else root.root / BUNDLE_STATE_DIR
        # After a kexec the records are where the gate's ledger says (model.relocate): read
        # them, so a --memory bundle carries their pages.
        snap = take_snapshot(root, record_hints=ledger_record_hints(state_dir), collect=True)
        report = evaluate(snap)
        out = Path(ns.output) if ns.output else _default_bundle_name(snap.kernel_release)
        if out.is_dir():
            raise UsageError(f"-o {out}: is a directory, expected a file name for the bundle")
        unreadable = dict(root.unreadable)
        unreadable.update((p.path.lstrip("/"), p.reason) for p in snap.problems)
        manifest = make_manifest(ns.root, snap.kernel_release, snap.boot_id, unreadable)
        extra = {}
        if snap.processes is not None:
            extra[PROCESSES_JSON] = facts_to_json(snap.processes)
        ledger = ledger_bytes(state_dir)
        if ledger is not None:
            extra[f"{BUNDLE_STATE_DIR}/{LEDGER_NAME}"] = ledger
        if ns.memory:
            if not snap.kcore_pages:
                raise UsageError(
                    "collect --memory: no physical memory was read "
                    f"(kcore tier: {snap.tiers[Tier.KCORE].reason})"
                )
            from vtdlud.host.corewriter import build_core

            extra[PROC_KCORE] = build_core(snap.kcore_pages)
        try:
            result = write_bundle(root, out, manifest=manifest, extra=extra)
        except OSError as exc:
            raise UsageError(f"-o {out}: cannot write the bundle ({exc.strerror or exc})") from exc
    if ns.json:
        from vtdlud.output.envelope import dumps, envelope

        doc = envelope(report, argv=argv, exit_status=ExitCode.OK, root_label=ns.root)
        doc["bundle"] = {
            "path": str(result.path),
            "files": result.files,
            "links": result.links,
            "unreadable": manifest["unreadable"],
        }
        _write(dumps(doc))
    else:
        _write(
            f"wrote {result.path}: {result.files} files, {result.links} links, "
            f"{result.unreadable} unreadable (listed in the manifest)\n"
        )
    return ExitCode.OK


def cmd_decode(ns: argparse.Namespace) -> int:
    import json

    if ns.kind == "dmar":
        from vtdlud.errors import ParseError
        from vtdlud.host.inputs import read_acpi_dmar, read_input_file
        from vtdlud.output.dmar import dmar_to_json, format_dmar_text
        from vtdlud.parse.dmar import parse_dmar

        if ns.value is not None and ns.root is not None:
            raise UsageError("decode dmar: give a FILE or --root, not both")
        if ns.value is not None:
            where, data = ns.value, read_input_file(ns.value, "decode dmar")
        else:
            where, data = read_acpi_dmar(ns.root or "/")
        try:
            table = parse_dmar(data)
        except ParseError as exc:
            raise UsageError(f"decode dmar: {where}: {exc}") from exc
        _write(
            json.dumps(dmar_to_json(table), indent=2) + "\n" if ns.json else format_dmar_text(table)
        )
        return ExitCode.OK
    if ns.root is not None:
        raise UsageError(
            f"decode {ns.kind}: --root applies to `decode dmar` only; a value is decoded as given"
        )
    if ns.value is None:
        raise UsageError(f"decode {ns.kind}: the VALUE to decode is missing")
    from vtdlud.output.decode import decode, format_text, to_json

    d = decode(ns.kind, ns.value, ns.mode)
    _write(json.dumps(to_json(d), indent=2) + "\n" if ns.json else format_text(d))
    return ExitCode.OK


def cmd_abi(ns: argparse.Namespace) -> int:
    import json

    from vtdlud.output.abi import abi_layout, format_abi_text

    _write(
        json.dumps(abi_layout(ns.variant), indent=2) + "\n"
        if ns.json
        else format_abi_text(ns.variant)
    )
    return ExitCode.OK


def _one_line(text: str) -> str:
    """Every error is one line: a library's multi-line message is joined."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip()) or text


def _error(message: str, hint: str | None = None) -> None:
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
    if hint:
        sys.stderr.write(f"{PROG}: hint: {_one_line(hint)}\n")


def _wants_envelope(args: list[str], ns: argparse.Namespace | None) -> bool:
    """status, check or collect with --json, also when the arguments did not parse."""
    if ns is not None:
        return bool(getattr(ns, "json", False)) and ns.command in ENVELOPE_COMMANDS
    words = [a for a in args if not a.startswith("-")]
    return "--json" in args and bool(words) and words[0] in ENVELOPE_COMMANDS


def _root_label(args: list[str], ns: argparse.Namespace | None) -> str:
    if ns is not None and isinstance(getattr(ns, "root", None), str):
        return str(ns.root)
    for i, a in enumerate(args):
        if a.startswith("--root="):
            return a.split("=", 1)[1]
        if a == "--root" and i + 1 < len(args):
            return args[i + 1]
    return "/"


def _fail(
    code: ExitCode,
    message: str,
    hint: str | None,
    args: list[str],
    ns: argparse.Namespace | None,
) -> int:
    """The one error exit: one line on stderr (and the hint), the envelope on stdout under
    --json."""
    _error(message, hint)
    if _wants_envelope(args, ns):
        from vtdlud.output.envelope import dumps, error_envelope

        doc = error_envelope(
            argv=[PROG, *args],
            exit_status=code,
            root_label=_root_label(args, ns),
            text=_one_line(message),
            hint=None if hint is None else _one_line(hint),
        )
        with contextlib.suppress(BrokenPipeError):
            _write(dumps(doc))
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns: argparse.Namespace | None = None
    try:
        ns = parser.parse_args(args)
    except ArgumentError as exc:
        exc.parser.print_usage(sys.stderr)
        where = exc.parser.prog.removeprefix(PROG).strip()
        message = f"{where}: {exc.message}" if where else exc.message
        return _fail(ExitCode.USAGE, message, None, args, None)
    full_argv = [PROG, *args]
    threshold = gc.get_threshold()
    if ns.command != "run":
        # A one-shot command builds ~10^5 objects that live until it ends (a 2,048-device
        # host's devices, table entries, records): the collector's default (a young pass every
        # 700 allocations, full passes that traverse all of them) spent ~30 ms of a ~300 ms
        # `check` there.  Cycles are rare here (errors are kept without tracebacks), the process
        # ends; peak RSS was the same (52.3 vs 52.5 MB).  The daemon keeps the default and
        # collects after each evaluation.
        gc.set_threshold(50_000, 20, 20)
    try:
        match ns.command:
            case "status":
                return cmd_status(ns, full_argv)
            case "check":
                return cmd_check(ns, full_argv)
            case "collect":
                return cmd_collect(ns, full_argv)
            case "decode":
                return cmd_decode(ns)
            case "abi":
                return cmd_abi(ns)
            case "run":
                from vtdlud.service.daemon import run_daemon

                return run_daemon(ns, full_argv)
        raise UsageError(f"unknown command {ns.command!r}")  # pragma: no cover
    except VtdludError as exc:
        return _fail(exc.exit_code, exc.message, exc.hint, args, ns)
    except BrokenPipeError:
        return ExitCode.OK
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:  # an incomplete installation, not a bug in vtdlud
        from vtdlud.errors import missing_module

        message, hint = missing_module(exc)
        return _fail(ExitCode.INTERNAL, message, hint, args, ns)
    except Exception as exc:  # the one place that turns a bug into exit 4
        return _fail(
            ExitCode.INTERNAL,
            f"internal error: {type(exc).__name__}: {exc}",
            "run `vtdlud collect` and attach the bundle to a bug report",
            args,
            ns,
        )
    finally:
        gc.set_threshold(*threshold)  # as it was, for a caller in the same process
