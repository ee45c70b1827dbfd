"""The HTTP routes: Open Inference Protocol (KServe v2 REST, as Triton speaks it), the ranking
API, health, metrics and model management. Routes only: decoding is protocol/ and rank.py,
features are features.py, batching and execution are deployment.py and plane/, starting and
draining them is lifespan.py.

Stack: FastAPI for the OpenAPI spec, on Starlette's routing, served by uvicorn with uvloop and
httptools (serve/server.py). Two routes skip FastAPI's per-request machinery because they are
the hot path: the inference route reads the raw body itself (OIP bodies may be binary, and
orjson decodes 100-row tensors several times faster than pydantic validates nested lists), and
POST /v1/rank is a bare ASGI endpoint (`RankEndpoint`) that uvicorn reaches ahead of FastAPI
(`lean_app`), documented in the OpenAPI spec by its pydantic models (rank.py).

Every error is a `RequestError` raised by a route and answered as `{"error": message}` with its
status (and `Retry-After` for overload); anything else is logged with the request id and
answered 500, never a stack trace to the client.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp

import recaccel
from recaccel.data.schema import OUTPUT_NAME
from recaccel.serve import protocol
from recaccel.serve.admission import deadline_for
from recaccel.serve.config import ServeConfig
from recaccel.serve.errors import RequestError
from recaccel.serve.lifespan import front_lifespan
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.middleware import (
    CLIENT_CLOSED_REQUEST,
    RequestMetrics,
    ShortCut,
    bearer_matches,
    error_response,
    read_body,
    request_id_of,
)
from recaccel.serve.openapi import (
    HEALTH_RESPONSES,
    INFER_BODY,
    LOAD_BODY,
    PROMETHEUS_TEXT,
    errors,
    finish,
)
from recaccel.serve.overload import (
    SERVER_OVERLOADED,
    OverloadGuard,
    OverloadPolicy,
    overload_target_s,
)
from recaccel.serve.plane.front_process import (
    METRICS_DIR_ENV,
    FrontLink,
)
from recaccel.serve.rank import RankRequest, RankResponse
from recaccel.serve.rank_route import RANK_PATH, MeasuredRank, RankEndpoint
from recaccel.serve.repository import ModelRepository

log = logging.getLogger("recaccel.serve")
RANK_ERRORS = errors(400, 404, 413, 429, 503)


def _rank_documented(body: RankRequest) -> RankResponse:
    """Rank items for a user: the scores of `candidates` (or the whole catalogue) for
    `user_id`, best first, top `k`. Served by `RankEndpoint`; this signature is what the
    OpenAPI document shows for it."""
    raise NotImplementedError("documentation only: RankEndpoint serves POST /v1/rank")


def _metrics_registry(metrics: ServerMetrics) -> CollectorRegistry:
    """This server's registry, or, behind several front processes, all of theirs summed
    (prometheus-client's multiprocess mode; plane/front.py)."""
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        return metrics.registry
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def create_app(
    repository: ModelRepository,
    config: ServeConfig,
    metrics: ServerMetrics,
    link: FrontLink | None = None,
) -> FastAPI:
    """The ASGI app over `repository`'s models; its lifespan starts and drains them.

    `link`: this app is one of several front processes (plane/front.py): readiness is theirs
    together, and a load or unload is done by all of them.
    """
    target_s = overload_target_s(config.admission.overload_target_ms, config.slo.p99_ms)

    def export(guard: OverloadGuard) -> None:
        metrics.in_flight_limit.set(guard.limit)
        metrics.standing_delay.set(guard.standing_s)
        metrics.loop_lag.set(guard.lag_s)

    overload = OverloadGuard(OverloadPolicy(target_s), on_interval=export)
    metrics.rejected.labels("", SERVER_OVERLOADED)  # at 0 until the limit refuses one

    app = FastAPI(
        title="recaccel",
        version=recaccel.__version__,
        description="Real-time ranking: Open Inference Protocol and /v1/rank.",
        lifespan=front_lifespan(repository, config, overload, link),
    )
    app.state.repository = repository  # the server's shutdown signal stops admission on it

    async def request_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestError)
        return error_response(error, request_id_of(request.scope))

    async def unexpected_error(request: Request, error: Exception) -> Response:
        request_id = request_id_of(request.scope)
        log.error("request %s %s failed", request_id, request.url.path, exc_info=error)
        return error_response(RequestError("internal error", status=500), request_id)

    async def client_gone(request: Request, error: Exception) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # unsent: the client has left

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected_error)
    rank = RankEndpoint(repository, config)
    app.add_middleware(ShortCut, endpoint=rank, method="POST", path=RANK_PATH)
    log_requests = config.server.log_requests
    app.add_middleware(
        RequestMetrics, metrics=metrics, log_requests=log_requests, overload=overload
    )
    # What uvicorn runs (lean_app): /v1/rank reaches its endpoint without FastAPI's own
    # middleware stack (error, telemetry, body-limit layers: module docstring); mounted inside
    # FastAPI too, for hosts that take the FastAPI app itself (Ray Serve, test clients).
    measured_rank = RequestMetrics(rank, metrics, log_requests, overload)
    app.state.lean_app = ShortCut(app, measured_rank, "POST", RANK_PATH)
    # Below ASGI: the fast lane's endpoint (plane/fast_http.py), measured the same way.
    app.state.fast_rank = MeasuredRank(rank, measured_rank)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            documented = APIRoute(
                RANK_PATH,
                _rank_documented,
                methods=["POST"],
                response_model=RankResponse,
                summary="rank items for a user",
                responses=RANK_ERRORS,
            )
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[*app.routes, documented],
            )
            store = repository.features
            app.openapi_schema = finish(schema, None if store is None else store.raw_schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # --- health and metadata ------------------------------------------------------------------

    @app.get("/v2", summary="server metadata")
    async def server_metadata() -> dict[str, Any]:
        return protocol.server_metadata(recaccel.__version__, ["model_repository"])

    @app.get(
        "/v2/health/live",
        summary="the process is up",
        response_class=Response,
        responses={200: HEALTH_RESPONSES[200]},
    )
    async def live() -> Response:
        return Response(status_code=200)

    @app.get(
        "/v2/health/ready",
        summary="every model can serve, in every front process",
        response_class=Response,
        responses=HEALTH_RESPONSES,
    )
    async def ready() -> Response:
        every = link is None or link.all_ready()
        return Response(status_code=200 if repository.ready and every else 503)

    unknown = errors(404)

    @app.get("/v2/models/{name}", summary="model metadata", responses=unknown)
    @app.get(
        "/v2/models/{name}/versions/{version}",
        summary="model metadata (one version)",
        responses=unknown,
    )
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        deployment = repository.get(name, version)
        return protocol.model_metadata(
            name, repository.versions(name), deployment.schema, "recaccel_" + deployment.backend
        )

    readiness = {**unknown, 503: {"description": "the model is not ready (same body)"}}

    @app.get("/v2/models/{name}/ready", summary="model readiness", responses=readiness)
    @app.get(
        "/v2/models/{name}/versions/{version}/ready",
        summary="model readiness (one version)",
        responses=readiness,
    )
    async def model_ready(name: str, version: str | None = None) -> Response:
        deployment = repository.get(name, version)
        return JSONResponse(
            {"name": name, "ready": deployment.ready}, status_code=200 if deployment.ready else 503
        )

    @app.get(
        "/v2/models/{name}/stats",
        summary="workers and their counters (this process)",
        responses=unknown,
    )
    @app.get(
        "/v2/models/{name}/versions/{version}/stats",
        summary="stats (one version)",
        responses=unknown,
    )
    async def model_stats(name: str, version: str | None = None) -> dict[str, Any]:
        return repository.get(name, version).stats()

    # --- inference ----------------------------------------------------------------------------

    infer_doc: dict[str, Any] = {
        "responses": errors(400, 404, 413, 429, 503),
        "openapi_extra": INFER_BODY,
    }

    @app.post("/v2/models/{name}/infer", summary="Open Inference Protocol inference", **infer_doc)
    @app.post(
        "/v2/models/{name}/versions/{version}/infer", summary="inference (one version)", **infer_doc
    )
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        body = await read_body(request, config.server.max_body_bytes)
        # No await between choosing the version and queueing on it: a hot swap in between
        # would leave the request on a draining version.
        deployment = repository.get(name, version)
        # The metrics' model label once the name is a served model's: a client's made-up
        # names must not each become a time series.
        request.state.model = deployment.name
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

    # --- metrics and management ---------------------------------------------------------------

    @app.get(
        "/metrics",
        summary="Prometheus metrics (every front process)",
        response_class=Response,
        responses={200: {"description": "Prometheus text", "content": {PROMETHEUS_TEXT: {}}}},
    )
    async def prometheus() -> Response:
        text = generate_latest(_metrics_registry(metrics))
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    def _authorize(request: Request) -> None:
        if not config.server.management:
            raise RequestError(
                "model management is off",
                "start the server with server.management = true and RECACCEL_TOKEN set",
                status=403,
            )
        if not bearer_matches(request.headers.get("authorization", ""), config.token or ""):
            raise RequestError("missing or wrong bearer token", status=401)

    managed = errors(400, 401, 403, 404, 409, 503)

    @app.post(
        "/v2/repository/models/{name}/load",
        summary="load or hot-swap a model version",
        responses=managed,
        openapi_extra=LOAD_BODY,
    )
    async def load(request: Request, name: str) -> dict[str, Any]:
        _authorize(request)
        body = await read_body(request, config.server.max_body_bytes)
        try:
            parameters = orjson.loads(body or b"{}").get("parameters", {})
            artifact = str(parameters["artifact"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            raise RequestError(
                'load needs {"parameters": {"artifact": "<artifact directory>"}}'
            ) from None
        asked = parameters.get("version")
        asked = None if asked is None else str(asked)
        if link is not None:
            version = await link.ask("load", name=name, artifact=artifact, version=asked)
        else:
            version = await repository.load(name, artifact, asked)
        return {"name": name, "version": version, "ready": True}

    @app.post(
        "/v2/repository/models/{name}/unload", summary="drain and unload a model", responses=managed
    )
    async def unload(request: Request, name: str) -> dict[str, Any]:
        _authorize(request)
        if link is not None:
            await link.ask("unload", name=name)
        else:
            await repository.unload(name)
        return {"name": name, "unloaded": True}

    @app.post("/v2/repository/index", summary="the models and their versions")
    async def index() -> list[dict[str, Any]]:
        return repository.index()

    return app


def lean_app(app: FastAPI) -> ASGIApp:
    """The ASGI app a server runs for `app` (made by `create_app`; see its end)."""
    lean: ASGIApp = app.state.lean_app
    return lean


def fast_rank(app: FastAPI) -> MeasuredRank:
    """`app`'s /v1/rank for the fast lane (plane/fast_http.py)."""
    endpoint: MeasuredRank = app.state.fast_rank
    return endpoint


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
