"""Single core rules pinned down by hand, beside the state machine's invariants."""

from __future__ import annotations

from connpool._core import Core


def test_new_waiter_during_backoff_starts_one_more_attempt_within_max_connecting():
    core = Core(max_size=4, max_connecting=2, rng=lambda: 1.0)
    core.enqueue(0.0, None)
    assert core.plan_connects() == 1
    delay = core.connect_failed(OSError("refused"))
    assert delay == core.backoff_initial  # the failed attempt keeps its slot and backs off
    assert core.connecting == 1
    core.enqueue(0.0, None)  # a second caller: not covered by the attempt backing off
    assert core.plan_connects() == 1
    core.enqueue(0.0, None)  # a third: max_connecting (2) is reached, nothing more starts
    assert core.plan_connects() == 0
    assert core.connect_failed(OSError("refused")) == core.backoff_initial * 2  # failures add up
