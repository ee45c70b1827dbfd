"""The latency model: interpolation, monotonicity and the largest batch within a budget."""

from __future__ import annotations

import pytest

from recaccel.errors import ConfigError
from recaccel.optimize.latency import time_rounds
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint


def _model(*points: tuple[int, float, float]) -> LatencyModel:
    return LatencyModel.from_points(LatencyPoint(b, m, p, 50) for b, m, p in points)


AFFINE = _model((1, 1.0, 2.0), (64, 2.0, 4.0), (256, 5.0, 9.0))


@pytest.mark.parametrize(
    ("rows", "median", "p99"),
    [
        (1, 1.0, 2.0),  # measured
        (64, 2.0, 4.0),
        (160, 3.5, 6.5),  # halfway between 64 and 256
        # Past the last point: the steeper of the last segment and the average slope.
        (448, 5.0 + 4 / 255 * 192, 9.0 + 7 / 255 * 192),
    ],
)
def test_it_interpolates_linearly_in_rows(rows: int, median: float, p99: float) -> None:
    assert AFFINE.predict_ms(rows, "median") == pytest.approx(median)
    assert AFFINE.predict_ms(rows) == pytest.approx(p99)


def test_a_batch_never_costs_less_than_a_smaller_measured_one() -> None:
    noisy = _model((1, 1.0, 1.5), (16, 0.8, 1.2), (64, 2.0, 1.9))
    predictions = [noisy.predict_ms(rows, "median") for rows in range(1, 100)]
    assert predictions == sorted(predictions)
    assert noisy.predict_ms(16, "median") == 1.0  # the dip is noise, not a real speed-up
    assert noisy.predict_ms(64) >= noisy.predict_ms(64, "median")  # p99 never below median


def test_a_flat_last_segment_does_not_make_large_batches_free() -> None:
    flat = _model((1, 1.0, 1.0), (256, 9.0, 9.0), (1024, 9.0, 9.0))  # noise at the top
    assert flat.predict_ms(2048) == pytest.approx(9.0 + 8 / 1023 * 1024)
    assert flat.max_rows_within(20.0) < 3000


def test_one_point_scales_with_rows() -> None:
    single = _model((100, 2.0, 3.0))
    assert single.predict_ms(50) == 3.0
    assert single.predict_ms(200) == pytest.approx(6.0)


def test_max_rows_within_inverts_the_prediction() -> None:
    assert AFFINE.max_rows_within(1.9) == 0  # not even one row
    rows = AFFINE.max_rows_within(6.5)
    assert rows == 160
    assert AFFINE.predict_ms(rows) <= 6.5 < AFFINE.predict_ms(rows + 1)
    assert AFFINE.max_rows_within(3.5, "median") == 160


@pytest.mark.parametrize(
    "points",
    [(), ((0, 1.0, 1.0),), ((8, 1.0, 1.0), (8, 2.0, 2.0))],
)
def test_bad_points_are_refused(points: tuple[tuple[int, float, float], ...]) -> None:
    with pytest.raises(ConfigError):
        _model(*points)


def test_a_batch_has_at_least_one_row() -> None:
    with pytest.raises(ConfigError, match="at least one row"):
        AFFINE.predict_ms(0)


def test_time_rounds_runs_every_call_once_per_round() -> None:
    calls: list[str] = []
    samples = time_rounds(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=5, warmup=2
    )
    assert len(calls) == 14 and calls.count("a") == calls.count("b") == 7
    assert calls[:4] == ["a", "b", "b", "a"]  # the order rotates each round
    assert {name: len(times) for name, times in samples.items()} == {"a": 5, "b": 5}


def test_time_rounds_caps_rounds_by_time_but_keeps_the_minimum() -> None:
    slow = lambda: sum(range(20_000))  # noqa: E731  ~1 ms, far over a 1 µs budget
    samples = time_rounds({"slow": slow}, repeats=100, warmup=1, max_seconds=1e-6, min_repeats=4)
    assert len(samples["slow"]) == 4
    fast = time_rounds({"x": lambda: None}, repeats=30, warmup=1, max_seconds=10.0, min_repeats=4)
    assert len(fast["x"]) == 30  # affordable: every round asked for


def test_time_rounds_in_blocks_skips_the_first_call_of_each_block() -> None:
    calls: list[str] = []
    samples = time_rounds(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=2,
        warmup=1,
        block=3,
    )
    assert calls[:6] == ["a"] * 3 + ["b"] * 3  # one block of each per round
    assert len(calls) == 18  # 3 rounds x 2 names x 3 calls
    assert {name: len(times) for name, times in samples.items()} == {"a": 4, "b": 4}
