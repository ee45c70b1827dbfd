"""One model version being served: its worker processes, its batch queue, its scaling loop.

    deployment = Deployment(ModelVersion("ranker", "1", artifact), config, metrics)
    await deployment.start()                       # workers loaded and ready
    scores = await deployment.score(batch, deadline)
    await deployment.drain()                       # finish everything queued, stop workers

The request path. `score` asks admission control (admission.py) whether the request can finish
by its deadline given the queue ahead of it; if not it fails at once with 429 and Retry-After.
Admitted, it joins a FIFO queue. One batching task per deployment forms batches from the head
of the queue (batcher_policy.py): a batch goes out when it is full, or when waiting longer would
make its oldest request miss its deadline given the predicted p99 of the batch, or when its
oldest request has waited `max_queue_delay_ms` — and only when a worker is free to take it, so
under load batches grow instead of queueing inside workers. The router (router.py) sends it to
the free worker with the earliest predicted completion. Scores are split back per request.

Failures never leave a request hanging: a batch whose worker died is retried once on another
worker, then failed with 503; an executor error fails its requests with 500 and the message.
A dead worker is replaced at once. Scaling (autoscaler.py) samples utilization and queue delay
every `interval_s` and starts or stops workers of the elastic kind between min and max.

Latency models come from the profile when it has the artifact on a worker's configuration,
else from the worker's own measurement at start (workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recaccel.artifact import read_manifest
from recaccel.data.dataset import FeatureBatch
from recaccel.data.schema import FeatureSchema
from recaccel.runtime.latency_model import LatencyModel
from recaccel.runtime.profile import Profile
from recaccel.serve import admission, autoscaler, batcher_policy, router
from recaccel.serve.config import ExecutorSection, ServeConfig
from recaccel.serve.errors import RequestError, UnavailableError
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.workers import (
    WorkerDiedError,
    WorkerFailedError,
    WorkerProcess,
    WorkerSpec,
)

log = logging.getLogger(__name__)

RETRIES = 1  # a batch whose worker died is re-sent once
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    artifact: Path


@dataclass
class _Request:
    batch: FeatureBatch
    arrival: float
    deadline: float
    future: asyncio.Future[np.ndarray]
    priority: int = 0
    attempts: int = 0

    @property
    def rows(self) -> int:
        return len(self.batch)


def _concat(requests: list[_Request]) -> FeatureBatch:
    if len(requests) == 1:
        return requests[0].batch
    return FeatureBatch(
        torch.cat([r.batch.dense for r in requests]),
        torch.cat([r.batch.categorical for r in requests]),
        torch.cat([r.batch.multi_hot for r in requests]),
    )


@dataclass
class _Kind:
    """Workers of one executor configuration."""

    section: ExecutorSection
    spec: WorkerSpec
    latency: LatencyModel | None = None  # from the profile, else the first worker's
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def elastic(self) -> bool:
        return self.section.count is None


class Deployment:
    """See the module docstring."""

    def __init__(
        self,
        model: ModelVersion,
        config: ServeConfig,
        metrics: ServerMetrics,
        profile: Profile | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics
        self.manifest = read_manifest(model.artifact)
        self._schema = FeatureSchema.from_dict(self.manifest.schema)
        self.kinds = [
            _Kind(section, WorkerSpec(model.artifact, section.executor_config()))
            for section in config.workers.executors
        ]
        for kind in self.kinds:
            kind.latency = _profiled_latency(profile, self.manifest.artifact_id, kind.spec)
        limits = config.admission
        self._admission = admission.AdmissionConfig(
            limits.max_queue_rows, limits.max_queue_requests, config.slo.p99_ms
        )
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._names = (f"{model.name}-{model.version}-{i}" for i in range(1 << 30))
        self._scaler_state: autoscaler.AutoscalerState | None = None
        self.draining = False
        self.ready = False

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def schema(self) -> FeatureSchema:
        return self._schema

    @property
    def backend(self) -> str:
        return self.kinds[0].spec.config.backend

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every kind's initial workers and wait until they are ready."""
        starts = []
        for kind in self.kinds:
            count = kind.section.count or self.config.workers.min
            starts += [self._add_worker(kind) for _ in range(count)]
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_workers()
            raise errors[0]
        self._scaler_state = autoscaler.AutoscalerState.initial(
            self.elastic_workers, time.monotonic()
        )
        self._tasks = [
            asyncio.create_task(self._batching_loop(), name=f"batcher-{self.model.name}"),
            asyncio.create_task(self._scaling_loop(), name=f"autoscaler-{self.model.name}"),
        ]
        self.ready = True

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Stop admitting, finish every queued and running batch, then stop the workers.

        Whatever is still queued after `timeout_s` (no worker left to run it) is answered 503.
        """
        self.draining = True
        self.ready = False
        self._wakeup.set()
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._batches) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        while self._queue:
            self._fail(
                self._queue.popleft(),
                UnavailableError(f"model {self.name} stopped before this request could run"),
            )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_workers()

    async def _stop_workers(self) -> None:
        workers = [w for kind in self.kinds for w in kind.workers]
        for kind in self.kinds:
            kind.workers = []
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        self._update_worker_gauges()

    async def _add_worker(self, kind: _Kind) -> WorkerProcess:
        worker = WorkerProcess(kind.spec, next(self._names))
        worker.on_exit = self._worker_exited
        worker.start()
        info = await worker.ready()
        if kind.latency is None:
            kind.latency = info.latency
        if self.draining:
            await worker.stop()
            return worker
        kind.workers.append(worker)
        self._update_worker_gauges()
        self._wakeup.set()
        log.info("worker %s ready (%s, loaded in %.2f s)", worker.name, kind.spec.kind, info.load_s)
        return worker

    def _worker_exited(self, worker: WorkerProcess) -> None:
        for kind in self.kinds:
            if worker in kind.workers:
                kind.workers.remove(worker)
                self._update_worker_gauges()
                if not self.draining:
                    self.metrics.worker_restarts.labels(self.model.name, kind.spec.kind).inc()
                    log.warning("replacing worker %s", worker.name)
                    task = asyncio.ensure_future(self._add_worker(kind))
                    task.add_done_callback(_log_failure)
        self._wakeup.set()  # batches it held are being retried

    def _update_worker_gauges(self) -> None:
        for kind in self.kinds:
            self.metrics.workers.labels(self.model.name, kind.spec.kind).set(len(kind.workers))

    @property
    def elastic_workers(self) -> int:
        return sum(len(k.workers) for k in self.kinds if k.elastic)

    @property
    def latency(self) -> LatencyModel:
        """The fastest kind's model (at the largest batch): what admission plans with."""
        models = [k.latency for k in self.kinds if k.latency is not None and k.workers]
        if not models:
            raise UnavailableError(f"model {self.model.name} has no worker ready")
        rows = self.config.batching.max_rows
        return min(models, key=lambda m: m.predict_ms(rows, "median"))

    def stats(self) -> dict[str, Any]:
        """The workers and what they have done: GET /v2/models/{name}/stats."""
        return {
            "name": self.name,
            "version": self.version,
            "ready": self.ready,
            "queued_requests": len(self._queue),
            "workers": [
                {
                    "name": w.name,
                    "kind": k.spec.kind,
                    "pid": w.pid,
                    "alive": w.alive,
                    "in_flight": w.in_flight,
                    "batches": w.stats.batches,
                    "rows": w.stats.rows,
                    "busy_s": round(w.stats.busy_s, 6),
                }
                for k in self.kinds
                for w in k.workers
            ],
        }

    # the request path ------------------------------------------------------------------------

    async def score(self, batch: FeatureBatch, deadline: float, priority: int = 0) -> np.ndarray:
        """Click probabilities for `batch`'s rows, by `deadline` (time.monotonic()) or a 429."""
        now = time.monotonic()
        if self.draining or not self.ready:
            raise UnavailableError(
                f"model {self.model.name} version {self.model.version} is not serving "
                f"({'draining' if self.draining else 'starting'})"
            )
        self._admit(len(batch), now, deadline, priority)
        request = _Request(
            batch, now, deadline, asyncio.get_running_loop().create_future(), priority
        )
        self._queue.append(request)
        self.metrics.queued_requests.labels(self.model.name).set(len(self._queue))
        self._wakeup.set()
        return await request.future

    def _admit(self, rows: int, now: float, deadline: float, priority: int) -> None:
        latency = self.latency
        max_rows = self.config.batching.max_rows
        workers = max(1, sum(len(k.workers) for k in self.kinds))
        queued = [r.rows for r in self._queue]
        in_flight = [w.in_flight_rows for k in self.kinds for w in k.workers if w.in_flight]
        verdict = admission.admit(
            self._admission,
            now=now,
            request_rows=rows,
            deadline=deadline,
            predicted_wait_s=admission.queue_wait_s(in_flight + queued, max_rows, latency, workers),
            # Alone or with others, a request's batch holds at least its own rows.
            predicted_exec_s=latency.predict_ms(rows) / 1e3,
            queued_rows=sum(queued),
            queued_requests=len(self._queue),
            draining=self.draining,
            priority=priority,
        )
        if not verdict.accepted:
            self.metrics.rejected.labels(self.model.name, verdict.code).inc()
            verdict.raise_if_refused()

    # batching --------------------------------------------------------------------------------

    def _free_workers(self) -> list[tuple[_Kind, WorkerProcess]]:
        return [(k, w) for k in self.kinds for w in k.workers if w.alive and w.in_flight == 0]

    async def _batching_loop(self) -> None:
        policy = batcher_policy.BatchPolicy(
            self.config.batching.max_rows, self.config.slo.max_queue_delay_ms / 1e3
        )
        while True:
            if not self._queue or not self._free_workers():
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # A batch never holds more requests than rows; one more tells the planner the
            # queue goes on past it (the batch is full).
            head = itertools.islice(self._queue, policy.max_rows + 1)
            pending = [batcher_policy.Pending(r.rows, r.arrival, r.deadline) for r in head]
            now = time.monotonic()
            plan = batcher_policy.plan_batch(pending, now, self.latency, policy)
            assert plan is not None  # the queue is not empty
            if not plan.due(now) and not self.draining:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), plan.wait_s(now))
                continue  # plan again with whatever arrived
            requests = [self._queue.popleft() for _ in range(plan.count)]
            self.metrics.queued_requests.labels(self.model.name).set(len(self._queue))
            try:
                self._dispatch(requests)
            except Exception as error:  # a bug here must fail its requests, not hang them
                log.exception("dispatching a batch of %s failed", self.name)
                for r in requests:
                    self._fail(r, RequestError(f"internal error: {error}", status=500))

    def _dispatch(self, requests: list[_Request]) -> None:
        batch = _concat(requests)
        now = time.monotonic()
        free = self._free_workers()
        loads = [
            router.ExecutorLoad(
                name=w.name,
                busy_until=now,  # free workers only: nothing running
                queued_rows=0,
                latency=k.latency if k.latency is not None else self.latency,
                max_rows=self.config.batching.max_rows,
                healthy=w.alive,
            )
            for k, w in free
        ]
        chosen = router.route(len(batch), loads, now)
        kind, worker = free[chosen]
        name = self.model.name
        self.metrics.batches.labels(name, kind.spec.kind).inc()
        self.metrics.batch_rows.labels(name).observe(len(batch))
        self.metrics.batch_requests.labels(name).observe(len(requests))
        for r in requests:
            self.metrics.queue_latency.labels(name).observe(now - r.arrival)
        task = asyncio.ensure_future(self._complete(requests, kind, worker, worker.run(batch)))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _complete(
        self,
        requests: list[_Request],
        kind: _Kind,
        worker: WorkerProcess,
        result: asyncio.Future[np.ndarray],
    ) -> None:
        busy_before = worker.stats.busy_s
        try:
            scores = await result
        except WorkerDiedError as error:
            retry = [r for r in requests if r.attempts < RETRIES]
            for r in requests:
                if r.attempts >= RETRIES:
                    self._fail(r, UnavailableError(f"{error}; retried once already", status=503))
            for r in reversed(retry):
                r.attempts += 1
                self._queue.appendleft(r)
            if retry:
                self.metrics.retried.labels(self.model.name).inc()
            self._wakeup.set()
            return
        except WorkerFailedError as error:
            for r in requests:
                self._fail(r, RequestError(str(error), status=500))
            return
        finally:
            self.metrics.executor_busy.labels(self.model.name, kind.spec.kind).inc(
                max(0.0, worker.stats.busy_s - busy_before)
            )
            self._wakeup.set()  # the worker is free again
        start = 0
        for r in requests:
            if not r.future.done():
                r.future.set_result(scores[start : start + r.rows])
            start += r.rows

    def _fail(self, request: _Request, error: RequestError) -> None:
        self.metrics.failed.labels(self.model.name, type(error).__name__).inc()
        if not request.future.done():
            request.future.set_exception(error)

    # scaling ---------------------------------------------------------------------------------

    async def _scaling_loop(self) -> None:
        settings = self.config.autoscaler
        policy = autoscaler.AutoscalerConfig(
            min_workers=self.config.workers.min,
            max_workers=self.config.workers.max,
            target_utilization=settings.target_utilization,
            target_queue_delay_ms=settings.target_queue_delay_ms,
            upscale_delay_s=settings.upscale_delay_s,
            downscale_delay_s=settings.downscale_delay_s,
        )
        elastic = next((k for k in self.kinds if k.elastic), None)
        if elastic is None:
            return  # every kind has a fixed count
        last_at, last_busy = time.monotonic(), self._busy_s(elastic)
        while True:
            await asyncio.sleep(settings.interval_s)
            now, busy = time.monotonic(), self._busy_s(elastic)
            workers = max(1, len(elastic.workers))
            utilization = min(1.0, (busy - last_busy) / ((now - last_at) * workers))
            last_at, last_busy = now, busy
            oldest_wait_ms = (now - self._queue[0].arrival) * 1e3 if self._queue else 0.0
            sample = autoscaler.LoadSample(
                at=now,
                workers=len(elastic.workers),
                utilization=utilization,
                queue_delay_ms=oldest_wait_ms,
                queued_requests=len(self._queue),
                in_flight=sum(w.in_flight for w in elastic.workers),
            )
            assert self._scaler_state is not None
            decision, self._scaler_state = autoscaler.decide(
                policy, self._scaler_state, sample, now
            )
            self.metrics.autoscaler_target.labels(self.model.name).set(decision.target_workers)
            if decision.changed:
                direction = "up" if decision.target_workers > len(elastic.workers) else "down"
                self.metrics.autoscaler_decisions.labels(self.model.name, direction).inc()
                log.info(
                    "autoscaler %s: %d -> %d workers: %s",
                    self.model.name,
                    len(elastic.workers),
                    decision.target_workers,
                    decision.reason,
                )
                await self._scale_to(elastic, decision.target_workers)

    def _busy_s(self, kind: _Kind) -> float:
        return sum(w.stats.busy_s for w in kind.workers)

    async def _scale_to(self, kind: _Kind, target: int) -> None:
        while len(kind.workers) < target:
            await self._add_worker(kind)
        while len(kind.workers) > target:
            idle = min(kind.workers, key=lambda w: w.in_flight)
            kind.workers.remove(idle)
            self._update_worker_gauges()
            await idle.stop()


def _log_failure(task: asyncio.Future[WorkerProcess]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not replace a worker: %s", task.exception())


def _profiled_latency(
    profile: Profile | None, artifact_id: str, spec: WorkerSpec
) -> LatencyModel | None:
    if profile is None:
        return None
    for entry in profile.entries:
        if entry.ok and entry.artifact_id == artifact_id and entry.config == spec.config:
            return entry.latency_model()
    return None
