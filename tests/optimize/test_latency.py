"""Interleaved timing: what one scorer leaves behind is not charged to the next one.

A fake clock stands in for time: each scorer advances it by its own cost, plus a penalty when
the previous call was another scorer's (the caches it had warm were evicted), so the medians
are exact and the test does not depend on the machine's speed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from recaccel.data.dataset import FeatureBatch
from recaccel.optimize import latency

COLD_PENALTY_S = 0.5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.last: str | None = None

    def scorer(self, name: str, cost_s: float) -> Any:
        def score(*_: torch.Tensor) -> None:
            self.now += cost_s + (COLD_PENALTY_S if self.last not in (None, name) else 0.0)
            self.last = name

        return score


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(latency.time, "perf_counter", lambda: fake.now)
    return fake


def _batch() -> FeatureBatch:
    return FeatureBatch(
        torch.zeros(4, 1),
        torch.zeros(4, 1, dtype=torch.long),
        torch.zeros(4, 1, 1, dtype=torch.long),
    )


def test_a_scorer_is_timed_warm_not_after_another_scorers_call(clock: FakeClock) -> None:
    scorers = {"teacher": clock.scorer("teacher", 0.010), "student": clock.scorer("student", 0.001)}
    stats = latency.measure_interleaved(scorers, _batch(), repeats=20, warmup=2)
    assert stats["teacher"].median_ms == pytest.approx(10.0)
    assert stats["student"].median_ms == pytest.approx(1.0)
    assert stats["student"].repeats >= 20


def test_block_one_times_every_call_as_it_comes(clock: FakeClock) -> None:
    """The old behaviour, still available: each call timed as it comes, so the student pays
    the penalty whenever the teacher ran just before it (half the rounds: the order rotates)."""
    scorers = {"teacher": clock.scorer("teacher", 0.010), "student": clock.scorer("student", 0.001)}
    stats = latency.measure_interleaved(scorers, _batch(), repeats=20, warmup=2, block=1)
    assert stats["student"].p99_ms == pytest.approx(1.0 + COLD_PENALTY_S * 1e3)
    assert stats["student"].median_ms > 1.0 + COLD_PENALTY_S * 1e3 / 4
