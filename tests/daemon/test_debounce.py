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
    assert d.take(10.3) == 2 and not d.pending


def test_a_stream_that_never_pauses_is_evaluated_at_doubling_intervals() -> None:
    d = Debouncer(quiet=0.2, max_delay=2.0, max_cap=8.0)
    at = []
    for i in range(4000):  # an event every 10 ms for 40 s
        t = i / 100
        d.event(t)
        if d.due(t):
            d.take(t)
            at.append(t)
    # caps 2, 4, 8, 8, ... (each next burst starts with the next event, 10 ms later)
    assert at == pytest.approx([2.0, 6.01, 14.02, 22.03, 30.04, 38.05], abs=0.005)
    assert d.pending


def test_the_cap_resets_after_a_quiet_burst() -> None:
    d = Debouncer(quiet=0.2, max_delay=2.0)
    for i in range(300):  # 3 s of events: cut at 2 s
        d.event(i * 0.01)
        if d.due(i * 0.01):
            d.take(i * 0.01)
    assert d.cap == 4.0
    d.take(10.0)  # the rest of the storm, evaluated after it went quiet
    assert d.cap == 2.0


def test_storm_of_2048_uevents_over_5_seconds() -> None:
    """SR-IOV at the kernel's pace: 2,048 events spread over 5 s cost <= 3 evaluations."""
    d = Debouncer()
    evaluations = 0
    for i in range(2048):
        t = i * 5.0 / 2048
        if d.due(t):
            d.take(t)
            evaluations += 1
        d.event(t)
    evaluations += 1  # the final one after the quiet period
    assert evaluations <= 3


@given(st.lists(st.floats(min_value=0, max_value=1.0), min_size=1, max_size=200))
def test_a_burst_costs_one_evaluation_per_max_delay(gaps: list[float]) -> None:
    """Whatever the spacing, evaluations <= burst length / max_delay + 1, and the last event
    is always followed by an evaluation."""
    d = Debouncer(quiet=0.2, max_delay=2.0)
    t, evaluations = 0.0, 0
    for gap in gaps:
        t += gap
        if d.due(t):
            d.take(t)
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
