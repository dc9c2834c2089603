"""The debounce rule: quiet period after the last event, capped after the first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtdlud.service.debounce import Debouncer


def test_idle_has_no_deadline() -> None:
    d = Debouncer()
    assert d.deadline() is None and not d.due(1e9) and not d.pending


def test_quiet_period_after_the_last_event() -> None:
    d = Debouncer(quiet=0.2, max_delay=2.0)
    d.event(10.0)
    d.event(10.1)
    assert d.deadline() == pytest.approx(10.3)
    assert not d.due(10.29) and d.due(10.3)
    assert d.take() == 2 and not d.pending


def test_a_stream_that_never_pauses_is_evaluated_every_max_delay() -> None:
    d = Debouncer(quiet=0.2, max_delay=2.0)
    evaluations = 0
    t = 0.0
    while t < 5.0:  # an event every 10 ms for 5 s
        d.event(t)
        if d.due(t):
            d.take()
            evaluations += 1
        t += 0.01
    assert evaluations == 2  # at 2 s and 4 s; the rest is pending until the stream stops
    assert d.pending


@given(st.lists(st.floats(min_value=0, max_value=1.0), min_size=1, max_size=200))
def test_a_burst_costs_one_evaluation_per_max_delay(gaps: list[float]) -> None:
    """Whatever the spacing, evaluations <= burst length / max_delay + 1, and the last event
    is always followed by an evaluation."""
    d = Debouncer(quiet=0.2, max_delay=2.0)
    t, evaluations = 0.0, 0
    for gap in gaps:
        t += gap
        if d.due(t):
            d.take()
            evaluations += 1
        d.event(t)
    deadline = d.deadline()
    assert deadline is not None and deadline >= t
    assert deadline <= t + 0.2
    quiet_bursts = 1 + sum(g >= 0.2 for g in gaps)
    assert evaluations <= quiet_bursts + t / 2.0
    assert d.pending


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Debouncer(quiet=1.0, max_delay=0.5)
