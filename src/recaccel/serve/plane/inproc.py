"""In-process execution: the executor runs inside the front process, on a thread of its own.

    lanes = await start_lanes(spec, "ranker-1", count=2)   # executors loaded off the loop
    scores = await lanes[0].run(rows)                       # computed on the lane's thread

For a light model the front's own cost per request (HTTP, JSON, feature rows) is larger than
the model's, and a worker process adds more: every batch pickled through a pipe, a second
process woken, the scores pickled back (on the 2-core AMD EPYC, `recaccel serve` with one ORT
worker process used 1.37 CPU-ms per request at 700 QPS where a one-process server scoring in
place used 0.76 at 1,300; docs/serving-plane.md). So the default plane runs the executor
here. A lane runs one batch at a time, in one of two ways, chosen per batch from its latency
model (`runs_inline`):

- inline, on the event loop's own thread, when the batch is predicted short: handing a batch
  to another thread and its result back costs about 115 µs of CPU and 170 µs of wall time
  per call on that machine (a futex wake each way, across cores, in a VM), as much as ORT
  takes to score 50 rows; the loop waits while it computes, and requests that arrive
  meanwhile form the next batch;
- on the lane's thread otherwise, while the loop goes on parsing requests: ONNX Runtime,
  OpenVINO and PyTorch release the GIL while they compute, so the two overlap, and a long
  batch never stalls the loop.

A front process may hold several lanes of a kind: the batcher hands each free lane a batch,
and a request too large for one lane (query splitting) goes to several, on their threads.

Lanes share one executor where the backend allows concurrent runs (`Executor.concurrent_runs`:
an ONNX Runtime session does; an OpenVINO infer request and a compiled PyTorch module are not
shared), else each lane loads its own. Loading happens on a thread too, so a hot swap loads the
new version while the loop keeps serving the old one.

A lane has the interface of a worker process (`WorkerProcess`): `run`, `in_flight`,
`in_flight_rows`, `alive`, `stats`, `stop`, so batching, routing and admission (deployment.py)
treat both alike. Unlike a process it cannot die alone: an executor error fails its batch with
`WorkerFailedError` (500), and the lane goes on; a lane that hangs has its whole front
replaced (plane/front.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from recaccel.data.rows import Rows
from recaccel.runtime.executor import Executor, load_executor
from recaccel.runtime.latency_model import LatencyModel
from recaccel.runtime.part_cache import NO_COUNTS, CacheCounts
from recaccel.serve.worker_spec import WorkerInfo, WorkerSpec, startup_latency, with_part_cache
from recaccel.serve.workers import WorkerDiedError, WorkerFailedError, WorkerStats

log = logging.getLogger("recaccel.serve")


def runs_inline(latency: LatencyModel | None, rows: int, inline_max_ms: float) -> bool:
    """Whether a lane computes a `rows`-row batch on the event loop's thread: when its p99 is
    predicted within `inline_max_ms` (module docstring). Unknown latency: on the lane's thread.
    """
    return latency is not None and latency.predict_ms(rows, "p99") <= inline_max_ms


@dataclass
class _Batch:
    rows: int
    future: asyncio.Future[np.ndarray]
    started_s: float  # time.monotonic()


class SharedExecutor:
    """An executor and how many lanes still use it: the last to stop closes it."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.users = 0

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.executor.close()


class InProcessLane:
    """One compute thread over an executor (see the module docstring)."""

    def __init__(self, shared: SharedExecutor, name: str, inline_max_ms: float = 0.0) -> None:
        self.name = name
        self.executor = shared.executor
        self.latency: LatencyModel | None = None  # set by the deployment once known
        self.inline_max_ms = inline_max_ms
        self.stats = WorkerStats()
        self.alive = True
        shared.users += 1
        self._shared = shared
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._running: _Batch | None = None

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def in_flight(self) -> int:
        return 0 if self._running is None else 1

    @property
    def in_flight_rows(self) -> int:
        return 0 if self._running is None else self._running.rows

    @property
    def held_since(self) -> float | None:
        """When the batch it is running was handed to it (time.monotonic()); None: idle."""
        return None if self._running is None else self._running.started_s

    def run(self, batch: Rows, parallel: bool = False) -> asyncio.Future[np.ndarray]:
        """Score `batch` inline or on the lane's thread (module docstring); on the thread
        whatever its size when `parallel` (a part of a split request, run beside the other
        parts). The future resolves on the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if not self.alive:
            future.set_exception(WorkerDiedError(f"lane {self.name} is stopped"))
            return future
        self._running = _Batch(len(batch), future, time.monotonic())
        if not parallel and runs_inline(self.latency, len(batch), self.inline_max_ms):
            outcome: Outcome
            try:
                outcome = _timed_run(self.executor, batch)
            except Exception as error:
                outcome = error
            self._finished(outcome)
            return future
        done = loop.run_in_executor(self._thread, _timed_run, self.executor, batch)
        done.add_done_callback(lambda done: self._finished(_outcome(done)))
        return future

    def _finished(self, outcome: Outcome) -> None:
        running, self._running = self._running, None
        assert running is not None
        if running.future.done():  # `stop` gave up on it; its outcome is answered already
            return
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            scores, cache, busy_s = outcome
        except Exception as error:
            self.stats.failures += 1
            running.future.set_exception(
                WorkerFailedError(f"lane {self.name}: {type(error).__name__}: {error}")
            )
            return
        self.stats.busy_s += busy_s
        if cache is not NO_COUNTS:  # the cache is on
            self.stats.cache += cache
        self.stats.batches += 1
        self.stats.rows += running.rows
        running.future.set_result(scores)

    async def stop(self, wait_s: float | None = None) -> None:
        """Finish the batch running, then release the thread and its use of the executor.

        `wait_s`: the longest to wait for that batch (None: as long as it takes). Past it the
        batch fails as a dead worker's would, and the executor is left open: a thread cannot
        be stopped, and closing an executor under a call still in it is not safe; the process
        ends soon after a drain anyway."""
        if not self.alive:
            return
        self.alive = False
        running = self._running
        if running is not None:
            await asyncio.wait([running.future], timeout=wait_s)
        self._thread.shutdown(wait=False)
        if running is None or running.future.done():
            self._shared.release()
            return
        log.warning("lane %s stopped with a batch still running after %g s", self.name, wait_s)
        running.future.set_exception(
            WorkerDiedError(f"lane {self.name} stopped with this batch still running")
        )


# (scores, what the request-part cache did, busy seconds), or the error
Outcome = tuple[np.ndarray, CacheCounts, float] | BaseException


def _outcome(done: asyncio.Future[tuple[np.ndarray, CacheCounts, float]]) -> Outcome:
    if done.cancelled():
        return WorkerDiedError("the lane's batch was cancelled")
    error = done.exception()
    return done.result() if error is None else error


def _timed_run(executor: Executor, batch: Rows) -> tuple[np.ndarray, CacheCounts, float]:
    start = time.perf_counter()
    scores, cache = executor.run_counted(batch)
    return scores, cache, time.perf_counter() - start


def _load(spec: WorkerSpec, measure: bool) -> tuple[Executor, WorkerInfo]:
    start = time.perf_counter()
    executor = load_executor(spec.artifact, spec.config, spec.calibration)
    with_part_cache(executor, spec.part_cache)
    latency = startup_latency(executor, executor.schema, spec.startup_batches) if measure else None
    return executor, WorkerInfo(executor.describe(), latency, time.perf_counter() - start)


async def start_lanes(
    spec: WorkerSpec, name: str, count: int, inline_max_ms: float, measure_latency: bool = True
) -> tuple[list[InProcessLane], WorkerInfo]:
    """`count` lanes of `spec`, their executors loaded on threads; the first executor's info
    (its startup latency model when `measure_latency`)."""
    executor, info = await asyncio.to_thread(_load, spec, measure_latency)
    shared = SharedExecutor(executor)
    lanes = [InProcessLane(shared, f"{name}-0", inline_max_ms)]
    for i in range(1, count):
        if not executor.concurrent_runs:
            own, _ = await asyncio.to_thread(_load, spec, False)
            shared = SharedExecutor(own)
        lanes.append(InProcessLane(shared, f"{name}-{i}", inline_max_ms))
    return lanes, info
