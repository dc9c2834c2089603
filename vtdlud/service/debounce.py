"""When to evaluate after a burst of uevents (pure: the caller passes monotonic times).

An evaluation is due ``quiet`` seconds after the last relevant event, but never later than the
cap after the first event of the burst, so a stream that never pauses is still evaluated.  The
cap starts at ``max_delay``; when it cuts a burst that is still going (events within the last
``quiet`` seconds), the next cap doubles, up to ``max_cap``, and it returns to ``max_delay``
after a burst that ended by itself.  A storm of T seconds therefore costs about log2(T /
max_delay) + 2 evaluations instead of T / max_delay.

Events that arrive while an evaluation runs start a new burst after it (the evaluation may have
read the host before they happened), so the last evaluation always follows the last event: it
sees the final state, at most ``quiet`` seconds (plus the evaluation) after it.

Enabling 2,048 SR-IOV VFs sends a few thousand uevents within a second or a few; with the
defaults (0.2 s quiet, 2 s first cap) that is one to three evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUIET = 0.2
DEFAULT_MAX_DELAY = 2.0
DEFAULT_MAX_CAP = 32.0


@dataclass
class Debouncer:
    quiet: float = DEFAULT_QUIET
    max_delay: float = DEFAULT_MAX_DELAY
    max_cap: float = DEFAULT_MAX_CAP
    first: float | None = None  # first event of the pending burst
    last: float | None = None
    events: int = 0
    cap: float = 0.0  # the current cap (max_delay, doubled while a storm goes on)

    def __post_init__(self) -> None:
        if self.quiet < 0 or self.max_delay < self.quiet:
            raise ValueError("need 0 <= quiet <= max_delay")
        self.max_cap = max(self.max_cap, self.max_delay)
        self.cap = self.max_delay

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
        return min(self.last + self.quiet, self.first + self.cap)

    def due(self, now: float) -> bool:
        d = self.deadline()
        return d is not None and now >= d

    def take(self, now: float) -> int:
        """Start the evaluation: forget the burst; returns how many events it covered."""
        still_going = self.last is not None and now < self.last + self.quiet
        self.cap = min(self.cap * 2, self.max_cap) if still_going else self.max_delay
        n = self.events
        self.first = self.last = None
        self.events = 0
        return n
