"""When to evaluate after a burst of uevents (pure: the caller passes monotonic times).

An evaluation is due ``quiet`` seconds after the last relevant event, but never later than
``max_delay`` seconds after the first event of the burst, so a stream that never pauses is
still evaluated every ``max_delay`` seconds.  Events that arrive while an evaluation runs start
a new burst after it (the evaluation may have read the host before they happened), so the last
evaluation always follows the last event: it sees the final state.

Enabling 2,048 SR-IOV VFs sends a few thousand uevents within a second or two; with the
defaults (0.2 s quiet, 2 s cap) that is one or two evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUIET = 0.2
DEFAULT_MAX_DELAY = 2.0


@dataclass
class Debouncer:
    quiet: float = DEFAULT_QUIET
    max_delay: float = DEFAULT_MAX_DELAY
    first: float | None = None  # first event of the pending burst
    last: float | None = None
    events: int = 0

    def __post_init__(self) -> None:
        if self.quiet < 0 or self.max_delay < self.quiet:
            raise ValueError("need 0 <= quiet <= max_delay")

    def event(self, now: float, count: int = 1) -> None:
        if self.first is None:
            self.first = now
        self.last = now
        self.events += count

    @property
    def pending(self) -> bool:
        return self.first is not None

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.quiet, self.first + self.max_delay)

    def due(self, now: float) -> bool:
        d = self.deadline()
        return d is not None and now >= d

    def take(self) -> int:
        """Start the evaluation: forget the burst; returns how many events it covered."""
        n = self.events
        self.first = self.last = None
        self.events = 0
        return n
