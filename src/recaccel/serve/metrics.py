"""Prometheus metrics for one server, in its own registry (so tests can run several servers in
one process), named after Triton's where one exists (`nv_inference_*` → `recaccel_*`).

Latencies are histograms in seconds, with buckets dense where a rank SLO lives (1–100 ms).
Behind several front processes (plane/front.py) prometheus-client's multiprocess mode keeps
each process's values in files and /metrics sums them: counters and histograms add up, and
each gauge says how (`multiprocess_mode`): workers, queues and limits sum over the live
processes, delays take the worst one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from recaccel.runtime.part_cache import CacheCounts

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass
class ServerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "recaccel_requests",
            "HTTP requests answered",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "recaccel_request_duration_seconds",
            "Server-side time per request, arrival to response",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_latency = Histogram(
            "recaccel_queue_duration_seconds",
            "Time a request waited for its batch to be dispatched",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "recaccel_batch_rows", "Rows per batch sent to a worker", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "recaccel_batch_requests", "Requests merged per batch", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.batches = Counter(
            "recaccel_batches", "Batches run, by executor kind", ["model", "kind"], registry=r
        )
        self.executor_busy = Counter(
            "recaccel_executor_busy_seconds",
            "Time workers spent computing batches",
            ["model", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "recaccel_rejected", "Requests refused by admission control", ["model", "reason"],
            registry=r,
        )  # fmt: skip
        self.failed = Counter(
            "recaccel_failed", "Requests that failed in a worker", ["model", "reason"], registry=r
        )
        self.retried = Counter(
            "recaccel_retried_batches", "Batches re-sent after their worker died", ["model"],
            registry=r,
        )  # fmt: skip
        self.part_cache = Counter(
            "recaccel_part_cache_lookups",
            "Request parts looked up in the request-part cache (docs/reuse.md), by result",
            ["model", "result"],
            registry=r,
        )
        self.part_cache_expired = Counter(
            "recaccel_part_cache_expired", "Of the misses, parts held past their TTL", ["model"],
            registry=r,
        )  # fmt: skip
        self.part_cache_evicted = Counter(
            "recaccel_part_cache_evicted", "Live parts dropped because the cache was full",
            ["model"], registry=r,
        )  # fmt: skip
        self.part_cache_hit_age = Counter(
            "recaccel_part_cache_hit_age_seconds",
            "Summed age of the parts served from the cache; divided by the hits, the mean "
            "staleness (never past the TTL)",
            ["model"],
            registry=r,
        )
        self.workers = Gauge(
            "recaccel_workers", "Executors (lanes or worker processes) ready to serve",
            ["model", "kind"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.worker_restarts = Counter(
            "recaccel_worker_restarts", "Workers replaced after dying", ["model", "kind"],
            registry=r,
        )  # fmt: skip
        self.in_flight_limit = Gauge(
            "recaccel_in_flight_limit",
            "Inference requests the server takes at once before refusing more (adaptive)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.standing_delay = Gauge(
            "recaccel_standing_delay_seconds",
            "Shortest server time of the inference requests answered in the last interval",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.loop_lag = Gauge(
            "recaccel_event_loop_lag_seconds",
            "How late the HTTP process's event loop runs (moving average)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queued_requests = Gauge(
            "recaccel_queued_requests", "Requests waiting for a batch", ["model"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.autoscaler_decisions = Counter(
            "recaccel_autoscaler_decisions",
            "Autoscaler decisions that changed the worker count",
            ["model", "direction"],
            registry=r,
        )
        self.autoscaler_target = Gauge(
            "recaccel_autoscaler_target_workers", "Workers the autoscaler wants", ["model"],
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip

    def of_model(self, model: str, refusals: tuple[str, ...] = ()) -> ModelMetrics:
        """The per-batch and per-request series of `model`, resolved once (see ModelMetrics)."""
        return ModelMetrics(self, model, refusals)


class ModelMetrics:
    """One model's series on the request path, their labels resolved once: `labels()` takes
    a lock and builds a key on every call, about 5 µs, and the path would call it nine times
    per request (a cProfile of the rank path in docs/serving-plane.md).

    The model's refusal, failure and scaling counters start at 0 for every reason they know
    (Prometheus' advice: a series that exists at 0 reads differently from one never seen, and
    in multiprocess mode a series nothing has touched is not exported at all)."""

    def __init__(self, metrics: ServerMetrics, model: str, refusals: tuple[str, ...] = ()) -> None:
        self._metrics = metrics
        self.model = model
        for reason in refusals:
            metrics.rejected.labels(model, reason)
        for error in ("RequestError", "UnavailableError"):
            metrics.failed.labels(model, error)
        for direction in ("up", "down"):
            metrics.autoscaler_decisions.labels(model, direction)
        metrics.retried.labels(model)
        self.queued_requests = metrics.queued_requests.labels(model)
        self.batch_rows = metrics.batch_rows.labels(model)
        self.batch_requests = metrics.batch_requests.labels(model)
        self.queue_latency = metrics.queue_latency.labels(model)
        self._by_kind: dict[str, tuple[Any, Any]] = {}

    def count_part_cache(self, counts: CacheCounts) -> None:
        """Add one batch's (or several's) request-part cache counts."""
        m, model = self._metrics, self.model
        if counts.hits:
            m.part_cache.labels(model, "hit").inc(counts.hits)
            m.part_cache_hit_age.labels(model).inc(counts.hit_age_s)
        if counts.misses:
            m.part_cache.labels(model, "miss").inc(counts.misses)
        if counts.expired:
            m.part_cache_expired.labels(model).inc(counts.expired)
        if counts.evicted:
            m.part_cache_evicted.labels(model).inc(counts.evicted)

    def of_kind(self, kind: str) -> tuple[Any, Any]:
        """(batches run, executor busy seconds) of one executor kind."""
        found = self._by_kind.get(kind)
        if found is None:
            m = self._metrics
            found = (m.batches.labels(self.model, kind), m.executor_busy.labels(self.model, kind))
            self._by_kind[kind] = found
        return found
