"""Prometheus metrics for one server, in its own registry (so tests can run several servers in
one process), named after Triton's where one exists (`nv_inference_*` → `recaccel_*`).

Latencies are histograms in seconds, with buckets dense where a rank SLO lives (1–100 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.workers = Gauge(
            "recaccel_workers", "Worker processes ready to serve", ["model", "kind"], registry=r
        )
        self.worker_restarts = Counter(
            "recaccel_worker_restarts", "Workers replaced after dying", ["model", "kind"],
            registry=r,
        )  # fmt: skip
        self.in_flight_limit = Gauge(
            "recaccel_in_flight_limit",
            "Inference requests the server takes at once before refusing more (adaptive)",
            registry=r,
        )
        self.standing_delay = Gauge(
            "recaccel_standing_delay_seconds",
            "Shortest server time of the inference requests answered in the last interval",
            registry=r,
        )
        self.loop_lag = Gauge(
            "recaccel_event_loop_lag_seconds",
            "How late the HTTP process's event loop runs (moving average)",
            registry=r,
        )
        self.queued_requests = Gauge(
            "recaccel_queued_requests", "Requests waiting for a batch", ["model"], registry=r
        )
        self.autoscaler_decisions = Counter(
            "recaccel_autoscaler_decisions",
            "Autoscaler decisions that changed the worker count",
            ["model", "direction"],
            registry=r,
        )
        self.autoscaler_target = Gauge(
            "recaccel_autoscaler_target_workers", "Workers the autoscaler wants", ["model"],
            registry=r,
        )  # fmt: skip
