"""`recaccel serve` against the same artifact deployed on Ray Serve, under the same load and SLO.

For each deployment in turn: start it on this machine, warm it up, find the highest
Server-scenario QPS whose p99 stays within the bound (MLPerf LoadGen through
`recaccel.bench.loadgen.find_max_qps`, the rank workload of scripts/serve_max_qps.py: /v1/rank
requests of lognormal candidate counts, median 100, p99 about 1,000), then stop it. One serving
config for all: the same executor, workers 1..2 (Ray: replicas 1..2), SLO, admission.

    .venv/bin/python scripts/compare_ray.py --p99-ms 50 \
        --deployments serve,ray,ray-python-proxy artifacts/dlrm-heavy-optimized/02-prune-1

Deployments:
    serve            `recaccel serve ARTIFACT` (uvicorn + worker processes)
    ray              `recaccel deploy ray` as it runs without --address: HAProxy in front of
                     replicas that take HTTP themselves (RAY_SERVE_ENABLE_HA_PROXY=1, Ray
                     2.55+), each running recaccel's app and batcher over one worker process
    ray-serve-batch  the alternative measured for the choice: replicas with the same app
                     (create_app) whose executor runs in the replica's own process, batched
                     by Serve's `@serve.batch` (defined here, on serve/'s internals)
    …-python-proxy   the same behind Serve's default Python proxy instead of HAProxy

The Ray cluster is `ray start --head` on loopback with as many CPUs as the machine has, started
and stopped around its runs (recaccel.deploy.ray_cluster). Server CPU is the whole Ray process
tree's (daemons, controller, proxy, replicas). Machines here are shared: with --rounds 2 the
deployments run A B A B, so drift shows as the spread between rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import serve

from recaccel.bench.loadgen import find_max_qps
from recaccel.bench.scenario_result import ScenarioResult
from recaccel.bench.search import SearchPolicy
from recaccel.bench.workload import RankWorkload
from recaccel.data.dataset import FeatureBatch
from recaccel.data.registry import DatasetOptions, load_dataset
from recaccel.defaults import DEFAULT_SLO_P99_MS
from recaccel.deploy.ray_cluster import HAPROXY_ENV, free_ports, local_ray_cluster
from recaccel.deploy.ray_serve import RayOptions, deploy_ray, import_serve
from recaccel.deploy.ray_settings import ray_serve_settings
from recaccel.runtime.executor import load_executor
from recaccel.serve.app import create_app
from recaccel.serve.config import ServeConfig, load_serve_config
from recaccel.serve.deployment import Deployment, ModelVersion
from recaccel.serve.errors import UnavailableError
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.repository import ModelRepository
from recaccel.serve.server import feature_store_for

DEPLOYMENTS = (
    "serve",
    "ray",
    "ray-serve-batch",
    "ray-python-proxy",
    "ray-serve-batch-python-proxy",
)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not become ready")


def warm_up(url: str, bodies: list[bytes], count: int = 50) -> None:
    for body in bodies[:count]:
        request = urllib.request.Request(
            f"{url}/v1/rank", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()


@contextlib.contextmanager
def serve_process(
    artifact: Path, config_file: Path | None, p99_ms: float, port: int
) -> Iterator[tuple[str, int]]:
    command = [sys.executable, "-m", "recaccel.cli", "serve", str(artifact),
               "--slo-ms", str(p99_ms), "--port", str(port)]  # fmt: skip
    if config_file is not None:
        command += ["--config", str(config_file)]
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
        yield url, server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def ray_deployment(
    artifact: Path, config: ServeConfig, port: int, serve_batch: bool, haproxy: bool
) -> Iterator[tuple[str, int]]:
    import ray

    with local_ray_cluster(os.cpu_count() or 2, HAPROXY_ENV if haproxy else None) as cluster:
        try:
            ray_config = dataclasses.replace(
                config, server=dataclasses.replace(config.server, port=port)
            )
            if serve_batch:
                url = deploy_serve_batch(artifact, ray_config, cluster.address)
            else:
                url = deploy_ray(artifact, ray_config, RayOptions(address=cluster.address))
            wait_ready(url, None)
            yield url, cluster.process.pid
        finally:
            with contextlib.suppress(Exception):
                ray.shutdown()


# --- the @serve.batch alternative ------------------------------------------------------------


class InProcessDeployment(Deployment):
    """A model version whose executor runs in the replica's own process, its calls merged by
    Serve's `@serve.batch` (up to max_batch_size requests, no waiting: work-conserving, as
    recaccel's batcher is by default). Same routes, codec and feature store as `recaccel
    serve` (create_app); what differs is the batching, and no worker process: admission is
    left to Ray's queue limit."""

    async def start(self) -> None:
        config = self.kinds[0].spec.config
        self.executor = await asyncio.to_thread(load_executor, self.model.artifact, config)
        self.ready = True

    async def drain(self, timeout_s: float = 30.0) -> None:
        self.draining, self.ready = True, False
        self.executor.close()

    async def score(self, batch: FeatureBatch, deadline: float, priority: int = 0) -> np.ndarray:
        if not self.ready:
            raise UnavailableError(f"model {self.name} is not serving")
        result: np.ndarray = await self._batched(batch)
        return result

    @serve.batch(max_batch_size=20, batch_wait_timeout_s=0.0)  # size set per deployment
    async def _batched(self, batches: list[FeatureBatch]) -> list[np.ndarray]:
        merged = FeatureBatch(
            torch.cat([b.dense for b in batches]),
            torch.cat([b.categorical for b in batches]),
            torch.cat([b.multi_hot for b in batches]),
        )
        scores = await asyncio.to_thread(self.executor.run, merged)
        out, start = [], 0
        for b in batches:
            out.append(scores[start : start + len(b)])
            start += len(b)
        return out

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "ready": self.ready}


class InProcessRepository(ModelRepository):
    max_batch: int = 20

    async def _start(self, name: str, artifact: Path, version: str) -> Deployment:
        deployment = InProcessDeployment(
            ModelVersion(name, version, artifact), self.config, self.metrics, self.profile
        )
        deployment._batched.set_max_batch_size(self.max_batch)
        await deployment.start()
        self._models.setdefault(name, {})[version] = deployment
        return deployment


class BatchedReplica:
    def __init__(self, artifact: str, config: ServeConfig, features: Any, max_batch: int) -> None:
        metrics = ServerMetrics()
        repository = InProcessRepository(config, metrics, {"ranker": Path(artifact)}, features)
        repository.max_batch = max_batch
        self._app = create_app(repository, config, metrics)

    def __serve_build_asgi_app__(self) -> Any:
        return self._app


def deploy_serve_batch(artifact: Path, config: ServeConfig, address: str) -> str:
    import ray

    serve = import_serve()
    settings = ray_serve_settings(config)
    features = feature_store_for(artifact, config.rank.max_candidates)
    deployment = serve.deployment(
        serve.ingress()(BatchedReplica),
        name="BatchedReplica",
        logging_config={"enable_access_log": False},
        **settings.deployment_options(),
    )
    max_batch = max(1, settings.max_ongoing_requests // 2)
    ray.init(address=address, log_to_driver=False)
    host, port = config.server.host, config.server.port
    serve.start(http_options={"host": host, "port": port})
    serve.run(
        deployment.bind(str(artifact.resolve()), config, features, max_batch),
        name="recaccel",
        route_prefix="/",
    )
    return f"http://{host}:{port}"


# --- the comparison ----------------------------------------------------------------------------


def show(name: str, run: ScenarioResult) -> None:
    lg, books = run.loadgen, run.sut.books
    cpu = run.server_cpu_s_per_1k
    print(
        f"{name:16s} target {run.target_qps:7.1f} QPS  {'VALID  ' if lg.valid else 'INVALID'}"
        f"  completed {lg.completed_qps:7.1f}  p50 {lg.latency.ms('50.00'):6.2f} ms"
        f"  p99 {lg.latency.ms('99.00'):7.2f} ms  rejected {books.rejected}  failed {books.failed}"
        + (f"  server CPU {cpu:.2f} s/1k" if cpu is not None else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--deployments", default="serve,ray", help=", ".join(DEPLOYMENTS))
    parser.add_argument("--p99-ms", type=float, default=DEFAULT_SLO_P99_MS)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--start-qps", type=float, default=50.0)
    parser.add_argument("--max-runs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--config", type=Path, help="serving config for every deployment")
    parser.add_argument("--out", type=Path, default=Path("/tmp/recaccel-compare-ray"))
    args = parser.parse_args()
    names = [n.strip() for n in args.deployments.split(",") if n.strip()]
    unknown = set(names) - set(DEPLOYMENTS)
    if unknown:
        raise SystemExit(f"unknown deployments {sorted(unknown)}; choose from {DEPLOYMENTS}")

    overrides = {"slo": {"p99_ms": args.p99_ms}}
    config = load_serve_config(args.config, overrides)
    dataset = load_dataset("movielens-100k", DatasetOptions(progress=False))
    workload = RankWorkload.from_dataset(dataset, n_samples=20_000, seed=0)
    print("candidates per request:", workload.stats(), flush=True)
    print("serving config:", json.dumps(config.to_dict()), flush=True)
    policy = SearchPolicy(start_qps=args.start_qps, growth=2, rel_tol=0.1, max_runs=args.max_runs)
    results: dict[str, list[float | None]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names:
            [port] = free_ports(1)
            if name == "serve":
                context = serve_process(args.artifact, args.config, args.p99_ms, port)
            else:
                serve_batch = name.startswith("ray-serve-batch")
                haproxy = not name.endswith("-python-proxy")
                context = ray_deployment(args.artifact, config, port, serve_batch, haproxy)
            with context as (url, pid):
                warm_up(url, list(workload.bodies))
                found = find_max_qps(
                    url,
                    workload,
                    latency_p99_ms=args.p99_ms,
                    duration_s=args.duration_s,
                    out_dir=args.out / f"round-{round_}" / name,
                    policy=policy,
                    server_pid=pid,
                    progress=lambda run, name=name: show(name, run),
                )
            best = None if found.best is None else found.best[0]
            results[name].append(best)
            print(f"{name}: highest QPS within p99 <= {args.p99_ms:g} ms: {best}", flush=True)
    print(json.dumps({"p99_ms": args.p99_ms, "max_qps": results}, indent=2))


if __name__ == "__main__":
    main()
