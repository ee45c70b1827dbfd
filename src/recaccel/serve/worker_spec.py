"""What a worker runs and what it reports once loaded, for worker processes and in-process lanes.

Both kinds of worker (workers.py, plane/inproc.py) load one executor from a `WorkerSpec`, turn
its request-part cache on when asked, and time it on all-zero batches of a few sizes, so a
server started without a profile still has a latency model to batch and route by; `recaccel
profile` measures on real rows and is preferred when given.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recaccel.data.dataset import FeatureBatch
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.runtime.part_cache import PartCacheSettings

STARTUP_BATCHES = (1, 16, 64, 256, 1024)
STARTUP_REPEATS = 7


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker runs: an artifact on one executor configuration (and, for int8-static,
    the training rows its quantized form was calibrated on)."""

    artifact: Path
    config: ExecutorConfig
    startup_batches: tuple[int, ...] = STARTUP_BATCHES
    calibration: FeatureBatch | None = None
    part_cache: PartCacheSettings | None = None  # keep request parts across requests

    @property
    def kind(self) -> str:
        """Workers of one kind are interchangeable, e.g. "onnxruntime/cpu/fp32/t1"."""
        return self.config.label()


@dataclass(frozen=True)
class WorkerInfo:
    """What a started worker reports: its executor and its startup latency model."""

    describe: dict[str, Any]
    latency: LatencyModel | None  # None where it was not measured (a profile has one)
    load_s: float


def startup_latency(executor: Any, schema: Any, batches: tuple[int, ...]) -> LatencyModel:
    """A latency model from timing `executor` on all-zero batches of `batches` rows, each
    batch one rank request (an executor with reuse computes its request part once, as it
    does for /v1/rank; timed as many one-row requests, the pruned DeepFM's 1,000-row batch
    took 1.7× as long on ONNX Runtime, and the batcher planned with that)."""
    from recaccel.runtime.executor import as_rows, zeros_batch

    points = []
    for rows in batches:
        batch = as_rows(zeros_batch(schema, rows)).as_one_request()
        executor.run(batch)  # warm this size
        times = []
        for _ in range(STARTUP_REPEATS):
            start = time.perf_counter()
            executor.run(batch)
            times.append((time.perf_counter() - start) * 1e3)
        points.append(LatencyPoint(rows, statistics.median(times), max(times), STARTUP_REPEATS))
    return LatencyModel.from_points(points)


def with_part_cache(executor: Any, settings: PartCacheSettings | None) -> None:
    """Turn the executor's request-part cache on when asked, before its latency is measured:
    the startup batches then time the cached path (one all-zero user, computed once)."""
    if settings is not None:
        executor.use_part_cache(settings)
