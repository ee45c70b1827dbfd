"""`recaccel serve` against the same model behind LitServe and MLServer, same load and SLO.

For each stack in turn: start it on this machine, warm it up, find the highest Server-scenario
QPS whose p99 stays within the bound (MLPerf LoadGen through
`recaccel.bench.loadgen.find_max_qps`, the rank workload of scripts/compare_ray.py: /v1/rank
requests of lognormal candidate counts, median 100, p99 about 1,000), then stop it. Every stack
answers `POST /v1/rank` with the workload's bodies (user_id, candidates, k) and recaccel's
answer (`items`, `server_ms`), builds the rows with recaccel's feature store
(`feature_store_for`) and scores them with recaccel's executor (`load_executor`) on the
artifact and ExecutorConfig that `recaccel serve --profile PROFILE --select --slo-ms P99`
selects (printed at start), so the serving stack is the only difference.

    .venv/bin/python scripts/compare_stacks.py --p99-ms 50 --stacks serve,litserve,mlserver \
        artifacts/dlrm-heavy-optimized/02-prune-1

Stacks:
    serve     `recaccel serve --profile PROFILE --select` (uvicorn + up to the selected worker
              processes, recaccel's batcher and admission)
    litserve  LitServe 0.2.19: one API server process, `workers_per_device` = the selected
              worker count of inference processes; LitAPI's own batching (`max_batch_size`,
              `batch_timeout`, with `batch`/`unbatch`); features are built in the inference
              workers' `decode_request`
    mlserver  MLServer 1.7.1: a custom `MLModel` runtime in `parallel_workers` = the selected
              worker count, MLServer's adaptive batching (`max_batch_size`, `max_batch_time`).
              MLServer's REST is the Open Inference Protocol, and its `custom_handler` endpoints
              skip adaptive batching (they call the method directly, one request per call), so
              /v1/rank is a thin adapter added to MLServer's own FastAPI app in its HTTP
              process: it turns the body into an OIP request (user_id, item_id, row per
              candidate, INT64) and calls MLServer's data plane, which batches and dispatches to
              the workers; it answers the top-k of the scores that come back. It needs a
              `candidates` list (the workload always sends one).
    handwritten  the peer to beat (scripts/peers/handwritten_server.py): Starlette + orjson +
              ONNX Runtime, one batch per request, `uvicorn --workers N`
    canned    the wire's ceiling through uvicorn: a canned answer, the request unread
    bare      the canned answer from a bare asyncio protocol, no uvicorn: what the socket and
              the parse alone cost (`canned` minus `bare` is uvicorn's own share)

Batching: both stacks take up to --max-batch-size requests per batch (default: the serving
config's `batching.max_rows` over the workload's median candidate count) and wait at most
--batch-timeout-ms for one to fill (default: the config's `slo.max_queue_delay_ms`, 0, the
work-conserving batching recaccel serves with). `server_ms` in their answers is measured where
each handles the request (LitServe: the inference worker; MLServer: the adapter).

Installation. LitServe coexists with the project's pins: `pip install -e '.[compare]'`.
MLServer 1.7.1 pins fastapi<0.116 and starlette<0.47 (the project runs fastapi 0.165), so it is
never installed into the project's venv: on first use this script creates a clean venv at
~/.cache/recaccel/compare-venvs/mlserver (`python -m venv`, no system site-packages) with
mlserver and uvloop 0.21.0 (see MLSERVER_UVLOOP_PIN), the project's torch/pyarrow/safetensors/
onnx/pyyaml/tqdm at the project venv's versions, and `pip install --no-deps -e` this checkout,
then reuses it while those stay the same. The MLServer server runs as a subprocess from that venv.

Every server runs in its own process group and is stopped with SIGTERM, then SIGKILL, on errors
and Ctrl-C too. With --rounds 2 the stacks run A B C A B C, so drift shows as the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

STACKS = ("serve", "litserve", "mlserver", "handwritten", "canned", "bare")
# The peer to beat and the wire's ceiling (scripts/peers/): uvicorn apps, `--peer-processes`
# processes accepting on one socket.
PEERS = {"handwritten": "handwritten_server:app", "canned": "canned_server:app"}
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MLSERVER_VENV = Path.home() / ".cache" / "recaccel" / "compare-venvs" / "mlserver"
MLSERVER_PIN = "mlserver==1.7.1"
# uvloop 0.22+ no longer makes a loop in `asyncio.get_event_loop()`, which MLServer 1.7.1's
# worker processes call before their loop exists (`Worker._ignore_signals`): they die at start
# with "There is no current event loop". 0.21.0 is the last release that behaves as it expects.
MLSERVER_UVLOOP_PIN = "uvloop==0.21.0"
# What recaccel's feature store and executor import, beyond what mlserver brings.
MLSERVER_EXTRA = ("torch", "pyarrow", "safetensors", "onnx", "pyyaml", "tqdm")
MODEL_NAME = "ranker"
HEALTH = {
    "serve": "/v2/health/ready",
    "litserve": "/health",
    "mlserver": "/v2/models/ranker/ready",
    "handwritten": "/ready",
    "canned": "/ready",
    "bare": "/ready",
}


def top_k(items: np.ndarray, scores: np.ndarray, k: int) -> list[dict[str, float | int]]:
    """The k best (item_id, score), best first: as recaccel's /v1/rank answers them."""
    k = min(k, len(items))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(items) else np.arange(len(items))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [{"item_id": int(items[i]), "score": float(scores[i])} for i in top]


# --- LitServe (runs in the server subprocess, imported as module `compare_stacks`) ------------


@functools.cache
def _litserve_api() -> type:
    import litserve as ls
    import torch

    from recaccel.data.dataset import FeatureBatch
    from recaccel.runtime.executor import ExecutorConfig, load_executor
    from recaccel.serve.server import feature_store_for

    class RankAPI(ls.LitAPI):  # type: ignore[misc]
        def __init__(self, spec: dict[str, Any]) -> None:
            super().__init__(
                max_batch_size=spec["max_batch_size"],
                batch_timeout=spec["batch_timeout_s"],
                api_path="/v1/rank",
            )
            self.options = spec

        def setup(self, device: str) -> None:
            artifact = Path(self.options["artifact"])
            self.store = feature_store_for(artifact, self.options["max_candidates"])
            self.executor = load_executor(artifact, ExecutorConfig(**self.options["executor"]))

        def decode_request(self, request: dict[str, Any]) -> tuple[Any, ...]:
            start = time.perf_counter()
            batch, items = self.store.rows(
                request["user_id"], request.get("candidates"), request.get("features")
            )
            return batch, items, int(request.get("k") or self.options["default_k"]), start

        def batch(self, inputs: list[tuple[Any, ...]]) -> tuple[Any, list[tuple[Any, ...]]]:
            merged = FeatureBatch(
                torch.cat([i[0].dense for i in inputs]),
                torch.cat([i[0].categorical for i in inputs]),
                torch.cat([i[0].multi_hot for i in inputs]),
            )
            return merged, inputs

        def predict(self, x: tuple[Any, list[tuple[Any, ...]]]) -> tuple[np.ndarray, list[Any]]:
            merged, inputs = x
            return self.executor.run(merged), inputs

        def unbatch(self, output: tuple[np.ndarray, list[Any]]) -> list[tuple[Any, ...]]:
            scores, inputs = output
            out, at = [], 0
            for batch, items, k, start in inputs:
                out.append((items, scores[at : at + len(batch)], k, start))
                at += len(batch)
            return out

        def encode_response(self, output: tuple[Any, ...]) -> dict[str, Any]:
            items, scores, k, start = output
            return {
                "model": MODEL_NAME,
                "items": top_k(items, scores, k),
                "candidates": len(items),
                "server_ms": round((time.perf_counter() - start) * 1e3, 3),
            }

    # LitServe reads decode_request's and encode_response's annotations as FastAPI types; here
    # they are strings (postponed annotations): without them it passes the parsed JSON body.
    RankAPI.decode_request.__annotations__.clear()
    RankAPI.encode_response.__annotations__.clear()
    RankAPI.__module__, RankAPI.__qualname__ = __name__, "RankAPI"
    return RankAPI


def run_litserve(spec: dict[str, Any]) -> None:
    import litserve as ls

    api = _litserve_api()(spec)
    server = ls.LitServer(
        api, accelerator="cpu", devices=1, workers_per_device=spec["workers"], timeout=30
    )
    server.run(
        host="127.0.0.1",
        port=spec["port"],
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


# --- MLServer (runs in its own venv, imported as module `compare_stacks`) ---------------------


@functools.cache
def _mlserver_runtime() -> type:
    import torch
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse

    from recaccel.data.dataset import FeatureBatch
    from recaccel.runtime.executor import ExecutorConfig, load_executor
    from recaccel.serve.server import feature_store_for

    class RankRuntime(MLModel):  # type: ignore[misc]
        """Scores OIP requests of one row per candidate (user_id, item_id, row: the position
        in its request, so requests merged by adaptive batching can be told apart)."""

        async def load(self) -> bool:
            spec = self.settings.parameters.extra
            artifact = Path(spec["artifact"])
            self.store = feature_store_for(artifact, spec["max_candidates"])
            self.executor = load_executor(artifact, ExecutorConfig(**spec["executor"]))
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            inputs = {i.name: NumpyCodec.decode_input(i).reshape(-1) for i in payload.inputs}
            users, items, rows = inputs["user_id"], inputs["item_id"], inputs["row"]
            starts = [*np.flatnonzero(rows == 0).tolist(), len(rows)]
            batches = [
                self.store.rows(int(users[a]), items[a:b])[0] for a, b in itertools.pairwise(starts)
            ]
            merged = FeatureBatch(
                torch.cat([b.dense for b in batches]),
                torch.cat([b.categorical for b in batches]),
                torch.cat([b.multi_hot for b in batches]),
            )
            scores = self.executor.run(merged)
            return InferenceResponse(
                model_name=self.name, outputs=[NumpyCodec.encode_output("score", scores)]
            )

    RankRuntime.__module__, RankRuntime.__qualname__ = __name__, "RankRuntime"
    return RankRuntime


def __getattr__(name: str) -> Any:
    """`compare_stacks.RankRuntime` / `.RankAPI` for MLServer's import string and pickling,
    defined only where the stack is installed."""
    if name == "RankRuntime":
        return _mlserver_runtime()
    if name == "RankAPI":
        return _litserve_api()
    raise AttributeError(name)


def run_mlserver(spec: dict[str, Any]) -> None:
    import asyncio

    import orjson
    from fastapi import Request, Response
    from mlserver import MLServer
    from mlserver.settings import ModelParameters, ModelSettings, Settings
    from mlserver.types import InferenceRequest, RequestInput

    http_port, grpc_port, metrics_port = spec["port"], spec["grpc_port"], spec["metrics_port"]
    settings = Settings(
        host="127.0.0.1",
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        parallel_workers=spec["workers"],
        debug=False,
        # Its Prometheus multiprocess files, out of the checkout (default: ./.metrics).
        metrics_dir=tempfile.mkdtemp(prefix="mlserver-metrics-"),
    )
    model = ModelSettings(
        name=MODEL_NAME,
        implementation=f"{__name__}.RankRuntime",
        max_batch_size=spec["max_batch_size"],
        max_batch_time=spec["batch_timeout_s"],
        parameters=ModelParameters(extra=spec),
    )
    data_plane: Any = None  # MLServer's: the adapter calls what /v2/models/{name}/infer calls

    async def rank(request: Request) -> Response:
        start = time.perf_counter()
        asked = orjson.loads(await request.body())
        candidates = asked.get("candidates")
        if not candidates:
            return Response(b'{"error": "this adapter needs candidates"}', status_code=400)
        n, user, k = len(candidates), asked["user_id"], int(asked.get("k") or spec["default_k"])
        payload = InferenceRequest(
            inputs=[
                RequestInput(name="user_id", shape=[n], datatype="INT64", data=[user] * n),
                RequestInput(name="item_id", shape=[n], datatype="INT64", data=candidates),
                RequestInput(name="row", shape=[n], datatype="INT64", data=list(range(n))),
            ]
        )  # fmt: skip
        answer = await data_plane.infer(payload, MODEL_NAME)
        scores = np.asarray(answer.outputs[0].data.root, dtype=np.float64)
        body = {
            "model": MODEL_NAME,
            "user_id": asked["user_id"],
            "items": top_k(np.asarray(candidates), scores, k),
            "candidates": n,
            "server_ms": round((time.perf_counter() - start) * 1e3, 3),
        }  # fmt: skip
        return Response(orjson.dumps(body), media_type="application/json")

    # FastAPI reads the handler's annotations to know `request` is the request; postponed
    # ones name a class imported here, not in the module, so it would take it for a query
    # parameter and answer 422.
    rank.__annotations__ = {"request": Request, "return": Response}

    async def serve() -> None:  # MLServer starts its worker pool on a running loop
        nonlocal data_plane
        server = MLServer(settings)
        data_plane = server._data_plane
        server._rest_server._app.add_api_route("/v1/rank", rank, methods=["POST"])
        await server.start([model])

    asyncio.run(serve())


# --- the driver: servers as subprocesses ------------------------------------------------------


def mlserver_python() -> Path:
    """The MLServer venv's python, created (or brought up to date) first; see the docstring."""
    pins = [MLSERVER_PIN, MLSERVER_UVLOOP_PIN]
    for name in MLSERVER_EXTRA:
        version = importlib.metadata.version(name).partition("+")[0]
        pins.append(f"{name}=={version}")
    python, stamp = MLSERVER_VENV / "bin" / "python", MLSERVER_VENV / ".recaccel-requirements"
    wanted = "\n".join([*pins, str(REPO)])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {', '.join(pins)} into {MLSERVER_VENV} (once)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(MLSERVER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *pins], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True)
    stamp.write_text(wanted)
    return python


def peer_onnx(artifact: Path) -> Path:
    """The artifact's fp32 ONNX file, exported first if need be: what the hand-written peer
    loads into ONNX Runtime."""
    from recaccel.artifact import load_artifact
    from recaccel.runtime.onnx_exec import cached_onnx

    return cached_onnx(load_artifact(artifact), "fp32").resolve()


def wait_ready(
    url: str, path: str, process: subprocess.Popen[bytes], timeout_s: float = 300
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=5) as answer:
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


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it and its workers), then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def server_process(
    name: str, command: list[str], port: int, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        **(extra_env or {}),
    }
    server = subprocess.Popen(command, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, HEALTH[name], server)
        yield url, server.pid
    finally:
        stop(server)


def stack_variants(names: list[str], serve_args: list[str] | None) -> list[tuple[str, str]]:
    """(label, stack) pairs: "serve" once per --serve-args given (label `serve[ARGS]`), and
    `handwritten:N` / `canned:N` / `bare:N` as that peer on N processes."""
    variants = []
    for name in names:
        stack, _, option = name.partition(":")
        if stack == "serve" and serve_args:
            variants += [(f"serve[{one}]", f"serve[{one}]") for one in serve_args]
        else:
            variants.append((name, name if option else stack))
    return variants


def stack_command(name: str, args: argparse.Namespace, spec: dict[str, Any]) -> list[str]:
    stack, _, option = name.partition(":")
    if name.startswith("serve"):
        command = [sys.executable, "-m", "recaccel.cli", "serve", "--port", str(spec["port"])]
        if name.startswith("serve["):
            tokens = name[len("serve[") : -1].split()
            # `artifact=PATH` first serves another artifact of the same dataset in this variant
            # (an INT4 one beside its float parent, say), under the same workload.
            artifact = str(args.artifact)
            if tokens and tokens[0].startswith("artifact="):
                artifact = tokens.pop(0).partition("=")[2]
            command += [artifact, *tokens]
        else:
            command += ["--profile", str(args.profile), "--select", "--slo-ms", str(args.p99_ms),
                        "--accuracy-budget", str(args.accuracy_budget)]  # fmt: skip
        return command + (["--config", str(args.config)] if args.config is not None else [])
    processes = option or str(args.peer_processes)
    if stack == "bare":  # the canned answer without uvicorn: what the socket alone costs
        return [sys.executable, str(HERE / "peers" / "bare_server.py"), "--port", str(spec["port"]),
                "--processes", processes]  # fmt: skip
    if stack in PEERS:
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE / "peers")]
        return [*uvicorn, PEERS[stack], "--workers", processes, "--loop", "uvloop",
                "--http", "httptools", "--no-access-log", "--log-level", "warning",
                "--port", str(spec["port"])]  # fmt: skip
    if name == "litserve" and importlib.util.find_spec("litserve") is None:
        raise SystemExit("LitServe is not installed: pip install -e '.[compare]'")
    python = sys.executable if name == "litserve" else str(mlserver_python())
    code = f"import json, compare_stacks as m; m.run_{name}(json.loads({json.dumps(spec)!r}))"
    return [python, "-c", code]


def show(name: str, run: Any) -> None:
    lg, books = run.loadgen, run.sut.books
    cpu, client = run.server_cpu_s_per_1k, run.client_cpu_s_per_1k
    print(
        f"{name:10s} target {run.target_qps:7.1f} QPS  {'VALID  ' if lg.valid else 'INVALID'}"
        f"  completed {lg.completed_qps:7.1f}  p50 {lg.latency.ms('50.00'):6.2f} ms"
        f"  p99 {lg.latency.ms('99.00'):7.2f} ms  rejected {books.rejected}  failed {books.failed}"
        + (f" {dict(books.errors)}" if books.errors else "")
        + (f"  server CPU {cpu:.2f} s/1k" if cpu is not None else "")
        + (f"  client CPU {client:.2f} s/1k" if client is not None else ""),
        flush=True,
    )


def report_part_cache(label: str, url: str) -> None:
    """The request-part cache's hit rate and mean staleness so far, from a recaccel server's
    /metrics (nothing for a server without one)."""
    if not label.startswith("serve"):
        return
    with urllib.request.urlopen(f"{url}/metrics") as answer:
        text = answer.read().decode()
    totals: dict[str, float] = {}  # by series name; the lookups by result too
    for line in text.splitlines():
        if line.startswith("recaccel_part_cache_"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{")[0]
            for result in ("hit", "miss"):
                name += f"[{result}]" if f'result="{result}"' in series else ""
            totals[name] = totals.get(name, 0.0) + float(value)
    hits = totals.get("recaccel_part_cache_lookups_total[hit]", 0.0)
    lookups = hits + totals.get("recaccel_part_cache_lookups_total[miss]", 0.0)
    if lookups:
        age = totals.get("recaccel_part_cache_hit_age_seconds_total", 0.0) / max(hits, 1)
        print(f"{label}: part cache hit rate {hits / lookups:.3f} of {lookups:.0f} lookups, "
              f"mean age of a hit {age:.1f} s", flush=True)  # fmt: skip


def main() -> None:
    from recaccel.bench.loadgen import DEFAULT_MIN_QUERY_COUNT, find_max_qps, run_server_scenario
    from recaccel.bench.search import SearchPolicy
    from recaccel.bench.workload import RankWorkload
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.defaults import DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS
    from recaccel.deploy.ray_cluster import free_ports
    from recaccel.runtime.profile import load_profile
    from recaccel.serve.config import load_serve_config
    from recaccel.serve.server import apply_selection

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="must be what the profile selects")
    parser.add_argument("--stacks", default="serve,litserve,mlserver", help=", ".join(STACKS))
    parser.add_argument("--p99-ms", type=float, default=DEFAULT_SLO_P99_MS)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--start-qps", type=float, default=50.0)
    parser.add_argument("--max-runs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--profile", type=Path, default=Path("results/bench/profiles/recaccel-profile.json")
    )
    parser.add_argument("--accuracy-budget", type=float, default=DEFAULT_RELATIVE_BUDGET)
    parser.add_argument(
        "--max-batch-size", type=int, help="requests per batch (LitServe, MLServer)"
    )
    parser.add_argument("--batch-timeout-ms", type=float, help="default: slo.max_queue_delay_ms")
    parser.add_argument("--config", type=Path, help="serving config for every stack")
    parser.add_argument(
        "--serve-args",
        action="append",
        help="serve the artifact with these `recaccel serve` arguments instead of --select; "
        "repeat it to compare several; a first word artifact=PATH serves that artifact instead",
    )
    parser.add_argument(
        "--peer-processes", type=int, default=2, help="processes of handwritten, canned, bare"
    )
    parser.add_argument(
        "--at-qps",
        type=lambda text: [float(q) for q in text.split(",")],
        help="comma list: run each stack at these loads instead of searching its highest",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/recaccel-compare-stacks"))
    args = parser.parse_args()
    # SIGTERM (`timeout`, a job runner) unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [n.strip() for n in args.stacks.split(",") if n.strip()]
    unknown = {n.partition(":")[0] for n in names} - set(STACKS)
    if unknown:
        raise SystemExit(f"unknown stacks {sorted(unknown)}; choose from {STACKS}")

    config = load_serve_config(args.config, {"slo": {"p99_ms": args.p99_ms}})
    artifact, workers = args.artifact, 1
    executor_config = config.workers.executors[0].executor_config()
    if {"litserve", "mlserver"} & set(names) or ("serve" in names and not args.serve_args):
        profile = load_profile(args.profile)
        spec_text, config, row = apply_selection(
            config, profile, args.accuracy_budget, os.cpu_count() or 1
        )
        artifact, workers = Path(spec_text.partition("=")[2]), row.workers
        if artifact.resolve() != args.artifact.resolve():
            raise SystemExit(
                f"the profile selects {artifact}, not {args.artifact}: compare that one"
            )
        executor_config = config.workers.executors[0].executor_config()
        print(f"selected: {row.key}, {executor_config}, up to {workers} workers", flush=True)

    dataset = load_dataset("movielens-100k", DatasetOptions(progress=False))
    workload = RankWorkload.from_dataset(dataset, n_samples=20_000, seed=0)
    stats = workload.stats()
    print("candidates per request:", stats, flush=True)
    max_batch = args.max_batch_size or max(1, config.batching.max_rows // int(stats.median))
    timeout_ms = (
        config.slo.max_queue_delay_ms if args.batch_timeout_ms is None else args.batch_timeout_ms
    )
    print("serving config:", json.dumps(config.to_dict()), flush=True)
    print(f"LitServe/MLServer batching: {max_batch} requests, {timeout_ms:g} ms", flush=True)
    peer_env = {"PEER_ONNX": str(peer_onnx(artifact))}
    policy = SearchPolicy(start_qps=args.start_qps, growth=2, rel_tol=0.1, max_runs=args.max_runs)
    variants = stack_variants(names, args.serve_args)
    results: dict[str, list[float | None]] = {label: [] for label, _ in variants}
    for round_ in range(args.rounds):
        for label, name in variants:
            port, grpc_port, metrics_port = free_ports(3)
            spec = {
                "artifact": str(artifact.resolve()),
                "executor": {
                    "backend": executor_config.backend,
                    "device": executor_config.device,
                    "threads": executor_config.threads,
                    "precision": executor_config.precision,
                },
                "workers": workers,
                "max_batch_size": max_batch,
                "batch_timeout_s": timeout_ms / 1000,
                "max_candidates": config.rank.max_candidates,
                "default_k": config.rank.default_k,
                "port": port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
            }
            command = stack_command(name, args, spec)
            stack = name.partition(":")[0].partition("[")[0]
            out_dir = args.out / f"round-{round_}" / "".join(c for c in label if c.isalnum())
            with server_process(stack, command, port, peer_env) as (url, pid):
                warm_up(url, list(workload.bodies))
                if args.at_qps:  # fixed loads: p99 and CPU per request at each, no search
                    for qps in args.at_qps:
                        show(label, run_server_scenario(
                            url, workload, qps, args.p99_ms, args.duration_s,
                            DEFAULT_MIN_QUERY_COUNT, out_dir / f"at-{qps:g}", server_pid=pid,
                        ))  # fmt: skip
                    report_part_cache(label, url)
                    continue
                found = find_max_qps(
                    url,
                    workload,
                    latency_p99_ms=args.p99_ms,
                    duration_s=args.duration_s,
                    out_dir=out_dir,
                    policy=policy,
                    server_pid=pid,
                    progress=lambda run, label=label: show(label, run),
                )
                report_part_cache(label, url)
            best = None if found.best is None else found.best[0]
            results[label].append(best)
            print(f"{label}: highest QPS within p99 <= {args.p99_ms:g} ms: {best}", flush=True)
    print(json.dumps({"p99_ms": args.p99_ms, "max_qps": results}, indent=2))


if __name__ == "__main__":
    main()
