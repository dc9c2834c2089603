"""``vtdlud run``: the long-running, sandboxed daemon (``systemd/vtdlud.service``, Type=notify).

One process, one thread, one event loop: a :mod:`selectors` loop over

- the kernel-uevent netlink socket (:mod:`vtdlud.service.udev`, ``source="kernel"`` so it works
  under ``PrivateNetwork=yes``),
- the signal wakeup socket (``signal.set_wakeup_fd``: SIGTERM/SIGINT stop, SIGHUP reloads),
- an inotify watch on the runtime directory for the oneshots' reports
  (:mod:`vtdlud.service.inotify`),

with the select timeout set to the earliest of three deadlines: the debounce of pending uevents
(:mod:`vtdlud.service.debounce`), the watchdog ping (half of ``WATCHDOG_USEC``) and the backstop
rescan (``--backstop``, default 600 s, which catches what no uevent announces).  Idle, the
process wakes only for watchdog pings and the backstop.

It evaluates at start, sends READY=1, then on relevant uevents, on SIGHUP (a new config is
loaded first; a bad one is logged with file:line and the old one stays) and at the backstop.
After each evaluation it writes ``status.json`` and ``daemon.json`` (:mod:`vtdlud.service.state`)
and the metrics textfile (:mod:`vtdlud.output.metrics`; removed when the daemon stops), sends
STATUS= (verdict, unit count, findings, the gate report's verdict and the evaluation number) and
journald events for what changed (:mod:`vtdlud.output.journal`).

What it evaluates itself, sandboxed (no kcore, no VMM-held devices), and how it says what it
does not see: :mod:`vtdlud.service.sandbox`; its options: :mod:`vtdlud.service.options`.  An
evaluation's host reads and report are dropped once its JSON document is built: the daemon keeps
that document (the previous findings, what ``status.json`` is rewritten from), never a snapshot,
and hands the freed heap back (:func:`vtdlud.service.runtime.release_memory`).

Nothing the host does stops the loop: an unreadable input is an UNKNOWN finding, an evaluation
that raises is logged and retried at the next trigger, journald being away queues the events
(:class:`~vtdlud.output.journal.JournalSink`), an unwritable metrics file is logged.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vtdlud import __version__
from vtdlud.errors import ExitCode, UsageError, VtdludError
from vtdlud.host.atomic import sweep_temps
from vtdlud.host.bundle import open_root
from vtdlud.host.config import load_policy
from vtdlud.model.policy import Policy
from vtdlud.output import journal as events
from vtdlud.output.envelope import envelope
from vtdlud.output.metrics import (
    DaemonStats,
    SourceState,
    remove_metrics,
    render_metrics,
    write_metrics,
)
from vtdlud.service.debounce import Debouncer
from vtdlud.service.notify import Notifier
from vtdlud.service.options import DaemonOptions, options_from_args
from vtdlud.service.reports import SOURCES, ReportFile, beside, read_report
from vtdlud.service.runtime import _signals, configure_logging, release_memory
from vtdlud.service.sandbox import daemon_evaluate
from vtdlud.service.state import (
    DAEMON_FORMAT,
    DAEMON_JSON,
    STATUS_JSON,
    proc_start_ticks,
    read_daemon_json,
    write_daemon_json,
    write_state,
)

JSON = dict[str, Any]
Log = Any  # a structlog BoundLogger


# -- the daemon --------------------------------------------------------------------------------
class Daemon:
    def __init__(
        self,
        opts: DaemonOptions,
        log: Log,
        *,
        notifier: Notifier | None = None,
        sink: events.JournalSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.opts = opts
        self.log = log
        self.notifier = notifier or Notifier()
        self.sink = sink or events.JournalSink(self._journal_fallback)
        self.clock = clock
        self.policy = Policy()
        self.stats = DaemonStats(started_at=time.time())
        self.debounce = Debouncer(opts.debounce, opts.debounce_max)
        self.root_path = Path(opts.root)
        self.doc: JSON | None = None
        self.reports: dict[str, ReportFile] = {}
        self.report_docs: dict[str, JSON] = {}
        self.previous: JSON | None = None  # daemon.json of the previous daemon
        self.stopping = False
        self.reload_requested = False
        self.last_eval_mono = 0.0
        self.last_trigger = "start"
        self.last_covered = 0
        self.start_ticks = proc_start_ticks(os.getpid())
        self.uevents: Any = None
        self.watch: Any = None
        self._write_error: str | None = None
        self._metrics_error: str | None = None

    # -- outputs ---------------------------------------------------------------------------
    def _journal_fallback(self, ev: events.Event, exc: OSError) -> None:
        self.log.warning(
            "journald unavailable, entry queued for re-sending",
            error=f"{type(exc).__name__}: {exc}",
            journal=ev,
        )

    def status_line(self) -> str:
        if self.doc is None:
            return f"no evaluation yet ({self.stats.evaluation_errors} failed)"
        units = len(self.doc["units"])
        gate = self.report_docs.get("gate")
        gate_part = f", gate report {gate['verdict']}" if gate is not None else ""
        return (
            f"verdict {self.doc['verdict']}: {units} DMAR unit(s), "
            f"{len(self.doc['findings'])} finding(s){gate_part}; "
            f"evaluation #{self.stats.evaluations}"
        )

    def daemon_json(self) -> JSON:
        reports: JSON = {}
        for source, rf in self.reports.items():
            state = "absent" if rf.ident is None else ("unreadable" if rf.error else "ok")
            reports[source] = {
                "path": str(rf.path),
                "state": state,
                "error": rf.error,
                "generated_at": None if rf.doc is None else rf.doc.get("generated_at"),
                "verdict": None if rf.doc is None else rf.doc.get("verdict"),
            }
        s = self.stats
        return {
            "format": DAEMON_FORMAT,
            "version": __version__,
            "pid": os.getpid(),
            "start_ticks": self.start_ticks,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.started_at)),
            "root": self.opts.root,
            "config": list(self.policy.sources),
            "backstop_seconds": self.opts.backstop,
            "debounce_seconds": [self.opts.debounce, self.opts.debounce_max],
            "evaluations": s.evaluations,
            "evaluation_errors": s.evaluation_errors,
            "last_evaluation": {
                "at": None
                if s.last_evaluation_at is None
                else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.last_evaluation_at)),
                "duration_seconds": s.last_evaluation_duration,
                "trigger": self.last_trigger,
                "uevents": self.last_covered,
            },
            "uevents": {
                "relevant": s.uevents_relevant,
                "ignored": s.uevents_ignored,
                "overflows": s.uevent_overflows,
            },
            "journal": {
                "sent": self.sink.sent,
                "failed": self.sink.failed,
                "backlog": len(self.sink.backlog),
            },
            "reports": reports,
        }

    def write_outputs(self, *, status: bool = True) -> None:
        self.stats.journal_backlog = len(self.sink.backlog)
        if self.doc is not None:
            try:
                if status:
                    # The oneshots' reports beside the daemon's own verdict (see the module doc).
                    doc = dict(self.doc, reports=beside(self.opts.runtime_dir))
                    write_state(self.opts.runtime_dir, doc, self.daemon_json())
                else:
                    write_daemon_json(self.opts.runtime_dir, self.daemon_json())
                self._write_error = None
            except OSError as exc:
                msg = f"{exc.filename or self.opts.runtime_dir}: {exc.strerror or exc}"
                if msg != self._write_error:
                    self.log.error("cannot write the runtime state", error=msg)
                self._write_error = msg
        if self.opts.metrics is not None:
            try:
                text = render_metrics(self.stats)
            except Exception:  # a bug in a renderer must not stop the daemon
                self.log.exception("cannot render the metrics")
                return
            try:
                write_metrics(self.opts.metrics, text)
                if self._metrics_error is not None:
                    self.log.info("metrics written again", path=str(self.opts.metrics))
                self._metrics_error = None
            except OSError as exc:
                msg = f"{exc.filename or self.opts.metrics}: {exc.strerror or exc}"
                if msg != self._metrics_error:
                    self.log.warning("cannot write the metrics textfile", error=msg)
                self._metrics_error = msg

    def remove_metrics(self) -> None:
        """On a clean stop: a textfile left behind would export the last verdict forever (a
        daemon that dies leaves it, and its last-evaluation timestamp ages)."""
        if self.opts.metrics is None:
            return
        try:
            remove_metrics(self.opts.metrics)
        except OSError as exc:
            self.log.warning("cannot remove the metrics textfile", error=f"{exc.strerror or exc}")

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, trigger: str) -> None:
        covered = self.debounce.take(self.clock())
        t0 = self.clock()
        wall = time.time()
        try:
            report = daemon_evaluate(self.root_path, self.policy)
            doc = envelope(
                report,
                argv=self.opts.argv,
                exit_status=ExitCode.OK,
                root_label=self.opts.root,
                source="daemon",
            )
            # The document is all the daemon keeps: the report holds the snapshot, and the
            # diff, the outputs and release_memory below need neither.
            del report
        except Exception as exc:  # a bug must not stop the daemon; the next trigger retries
            self.stats.evaluation_errors += 1
            self.last_eval_mono = self.clock()
            self.log.exception("evaluation failed", trigger=trigger)
            self.notifier.status(f"evaluation failed: {type(exc).__name__}: {exc}")
            return
        end = self.clock()
        self.last_eval_mono = end
        self.stats.evaluations += 1
        self.stats.last_evaluation_at = wall
        self.stats.last_evaluation_duration = end - t0
        self.stats.sources["daemon"] = SourceState(doc)
        self.last_trigger, self.last_covered = trigger, covered

        old = self.doc
        out = events.finding_events(
            None if old is None else old["findings"],
            doc["findings"],
            source="daemon",
            verdict=doc["verdict"],
        )
        v = events.verdict_event(
            None if old is None else old["verdict"],
            doc["verdict"],
            source="daemon",
            units=len(doc["units"]),
            findings=len(doc["findings"]),
        )
        if v is not None:
            out.append(v)
        self.doc = doc
        self.sink.send_all(out)
        self.pick_up_reports(write=False)
        self.write_outputs()
        release_memory()
        self.notifier.status(self.status_line())
        self.log.debug(
            "evaluated",
            trigger=trigger,
            uevents=covered,
            verdict=doc["verdict"],
            findings=len(doc["findings"]),
            duration=round(end - t0, 4),
            events=len(out),
        )

    # -- the oneshots' reports ---------------------------------------------------------------
    def _baseline(self, source: str, rf: ReportFile) -> JSON | None:
        """At start, a report the previous daemon already turned into events is its own
        baseline (no events again); anything else is new."""
        prev = (self.previous or {}).get("reports", {}).get(source) or {}
        if rf.doc is not None and prev.get("generated_at") == rf.doc.get("generated_at"):
            return rf.doc
        return None

    def pick_up_reports(self, *, write: bool = True) -> bool:
        if self.watch is not None and self.watch.lost:
            self.watch.rearm()
        changed = False
        for source, name in SOURCES.items():
            rf = read_report(source, self.opts.runtime_dir / name)
            prev = self.reports.get(source)
            if prev is not None and prev.ident == rf.ident:
                continue
            self.reports[source] = rf
            changed = True
            if rf.ident is None:
                self.stats.sources.pop(source, None)
                if prev is not None:
                    self.log.info("report removed", source=source, path=str(rf.path))
                continue
            if rf.error is not None or rf.doc is None:
                self.stats.sources[source] = SourceState(error=rf.error)
                self.sink.send(
                    events.simple_event(
                        f"vtdlud cannot use the {source} report {rf.path}: {rf.error}",
                        events.REPORT_UNREADABLE,
                        events.WARNING,
                        source=source,
                        VTDLUD_PATH=rf.path,
                        VTDLUD_ERROR=rf.error,
                    )
                )
                continue
            self.stats.sources[source] = SourceState(rf.doc)
            old = self.report_docs.get(source)
            if prev is None and old is None:
                old = self._baseline(source, rf)
                if old is rf.doc:
                    self.report_docs[source] = rf.doc
                    continue
            self.sink.send_all(events.report_events(old, rf.doc, source=source, path=str(rf.path)))
            self.report_docs[source] = rf.doc
        if changed and write:
            self.write_outputs()
            self.notifier.status(self.status_line())
        return changed

    # -- configuration -----------------------------------------------------------------------
    def reload(self) -> None:
        self.notifier.reloading()
        try:
            policy = load_policy(self.opts.config)
        except VtdludError as exc:
            self.log.error("configuration rejected, keeping the previous one", error=exc.message)
            self.sink.send(
                events.simple_event(
                    f"vtdlud configuration rejected, the previous one stays: {exc.message}",
                    events.CONFIG_REJECTED,
                    events.ERR,
                    VTDLUD_CONFIG_ERROR=exc.message,
                )
            )
        except Exception as exc:  # a bug in the parser must not stop the daemon
            self.log.exception("configuration reload failed, keeping the previous one")
            self.sink.send(
                events.simple_event(
                    f"vtdlud configuration reload failed, the previous one stays: {exc}",
                    events.CONFIG_REJECTED,
                    events.ERR,
                    VTDLUD_CONFIG_ERROR=f"{type(exc).__name__}: {exc}",
                )
            )
        else:
            self.policy = policy
            files = ", ".join(policy.sources) or "built-in defaults"
            self.log.info("configuration reloaded", files=files)
            self.sink.send(
                events.simple_event(
                    f"vtdlud configuration reloaded from {files}",
                    events.CONFIG_RELOADED,
                    events.INFO,
                    VTDLUD_CONFIG_FILES=files,
                )
            )
            self.evaluate("reload")
        self.notifier.ready(self.status_line())

    # -- the loop ----------------------------------------------------------------------------
    def _on_signal(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            elif signum == signal.SIGHUP:
                self.reload_requested = True

    def _on_uevents(self) -> None:
        d = self.uevents.drain()
        self.stats.uevents_relevant += d.relevant
        self.stats.uevents_ignored += d.ignored
        if d.overflow:
            self.stats.uevent_overflows += 1
            self.log.warning("uevent socket overflowed: events were lost, rescanning")
        if d.error is not None:
            self.log.error("reading uevents failed, rescanning", error=d.error)
        if d.relevant or d.overflow or d.error is not None:
            self.debounce.event(self.clock(), d.relevant or 1)

    def _on_reports(self) -> None:
        if self.watch.read():
            self.pick_up_reports()

    def _open_sources(self, sel: selectors.BaseSelector) -> None:
        from vtdlud.service.udev import UeventSource  # noqa: PLC0415 - imports pyudev

        try:
            self.uevents = UeventSource()
            sel.register(self.uevents.fileno(), selectors.EVENT_READ, self._on_uevents)
        except Exception as exc:  # no netlink (seccomp, namespace): the backstop still runs
            self.log.error(
                "cannot listen to kernel uevents; only the backstop rescans", error=str(exc)
            )
        from vtdlud.service.inotify import DirWatch  # noqa: PLC0415

        try:
            self.watch = DirWatch(self.opts.runtime_dir, frozenset(SOURCES.values()))
            sel.register(self.watch.fileno(), selectors.EVENT_READ, self._on_reports)
        except OSError as exc:
            self.log.warning(
                "cannot watch the runtime directory; reports are picked up at each evaluation",
                error=f"{exc.strerror or exc}",
            )

    def run(self) -> int:
        self.policy = load_policy(self.opts.config)  # a bad config at start: exit 2
        try:
            self.opts.runtime_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"--runtime-dir {self.opts.runtime_dir}: {exc.strerror or exc}",
                hint="run as root, or pass a writable --runtime-dir",
            ) from exc
        # Temp files of a daemon killed mid-write (it is the only writer of these).
        for mine in (STATUS_JSON, DAEMON_JSON):
            sweep_temps(self.opts.runtime_dir / mine)
        if self.opts.metrics is not None:
            sweep_temps(self.opts.metrics)
        self.previous = read_daemon_json(self.opts.runtime_dir)
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        sel = selectors.DefaultSelector()
        try:
            with open_root(self.opts.root) as root, _signals(wsock):
                self.root_path = root.root
                sel.register(rsock, selectors.EVENT_READ, lambda: self._on_signal(rsock))
                self._open_sources(sel)
                self.sink.send(
                    events.simple_event(
                        f"vtdlud {__version__} daemon started (root {self.opts.root}, "
                        f"config {', '.join(self.policy.sources) or 'built-in defaults'})",
                        events.STARTED,
                        events.INFO,
                        VTDLUD_VERSION=__version__,
                        VTDLUD_ROOT=self.opts.root,
                    )
                )
                self.pick_up_reports(write=False)
                self.evaluate("start")
                self.notifier.ready(self.status_line())
                self.log.info("ready", status=self.status_line())
                self._loop(sel)
                self.notifier.stopping()
                self.remove_metrics()
                self.sink.send(
                    events.simple_event(
                        f"vtdlud daemon stopped after {self.stats.evaluations} evaluation(s)",
                        events.STOPPED,
                        events.INFO,
                        VTDLUD_EVALUATIONS=self.stats.evaluations,
                    )
                )
                self.log.info("stopped", evaluations=self.stats.evaluations)
        finally:
            sel.close()
            rsock.close()
            wsock.close()
            if self.watch is not None:
                self.watch.close()
        return ExitCode.OK

    def _loop(self, sel: selectors.BaseSelector) -> None:
        interval = self.notifier.watchdog
        next_ping = self.clock() + interval if interval else None
        while not self.stopping:
            backstop_at = self.last_eval_mono + self.opts.backstop
            deadlines = [backstop_at]
            if next_ping is not None:
                deadlines.append(next_ping)
            debounce_at = self.debounce.deadline()
            if debounce_at is not None:
                deadlines.append(debounce_at)
            timeout = max(0.0, min(deadlines) - self.clock())
            for key, _mask in sel.select(timeout):
                try:
                    key.data()
                except Exception:  # keep serving; the next trigger retries
                    self.log.exception("event handler failed")
            if self.stopping:
                break
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            now = self.clock()
            if self.debounce.due(now):
                self.evaluate("uevent")
            elif now >= self.last_eval_mono + self.opts.backstop:
                self.evaluate("backstop")
            if next_ping is not None and self.clock() >= next_ping:
                self.notifier.ping()
                next_ping = self.clock() + (interval or 0)
                if self.sink.backlog and self.sink.flush():
                    self.log.info("journald is back; queued entries re-sent")


def run_daemon(ns: Any, argv: list[str]) -> int:
    """``vtdlud run``: returns the exit code (0 after SIGTERM)."""
    opts = options_from_args(ns, argv)
    log = configure_logging(opts.log_level)
    return Daemon(opts, log).run()
