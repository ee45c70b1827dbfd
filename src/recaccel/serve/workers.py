"""Worker processes: each loads one executor and scores the batches it is sent.

Executors run in separate processes so the GIL does not cap throughput: the server process
decodes requests and forms batches while every worker computes on its own core(s). A worker
is started with `WorkerProcess.start`, answers `await worker.ready()` with what it runs and a
startup latency model, then scores `await worker.run(batch)` calls in the order sent.

This module is the server's handle on a worker; what runs in the child is worker_main.py, and
what a worker runs and reports (`WorkerSpec`, `WorkerInfo`) is worker_spec.py, shared with
in-process lanes.

Plumbing, and why each piece:
- Batches go to the worker, and scores come back, as length-prefixed pickles over two pipes
  (ipc.py). The event loop writes a task itself without ever blocking (a 1,000-row batch larger
  than the pipe buffer waits in a buffer the loop flushes as the worker reads) and reads results
  when their pipe is readable: no feeder or reader thread, so no GIL hand-off and no
  `call_soon_threadsafe` on the request path (ipc.py says what that cost).
- The loop also watches the worker's process sentinel: a worker that dies (kill -9, out of
  memory, a segfault in a native kernel) is noticed at once, and every batch it held fails
  with `WorkerDiedError` instead of hanging — the caller retries it elsewhere.
- A worker that hangs (a native kernel stuck, a deadlock) is not dead, so no sentinel fires: a
  watchdog kills a worker that has held a batch `hang_timeout_s` (`plane.hang_timeout_s`),
  and the death path above retries what it held. A thread of the front (an in-process lane)
  cannot be killed alone: its front is (plane/front.py).
- Workers ignore SIGINT and SIGTERM: the server receives those and drains first; a worker ends
  when told to, or as soon as the server's process ends, however it ends (a watcher thread
  waits on the parent's process sentinel), so a killed server leaves no orphans.
- The "spawn" start method: a forked child would inherit the server's event loop, threads and
  torch's thread pools in whatever state they were in.

Latency model at start: the worker times its executor on all-zero batches of a few sizes
after loading (worker_spec.startup_latency), so a server started without a profile still has a
model to batch and route by; `recaccel profile` measures on real rows and is preferred when
given.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from recaccel.data.rows import Rows
from recaccel.errors import RecaccelError
from recaccel.runtime.part_cache import NO_COUNTS, CacheCounts
from recaccel.serve import ipc
from recaccel.serve.config import PlaneSection
from recaccel.serve.worker_main import worker_main
from recaccel.serve.worker_spec import WorkerInfo, WorkerSpec

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0  # an ONNX export or a compile on a busy 2-core machine takes a while
STOP_TIMEOUT_S = 10.0


class WorkerDiedError(RecaccelError):
    """The worker process ended while it held the batch."""


class WorkerFailedError(RecaccelError):
    """The worker's executor raised on the batch (the worker itself lives on)."""


_ids = itertools.count()


@dataclass
class _Pending:
    future: asyncio.Future[np.ndarray]
    rows: int
    sent_s: float  # time.monotonic() when it was sent


def hung_for(sent: list[float], now: float, timeout_s: float) -> tuple[bool, float]:
    """(whether the oldest batch of those sent at `sent` has been held `timeout_s` or more,
    seconds until it would be): the watchdog's decision."""
    if not sent:
        return False, timeout_s
    held = now - min(sent)
    return held >= timeout_s, max(0.0, timeout_s - held)


@dataclass
class WorkerStats:
    """Counters the autoscaler and /metrics read; updated on the event loop."""

    batches: int = 0
    rows: int = 0
    busy_s: float = 0.0
    failures: int = 0
    cache: CacheCounts = NO_COUNTS  # what the request-part cache did, summed


class WorkerProcess:
    """One worker process, driven from the server's event loop (see the module docstring)."""

    def __init__(
        self, spec: WorkerSpec, name: str, hang_timeout_s: float = PlaneSection.hang_timeout_s
    ) -> None:
        self.spec = spec
        self.name = name
        self.hang_timeout_s = hang_timeout_s
        self._watchdog: asyncio.TimerHandle | None = None
        self.info: WorkerInfo | None = None
        self.stats = WorkerStats()
        self.on_exit: Callable[[WorkerProcess], None] | None = None
        self._context = multiprocessing.get_context("spawn")
        self._tasks: ipc.NonBlockingWriter | None = None
        self._results_fd: int | None = None
        self._decoder = ipc.FrameDecoder()
        self._pending: dict[int, _Pending] = {}
        self._ready: asyncio.Future[WorkerInfo] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: Any = None
        self._stopping = False
        self.alive = False

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        task_reader, task_writer = self._context.Pipe(duplex=False)
        result_reader, result_writer = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=worker_main,
            args=(self.spec, task_reader, result_writer),
            name=f"recaccel-worker-{self.name}",
            daemon=True,
        )
        self._process.start()
        # Only the worker reads tasks and writes results: closing our copies of its ends is
        # what lets its death show up as EOF. Our ends become plain fds the loop watches.
        task_reader.close()
        result_writer.close()
        self._tasks = ipc.NonBlockingWriter(_take_fd(task_writer), self._loop)
        self._results_fd = _take_fd(result_reader)
        os.set_blocking(self._results_fd, False)
        self._loop.add_reader(self._results_fd, self._on_results)
        self._loop.add_reader(self._process.sentinel, self._on_exit)
        self.alive = True

    async def ready(self, timeout_s: float = READY_TIMEOUT_S) -> WorkerInfo:
        assert self._ready is not None, "start() first"
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            self.kill()
            raise WorkerFailedError(
                f"worker {self.name} ({self.spec.kind}) did not load within {timeout_s:.0f} s",
                "check the artifact loads with `recaccel inspect`, or raise the start timeout",
            ) from None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    @property
    def in_flight_rows(self) -> int:
        return sum(p.rows for p in self._pending.values())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S, wait_s: float | None = None) -> None:
        """Finish what was sent, then end the process (killed if it does not end in time).

        `wait_s`: the longest to wait for what was sent (None: as long as it takes; the hang
        watchdog bounds that). Past it the process is killed, and its death fails what it held
        with WorkerDiedError."""
        self._stopping = True
        if self._pending:
            held = [asyncio.ensure_future(p.future) for p in self._pending.values()]
            await asyncio.wait(held, timeout=wait_s)
            if not all(f.done() for f in held):
                self.kill()
                await asyncio.wait(held, timeout=timeout_s)
        if self.alive:
            self._send(None)
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, timeout_s)
        if self._process.is_alive():
            self.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    # scoring -------------------------------------------------------------------------------

    def run(self, batch: Rows, parallel: bool = False) -> asyncio.Future[np.ndarray]:
        """Send `batch`; the future resolves to its scores, or fails with WorkerDiedError
        (the process ended) or WorkerFailedError (the executor raised). A worker always runs
        beside the server, so `parallel` (see InProcessLane.run) changes nothing here."""
        assert self._loop is not None
        future: asyncio.Future[np.ndarray] = self._loop.create_future()
        if not self.alive or self._stopping:
            future.set_exception(WorkerDiedError(f"worker {self.name} is not accepting work"))
            return future
        batch_id = next(_ids)
        self._pending[batch_id] = _Pending(future, len(batch), time.monotonic())
        self._send((batch_id, *batch.as_tuple(), batch.requests))
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self.hang_timeout_s, self._check_hung)
        return future

    def _check_hung(self) -> None:
        """Kill the worker if it has held a batch too long; else look again when it would
        have. Armed while batches are out, so an idle worker costs no wake-ups."""
        assert self._loop is not None
        self._watchdog = None
        sent = [p.sent_s for p in self._pending.values()]
        hung, wait_s = hung_for(sent, time.monotonic(), self.hang_timeout_s)
        if hung:
            log.error(
                "worker %s (pid %s) has held a batch for %.1f s (plane.hang_timeout_s): "
                "killing it as hung; what it held is retried",
                self.name, self.pid, time.monotonic() - min(sent),
            )  # fmt: skip
            self.kill()
        elif sent:
            self._watchdog = self._loop.call_later(wait_s, self._check_hung)

    def _send(self, message: Any) -> None:
        assert self._tasks is not None
        with contextlib.suppress(OSError):  # the worker is gone: its sentinel fails the batch
            self._tasks.write(ipc.frame(message))

    # results, read on the event loop ----------------------------------------------------

    def _on_results(self) -> None:
        """The results pipe is readable: deliver every message that is complete."""
        assert self._results_fd is not None
        try:
            chunk = os.read(self._results_fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # EOF: the worker closed its end, so it is ending
            self._loop_remove_reader(self._results_fd)
            return
        for message in self._decoder.feed(chunk):
            self._deliver(message)

    def _on_exit(self) -> None:
        """The process ended: read what it sent before it did, then fail what it held."""
        assert self._process is not None and self._results_fd is not None
        self._loop_remove_reader(self._process.sentinel)
        with contextlib.suppress(OSError):
            while chunk := os.read(self._results_fd, 1 << 20):
                for message in self._decoder.feed(chunk):
                    self._deliver(message)
        self._loop_remove_reader(self._results_fd)
        os.close(self._results_fd)
        if self._tasks is not None:
            self._tasks.close()
        self._died()

    def _loop_remove_reader(self, fd: int) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # a closed loop or fd
            self._loop.remove_reader(fd)

    def _deliver(self, message: tuple[Any, ...]) -> None:
        assert self._ready is not None
        if message[0] == "ready":
            self.info = message[1]
            if not self._ready.done():
                self._ready.set_result(message[1])
            return
        if message[0] == "failed":
            if not self._ready.done():
                self._ready.set_exception(
                    WorkerFailedError(
                        f"worker {self.name} could not load {self.spec.artifact} on "
                        f"{self.spec.kind}: {message[1]}"
                    )
                )
            return
        batch_id, status, payload, cache, busy_s = message
        pending = self._pending.pop(batch_id, None)
        self.stats.busy_s += busy_s
        if cache is not None:
            self.stats.cache += cache
        if pending is None or pending.future.done():
            return
        if status == "ok":
            self.stats.batches += 1
            self.stats.rows += pending.rows
            pending.future.set_result(payload)
        else:
            self.stats.failures += 1
            pending.future.set_exception(WorkerFailedError(f"worker {self.name}: {payload}"))

    def _died(self) -> None:
        was_alive, self.alive = self.alive, False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        code = self._process.exitcode if self._process is not None else None
        error = WorkerDiedError(f"worker {self.name} (pid {self.pid}) exited with code {code}")
        assert self._ready is not None
        if not self._ready.done():
            self._ready.set_exception(error)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
        if was_alive and not self._stopping:
            log.warning("worker %s died (exit code %s)", self.name, code)
        if self.on_exit is not None:
            self.on_exit(self)


def _take_fd(connection: Connection) -> int:
    """The fd of `connection` as our own (a duplicate), the Connection closed."""
    fd = os.dup(connection.fileno())
    connection.close()
    return fd
