"""The accuracy guard and the cost check: pure decisions, tested against tables of cases."""

from __future__ import annotations

import pytest

from recaccel.errors import ConfigError
from recaccel.optimize.guard import judge, judge_cost


@pytest.mark.parametrize(
    ("original", "candidate", "budget", "accepted"),
    [
        (0.8000, 0.8000, 0.001, True),  # no change
        (0.8000, 0.8100, 0.001, True),  # a gain
        (0.8000, 0.7992, 0.001, True),  # exactly at the floor, 0.8 * 0.999
        (0.8000, 0.7991, 0.001, False),  # just under it
        (0.8000, 0.7900, 0.01, False),  # 1.25% lost against a 1% budget
        (0.8000, 0.7930, 0.01, True),
        (0.8000, 0.7999, 0.0, False),  # a zero budget allows no loss at all
        (0.7916, 0.5000, 0.001, False),  # a destroyed model
    ],
)
def test_judge_accepts_exactly_within_the_relative_budget(
    original: float, candidate: float, budget: float, accepted: bool
) -> None:
    verdict = judge(original, candidate, budget)
    assert verdict.accepted is accepted
    assert verdict.floor == pytest.approx(original * (1 - budget))
    assert verdict.drop == pytest.approx(original - candidate)
    assert ("<" in verdict.reason) is not accepted


@pytest.mark.parametrize("budget", [-0.1, 1.0, 2.0])
def test_a_budget_outside_0_1_is_refused(budget: float) -> None:
    with pytest.raises(ConfigError, match="budget"):
        judge(0.8, 0.8, budget)


@pytest.mark.parametrize(
    ("parent_bytes", "candidate_bytes", "parent_ms", "candidate_ms", "accepted", "why"),
    [
        (1000, 250, 1.0, 1.0, True, "smaller"),
        (1000, 1000, 1.0, 0.5, True, "faster"),
        (1000, 1000, 1.0, 0.97, False, "neither"),  # within timing noise
        (1000, 1200, 1.0, 1.0, False, "neither"),  # bigger and no faster
        (1000, 250, 1.0, 1.04, True, "smaller"),  # slower only within timing noise
        (1000, 250, 1.0, 1.10, False, "slower"),  # by default, no speed is sold for size
        (1000, 2000, 1.0, 0.2, True, "faster"),  # bigger but much faster
    ],
)
def test_judge_cost_needs_size_or_speed_and_bounds_slowdown(
    parent_bytes: int,
    candidate_bytes: int,
    parent_ms: float,
    candidate_ms: float,
    accepted: bool,
    why: str,
) -> None:
    verdict = judge_cost(parent_bytes, candidate_bytes, parent_ms, candidate_ms)
    assert verdict.accepted is accepted
    assert verdict.size_ratio == pytest.approx(parent_bytes / candidate_bytes)
    assert verdict.speedup == pytest.approx(parent_ms / candidate_ms)
    if why == "neither":
        assert "buys neither" in verdict.reason
    if why == "slower":
        assert "slower than" in verdict.reason


def test_a_recipe_may_trade_speed_for_size() -> None:
    assert judge_cost(1000, 250, 1.0, 1.20, max_slowdown=1.25).accepted
    assert not judge_cost(1000, 250, 1.0, 1.40, max_slowdown=1.25).accepted
