"""recaccel's scaling and admission settings as Ray Serve deployment options: a pure mapping.

    settings = ray_serve_settings(serve_config, capacity)
    serve.deployment(Replica, **settings.deployment_options())

A Ray Serve replica plays the part of one recaccel worker: it runs `recaccel serve`'s app over
one worker process (ray_serve.py), so Ray's replica count is recaccel's worker count, and
Ray's autoscaler takes the place of recaccel's (serve/autoscaler.py):

    recaccel (ServeConfig)                     Ray Serve
    workers.min / workers.max                  autoscaling_config.min_replicas / max_replicas
                                               (initial_replicas = min, as recaccel starts)
    autoscaler.target_utilization              target_ongoing_requests = that share of what a
                                               replica can hold within the SLO (below)
    autoscaler.upscale_delay_s / downscale_…   upscale_delay_s / downscale_delay_s
    autoscaler.interval_s                      metrics_interval_s (how often load is pushed;
                                               deprecated, yet what Ray 2.60 still reads);
                                               look_back_period_s = max(2 × interval_s,
                                               upscale_delay_s): load must last that long
    admission.max_queue_requests               max_queued_requests: past it Ray's proxy answers
                                               429 with Retry-After, as recaccel's admission
                                               does (BackpressureConfig)
    workers.executors[0].threads               ray_actor_options.num_cpus

What a replica can hold within the SLO: a batch may have to wait for the one running, so two
batch times must fit the SLO (runtime/select.py's rule), and a replica holds at most two
batches' worth of requests, `max_ongoing_requests` = 2k for k requests of N candidates per
batch. E.g. a profile measuring p99(1,024 rows) = 4.1 ms, its largest batch, and N = 100:
k = 1,024 // 100 = 10, so 20 requests in a replica at most, and with target utilization 0.7,
scale out past 14 per replica. Requests past `max_ongoing_requests` wait in Ray's queue, where
admission refuses them once `max_queued_requests` are waiting; inside a replica, recaccel's own
admission still refuses (429) a request its deadline cannot be met for.
`autoscaler.target_queue_delay_ms` has no Ray counterpart: Ray scales on requests alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recaccel.defaults import DEFAULT_CANDIDATES
from recaccel.errors import ConfigError
from recaccel.extras import RAY, require
from recaccel.runtime.latency_model import LatencyModel
from recaccel.serve.config import ServeConfig

RETRY_AFTER_S = 1.0  # HTTP's Retry-After is whole seconds; recaccel's floor too


@dataclass(frozen=True)
class Capacity:
    """What one replica's executor can do: its latency model, up to the largest batch measured,
    for requests of `candidates` rows."""

    latency: LatencyModel
    largest_batch: int
    candidates: int = DEFAULT_CANDIDATES


@dataclass(frozen=True)
class RaySettings:
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    upscale_delay_s: float
    downscale_delay_s: float
    metrics_interval_s: float
    look_back_period_s: float
    max_ongoing_requests: int
    max_queued_requests: int
    num_cpus: float
    retry_after_s: float = RETRY_AFTER_S

    def autoscaling_config(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "metrics_interval_s": self.metrics_interval_s,
            "look_back_period_s": self.look_back_period_s,
        }

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for `serve.deployment(...)` / `Deployment.options(...)`."""
        ray_config = require(RAY, "ray.serve.config")
        return {
            "autoscaling_config": self.autoscaling_config(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": ray_config.BackpressureConfig(
                status_code=429, retry_after_s=self.retry_after_s
            ),
            "ray_actor_options": {"num_cpus": self.num_cpus},
        }


def requests_per_batch(config: ServeConfig, capacity: Capacity | None) -> int:
    """k: the requests one batch may merge within the SLO (at least 1)."""
    if capacity is None:
        return max(1, config.batching.max_rows // DEFAULT_CANDIDATES)
    fits = capacity.latency.max_rows_within(config.slo.p99_ms / 2)
    if fits == 0:
        raise ConfigError(
            f"even a one-row batch has p99 {capacity.latency.predict_ms(1):.2f} ms, over half "
            f"the {config.slo.p99_ms:g} ms SLO",
            "loosen slo.p99_ms, or deploy a faster artifact or configuration",
        )
    rows = min(fits, capacity.largest_batch, config.batching.max_rows)
    return max(1, rows // capacity.candidates)


def ray_serve_settings(config: ServeConfig, capacity: Capacity | None = None) -> RaySettings:
    """The Ray Serve options that stand for `config` (see the module docstring)."""
    scaler = config.autoscaler
    per_replica = 2 * requests_per_batch(config, capacity)
    return RaySettings(
        min_replicas=config.workers.min,
        max_replicas=config.workers.max,
        target_ongoing_requests=max(1.0, scaler.target_utilization * per_replica),
        upscale_delay_s=scaler.upscale_delay_s,
        downscale_delay_s=scaler.downscale_delay_s,
        metrics_interval_s=scaler.interval_s,
        look_back_period_s=max(2 * scaler.interval_s, scaler.upscale_delay_s),
        max_ongoing_requests=per_replica,
        max_queued_requests=config.admission.max_queue_requests,
        num_cpus=float(config.workers.executors[0].threads),
    )
