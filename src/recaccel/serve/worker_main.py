"""The worker process's side: load the executor, report, then score batches until told to stop.

`WorkerProcess` (workers.py) spawns `worker_main` and drives it from the server's event loop;
this module is all that runs in the child. The child ignores SIGINT and SIGTERM (the server
drains first, then tells it to stop) and ends as soon as the server's process ends, however it
ends, so a killed server leaves no orphans.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from recaccel.data.rows import Rows
from recaccel.runtime.part_cache import NO_COUNTS, CacheCounts
from recaccel.serve import ipc
from recaccel.serve.heap import freeze_long_lived_heap
from recaccel.serve.worker_spec import WorkerInfo, WorkerSpec, startup_latency, with_part_cache


def _exit_with_parent() -> None:
    """End this process when the server's process ends, however it ends (kill -9 included).

    The task queue cannot tell: the worker holds a copy of its write end, so reading never
    sees EOF. The parent's process sentinel can.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_main(spec: WorkerSpec, tasks: Connection, results: Connection) -> None:
    """The worker process: load, report, then score batches until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    from recaccel.runtime.executor import load_executor

    tasks_fd, results_fd = tasks.fileno(), results.fileno()
    try:
        start = time.perf_counter()
        executor = load_executor(spec.artifact, spec.config, spec.calibration)
        with_part_cache(executor, spec.part_cache)
        latency = startup_latency(executor, executor.schema, spec.startup_batches)
        info = WorkerInfo(executor.describe(), latency, time.perf_counter() - start)
    except Exception as error:  # reported to the server, which names it in its start-up error
        ipc.send(results_fd, ("failed", f"{type(error).__name__}: {error}"))
        return
    freeze_long_lived_heap()  # the model and torch's state: off every full collection
    ipc.send(results_fd, ("ready", info))
    while True:
        try:
            task = ipc.receive(tasks_fd)
        except (EOFError, OSError):
            return  # the server is gone
        if task is None:
            return
        batch_id, dense, categorical, multi_hot, requests = task
        start = time.perf_counter()
        try:
            rows = Rows(dense, categorical, multi_hot, requests)
            scores, counts = executor.run_counted(rows)
            # No cache, nothing to send (NO_COUNTS would arrive as a new object anyway).
            outcome: tuple[str, Any, CacheCounts | None] = (
                "ok", scores, None if counts is NO_COUNTS else counts,
            )  # fmt: skip
        except Exception as error:
            outcome = ("error", f"{type(error).__name__}: {error}", None)
        busy_s = time.perf_counter() - start
        try:
            ipc.send(results_fd, (batch_id, *outcome, busy_s))
        except OSError:
            return
