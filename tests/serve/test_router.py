"""Load-aware routing between a CPU and an accelerator executor, against hand-worked tables.

CPU: p99 = 1 + 0.1·(rows − 1) ms, median half that: cheap to call, dear per row.
GPU: p99 = 4 + 0.01·(rows − 1) ms, median half that: a fixed launch cost, cheap per row.
They cross between 34 rows (CPU 4.30 < GPU 4.33) and 35 (CPU 4.40 > GPU 4.34).
"""

from __future__ import annotations

import pytest

from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.serve.errors import UnavailableError
from recaccel.serve.router import ExecutorLoad, route, size_threshold


def _model(*points: tuple[int, float, float]) -> LatencyModel:
    return LatencyModel.from_points(LatencyPoint(b, m, p, 50) for b, m, p in points)


CPU = _model((1, 0.5, 1.0), (101, 5.5, 11.0))
GPU = _model((1, 2.0, 4.0), (101, 2.5, 5.0))


def _load(name: str, latency: LatencyModel, healthy: bool = True) -> ExecutorLoad:
    return ExecutorLoad(name, latency, healthy)


@pytest.mark.parametrize(
    ("rows", "cpu", "gpu", "chosen"),
    [
        (10, {}, {}, "cpu"),  # 1.9 ms vs 4.09 ms
        (100, {}, {}, "gpu"),  # 10.9 ms vs 4.99 ms
        (34, {}, {}, "cpu"),  # the last size the CPU wins
        (35, {}, {}, "gpu"),  # the first the GPU wins
        # An unhealthy executor is never chosen, however fast.
        (100, {}, {"healthy": False}, "cpu"),
        (10, {"healthy": False}, {}, "gpu"),
    ],
)
def test_route_picks_the_earliest_predicted_finish(
    rows: int, cpu: dict[str, float], gpu: dict[str, float], chosen: str
) -> None:
    executors = [_load("cpu", CPU, **cpu), _load("gpu", GPU, **gpu)]  # type: ignore[arg-type]
    index = route(rows, executors)
    assert executors[index].name == chosen
    times = [e.latency.predict_ms(rows, "p99") for e in executors if e.healthy]
    assert executors[index].latency.predict_ms(rows, "p99") == min(times)


def test_ties_go_to_the_executor_listed_first() -> None:
    assert route(50, [_load("a", CPU), _load("b", CPU)]) == 0
    assert route(50, [_load("a", GPU), _load("b", GPU)]) == 0


@pytest.mark.parametrize(
    "executors",
    [
        [],
        [_load("cpu", CPU, healthy=False)],
        [_load("cpu", CPU, healthy=False), _load("gpu", GPU, healthy=False)],
    ],
)
def test_no_healthy_executor_is_503(executors: list[ExecutorLoad]) -> None:
    with pytest.raises(UnavailableError, match="no healthy executor") as raised:
        route(10, executors)
    assert raised.value.status == 503
    for executor in executors:
        assert executor.name in raised.value.message


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ConfigError, match="row"):
        route(0, [_load("cpu", CPU)])


# Faster only between about 26 and 64 rows, then slower, then faster again from 202 rows:
# CPU 20.9 ms vs 21.0 at 200, 21.0 vs 21.005 at 201, 21.1 vs 21.01 at 202.
DOUBLE_CROSSING = _model((1, 3.0, 3.0), (60, 4.0, 4.0), (80, 20.0, 20.0), (200, 21.0, 21.0),
                         (1000, 25.0, 25.0))  # fmt: skip


@pytest.mark.parametrize(
    ("small", "large", "max_rows", "threshold"),
    [
        (CPU, GPU, 1000, 35),
        (CPU, GPU, 35, 35),
        (CPU, GPU, 20, 21),  # never within 20 rows: max_rows + 1
        (GPU, CPU, 1000, 1001),  # the "accelerator" is never faster
        (CPU, CPU, 1000, 1001),  # equal is not faster
        (CPU, _model((1, 0.5, 0.5), (1000, 5.0, 5.0)), 1000, 1),  # faster everywhere
        (CPU, DOUBLE_CROSSING, 1000, 202),  # faster from here to max_rows, not merely here
        (CPU, DOUBLE_CROSSING, 100, 101),  # faster at 60 rows, but not at 100
    ],
)
def test_size_threshold(
    small: LatencyModel, large: LatencyModel, max_rows: int, threshold: int
) -> None:
    assert size_threshold(small, large, max_rows) == threshold


def test_size_threshold_refuses_a_bad_bound() -> None:
    with pytest.raises(ConfigError, match="max_rows"):
        size_threshold(CPU, GPU, 0)


def test_route_on_idle_executors_agrees_with_the_size_threshold() -> None:
    """Property: at every size, idle executors route a batch to the accelerator exactly when
    it is at or above the threshold (DeepRecSched's rule), whichever order they are listed."""
    threshold = size_threshold(CPU, GPU, 1000)
    for executors in (
        [_load("cpu", CPU), _load("gpu", GPU)],
        [_load("gpu", GPU), _load("cpu", CPU)],
    ):
        for rows in range(1, 1001):
            expected = "gpu" if rows >= threshold else "cpu"
            assert executors[route(rows, executors)].name == expected, rows


def test_with_two_crossings_route_follows_time_not_the_threshold() -> None:
    executors = [_load("cpu", CPU), _load("acc", DOUBLE_CROSSING)]
    assert size_threshold(CPU, DOUBLE_CROSSING, 1000) == 202
    assert executors[route(60, executors)].name == "acc"  # 4.0 ms vs 6.9 ms
    assert executors[route(150, executors)].name == "cpu"
    assert executors[route(500, executors)].name == "acc"
