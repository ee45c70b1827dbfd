"""Routing a batch among heterogeneous executors (CPU ORT INT8, PyTorch on CUDA…).

Each executor has its own latency model from the profile, so "which is faster" depends on the
batch: an accelerator pays a fixed launch-and-copy overhead that a small batch cannot amortise,
and wins on the per-row cost of a large one. DeepRecSched (Gupta et al., ISCA 2020) turns that
into a static query-size threshold, `accel_request_size_thres`: queries above it go to the
accelerator queue, the rest to the CPU cores. `size_threshold` computes that threshold from the
two latency models instead of tuning it by hill-climbing.

`route` sends each batch to the healthy executor predicted to finish it first, at its p99 —
among the executors free to take it: the batcher (deployment.py) dispatches only to free ones,
so that under load batches grow instead of queueing inside executors. On free executors this
is exactly the size threshold (for models whose curves cross once, as affine costs do), and it
still holds where they cross twice. An earlier version also priced each executor's backlog
(its running batch and queued rows); the batcher never gave it a busy one, so that code could
not run, and it is gone. Ray Serve's default router compares queue lengths of two random
replicas; lengths are not times when the replicas differ in speed.

Ties (equal predicted time) go to the executor listed first: list the cheaper one first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel, Statistic
from recaccel.serve.errors import UnavailableError


@dataclass(frozen=True)
class ExecutorLoad:
    """One executor free to take a batch, as the router sees it."""

    name: str
    latency: LatencyModel  # from its profile entry, or its own measurement at start
    healthy: bool = True


def route(batch_rows: int, executors: Sequence[ExecutorLoad]) -> int:
    """The index in `executors` of the healthy executor predicted to finish a `batch_rows`
    batch first, at its p99 (module docstring).

    Raises UnavailableError (503) when no executor is healthy.
    """
    if batch_rows < 1:
        raise ConfigError(f"a batch has at least one row, not {batch_rows}")
    best, best_ms = -1, 0.0
    for index, executor in enumerate(executors):
        if not executor.healthy:
            continue
        ms = executor.latency.predict_ms(batch_rows, "p99")
        if best < 0 or ms < best_ms:
            best, best_ms = index, ms
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
