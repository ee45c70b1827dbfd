"""SLO-aware dynamic batching: which queued requests form the next batch, and when it must go.

The batching loop (asyncio, elsewhere) holds a FIFO queue of requests, each with its rows, its
arrival time and its deadline, and asks this module two things whenever the queue changes or a
timer fires: which requests form the next batch, and until when it may wait for more.

    plan = plan_batch(queue, now, latency, policy)
    if plan is None: wait for a request
    elif plan.due(now): send queue[:plan.count]
    else: sleep until plan.dispatch_at or the next arrival, then ask again

Waiting buys throughput (a bigger batch amortises the per-call overhead) and costs latency.
Triton's dynamic batcher bounds the wait with one fixed `max_queue_delay_microseconds`; its
users report batches that stay small or deadlines that are noticed only once an instance is
free (triton-inference-server/server issues 8094, 7776, 5783). BentoML's older CORK dispatcher
released a batch when the time waited plus the estimated execution time would exceed its
latency bound. This module does the latter with the profile's latency model, per request
deadline:

- **Never later than the deadline allows.** A batch must start by
  `deadline − p99(batch rows) − safety` for its tightest deadline to hold at the p99 (p99, not
  the median: the deadline is an SLO on the tail). Every arrival grows the batch, so the loop
  asks again and the dispatch time moves earlier.
- **Never later than `max_queue_delay_s` after the oldest arrival** — Triton's bound, which
  keeps latency low when the SLO is loose and traffic light.
- **At once when the batch is full**: `max_rows` reached, or the next request would not fit
  (waiting cannot grow this batch). Fullness is decided here, in `plan_batch`, not by a flag on
  `dispatch_at`, which stays a pure function of time.
- **Split rather than sink the head.** If adding the later requests would make an earlier one
  miss its deadline, only the prefix that still meets every deadline goes, at once; the rest
  form the next batch.
- **Late is late.** A request that could not meet its deadline even alone and at once does not
  constrain the others, and a batch of only such requests goes at once: waiting helps nobody.

Times are seconds on the caller's monotonic clock; latency models speak milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel, Statistic

# Why a batch goes when it does; the loop exports it as a metric label.
Trigger = Literal["full", "split", "late", "deadline", "queue_delay"]


@dataclass(frozen=True)
class BatchPolicy:
    """The batcher's limits. `max_rows` usually comes from the profile: the largest batch whose
    p99 fits in about half the SLO (see runtime/select.py)."""

    max_rows: int
    max_queue_delay_s: float = 0.005
    safety_s: float = 0.001  # margin for what the latency model does not see (IPC, decoding)

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ConfigError(f"batch policy max_rows must be >= 1, not {self.max_rows}")
        if not self.max_queue_delay_s >= 0:
            raise ConfigError(
                f"batch policy max_queue_delay_s must be >= 0, not {self.max_queue_delay_s}",
                "0 sends each batch as soon as it is formed, as Triton does by default",
            )
        if not self.safety_s >= 0:
            raise ConfigError(f"batch policy safety_s must be >= 0, not {self.safety_s}")


@dataclass(frozen=True)
class Pending:
    """One queued request as the batcher sees it."""

    rows: int
    arrival: float  # seconds, the caller's monotonic clock
    deadline: float  # seconds, same clock: the response must be ready by then


@dataclass(frozen=True)
class BatchPlan:
    """The next batch: the first `count` requests of the queue, `rows` rows in all, to be sent
    at `dispatch_at` (never before `now` of the call that made it) because of `trigger`."""

    count: int
    rows: int
    dispatch_at: float
    trigger: Trigger

    def due(self, now: float) -> bool:
        return self.dispatch_at <= now

    def wait_s(self, now: float) -> float:
        """How long the loop may sleep before sending (0: send now)."""
        return max(0.0, self.dispatch_at - now)


def take(queue_rows: Sequence[int], max_rows: int) -> int:
    """How many requests from the head of the queue form the next batch.

    The longest prefix whose rows fit in `max_rows`; a request is never split, and a head
    request larger than `max_rows` goes alone (it cannot be served any other way).

    >>> take([100, 100, 100], 256), take([300, 10], 256), take([], 256)
    (2, 1, 0)
    """
    if max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1, not {max_rows}")
    total = count = 0
    for rows in queue_rows:
        if rows < 1:
            raise ConfigError(f"a queued request has at least one row, not {rows}")
        if count and total + rows > max_rows:
            break
        total += rows
        count += 1
    return count


def latest_start(deadline: float, batch_rows: int, latency: LatencyModel, safety_s: float) -> float:
    """The last moment a batch of `batch_rows` may start and still, at its p99, end by
    `deadline` with `safety_s` to spare."""
    return deadline - latency.predict_ms(batch_rows, "p99") / 1e3 - safety_s


def dispatch_at(
    oldest_arrival: float,
    oldest_deadline: float,
    batch_rows: int,
    latency: LatencyModel,
    max_queue_delay_s: float,
    safety_s: float,
) -> float:
    """The latest time to send the current batch: `deadline − p99(batch_rows) − safety`, and
    never later than `oldest_arrival + max_queue_delay_s`.

    `oldest_deadline` is the deadline the batch must meet: the oldest request's when all share
    one SLO, the earliest among the batch's requests when they carry their own (`plan_batch`
    passes that). A full batch goes at once regardless; that is `plan_batch`'s decision, not
    this function's. The result may lie in the past: send at once.
    """
    by_deadline = latest_start(oldest_deadline, batch_rows, latency, safety_s)
    return min(by_deadline, oldest_arrival + max_queue_delay_s)


def batches_ms(
    request_rows: Sequence[int],
    max_rows: int,
    latency: LatencyModel,
    statistic: Statistic = "median",
) -> float:
    """Predicted time to run queued requests as the batcher groups them: in order, each batch
    the longest run of requests whose rows fit in `max_rows` (`take`), a request larger than
    `max_rows` alone. 0 for none.

    Requests are never split: with `max_rows` 1 (one request per batch) ten 100-row requests
    cost ten 100-row batches, not a thousand 1-row ones.

    >>> from recaccel.runtime.latency_model import LatencyPoint
    >>> m = LatencyModel.from_points([LatencyPoint(1, 1.0, 1.0, 5), LatencyPoint(101, 2.0, 2.0, 5)])
    >>> batches_ms([100, 100], 1, m), batches_ms([50, 50], 100, m), batches_ms([], 1, m)
    (3.98, 1.99, 0.0)
    """
    total = 0.0
    batch = 0
    for rows in request_rows:
        if batch and batch + rows > max_rows:
            total += latency.predict_ms(batch, statistic)
            batch = 0
        batch += rows
    return total + (latency.predict_ms(batch, statistic) if batch else 0.0)


def _prefix_deadlines(
    queue: Sequence[Pending], count: int, now: float, latency: LatencyModel, safety_s: float
) -> tuple[list[int], list[float]]:
    """Rows and binding deadline of each prefix 1..count. A request that would be late even
    alone and at once binds nothing (inf)."""
    rows: list[int] = []
    binding: list[float] = []
    total, tightest = 0, math.inf
    for request in queue[:count]:
        total += request.rows
        if latest_start(request.deadline, request.rows, latency, safety_s) >= now:
            tightest = min(tightest, request.deadline)
        rows.append(total)
        binding.append(tightest)
    return rows, binding


def plan_batch(
    queue: Sequence[Pending], now: float, latency: LatencyModel, policy: BatchPolicy
) -> BatchPlan | None:
    """The next batch from the head of `queue` and when to send it (rules: module docstring).

    None when the queue is empty. `latency` is the model of the executor the batch is for.
    """
    count = take([request.rows for request in queue], policy.max_rows)
    if count == 0:
        return None
    rows, binding = _prefix_deadlines(queue, count, now, latency, policy.safety_s)

    def meets(k: int) -> bool:  # can the first k requests start now and all be on time?
        deadline = binding[k - 1]
        return deadline == math.inf or (
            latest_start(deadline, rows[k - 1], latency, policy.safety_s) >= now
        )

    # latest_start falls as k grows (more rows, a deadline no later), so the prefixes that
    # meet their deadlines are 1..k for some k >= 1 (a lone request is either saveable or late).
    if not meets(count):
        k = 1
        while k + 1 < count and meets(k + 1):
            k += 1
        return BatchPlan(k, rows[k - 1], now, "split")
    total = rows[count - 1]
    if binding[count - 1] == math.inf:
        return BatchPlan(count, total, now, "late")
    if total >= policy.max_rows or count < len(queue):
        return BatchPlan(count, total, now, "full")
    by_deadline = latest_start(binding[count - 1], total, latency, policy.safety_s)
    by_delay = queue[0].arrival + policy.max_queue_delay_s
    trigger: Trigger = "deadline" if by_deadline <= by_delay else "queue_delay"
    return BatchPlan(count, total, max(now, min(by_deadline, by_delay)), trigger)


def split_count(rows: int, executors: int, latency: LatencyModel, budget_ms: float) -> int:
    """How many equal sub-batches a request of `rows` rows is cut into, each run on its own
    executor at once: DeepRecSys' query splitting (Gupta et al., ISCA 2020), where a query
    too large to meet the tail-latency target on one core is spread over several.

    1 when the request's p99 alone fits `budget_ms`, or there is one executor; else the fewest
    parts whose p99 fits, at most `executors` (and `rows`): past that, more parts would only
    wait for one another.

    >>> from recaccel.runtime.latency_model import LatencyPoint as P
    >>> m = LatencyModel.from_points([P(1, 1.0, 1.0, 9), P(1001, 51.0, 51.0, 9)])  # 1 + rows/20
    >>> [split_count(rows, 4, m, 25.0) for rows in (400, 600, 1000, 3000)]
    [1, 2, 3, 4]
    """
    if executors <= 1 or rows <= 1 or latency.predict_ms(rows, "p99") <= budget_ms:
        return 1
    parts = 2
    while (
        parts < min(executors, rows)
        and latency.predict_ms(math.ceil(rows / parts), "p99") > budget_ms
    ):
        parts += 1
    return min(parts, rows)
