"""Process plumbing for the daemon: structlog set-up, signals through a wakeup socket, and
giving freed heap back after an evaluation."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

Log = Any  # a structlog BoundLogger


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, None where the C library has none (musl); looked up once."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_memory() -> None:
    """Give freed heap back to the kernel after an evaluation: a big host or a storm of VFs
    would otherwise leave the idle daemon at its peak RSS.

    A full collection first: what a reference cycle holds is not freed when the evaluation
    drops it but at the collector's next full pass, which a long-lived heap rarely triggers (the
    host reads of a storm's evaluations stayed alive, several at once, until the host layer's
    error tracebacks stopped making cycles; a cycle yet to come would do the same).  ~7 ms on a
    4,000-function host.  Then malloc_trim(0): pymalloc hands an empty arena back itself, but
    glibc keeps freed heap (the larger objects: config spaces, debugfs dumps) below its top."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# -- logging -----------------------------------------------------------------------------------
_SYSLOG_PREFIX = {
    "debug": "<7>",
    "info": "<6>",
    "warning": "<4>",
    "error": "<3>",
    "critical": "<2>",
}


def _on_journal_stream() -> bool:
    """stderr is connected to journald (systemd.exec(5) JOURNAL_STREAM)."""
    dev_ino = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return dev_ino == f"{st.st_dev}:{st.st_ino}"


def configure_logging(level: str) -> Log:
    """structlog to stderr: console lines on a terminal, JSON otherwise; under systemd each
    JSON line gets a ``<N>`` syslog prefix so journald files it at the right priority."""
    import logging  # noqa: PLC0415 - the daemon path only

    import structlog  # noqa: PLC0415

    renderer: Any
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    prefix = _on_journal_stream()

    def render(logger: Any, name: str, event: Any) -> str:
        level_name = str(event.get("level", "info"))
        line = str(renderer(logger, name, event))
        return (_SYSLOG_PREFIX.get(level_name, "<6>") + line) if prefix else line

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("vtdlud")


def _noop_handler(signum: int, frame: object) -> None:
    """The wakeup socket carries the signal; the loop acts on it."""


@contextlib.contextmanager
def _signals(wakeup: socket.socket) -> Iterator[None]:
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    old = {s: signal.signal(s, _noop_handler) for s in sigs}
    old_fd = signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
