"""In-process lanes: inline or on their thread as the latency model says, the loop free while a
long batch computes, errors answered without losing the lane, one shared executor closed once;
and a request too large for one lane split over two, with the unsplit scores."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recaccel.artifact import Artifact
from recaccel.data.dataset import Dataset
from recaccel.data.rows import Rows
from recaccel.runtime.executor import ExecutorConfig, load_executor
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.runtime.part_cache import NO_COUNTS, CacheCounts
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.serve.config import load_serve_config
from recaccel.serve.deployment import Deployment, ModelVersion
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.plane.inproc import InProcessLane, SharedExecutor, runs_inline
from recaccel.serve.workers import WorkerFailedError

# p99 = 0.1 + 0.01·rows ms: 100 rows 1.1 ms, 1,000 rows 10.1 ms
LINEAR = LatencyModel.from_points(
    [LatencyPoint(1, 0.1, 0.11, 9), LatencyPoint(1001, 10.1, 10.11, 9)]
)


@pytest.mark.parametrize(
    ("latency", "rows", "inline_max_ms", "inline"),
    [
        (LINEAR, 100, 2.0, True),
        (LINEAR, 1000, 2.0, False),
        (LINEAR, 100, 0.0, False),  # 0: never inline
        (None, 1, 2.0, False),  # unknown cost: never block the loop on it
    ],
)
def test_runs_inline_when_the_batch_is_predicted_short(
    latency: LatencyModel | None, rows: int, inline_max_ms: float, inline: bool
) -> None:
    assert runs_inline(latency, rows, inline_max_ms) is inline


class FakeExecutor:
    """Scores a row as its first dense value; records the thread it ran on; may sleep."""

    concurrent_runs = True

    def __init__(self, sleep_s: float = 0.0, fail: bool = False) -> None:
        self.sleep_s, self.fail = sleep_s, fail
        self.threads: list[str] = []
        self.closed = 0

    def run(self, batch: Rows) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.sleep_s)
        if self.fail:
            raise ValueError("bad batch")
        return batch.dense[:, 0].copy()

    def run_counted(self, batch: Rows) -> tuple[np.ndarray, CacheCounts]:
        return self.run(batch), NO_COUNTS

    def close(self) -> None:
        self.closed += 1


def _rows(n: int) -> Rows:
    dense = np.arange(n, dtype=np.float32).reshape(n, 1)
    return Rows(dense, np.zeros((n, 1), np.int64), np.zeros((n, 1, 1), np.int64))


def _lane(executor: Any, latency: LatencyModel | None = LINEAR) -> InProcessLane:
    lane = InProcessLane(SharedExecutor(executor), "lane", inline_max_ms=2.0)
    lane.latency = latency
    return lane


def test_a_short_batch_runs_inline_and_a_long_one_on_the_lanes_thread() -> None:
    async def main() -> None:
        fake = FakeExecutor()
        lane = _lane(fake)
        short, long = await lane.run(_rows(100)), await lane.run(_rows(1000))
        np.testing.assert_array_equal(short, np.arange(100))
        np.testing.assert_array_equal(long, np.arange(1000))
        here = threading.current_thread().name
        assert fake.threads[0] == here and fake.threads[1] != here
        # A part of a split request runs beside the others: on the thread, however short.
        await lane.run(_rows(10), parallel=True)
        assert fake.threads[2] != here
        assert (lane.stats.batches, lane.stats.rows) == (3, 1110)
        await lane.stop()

    asyncio.run(main())


def test_the_loop_goes_on_while_a_long_batch_computes() -> None:
    async def main() -> None:
        lane = _lane(FakeExecutor(sleep_s=0.3), latency=None)  # unknown cost: the thread
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        result = lane.run(_rows(5))
        assert lane.in_flight == 1 and lane.in_flight_rows == 5
        await result
        ticker.cancel()
        assert ticks >= 10  # the loop ran about 30 times during the 0.3 s batch
        assert lane.in_flight == 0 and lane.stats.busy_s >= 0.3
        await lane.stop()

    asyncio.run(main())


@pytest.mark.parametrize("latency", [LINEAR, None])  # inline, and on the thread
def test_an_executor_error_fails_the_batch_and_the_lane_goes_on(
    latency: LatencyModel | None,
) -> None:
    async def main() -> None:
        fake = FakeExecutor(fail=True)
        lane = _lane(fake, latency)
        with pytest.raises(WorkerFailedError, match="ValueError: bad batch"):
            await lane.run(_rows(3))
        fake.fail = False
        np.testing.assert_array_equal(await lane.run(_rows(3)), [0, 1, 2])
        assert lane.stats.failures == 1 and lane.alive
        await lane.stop()

    asyncio.run(main())


def test_a_shared_executor_is_closed_by_the_last_lane_to_stop() -> None:
    async def main() -> None:
        fake = FakeExecutor()
        shared = SharedExecutor(fake)
        lanes = [InProcessLane(shared, f"lane-{i}") for i in range(3)]
        await lanes[0].stop()
        await lanes[1].stop()
        assert fake.closed == 0
        await lanes[2].stop()
        await lanes[2].stop()  # twice: still closed once
        assert fake.closed == 1
        with pytest.raises(Exception, match="stopped"):
            await lanes[0].run(_rows(1))

    asyncio.run(main())


def _profile(artifact: Artifact, latency: LatencyModel) -> Profile:
    manifest = artifact.manifest
    points = tuple(
        LatencyPoint(b, latency.predict_ms(b, "median"), latency.predict_ms(b, "p99"), 9)
        for b in (1, 64, 1024)
    )
    entry = ProfileEntry(
        str(artifact.path), manifest.artifact_id, manifest.model, 1, 1,
        ExecutorConfig("onnxruntime"), "ok", validation_auc=0.7, points=points, load_s=1.0,
    )  # fmt: skip
    return Profile((1, 64, 1024), 64, (entry,), entry.key)


def test_a_request_too_large_for_one_lane_is_split_over_two_with_the_same_scores(
    train_tiny: Any, tiny_dataset: Dataset, tmp_path: Path
) -> None:
    """p99 of 400 rows predicted 4.1 ms > half the 6 ms SLO: two parts of 200 rows, one per
    lane, at once; the answer equals the executor's on the whole request."""
    artifact = train_tiny("dlrm", "small", tmp_path / "dlrm")
    config = load_serve_config(
        None,
        {
            "slo": {"p99_ms": 6.0},
            "workers": {"executors": [{"backend": "onnxruntime", "count": 2}]},
            "admission": {"overload_target_ms": 0},
        },
    )
    rows = Rows(*(a.numpy() for a in tiny_dataset.train.features(slice(0, 400)).as_tuple()))
    assert len(rows) == 400
    expected = load_executor(artifact.path, ExecutorConfig("onnxruntime")).run(rows)

    async def main() -> None:
        metrics = ServerMetrics()
        deployment = Deployment(
            ModelVersion("m", "1", artifact.path), config, metrics, _profile(artifact, LINEAR)
        )
        await deployment.start()
        deadline = time.monotonic() + 60  # the latency model is made up: no refusal on it
        scores = await deployment.score(rows, deadline)
        np.testing.assert_array_equal(scores, expected)
        stats = deployment.stats()["workers"]
        assert [w["batches"] for w in stats] == [1, 1]
        assert [w["rows"] for w in stats] == [200, 200]
        await deployment.drain()

    asyncio.run(main())
