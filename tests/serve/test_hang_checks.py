"""Hang checks' decisions: a worker holding a batch past its timeout (workers.hung_for), a
front the supervisor kills as hung (front.front_is_hung), and an in-process lane stuck on one
batch (Deployment.hung_lane)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recaccel.data.rows import Rows
from recaccel.runtime.part_cache import NO_COUNTS, CacheCounts
from recaccel.serve.config import load_serve_config
from recaccel.serve.deployment import Deployment, ModelVersion
from recaccel.serve.errors import UnavailableError
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.plane.front_process import front_is_hung
from recaccel.serve.plane.inproc import InProcessLane
from recaccel.serve.workers import hung_for


def test_a_worker_holding_nothing_is_never_hung() -> None:
    assert hung_for([], now=100.0, timeout_s=2.0) == (False, 2.0)


def test_the_oldest_batch_decides() -> None:
    assert hung_for([99.5, 97.9], now=100.0, timeout_s=2.0) == (True, 0.0)


def test_a_batch_held_under_the_timeout_is_looked_at_again_when_it_would_be_hung() -> None:
    hung, wait_s = hung_for([99.5, 99.0], now=100.0, timeout_s=2.0)
    assert not hung
    assert wait_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ever_ready", "says_hung", "beat_age_s", "hung"),
    [
        (True, False, 0.1, False),  # beating
        (True, False, 10.0, True),  # silent for the timeout: its loop is stuck
        (True, True, 0.1, True),  # beating, but a lane of it is stuck
        (False, False, 60.0, False),  # still starting: loading blocks a loop for long
    ],
)
def test_the_supervisor_kills_a_front_that_served_and_stopped_beating_or_says_it_is_hung(
    ever_ready: bool, says_hung: bool, beat_age_s: float, hung: bool
) -> None:
    assert front_is_hung(ever_ready, says_hung, beat_age_s, timeout_s=10.0) is hung


class StuckExecutor:
    """Scores nothing until released: a native call that does not return."""

    concurrent_runs = True

    def __init__(self) -> None:
        self.release = threading.Event()

    def run_counted(self, batch: Rows) -> tuple[np.ndarray, CacheCounts]:
        self.release.wait(60)
        return np.zeros(len(batch), np.float32), NO_COUNTS

    def close(self) -> None:
        pass


def three_rows() -> Rows:
    return Rows(
        np.zeros((3, 1), np.float32), np.zeros((3, 1), np.int64), np.zeros((3, 1, 1), np.int64)
    )


NO_IN_FLIGHT_LIMIT = {"admission": {"overload_target_ms": 0}}


async def started(artifact: Path, overrides: dict[str, Any]) -> Deployment:
    config = load_serve_config(None, {**NO_IN_FLIGHT_LIMIT, **overrides})
    deployment = Deployment(ModelVersion("m", "1", artifact), config, ServerMetrics())
    await deployment.start()
    return deployment


def stuck_lane(deployment: Deployment) -> tuple[InProcessLane, StuckExecutor]:
    """The deployment's one lane, its executor swapped for one that does not return."""
    [lane] = deployment.kinds[0].workers
    assert isinstance(lane, InProcessLane)
    stuck = StuckExecutor()
    lane.executor, lane.latency = stuck, None  # None: on the lane's thread
    return lane, stuck


def test_a_lane_stuck_on_one_batch_is_named_hung_once_it_has_held_it_the_timeout(
    trained: Callable[[str, str, int], Path],
) -> None:
    async def main() -> None:
        deployment = await started(trained("dlrm", "small", 2), {})
        lane, stuck = stuck_lane(deployment)
        assert deployment.hung_lane(time.monotonic(), 2.0) is None
        scoring = asyncio.ensure_future(deployment.score(three_rows(), time.monotonic() + 60))
        await asyncio.sleep(0.1)
        now = time.monotonic()
        assert lane.held_since is not None and lane.held_since <= now
        assert deployment.hung_lane(now, 2.0) is None
        assert deployment.hung_lane(now + 2.0, 2.0) == lane.name
        stuck.release.set()
        await scoring
        assert lane.held_since is None
        assert deployment.hung_lane(now + 60.0, 2.0) is None
        await deployment.drain()

    asyncio.run(main())


def test_a_drain_past_its_time_limit_answers_503_and_returns_with_a_lane_stuck(
    trained: Callable[[str, str, int], Path],
) -> None:
    """The lane is stuck on one batch at shutdown, a second request waits behind it: past the
    drain's limit both are answered 503 (the stuck one fails as a dead worker's batch, and its
    retry has nothing to run it), and the drain returns instead of waiting on the stuck call.
    When the call ends after all, its outcome goes nowhere: the request was answered."""

    async def main() -> None:
        deployment = await started(trained("dlrm", "small", 2), {})
        lane, stuck = stuck_lane(deployment)
        deadline = time.monotonic() + 60
        held = asyncio.ensure_future(deployment.score(three_rows(), deadline))
        await asyncio.sleep(0.1)
        assert lane.held_since is not None  # the lane has the first batch
        waiting = asyncio.ensure_future(deployment.score(three_rows(), deadline))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # queued: the only lane is busy
        await asyncio.wait_for(deployment.drain(timeout_s=0.3), 10)
        with pytest.raises(UnavailableError, match="stopped before this request could run"):
            await waiting
        with pytest.raises(UnavailableError, match="stopped before this request could finish"):
            await held
        stuck.release.set()
        await asyncio.sleep(0.1)  # the stuck call returns; nothing must raise for it
        assert lane.held_since is None

    asyncio.run(main())


def test_a_drain_past_its_time_limit_kills_a_worker_process_still_holding_a_batch(
    trained: Callable[[str, str, int], Path],
) -> None:
    """The same with a worker process paused holding the batch: past the limit it is killed
    (not left to the 10 s hang watchdog) and the batch answered 503."""
    workers = {"plane": {"execution": "workers"}, "workers": {"min": 1, "max": 1}}

    async def main() -> None:
        deployment = await started(trained("dlrm", "small", 2), workers)
        [worker] = deployment.kinds[0].workers
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            held = asyncio.ensure_future(deployment.score(three_rows(), time.monotonic() + 60))
            await asyncio.sleep(0.1)
            assert worker.in_flight == 1  # sent, and the paused process holds it
            await asyncio.wait_for(deployment.drain(timeout_s=0.3), 5)
            with pytest.raises(UnavailableError, match="stopped before this request could"):
                await held
            assert not worker.alive
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    asyncio.run(main())
