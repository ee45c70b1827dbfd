"""recaccel's scaling and admission settings as Ray Serve options: a pure mapping, on a table."""

from __future__ import annotations

from typing import Any

import pytest

from recaccel.deploy.ray_settings import Capacity, ray_serve_settings, requests_per_batch
from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.serve.config import ExecutorSection, ServeConfig, load_serve_config

# p99: 1 ms for one row, 1.6 ms for 64, then 1/128 ms per row up to 9.1 ms for 1,024.
LATENCY = LatencyModel.from_points(
    [LatencyPoint(1, 0.8, 1.0, 9), LatencyPoint(64, 1.2, 1.6, 9), LatencyPoint(1024, 6.0, 9.1, 9)]
)
FAST = Capacity(LATENCY, largest_batch=1024, candidates=100)


def _config(**sections: dict[str, Any]) -> ServeConfig:
    return load_serve_config(None, sections, environ={})


@pytest.mark.parametrize(
    ("sections", "capacity", "expected"),
    [
        # Defaults, no profile: 2,048 rows // 100 = 20 requests a batch, 40 a replica, scale
        # out past 0.7 × 40; recaccel's 1..2 workers, 3 s / 30 s delays, 1 s samples.
        ({}, None, {"min_replicas": 1, "max_replicas": 2, "max_ongoing_requests": 40,
                    "target_ongoing_requests": 28.0, "upscale_delay_s": 3.0,
                    "downscale_delay_s": 30.0, "metrics_interval_s": 1.0,
                    "look_back_period_s": 3.0, "max_queued_requests": 2000, "num_cpus": 1.0}),
        # A profile: SLO 50 → 25 ms fits any batch, capped at the 1,024 measured: 10 requests.
        ({}, FAST, {"max_ongoing_requests": 20, "target_ongoing_requests": 14.0}),
        # SLO 10 → 5 ms fits 499 rows: 4 requests of 100 a batch.
        ({"slo": {"p99_ms": 10}}, FAST, {"max_ongoing_requests": 8}),
        # SLO 4 → 2 ms fits 115 rows: one request a batch.
        ({"slo": {"p99_ms": 4}}, FAST, {"max_ongoing_requests": 2, "target_ongoing_requests": 1.4}),
        # batching.max_rows caps what the profile would allow.
        ({"batching": {"max_rows": 300}}, FAST, {"max_ongoing_requests": 6}),
        # The target never drops below one request.
        ({"batching": {"max_rows": 100}, "autoscaler": {"target_utilization": 0.2}}, None,
         {"max_ongoing_requests": 2, "target_ongoing_requests": 1.0}),
        # Workers, delays, sampling and admission carry over; the window covers two samples.
        ({"workers": {"min": 2, "max": 8}, "admission": {"max_queue_requests": 64},
          "autoscaler": {"upscale_delay_s": 0.5, "downscale_delay_s": 4, "interval_s": 2}},
         None, {"min_replicas": 2, "max_replicas": 8, "max_queued_requests": 64,
                "upscale_delay_s": 0.5, "downscale_delay_s": 4.0, "look_back_period_s": 4.0}),
        ({"workers": {"executors": [{"threads": 2}]}}, None, {"num_cpus": 2.0}),
    ],
)  # fmt: skip
def test_mapping(sections: dict[str, Any], capacity: Capacity | None, expected: Any) -> None:
    settings = ray_serve_settings(_config(**sections), capacity)
    assert {key: getattr(settings, key) for key in expected} == pytest.approx(expected)


def test_a_model_too_slow_for_the_slo_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"half the 1\.5 ms SLO"):
        requests_per_batch(_config(slo={"p99_ms": 1.5}), FAST)


@pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")
def test_the_options_are_ray_serve_s() -> None:
    """Ray validates them: every key is a `serve.deployment` option, the autoscaling config
    and the 429 back-pressure answer included."""
    serve = pytest.importorskip("ray.serve")
    from ray.serve.config import AutoscalingConfig

    options = ray_serve_settings(_config(), FAST).deployment_options()
    deployment = serve.deployment(_noop, **options)
    assert deployment.max_ongoing_requests == 20
    assert deployment.max_queued_requests == 2000
    assert AutoscalingConfig(**options["autoscaling_config"]).initial_replicas == 1
    backpressure = options["backpressure_config"]
    assert (backpressure.status_code, backpressure.retry_after_s) == (429, 1.0)


def _noop() -> None:
    """A deployment body for `serve.deployment` to validate options on."""


def test_a_replica_runs_one_worker_and_leaves_overload_to_rays_queue() -> None:
    from recaccel.deploy.ray_serve import replica_config

    config = replica_config(_config(workers={"min": 2, "max": 4}))
    assert (config.workers.min, config.workers.max) == (1, 1)
    assert config.admission.overload_target_ms == 0


def _entry(artifact_id: str, backend: str, ms_per_row: float) -> ProfileEntry:
    points = tuple(LatencyPoint(b, 1 + ms_per_row * b, 1.2 + ms_per_row * b, 9) for b in (1, 1000))
    return ProfileEntry(
        f"/art/{artifact_id[:4]}", artifact_id, "deepfm", 1, 1, ExecutorConfig(backend), "ok",
        validation_auc=0.8, points=points, load_s=1.0,
    )  # fmt: skip


def test_replicas_run_the_deployed_artifacts_own_choice_from_the_profile() -> None:
    from recaccel.deploy.ray_serve import selected_executor

    heavy = _entry("a" * 64, "torch-eager", 0.1)
    small = _entry("b" * 64, "torch-compile", 0.001)  # the profile's choice, not the one deployed
    heavy_ort = _entry("a" * 64, "onnxruntime", 0.05)
    profile = Profile((1, 1000), 100, (heavy, small, heavy_ort), heavy.key)
    config, capacity = selected_executor(_config(), profile, "a" * 64, 2, 0.001)
    assert config.workers.executors == (ExecutorSection("onnxruntime", "cpu", "fp32", 1),)
    assert capacity.largest_batch == 1000 and capacity.candidates == 100
    with pytest.raises(ConfigError, match="no configuration of artifact aaaaaaaa meets"):
        selected_executor(_config(slo={"p99_ms": 10}), profile, "a" * 64, 2, 0.001)
