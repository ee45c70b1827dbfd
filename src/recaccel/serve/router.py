"""Load-aware routing of a batch among heterogeneous executors (CPU ORT INT8, PyTorch on CUDA…).

Each executor has its own latency model from the profile, so "which is faster" depends on the
batch: an accelerator pays a fixed launch-and-copy overhead that a small batch cannot amortise,
and wins on the per-row cost of a large one. DeepRecSched (Gupta et al., ISCA 2020) turns that
into a static query-size threshold, `accel_request_size_thres`: queries above it go to the
accelerator queue, the rest to the CPU cores. `size_threshold` computes that threshold from the
two latency models instead of tuning it by hill-climbing.

`route` generalises it with load: each batch goes to the healthy executor predicted to finish
it first,

    finish = max(now, busy_until) + work(queued rows, median) + work(this batch, p99)

with each term priced by that executor's own model. With every executor idle this reduces to
comparing the p99 of this batch on each, so `route` sends a batch to the accelerator exactly
when it is at or above `size_threshold` (for models whose curves cross once, as affine costs
do). When the accelerator has a backlog, a large batch may go to an idle CPU instead if the CPU
finishes it sooner — which a fixed threshold cannot do. Ray Serve's default router compares
queue lengths of two random replicas; lengths are not times when the replicas differ in speed.

How queued work is priced: as the batches the executor will actually run — `queued_rows` split
into batches of its `max_rows`, each paying its own per-call overhead (`work_ms`). One batch of
all queued rows would count the overhead once and extrapolate the model past the largest batch
ever run, so it underestimates a backlog. Queued work is priced at the median (several batches'
tails rarely align, and the sum of p99s would overstate it), this batch at the p99 (its tail is
what its SLO is judged on).

Ties (equal predicted finish) go to the executor listed first: list the cheaper one first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel, Statistic
from recaccel.serve.batcher_policy import work_ms
from recaccel.serve.errors import UnavailableError


@dataclass(frozen=True)
class ExecutorLoad:
    """One executor as the router sees it at a moment."""

    name: str
    busy_until: float  # when its running batch is predicted to end; <= now when idle
    queued_rows: int  # rows sent to it and not yet started
    latency: LatencyModel  # from its profile entry
    # The largest batch it runs in one call. None: unknown, and a backlog is priced as one
    # batch, which counts its per-call overhead once; give it where it is known.
    max_rows: int | None = None
    healthy: bool = True

    def __post_init__(self) -> None:
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"executor {self.name!r}: max_rows must be >= 1, not {self.max_rows}")
        if self.queued_rows < 0:
            raise ConfigError(
                f"executor {self.name!r}: queued_rows must be >= 0, not {self.queued_rows}"
            )


def _work_ms(executor: ExecutorLoad, rows: int, statistic: Statistic) -> float:
    max_rows = executor.max_rows if executor.max_rows is not None else max(rows, 1)
    return work_ms(rows, max_rows, executor.latency, statistic)


def predicted_start(executor: ExecutorLoad, now: float) -> float:
    """When a batch sent now would start: after the running batch and the queued rows."""
    queued_ms = _work_ms(executor, executor.queued_rows, "median")
    return max(now, executor.busy_until) + queued_ms / 1e3


def predicted_finish(batch_rows: int, executor: ExecutorLoad, now: float) -> float:
    """When a batch of `batch_rows` sent now to `executor` would finish, at its p99."""
    return predicted_start(executor, now) + _work_ms(executor, batch_rows, "p99") / 1e3


def route(batch_rows: int, executors: Sequence[ExecutorLoad], now: float) -> int:
    """The index in `executors` of the healthy executor predicted to finish a `batch_rows`
    batch first (module docstring); `predicted_finish` says when, for a log or a metric.

    Raises UnavailableError (503) when no executor is healthy.
    """
    if batch_rows < 1:
        raise ConfigError(f"a batch has at least one row, not {batch_rows}")
    best, best_finish = -1, 0.0
    for index, executor in enumerate(executors):
        if not executor.healthy:
            continue
        finish = predicted_finish(batch_rows, executor, now)
        if best < 0 or finish < best_finish:
            best, best_finish = index, finish
    if best < 0:
        names = ", ".join(e.name for e in executors) or "none configured"
        raise UnavailableError(
            f"no healthy executor to run a {batch_rows}-row batch (executors: {names})",
            "wait for the workers to restart; GET /v2/health/ready says when the model is ready",
        )
    return best


def size_threshold(
    small: LatencyModel, large: LatencyModel, max_rows: int, statistic: Statistic = "p99"
) -> int:
    """The smallest batch size from which the `large` (accelerator) executor is predicted
    strictly faster than the `small` (CPU) one at every size up to `max_rows`.

    Batches of at least this many rows go to the accelerator, smaller ones to the CPU, as
    DeepRecSched's `accel_request_size_thres`. `max_rows + 1` means never: the accelerator is
    not faster even at `max_rows`. "At every size up to max_rows", not "at some size": should
    the curves cross twice, a threshold must still split the sizes into two ranges.

    >>> from recaccel.runtime.latency_model import LatencyPoint as P
    >>> cpu = LatencyModel.from_points([P(1, 1.0, 1.0, 9), P(101, 11.0, 11.0, 9)])
    >>> gpu = LatencyModel.from_points([P(1, 4.0, 4.0, 9), P(101, 5.0, 5.0, 9)])
    >>> size_threshold(cpu, gpu, 1000)  # 1 + 0.1·(r−1) > 4 + 0.01·(r−1) from r = 35
    35
    """
    if max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1, not {max_rows}")
    threshold = max_rows + 1
    # Scan down from max_rows while the accelerator keeps winning; O(max_rows) predictions,
    # computed once when the executors are configured.
    for rows in range(max_rows, 0, -1):
        if not large.predict_ms(rows, statistic) < small.predict_ms(rows, statistic):
            break
        threshold = rows
    return threshold
