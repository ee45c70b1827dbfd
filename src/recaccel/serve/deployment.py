"""One model version being served: its executors, its batch queue, its scaling loop. Over 400
lines because it is one object's state: the queue, each kind's workers and the batches in
flight are read and written together by admission, the pump, dispatch and each batch's outcome.
The decisions are pure functions elsewhere (admission.py, batcher_policy.py, router.py,
scaling.py) and the workers are their own modules; cutting the mechanism that remains would
pass that state between modules rather than make any part read alone.

    deployment = Deployment(ModelVersion("ranker", "1", artifact), config, metrics)
    await deployment.start()                       # executors loaded and ready
    scores = await deployment.score(rows, deadline)
    await deployment.drain()                       # finish everything queued, stop executors

Executors run where `plane.execution` says: in this process, one thread per lane
(plane/inproc.py; the default, for models whose compute is small next to the front's cost), or
in worker processes (workers.py; heavy models, GPUs). Both are "workers" below: the batcher,
router and admission treat them alike.

The request path. `score` asks admission control (admission.py) whether the request can finish
by its deadline given the queue ahead of it; if not it fails at once with 429 and Retry-After.
Admitted, it joins a FIFO queue. One batching task per deployment forms batches from the head
of the queue (batcher_policy.py): a batch goes out when it is full, or when waiting longer would
make its oldest request miss its deadline given the predicted p99 of the batch, or when its
oldest request has waited `max_queue_delay_ms` — and only when a worker is free to take it, so
under load batches grow instead of queueing inside workers. The router (router.py) sends it to
the free worker with the earliest predicted completion. Scores are split back per request.

Query splitting: a request whose p99 alone would take more than half the SLO (the other half
is a wait for the batch running before it) is cut into parts run on several workers at once
(batcher_policy.split_count, DeepRecSys' rule); each part is a batch of its own, and the
request is answered when every part is (plane/queue.py).

Failures never leave a request hanging: a batch whose worker process died is retried once on
another worker, then failed with 503; an executor error fails its requests with 500 and the
message. A dead worker is replaced at once. Scaling (autoscaler.py) samples utilization and
queue delay every `interval_s` and starts or stops worker processes of the elastic kind between
min and max; in-process lanes are a fixed count per front process.

Latency models come from the profile when it has the artifact on a worker's configuration,
else from the worker's own measurement at start (worker_spec.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recaccel.artifact import read_manifest
from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema
from recaccel.runtime.latency_model import LatencyModel
from recaccel.runtime.part_cache import CacheCounts
from recaccel.runtime.profile import Profile
from recaccel.serve import admission, batcher_policy, router
from recaccel.serve.config import IN_PROCESS, ExecutorSection, ServeConfig
from recaccel.serve.errors import DrainingError, RequestError, UnavailableError
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.plane import queue
from recaccel.serve.plane.inproc import InProcessLane, start_lanes
from recaccel.serve.plane.queue import Part, Request
from recaccel.serve.scaling import scaling_loop
from recaccel.serve.worker_spec import WorkerSpec
from recaccel.serve.workers import WorkerDiedError, WorkerProcess, hung_for

log = logging.getLogger(__name__)

RETRIES = 1  # a batch whose worker died is re-sent once
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    artifact: Path


Worker = WorkerProcess | InProcessLane


@dataclass
class _Kind:
    """Workers of one executor configuration."""

    section: ExecutorSection
    spec: WorkerSpec
    in_process: bool
    latency: LatencyModel | None = None  # from the profile, else the first worker's
    workers: list[Worker] = field(default_factory=list)

    @property
    def elastic(self) -> bool:
        """Scaled by the autoscaler: worker processes with no fixed count."""
        return not self.in_process and self.section.count is None


class Deployment:
    """See the module docstring."""

    def __init__(
        self,
        model: ModelVersion,
        config: ServeConfig,
        metrics: ServerMetrics,
        profile: Profile | None = None,
        calibration: FeatureBatch | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics
        self._series = metrics.of_model(model.name, admission.REFUSALS)
        self.manifest = read_manifest(model.artifact)
        self._schema = FeatureSchema.from_dict(self.manifest.schema)
        in_process = config.plane.execution == IN_PROCESS
        self.kinds = [
            _Kind(
                section,
                WorkerSpec(
                    model.artifact,
                    section.executor_config(),
                    calibration=calibration,
                    part_cache=config.part_cache.settings(),
                ),
                in_process,
            )
            for section in config.workers.executors
        ]
        for kind in self.kinds:
            kind.latency = _profiled_latency(profile, self.manifest.artifact_id, kind.spec)
        limits = config.admission
        self._admission = admission.AdmissionConfig(
            limits.max_queue_rows, limits.max_queue_requests, config.slo.p99_ms
        )
        self._queue: deque[Part] = deque()
        self._policy = batcher_policy.BatchPolicy(
            config.batching.max_rows, config.slo.max_queue_delay_ms / 1e3
        )
        self._timer: asyncio.TimerHandle | None = None  # the next batch's dispatch time
        self._running_batches = 0
        self._pumping = False
        self._pump_scheduled = False
        self._latency: LatencyModel | None = None  # see `latency`
        self._tasks: list[asyncio.Task[None]] = []
        self._names = (f"{model.name}-{model.version}-{i}" for i in range(1 << 30))
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
        starts: list[Coroutine[Any, Any, object]] = []
        for kind in self.kinds:
            if kind.in_process:
                starts.append(self._add_lanes(kind, kind.section.count or 1))
                continue
            count = kind.section.count or self.config.workers.min
            starts += [self._add_worker(kind) for _ in range(count)]
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_workers()
            raise errors[0]
        self._tasks = [
            asyncio.create_task(scaling_loop(self), name=f"autoscaler-{self.model.name}")
        ]
        self.ready = True

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Stop admitting, finish every queued and running batch, then stop the workers.

        Past `timeout_s`, whatever is still queued, or running on a worker that has not
        finished it, is answered 503: a stuck batch does not keep the server from stopping.
        """
        self.draining = True
        self.ready = False
        self._pump()  # draining: whatever is queued goes now, batch waits or not
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._running_batches) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self._timer is not None:
            self._timer.cancel()
        self._fail_queued("run")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The batches still running get what is left of the limit, then fail as a dead
        # worker's do, and their retries come back to the queue with nothing to run them.
        await self._stop_workers(wait_s=max(0.0, deadline - time.monotonic()))
        self._fail_queued("finish")

    def _fail_queued(self, could_not: str) -> None:
        """Answer every queued request 503: the model stopped before it could `could_not`."""
        while self._queue:
            self._fail(
                self._queue.popleft().request,
                UnavailableError(
                    f"model {self.name} stopped before this request could {could_not}"
                ),
            )

    async def _stop_workers(self, wait_s: float | None = None) -> None:
        workers = [w for kind in self.kinds for w in kind.workers]
        for kind in self.kinds:
            kind.workers = []
        await asyncio.gather(*(w.stop(wait_s=wait_s) for w in workers), return_exceptions=True)
        self._update_worker_gauges()

    async def _add_worker(self, kind: _Kind) -> WorkerProcess:
        worker = WorkerProcess(kind.spec, next(self._names), self.config.plane.hang_timeout_s)
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
        self._pump()
        log.info("worker %s ready (%s, loaded in %.2f s)", worker.name, kind.spec.kind, info.load_s)
        return worker

    async def _add_lanes(self, kind: _Kind, count: int) -> None:
        lanes, info = await start_lanes(
            kind.spec,
            next(self._names),
            count,
            self.config.plane.inline_max_ms,
            measure_latency=kind.latency is None,
        )
        if kind.latency is None:
            kind.latency = info.latency
        for lane in lanes:
            lane.latency = kind.latency
        if self.draining:
            await asyncio.gather(*(lane.stop() for lane in lanes))
            return
        kind.workers.extend(lanes)
        self._update_worker_gauges()
        self._pump()
        log.info("%d lane(s) of %s ready (loaded in %.2f s)", count, kind.spec.kind, info.load_s)

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
        self._pump()  # the batches it held are queued again

    def hung_lane(self, now: float, timeout_s: float) -> str | None:
        """The name of an in-process lane that has held one batch `timeout_s` or more, if
        any: a thread cannot be killed, so its front must be (plane/front.py). Worker
        processes have a watchdog of their own (workers.py)."""
        for kind in self.kinds:
            for lane in kind.workers:
                since = lane.held_since if isinstance(lane, InProcessLane) else None
                if since is not None and hung_for([since], now, timeout_s)[0]:
                    return lane.name
        return None

    def _update_worker_gauges(self) -> None:
        """Workers came or went: the gauges, and the latency model planned with."""
        self._latency = None
        for kind in self.kinds:
            self.metrics.workers.labels(self.model.name, kind.spec.kind).set(len(kind.workers))

    @property
    def latency(self) -> LatencyModel:
        """The fastest kind's model (at the largest batch) among kinds with a worker: what
        admission and the batcher plan with. Chosen again only when workers come or go."""
        if self._latency is None:
            models = [k.latency for k in self.kinds if k.latency is not None and k.workers]
            if not models:
                raise UnavailableError(f"model {self.model.name} has no worker ready")
            rows = self.config.batching.max_rows
            self._latency = min(models, key=lambda m: m.predict_ms(rows, "median"))
        return self._latency

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

    def admit(self, rows: int, deadline: float, priority: int = 0, now: float | None = None) -> int:
        """Refuse now (503 not serving, 429 overloaded or late) a request of `rows` rows that
        `score` would refuse; else the parts it is cut into. `score` calls it; a caller about
        to spend time on a request's rows first (a remote feature store) calls it before."""
        now = time.monotonic() if now is None else now
        if self.draining or not self.ready:
            refusal = DrainingError if self.draining else UnavailableError
            raise refusal(
                f"model {self.model.name} version {self.model.version} is not serving "
                f"({'draining' if self.draining else 'starting'})"
            )
        latency = self.latency
        workers = sum(len(k.workers) for k in self.kinds)
        parts = batcher_policy.split_count(rows, workers, latency, self.config.slo.p99_ms / 2)
        self._admit(rows, parts, now, deadline, priority, latency, workers)
        return parts

    async def score(self, batch: Rows, deadline: float, priority: int = 0) -> np.ndarray:
        """Click probabilities for `batch`'s rows, by `deadline` (time.monotonic()) or a 429."""
        return await self.submit(batch, deadline, priority)

    def submit(self, batch: Rows, deadline: float, priority: int = 0) -> asyncio.Future[np.ndarray]:
        """`score` without a coroutine: the future of `batch`'s scores, queued now; raises the
        refusal (429, 503) at once. For callers that answer from a callback (the fast lane,
        plane/fast_http.py), where a task per request would cost more than the queueing."""
        now = time.monotonic()
        parts = self.admit(len(batch), deadline, priority, now)
        request = Request(
            batch, now, deadline, asyncio.get_running_loop().create_future(), priority
        )
        self._queue.extend(queue.cut(request, parts))
        self._series.queued_requests.set(len(self._queue))
        self._pump_soon()
        return request.future

    def _admit(
        self,
        rows: int,
        parts: int,
        now: float,
        deadline: float,
        priority: int,
        latency: LatencyModel,
        workers: int,
    ) -> None:
        max_rows = self.config.batching.max_rows
        queued = [p.rows for p in self._queue]
        in_flight = [w.in_flight_rows for k in self.kinds for w in k.workers if w.in_flight]
        verdict = admission.admit(
            self._admission,
            now=now,
            request_rows=rows,
            deadline=deadline,
            predicted_wait_s=admission.queue_wait_s(
                in_flight + queued, max_rows, latency, max(1, workers)
            ),
            # Alone or with others, a request's batch holds at least its own rows (or, split,
            # one part's, all parts at once).
            predicted_exec_s=latency.predict_ms(math.ceil(rows / parts)) / 1e3,
            queued_rows=sum(queued),
            queued_requests=len(self._queue),
            draining=self.draining,
            priority=priority,
        )
        if not verdict.accepted:
            self.metrics.rejected.labels(self.model.name, verdict.code).inc()
            verdict.raise_if_refused()

    # batching --------------------------------------------------------------------------------

    def _free_workers(self) -> list[tuple[_Kind, Worker]]:
        return [(k, w) for k in self.kinds for w in k.workers if w.alive and w.in_flight == 0]

    def _next_batch(self, policy: batcher_policy.BatchPolicy) -> batcher_policy.BatchPlan:
        """The plan for the head of the queue: a split part alone and at once; else up to
        the first split part, as the batch policy decides."""
        now = time.monotonic()
        if self._queue[0].split:
            return batcher_policy.BatchPlan(1, self._queue[0].rows, now, "full")  # alone
        # A batch never holds more requests than rows; one more tells the planner the queue
        # goes on past it (the batch is full).
        head = []
        for part in itertools.islice(self._queue, policy.max_rows + 1):
            if part.split:
                break
            head.append(batcher_policy.Pending(part.rows, part.arrival, part.deadline))
        plan = batcher_policy.plan_batch(head, now, self.latency, policy)
        assert plan is not None  # the head is not split, so `head` is not empty
        if len(head) < min(len(self._queue), policy.max_rows + 1) and not plan.due(now):
            return dataclasses.replace(plan, dispatch_at=now, trigger="full")  # cannot grow
        return plan

    def _pump_soon(self) -> None:
        """`_pump` once the requests ready in this turn of the loop have all queued: the
        requests that arrived together (while an inline batch held the loop, say) then form
        one batch, not one batch each."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Dispatch every batch that is due to a free worker, here and now; when the next one
        is not due yet, come back at its time (or sooner, when a request arrives or a worker
        frees up). Called on arrivals (`_pump_soon`) and completions: no batching task, no
        wake-up of one (on a VM, a wake-up costs about 0.15 ms of CPU; plane/inproc.py).

        A batch an inline lane runs is answered before `run` returns (`_dispatch`), with no
        trip through the loop between the batch and its answers.
        """
        self._pump_scheduled = False
        if self._pumping:
            return  # called back from a batch answered inside this loop: it goes on below
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pumping = True
        try:
            self._dispatch_due()
        finally:
            self._pumping = False

    def _dispatch_due(self) -> None:
        while self._queue and (free := self._free_workers()):
            plan = self._next_batch(self._policy)
            now = time.monotonic()
            if not plan.due(now) and not self.draining:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(plan.wait_s(now), self._pump)
                return
            parts = [self._queue.popleft() for _ in range(plan.count)]
            self._series.queued_requests.set(len(self._queue))
            try:
                self._dispatch(parts, free)
            except Exception as error:  # a bug here must fail its requests, not hang them
                log.exception("dispatching a batch of %s failed", self.name)
                for part in parts:
                    self._fail(part.request, RequestError(f"internal error: {error}", status=500))

    def _dispatch(self, parts: list[Part], free: list[tuple[_Kind, Worker]]) -> None:
        """Send `parts` as one batch to the free worker (of `free`) predicted to finish first."""
        batch = Rows.concat([p.batch() for p in parts])
        now = time.monotonic()
        if len(free) == 1:
            kind, worker = free[0]
        else:
            loads = [
                router.ExecutorLoad(
                    w.name, k.latency if k.latency is not None else self.latency, w.alive
                )
                for k, w in free
            ]
            kind, worker = free[router.route(len(batch), loads)]
        series = self._series
        series.of_kind(kind.spec.kind)[0].inc()
        series.batch_rows.observe(len(batch))
        series.batch_requests.observe(len(parts))
        for part in parts:
            series.queue_latency.observe(now - part.arrival)
        # Counters before the batch (an inline lane is done before `run` returns).
        before = (worker.stats.busy_s, worker.stats.cache)
        self._running_batches += 1
        result = worker.run(batch, parallel=parts[0].split)
        if result.done():  # computed inline: answer now, not a loop iteration later
            self._done(parts, kind, worker, before, result)
        else:
            done = functools.partial(self._done, parts, kind, worker, before)
            result.add_done_callback(done)

    def _done(
        self,
        parts: list[Part],
        kind: _Kind,
        worker: Worker,
        before: tuple[float, CacheCounts],
        result: asyncio.Future[np.ndarray],
    ) -> None:
        """A batch's outcome: scores to each part, or a retry (its worker died) or an error."""
        self._running_batches -= 1
        busy = max(0.0, worker.stats.busy_s - before[0])
        self._series.of_kind(kind.spec.kind)[1].inc(busy)
        if worker.stats.cache is not before[1]:
            self._series.count_part_cache(worker.stats.cache - before[1])
        cancelled = result.cancelled()
        error = WorkerDiedError("its batch was cancelled") if cancelled else result.exception()
        if isinstance(error, WorkerDiedError):
            retry = [p for p in parts if p.attempts < RETRIES]
            for part in parts:
                if part.attempts >= RETRIES:
                    message = f"{error}; retried once already"
                    self._fail(part.request, UnavailableError(message, status=503))
            for part in reversed(retry):
                part.attempts += 1
                self._queue.appendleft(part)
            if retry:
                self.metrics.retried.labels(self.model.name).inc()
        elif error is not None:
            for part in parts:
                self._fail(part.request, RequestError(str(error), status=500))
        else:
            scores, start = result.result(), 0
            for part in parts:
                queue.deliver(part, scores[start : start + part.rows])
                start += part.rows
        self._pump()  # the worker is free again

    def _fail(self, request: Request, error: RequestError) -> None:
        if queue.fail(request, error):
            self.metrics.failed.labels(self.model.name, type(error).__name__).inc()

    # scaling: serve/scaling.py runs the loop; these are what it reads and does -------------

    @property
    def elastic_kind(self) -> _Kind | None:
        """The kind the autoscaler sizes: worker processes with no fixed count."""
        return next((k for k in self.kinds if k.elastic), None)

    def queue_load(self, now: float) -> tuple[int, float]:
        """(requests queued, how long the oldest has waited in s)."""
        return len(self._queue), (now - self._queue[0].arrival) if self._queue else 0.0

    async def scale_to(self, kind: _Kind, target: int) -> None:
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
