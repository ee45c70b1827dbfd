"""Admission control: refuse at once a request that would be served too late, or not at all.

A request queued past its deadline is worse than one refused: it takes a worker's time, its
client has timed out, and the requests behind it wait longer. Triton's queue timeouts fire only
when an instance frees up and its queue bound is enforced late (triton-inference-server/server
issues 5783, 7512); Ray Serve sheds at `max_queued_requests` with 503 or 429 plus
`Retry-After`. The route handler calls `admit` before queueing, with the predicted wait (the
backlog ahead, e.g. `queue_wait_s`) and the predicted execution time of the request (its p99):

1. **Draining → 503.** The server is shutting down or reloading; another replica should take
   the request.
2. **Queue bounds full → 429.** Bounds on queued requests and rows keep memory and the worst
   queueing delay finite. An empty queue admits any one request, even one larger than the row
   bound (the batcher runs it alone), so no request is refused forever.
3. **Predicted completion past the deadline → 429.** `now + wait + exec > deadline`: refused
   now rather than answered late.

Each refusal names its rule in `code` ("draining", "queue_full", "deadline"): the error body's
`reason` and the `recaccel_rejected_total` metric's label, so a client or a dashboard can tell
a full queue from a missed deadline without parsing the message.

`Retry-After` is the predicted time for the queue to drain, in whole seconds rounded up and at
least 1 (the header takes integer seconds, and 0 would invite an immediate retry).

**Priority.** `priority > 0` is high, anything else normal. A slice of each queue bound
(`reserved_fraction`, 10% by default, rounded down) is kept for high-priority requests:
normal ones are refused once the queue holds the rest, so a burst of normal traffic cannot
lock out high-priority requests. Priority does not excuse a missed deadline. (Triton numbers
priorities the other way, 1 the highest; here larger is more important, as in Kubernetes.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from recaccel.defaults import DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel
from recaccel.serve.batcher_policy import batches_ms
from recaccel.serve.errors import OverloadedError, RequestError

REFUSALS = ("draining", "queue_full", "deadline")  # the codes `admit` refuses with


@dataclass(frozen=True)
class AdmissionConfig:
    max_queue_rows: int
    max_queue_requests: int
    default_slo_ms: float = DEFAULT_SLO_P99_MS
    reserved_fraction: float = 0.1  # of each bound, kept for priority > 0

    def __post_init__(self) -> None:
        if self.max_queue_rows < 1:
            raise ConfigError(f"admission max_queue_rows must be >= 1, not {self.max_queue_rows}")
        if self.max_queue_requests < 1:
            raise ConfigError(
                f"admission max_queue_requests must be >= 1, not {self.max_queue_requests}"
            )
        if not (self.default_slo_ms > 0 and math.isfinite(self.default_slo_ms)):
            raise ConfigError(
                f"admission default_slo_ms must be a positive number, not {self.default_slo_ms}"
            )
        if not 0 <= self.reserved_fraction < 1:
            raise ConfigError(
                f"admission reserved_fraction must be in [0, 1), not {self.reserved_fraction}",
                "0 reserves nothing for high-priority requests",
            )

    def bounds(self, priority: int) -> tuple[int, int]:
        """(rows, requests) a request of this priority may find queued, itself included."""
        if priority > 0:
            return self.max_queue_rows, self.max_queue_requests
        return (
            self.max_queue_rows - math.floor(self.max_queue_rows * self.reserved_fraction),
            self.max_queue_requests - math.floor(self.max_queue_requests * self.reserved_fraction),
        )


@dataclass(frozen=True)
class Admission:
    accepted: bool
    status: int  # 200 accepted, 429 overloaded, 503 draining
    retry_after_s: float  # whole seconds, >= 1 when refused; 0 when accepted
    reason: str  # what a person reads
    code: str  # which rule decided: "admitted", "draining", "queue_full" or "deadline"

    def raise_if_refused(self) -> None:
        """Raise the error the app answers with (status and Retry-After) if refused."""
        if not self.accepted:
            raise OverloadedError(
                self.reason, self.retry_after_s, status=self.status, code=self.code
            )


def retry_after(predicted_drain_s: float) -> float:
    """Whole seconds, rounded up, at least 1."""
    return float(max(1, math.ceil(predicted_drain_s)))


def queue_wait_s(
    backlog_rows: Sequence[int], max_rows: int, latency: LatencyModel, workers: int = 1
) -> float:
    """Predicted time for `workers` executors to work off a backlog: each entry one queued
    request's rows or one batch in flight, run as the batcher groups them (`batches_ms`,
    median per batch: several batches' tails rarely align)."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, not {workers}")
    return batches_ms(backlog_rows, max_rows, latency, "median") / 1e3 / workers


def admit(
    config: AdmissionConfig,
    now: float,
    request_rows: int,
    deadline: float,
    predicted_wait_s: float,
    predicted_exec_s: float,
    queued_rows: int,
    queued_requests: int,
    draining: bool,
    priority: int = 0,
) -> Admission:
    """Accept or refuse a request about to be queued (rules: module docstring).

    `queued_rows` and `queued_requests` are what is queued before this request arrives;
    `predicted_wait_s` is how long it would wait before its batch starts.
    """
    drain = retry_after(predicted_wait_s)
    if draining:
        return Admission(
            False, 503, drain, "the server is draining and takes no new requests", "draining"
        )
    max_rows, max_requests = config.bounds(priority)
    kind = "high-priority" if priority > 0 else "normal-priority"
    if queued_requests > 0 and queued_requests + 1 > max_requests:
        return Admission(
            False,
            429,
            drain,
            f"queue full: {queued_requests} requests queued, {kind} requests may fill "
            f"{max_requests}",
            "queue_full",
        )
    if queued_rows > 0 and queued_rows + request_rows > max_rows:
        return Admission(
            False,
            429,
            drain,
            f"queue full: {queued_rows} rows queued, and {request_rows} more would pass the "
            f"{max_rows} rows {kind} requests may fill",
            "queue_full",
        )
    finish = now + predicted_wait_s + predicted_exec_s
    if finish > deadline:
        budget_ms = (deadline - now) * 1e3
        if predicted_exec_s > deadline - now:
            why = (
                f"even alone it needs {predicted_exec_s * 1e3:.1f} ms (p99) and its deadline "
                f"allows {budget_ms:.1f} ms: send fewer rows or a longer deadline"
            )
        else:
            why = (
                f"predicted to finish {(finish - deadline) * 1e3:.1f} ms past its deadline "
                f"({predicted_wait_s * 1e3:.1f} ms queued + {predicted_exec_s * 1e3:.1f} ms "
                f"to run > {budget_ms:.1f} ms)"
            )
        return Admission(False, 429, drain, why, "deadline")
    return Admission(True, 200, 0.0, "admitted", "admitted")


def deadline_for(now: float, request_deadline_ms: float | None, default_slo_ms: float) -> float:
    """When a request arriving at `now` must be answered: its own `deadline_ms` if it carries
    one, else the default SLO. A non-positive or non-finite deadline is refused (400)."""
    if request_deadline_ms is None:
        return now + default_slo_ms / 1e3
    if not (request_deadline_ms > 0 and math.isfinite(request_deadline_ms)):
        raise RequestError(
            f"deadline_ms must be a positive number of milliseconds, not {request_deadline_ms}",
            f"omit it to use the server's default SLO of {default_slo_ms:g} ms",
        )
    return now + request_deadline_ms / 1e3
