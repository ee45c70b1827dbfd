"""The HTTP routes: Open Inference Protocol (KServe v2 REST, as Triton speaks it), the ranking
API, health, metrics and model management. Routes only: decoding is protocol.py, features are
features.py, batching and workers are deployment.py.

Stack: FastAPI for the OpenAPI spec and the typed /v1/rank body, on Starlette's routing, served
by uvicorn with uvloop and httptools (serve/server.py) — the fastest pure-Python ASGI path we
can keep maintained. The inference route reads the raw body itself: OIP bodies may be binary
(Triton's extension), and decoding 100-row JSON tensors with orjson in protocol.py is several
times faster than letting pydantic validate nested lists.

Every error is a `RequestError` raised by a route and answered here as `{"error": message}`
with its status (and `Retry-After` for overload); anything else is logged with the request id
and answered 500, never a stack trace to the client.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import recaccel
from recaccel.runtime.export import OUTPUT_NAME
from recaccel.serve import protocol
from recaccel.serve.admission import deadline_for
from recaccel.serve.config import ServeConfig
from recaccel.serve.errors import (
    PayloadTooLargeError,
    RequestError,
    UnavailableError,
)
from recaccel.serve.heap import freeze_long_lived_heap
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.models import ModelRepository
from recaccel.serve.overload import (
    SERVER_OVERLOADED,
    OverloadGuard,
    OverloadPolicy,
    overload_target_s,
)

log = logging.getLogger("recaccel.serve")
REQUEST_ID = "X-Request-ID"


class RankRequest(BaseModel):
    user_id: int = Field(description="the user to rank for")
    candidates: list[int] | None = Field(
        default=None, description="item ids to rank; absent: the whole catalogue"
    )
    k: int | None = Field(default=None, ge=1, description="how many items to return")
    features: dict[str, Any] | None = Field(
        default=None,
        description="raw feature values overriding the stored ones (e.g. age, gender, "
        "occupation, zip_code, timestamp), so an unknown user can still be ranked",
    )
    model: str | None = Field(default=None, description="model name; absent: the default")
    deadline_ms: float | None = Field(
        default=None, gt=0, description="answer within this, or get a 429 at once"
    )
    priority: int = Field(default=0, description="higher may use the queue's reserve")


class RankedItem(BaseModel):
    item_id: int
    score: float


class RankResponse(BaseModel):
    model: str
    version: str
    user_id: int
    items: list[RankedItem]
    candidates: int
    server_ms: float


def _error(error: RequestError, request_id: str) -> Response:
    headers = {REQUEST_ID: request_id}
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(np.ceil(retry_after))))
    message = error.message + (f" ({error.hint})" if error.hint else "")
    body = protocol.error_body(message, getattr(error, "code", None))
    return Response(body, error.status, headers, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body of {int(declared):,} bytes exceeds the limit of {limit:,}",
            "send fewer rows per request, or raise server.max_body_bytes",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(path: str) -> str:
    """A low-cardinality label for metrics."""
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v1/rank"):
        return "rank"
    if path.startswith("/v2/repository"):
        return "management"
    return "other"


def _request_id(scope: Scope) -> str:
    state: dict[str, Any] = scope.setdefault("state", {})
    if "request_id" not in state:
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        state["request_id"] = given.decode("latin-1")[:64] or uuid.uuid4().hex[:16]
    return str(state["request_id"])


class RequestMetrics:
    """Request ids, Prometheus request metrics and the optional structured log line.

    A plain ASGI middleware rather than Starlette's `BaseHTTPMiddleware`, which runs each
    request's response through an extra task and memory stream: a per-request cost on the
    path the benchmark measures. It only watches the response start go by.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServerMetrics,
        log_requests: bool,
        overload: OverloadGuard | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.overload = overload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope["state"].setdefault("model", "")
        header = (REQUEST_ID.lower().encode(), request_id.encode("latin-1"))
        status = 500
        start = time.perf_counter()
        guard = self.overload if _endpoint(scope.get("path", "")) in ("infer", "rank") else None
        if guard is not None and not guard.enter():
            await self._refuse(guard, send, header)
            self._record(scope, 429, time.perf_counter() - start, request_id)
            return

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            if guard is not None:
                guard.leave(elapsed, answered=status == 200)
            self._record(scope, status, elapsed, request_id)

    async def _refuse(
        self, guard: OverloadGuard, send: Send, request_id: tuple[bytes, bytes]
    ) -> None:
        """429 without reading the body or routing: the cheapest answer the loop can give."""
        body = protocol.error_body(
            f"server overloaded: {guard.in_flight} inference requests in flight, its limit "
            f"now (requests waited at least {guard.standing_s * 1e3:.0f} ms in it and its "
            f"event loop runs {guard.lag_s * 1e3:.0f} ms late; target "
            f"{guard.policy.target_s * 1e3:g} ms); retry after the delay in Retry-After",
            SERVER_OVERLOADED,
        )
        self.metrics.rejected.labels("", SERVER_OVERLOADED).inc()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            request_id,
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        path = scope.get("path", "")
        endpoint = _endpoint(path)
        if endpoint != "other":
            model = scope["state"].get("model", "")
            self.metrics.requests.labels(endpoint, model, str(status)).inc()
            self.metrics.request_latency.labels(endpoint, model).observe(elapsed)
        if self.log_requests:
            line = {
                "request_id": request_id,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "ms": round(elapsed * 1e3, 3),
            }
            log.info(orjson.dumps(line).decode())


def create_app(
    repository: ModelRepository,
    config: ServeConfig,
    metrics: ServerMetrics,
) -> FastAPI:
    """The ASGI app over `repository`'s models; its lifespan starts and drains them."""
    target_s = overload_target_s(config.admission.overload_target_ms, config.slo.p99_ms)

    def export(guard: OverloadGuard) -> None:
        metrics.in_flight_limit.set(guard.limit)
        metrics.standing_delay.set(guard.standing_s)
        metrics.loop_lag.set(guard.lag_s)

    overload = OverloadGuard(OverloadPolicy(target_s), on_interval=export)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await repository.start()
        freeze_long_lived_heap()  # features, models, imports: off every full collection
        overload.start()
        try:
            yield
        finally:
            await overload.stop()
            await repository.drain()
            log.warning("drained: every admitted request answered, workers stopped")

    app = FastAPI(
        title="recaccel",
        version=recaccel.__version__,
        description="Real-time ranking: Open Inference Protocol and /v1/rank.",
        lifespan=lifespan,
    )
    app.state.repository = repository  # the server's shutdown signal stops admission on it

    async def request_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestError)
        return _error(error, _request_id(request.scope))

    async def unexpected_error(request: Request, error: Exception) -> Response:
        request_id = _request_id(request.scope)
        log.error("request %s %s failed", request_id, request.url.path, exc_info=error)
        return _error(RequestError("internal error", status=500), request_id)

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_middleware(
        RequestMetrics,
        metrics=metrics,
        log_requests=config.server.log_requests,
        overload=overload,
    )

    # --- health and metadata ------------------------------------------------------------------

    @app.get("/v2", summary="server metadata")
    async def server_metadata() -> dict[str, Any]:
        return protocol.server_metadata(recaccel.__version__, ["model_repository"])

    @app.get("/v2/health/live", summary="the process is up")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready", summary="every model can serve")
    async def ready() -> Response:
        return Response(status_code=200 if repository.ready else 503)

    @app.get("/v2/models/{name}", summary="model metadata")
    @app.get("/v2/models/{name}/versions/{version}", summary="model metadata (one version)")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        deployment = repository.get(name, version)
        return protocol.model_metadata(
            name, repository.versions(name), deployment.schema, "recaccel_" + deployment.backend
        )

    @app.get("/v2/models/{name}/ready", summary="model readiness")
    @app.get("/v2/models/{name}/versions/{version}/ready", summary="model readiness (one version)")
    async def model_ready(name: str, version: str | None = None) -> Response:
        deployment = repository.get(name, version)
        return JSONResponse(
            {"name": name, "ready": deployment.ready}, status_code=200 if deployment.ready else 503
        )

    @app.get("/v2/models/{name}/stats", summary="workers and their counters")
    @app.get("/v2/models/{name}/versions/{version}/stats", summary="stats (one version)")
    async def model_stats(name: str, version: str | None = None) -> dict[str, Any]:
        return repository.get(name, version).stats()

    # --- inference ----------------------------------------------------------------------------

    @app.post("/v2/models/{name}/infer", summary="Open Inference Protocol inference")
    @app.post("/v2/models/{name}/versions/{version}/infer", summary="inference (one version)")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        request.state.model = name
        body = await _read_body(request, config.server.max_body_bytes)
        # No await between choosing the version and queueing on it: a hot swap in between
        # would leave the request on a draining version.
        deployment = repository.get(name, version)
        decoded = protocol.parse_infer_request(body, request.headers.get(protocol.HEADER_LENGTH))
        protocol.check_requested_outputs(decoded, [OUTPUT_NAME])
        batch = protocol.features_from_inputs(
            decoded.inputs, deployment.schema, config.rank.max_candidates
        )
        timeout_ms = _timeout_ms(decoded.parameters.get("timeout"))
        deadline = deadline_for(time.monotonic(), timeout_ms, config.slo.p99_ms)
        priority = _priority(decoded.parameters.get("priority"))
        scores = await deployment.score(batch, deadline, priority)
        body_out, headers = protocol.encode_infer_response(
            name, deployment.version, decoded.id, {OUTPUT_NAME: scores}, decoded
        )
        return Response(body_out, headers=headers)

    @app.post("/v1/rank", response_model=RankResponse, summary="rank items for a user")
    async def rank(request: Request) -> Response:
        start = time.perf_counter()
        body = await _read_body(request, config.server.max_body_bytes)
        try:
            asked = RankRequest.model_validate_json(body)
        except ValueError as error:
            raise RequestError(f"bad rank request: {_pydantic_message(error)}") from None
        deployment = repository.get(asked.model, None)
        request.state.model = deployment.name
        store = repository.features
        if store is None:
            raise UnavailableError(
                "ranking needs a feature store, and this server has none",
                "serve artifacts trained on a dataset with users and items (movielens-100k)",
            )
        batch, items = store.rows(asked.user_id, asked.candidates, asked.features)
        deadline = deadline_for(time.monotonic(), asked.deadline_ms, config.slo.p99_ms)
        scores = await deployment.score(batch, deadline, asked.priority)
        k = min(asked.k or config.rank.default_k, len(items))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(items) else np.arange(len(items))
        top = top[np.argsort(-scores[top], kind="stable")]
        answer = {
            "model": deployment.name,
            "version": deployment.version,
            "user_id": asked.user_id,
            "items": [{"item_id": int(items[i]), "score": float(scores[i])} for i in top],
            "candidates": len(items),
            "server_ms": round((time.perf_counter() - start) * 1e3, 3),
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    # --- metrics and management ---------------------------------------------------------------

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _authorize(request: Request) -> None:
        if not config.server.management:
            raise RequestError(
                "model management is off",
                "start the server with server.management = true and RECACCEL_TOKEN set",
                status=403,
            )
        given = request.headers.get("authorization", "")
        expected = f"Bearer {config.token}"
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise RequestError("missing or wrong bearer token", status=401)

    @app.post("/v2/repository/models/{name}/load", summary="load or hot-swap a model version")
    async def load(request: Request, name: str) -> dict[str, Any]:
        _authorize(request)
        body = await _read_body(request, config.server.max_body_bytes)
        try:
            parameters = orjson.loads(body or b"{}").get("parameters", {})
            artifact = str(parameters["artifact"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            raise RequestError(
                'load needs {"parameters": {"artifact": "<artifact directory>"}}'
            ) from None
        version = await repository.load(name, artifact, parameters.get("version"))
        return {"name": name, "version": version, "ready": True}

    @app.post("/v2/repository/models/{name}/unload", summary="drain and unload a model")
    async def unload(request: Request, name: str) -> dict[str, Any]:
        _authorize(request)
        await repository.unload(name)
        return {"name": name, "unloaded": True}

    @app.post("/v2/repository/index", summary="the models and their versions")
    async def index() -> list[dict[str, Any]]:
        return repository.index()

    return app


def _timeout_ms(value: Any) -> float | None:
    """The OIP `timeout` parameter (microseconds, as Triton's) in milliseconds; None if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise RequestError(f"timeout must be a positive number of microseconds, not {value!r}")
    return float(value) / 1e3


def _priority(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"priority must be an integer, not {value!r}")
    return value


def _pydantic_message(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        parts = []
        for item in errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ())) or "body"
            parts.append(f"{where}: {item.get('msg')}")
        return "; ".join(parts)
    return str(error)
