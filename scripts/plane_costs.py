"""What the serving plane's request path costs, in process, without HTTP: the figures in
docs/serving-plane.md and results/serving-plane.md.

    .venv/bin/python scripts/plane_costs.py artifacts/dlrm-heavy-optimized/02-prune-1 \
        [--backend torch-aot]

Four measurements, each interleaved over rounds and reported as medians:

0. runtimes: `Executor.run` on each CPU backend at 1, 10, 100 and 1,000 rows from the feature
   store (one thread each);
1. hand-offs: an empty call on a one-thread pool and back (`run_in_executor`), against
   `Executor.run` inline and on a lane's thread, on a 100-row batch from the feature store;
2. apps: the hand-written server's ASGI app (scripts/peers/handwritten_server.py) against
   recaccel's lean ASGI app and its fast lane's endpoint (what `recaccel serve` runs for
   /v1/rank), driven with the workload's /v1/rank bodies;
3. stages: recaccel's fast-lane path with each stage wrapped in a timer.

CPU time is the process's (`time.process_time`); the machine's speed drifts, so only the
figures of one run compare.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import functools
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _median_us(rounds: Sequence[float]) -> str:
    return f"{statistics.median(rounds):7.1f} µs (min {min(rounds):.1f})"


RUNTIME_ROWS = (1, 10, 100, 1000)
RUNTIMES = ("onnxruntime", "openvino", "torch-compile", "torch-aot")


def runtimes(artifact: Path, calls: int = 100, rounds: int = 5) -> None:
    from recaccel.runtime.executor import ExecutorConfig, load_executor
    from recaccel.serve.server import feature_store_for

    store = feature_store_for(artifact, 10_000)
    assert store is not None
    executors = {name: load_executor(artifact, ExecutorConfig(name)) for name in RUNTIMES}
    print(f"  {'rows':>5s} " + " ".join(f"{name:>14s}" for name in RUNTIMES) + "  (µs per call)")
    for n in RUNTIME_ROWS:
        rows, _ = store.rows(5, store.catalogue[:n])
        found: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(rounds):
            for name, executor in executors.items():
                executor.run(rows)
                start = time.process_time()
                for _ in range(calls):
                    executor.run(rows)
                found[name].append(_per(start, calls))
        print(f"  {n:5d} " + " ".join(f"{statistics.median(found[k]):14.1f}" for k in RUNTIMES))
    for executor in executors.values():
        executor.close()


def handoffs(artifact: Path, calls: int = 2000) -> None:
    from recaccel.runtime.executor import ExecutorConfig, load_executor
    from recaccel.serve.plane.inproc import InProcessLane, SharedExecutor
    from recaccel.serve.server import feature_store_for

    store = feature_store_for(artifact, 10_000)
    assert store is not None
    rows, _ = store.rows(5, store.catalogue[:100])
    executor = load_executor(artifact, ExecutorConfig("onnxruntime"))

    async def main() -> dict[str, list[float]]:
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        lane = InProcessLane(SharedExecutor(executor), "lane")  # no latency: the thread
        found: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(5):
            start = time.process_time()
            for _ in range(calls):
                await loop.run_in_executor(pool, int, 1)
            found["empty call on a thread and back"].append(_per(start, calls))
            start = time.process_time()
            for _ in range(calls):
                executor.run(rows)
            found["Executor.run, 100 rows, inline"].append(_per(start, calls))
            start = time.process_time()
            for _ in range(calls):
                await lane.run(rows)
            found["the same on a lane's thread"].append(_per(start, calls))
        return found

    for name, rounds in asyncio.run(main()).items():
        print(f"  {name:34s} {_median_us(rounds)} CPU per call")


def _per(start: float, count: int) -> float:
    return (time.process_time() - start) / count * 1e6


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/rank", "raw_path": b"/v1/rank", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip


async def _call(app: Any, body: bytes) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(body), receive, send)
    assert statuses == [200], statuses


async def _call_fast(endpoint: Any, body: bytes) -> None:
    """One request through the fast lane's endpoint (plane/fast_http.py), as the protocol
    calls it, awaited until it answers."""
    answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    endpoint(body, b"", lambda status, headers, answer: answered.set_result(status))
    status = await answered
    assert status == 200, status


def _recaccel_app(artifact: Path, backend: str) -> Any:
    from recaccel.serve.config import load_serve_config
    from recaccel.serve.server import build_app, feature_store_for

    workers = {"executors": [{"backend": backend}]}
    config = load_serve_config(None, {"plane": {"processes": 1}, "workers": workers})
    return build_app({"ranker": artifact}, config, None, feature_store_for(artifact, 10_000))


async def _started(app: Any) -> Callable[[], Any]:
    """Run `app`'s lifespan startup; the returned coroutine function shuts it down."""
    started, queue = asyncio.Event(), asyncio.Queue[dict[str, str]]()
    await queue.put({"type": "lifespan.startup"})

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    task = asyncio.create_task(app({"type": "lifespan", "state": {}}, queue.get, send))
    await started.wait()

    async def stop() -> None:
        await queue.put({"type": "lifespan.shutdown"})
        await task

    return stop


def apps(artifact: Path, backend: str, bodies: Sequence[bytes], per_round: int = 300) -> None:
    os.environ["PEER_ONNX"] = glob.glob(str(artifact / "onnx" / "*-fp32" / "model.onnx"))[0]
    sys.path.insert(0, str(HERE / "peers"))
    import handwritten_server  # type: ignore[import-not-found]

    from recaccel.serve.app import fast_rank, lean_app

    app = _recaccel_app(artifact, backend)

    async def main() -> dict[str, list[float]]:
        stop = await _started(app)
        targets = {"hand-written (Starlette + ORT)": (_call, handwritten_server.app)}
        targets[f"recaccel ({backend}), ASGI"] = (_call, lean_app(app))
        targets[f"recaccel ({backend}), fast lane"] = (_call_fast, fast_rank(app))
        found: dict[str, list[float]] = collections.defaultdict(list)
        for r in range(9):
            for name, (call, target) in targets.items():
                start = time.process_time()
                for i in range(per_round):
                    await call(target, bodies[(r * per_round + i) % len(bodies)])
                found[name].append(_per(start, per_round))
        await stop()
        return found

    for name, rounds in asyncio.run(main()).items():
        print(f"  {name:34s} {_median_us(rounds)} CPU per request")


def stages(artifact: Path, backend: str, bodies: Sequence[bytes], count: int = 3000) -> None:
    from recaccel.runtime import executor as executor_module
    from recaccel.serve import deployment, features, rank, rank_route
    from recaccel.serve.app import fast_rank

    spent: collections.Counter[str] = collections.Counter()

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    rank_route.parse_rank_request = timed("body check", rank.parse_rank_request)  # type: ignore[assignment]
    rank_route.answer_body = timed("top-k and answer", rank.answer_body)  # type: ignore[assignment]
    store = features.FeatureStore
    store.rows = timed("feature rows", store.rows)  # type: ignore[method-assign]
    executor_module.Executor.run = timed("Executor.run (the model)", executor_module.Executor.run)  # type: ignore[method-assign]
    plan = deployment.Deployment
    plan._admit = timed("admission", plan._admit)  # type: ignore[method-assign]
    plan._next_batch = timed("batch plan", plan._next_batch)  # type: ignore[method-assign]
    app = _recaccel_app(artifact, backend)

    async def main() -> float:
        stop = await _started(app)
        lane = fast_rank(app)
        for body in bodies[:300]:
            await _call_fast(lane, body)
        spent.clear()
        start = time.perf_counter()
        for i in range(count):
            await _call_fast(lane, bodies[i % len(bodies)])
        total = time.perf_counter() - start
        await stop()
        return total

    total = asyncio.run(main())
    print(f"  {'whole request (wall)':34s} {total / count * 1e6:7.1f} µs")
    for name, seconds in spent.most_common():
        print(f"  {name:34s} {seconds / count * 1e6:7.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument(
        "--backend", default="onnxruntime", help="recaccel's executor in parts 2 and 3"
    )
    parser.add_argument("--parts", default="0,1,2,3", help="which measurements, e.g. 2,3")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    from recaccel.bench.workload import RankWorkload
    from recaccel.data.registry import DatasetOptions, load_dataset

    dataset = load_dataset("movielens-100k", DatasetOptions(progress=False))
    bodies = RankWorkload.from_dataset(dataset, n_samples=3000, seed=0).bodies
    if 0 in parts:
        print("0. runtimes")
        runtimes(args.artifact)
    if 1 in parts:
        print("1. hand-offs")
        handoffs(args.artifact)
    if 2 in parts:
        print("2. apps, in process, no HTTP")
        apps(args.artifact, args.backend, bodies)
    if 3 in parts:
        print("3. recaccel's stages (one wrapped call each; the model's includes its sigmoid)")
        stages(args.artifact, args.backend, bodies)


if __name__ == "__main__":
    main()
