"""``vtdlud run``'s options: the defaults of ``systemd/vtdlud.service`` and the bounds of its
time options (``--backstop``, ``--debounce``, ``--debounce-max``: the loop waits in epoll)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from vtdlud.errors import UsageError
from vtdlud.frozen import frozen
from vtdlud.service.debounce import DEFAULT_MAX_DELAY, DEFAULT_QUIET
from vtdlud.service.state import DEFAULT_RUNTIME_DIR

DEFAULT_METRICS = "/var/lib/prometheus/node-exporter/vtdlud.prom"
DEFAULT_BACKSTOP = 600.0
LOG_LEVELS = ("debug", "info", "warning", "error")


@frozen
class DaemonOptions:
    argv: list[str]
    root: str = "/"
    config: str | None = None
    runtime_dir: Path = Path(DEFAULT_RUNTIME_DIR)
    metrics: Path | None = Path(DEFAULT_METRICS)
    backstop: float = DEFAULT_BACKSTOP
    debounce: float = DEFAULT_QUIET
    debounce_max: float = DEFAULT_MAX_DELAY
    log_level: str = "info"


# The loop's longest wait: epoll_wait takes whole milliseconds in an int (2**31 - 1 ms).
MAX_WAIT_SECONDS = 2_147_483


def _seconds(option: str, value: float, *, positive: bool) -> float:
    """A time option within what the loop can wait for; inf and nan are refused (inf overflowed
    epoll's timeout, nan made every wait zero: a core spinning)."""
    low = "above 0" if positive else "0 or more"
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)) or (
        value > MAX_WAIT_SECONDS
    ):
        raise UsageError(
            f"{option} {value}: expected seconds, {low} and at most {MAX_WAIT_SECONDS} "
            "(about 24.8 days)"
        )
    return value


def options_from_args(ns: Any, argv: list[str]) -> DaemonOptions:
    """The options of the parsed ``vtdlud run`` command line; the log level falls back to
    ``$SYSTEMD_LOG_LEVEL`` (systemd passes its own level down), then info."""
    _seconds("--backstop", ns.backstop, positive=True)
    _seconds("--debounce", ns.debounce, positive=False)
    _seconds("--debounce-max", ns.debounce_max, positive=False)
    if not ns.debounce <= ns.debounce_max:
        raise UsageError("--debounce and --debounce-max: need 0 <= debounce <= debounce-max")
    level = ns.log_level or os.environ.get("SYSTEMD_LOG_LEVEL", "info").lower()
    if level not in LOG_LEVELS:
        level = "info"
    return DaemonOptions(
        argv=argv,
        root=ns.root,
        config=ns.config,
        runtime_dir=Path(ns.runtime_dir),
        metrics=Path(ns.metrics) if ns.metrics else None,
        backstop=ns.backstop,
        debounce=ns.debounce,
        debounce_max=ns.debounce_max,
        log_level=level,
    )
