"""What every request goes through: its id, its metrics, the in-flight limit, and how errors
and bodies are answered and read; and `ShortCut`, which takes one method and path (the hot
POST /v1/rank) straight to its endpoint.

`RequestMetrics` is a plain ASGI middleware rather than Starlette's `BaseHTTPMiddleware`, which
runs each request's response through an extra task and memory stream: a per-request cost on
the path the benchmark measures. It only watches the response start go by.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recaccel.serve import protocol
from recaccel.serve.errors import PayloadTooLargeError, RequestError
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.overload import SERVER_OVERLOADED, OverloadGuard

log = logging.getLogger("recaccel.serve")
REQUEST_ID = "X-Request-ID"
# The in-flight limit's refusals: come back in a second (the limit moves every 100 ms).
REFUSAL_RETRY_AFTER = (b"retry-after", b"1")


def error_parts(error: RequestError, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and JSON body that answer `error`."""
    headers = {REQUEST_ID: request_id}
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(np.ceil(retry_after))))
    message = error.message + (f" ({error.hint})" if error.hint else "")
    return error.status, headers, protocol.error_body(message, getattr(error, "code", None))


def error_response(error: RequestError, request_id: str) -> Response:
    status, headers, body = error_parts(error, request_id)
    return Response(body, status, headers, media_type="application/json")


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer credential. The scheme's
    case is free (RFC 7235: "bearer" is "Bearer"); the token is compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and secrets.compare_digest(given.encode(), token.encode())
    )


# The client left before its request was whole; nothing was answered. Counted under nginx's
# status for it (never sent: there is nobody to send it to), not as a server error.
CLIENT_CLOSED_REQUEST = 499
CLIENT_GONE = "client_gone"  # the request state's flag, set where the body is read


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's body, refused with 413 past `limit` bytes before it is all read.

    Raises starlette's ClientDisconnect when the client leaves first (nobody to answer)."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body of {int(declared):,} bytes exceeds the limit of {limit:,}",
            "send fewer rows per request, or raise server.max_body_bytes",
        )
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.setdefault("state", {})[CLIENT_GONE] = True  # counted 499 (RequestMetrics)
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """`receive_body` for a route given starlette's Request."""
    return await receive_body(request.scope, request.receive, limit)


def _endpoint(path: str) -> str:
    """A low-cardinality label for metrics."""
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v1/rank"):
        return "rank"
    if path.startswith("/v2/repository"):
        return "management"
    return "other"


# Request ids this process makes: a random prefix per process, then a counter. As unique as
# uuid4's first 16 hex digits across a server's processes, without a getrandom() call each.
_ID_PREFIX = os.urandom(4).hex()
_id_counter = itertools.count()


def new_request_id(given: bytes = b"") -> str:
    """`given` (a request's X-Request-ID, at most 64 characters kept), else a new id."""
    return given.decode("latin-1")[:64] or f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


def request_id_header(request_id: str) -> tuple[bytes, bytes]:
    """The raw header that echoes `request_id` on an answer."""
    return (REQUEST_ID.lower().encode(), request_id.encode("latin-1"))


def request_id_of(scope: Scope) -> str:
    """The request's X-Request-ID as sent (at most 64 characters), else a new one."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if "request_id" not in state:
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        state["request_id"] = new_request_id(given)
    return str(state["request_id"])


class RequestMetrics:
    """Request ids, Prometheus request metrics, the in-flight limit and the optional
    structured log line (see the module docstring)."""

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
        # (endpoint, model, status) -> its request counter and latency histogram, resolved
        # once (ModelMetrics says why); a handful of keys in a server's life.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope["state"].setdefault("model", "")
        header = request_id_header(request_id)
        status = 500
        start = time.perf_counter()
        guard = self.overload if _endpoint(scope.get("path", "")) in ("infer", "rank") else None
        if guard is not None and not guard.enter():
            body = self.refusal(guard)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                REFUSAL_RETRY_AFTER,
                header,
            ]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self._record(scope, 429, time.perf_counter() - start, request_id)
            return

        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = int(message["status"]), True
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not answered and scope["state"].get(CLIENT_GONE):
                status = CLIENT_CLOSED_REQUEST
            elapsed = time.perf_counter() - start
            if guard is not None:
                guard.leave(elapsed, answered=status == 200)
            self._record(scope, status, elapsed, request_id)

    def refusal(self, guard: OverloadGuard) -> bytes:
        """The 429's body when the in-flight limit refuses: answered without reading the
        request or routing it, the cheapest answer the loop can give."""
        self.metrics.rejected.labels("", SERVER_OVERLOADED).inc()
        return protocol.error_body(
            f"server overloaded: {guard.in_flight} inference requests in flight, its limit "
            f"now (requests waited at least {guard.standing_s * 1e3:.0f} ms in it and its "
            f"event loop runs {guard.lag_s * 1e3:.0f} ms late; target "
            f"{guard.policy.target_s * 1e3:g} ms); retry after the delay in Retry-After",
            SERVER_OVERLOADED,
        )

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        path = scope.get("path", "")
        self.record(
            scope.get("method"), path, scope["state"].get("model", ""), status, elapsed, request_id
        )

    def record(
        self,
        method: str | None,
        path: str,
        model: str,
        status: int,
        elapsed: float,
        request_id: str,
    ) -> None:
        """Count one answered request (and log it, when asked)."""
        endpoint = _endpoint(path)
        if endpoint != "other":
            key = (endpoint, model, status)
            series = self._series.get(key)
            if series is None:
                series = (
                    self.metrics.requests.labels(endpoint, model, str(status)),
                    self.metrics.request_latency.labels(endpoint, model),
                )
                self._series[key] = series
            series[0].inc()
            series[1].observe(elapsed)
        if self.log_requests:
            line = {
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "ms": round(elapsed * 1e3, 3),
            }
            log.info(orjson.dumps(line).decode())


class ShortCut:
    """ASGI middleware: requests for one method and path go straight to `endpoint`, every
    other request (and the lifespan) on to `app`."""

    def __init__(self, app: ASGIApp, endpoint: ASGIApp, method: str, path: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self.method = method
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        here = scope["type"] == "http" and scope["path"] == self.path
        if not here:
            await self.app(scope, receive, send)
        elif scope["method"] == self.method:
            await self.endpoint(scope, receive, send)
        else:  # the path is this endpoint's alone: any other method is not allowed here
            refusal = RequestError(f"{scope['method']} {self.path}: use {self.method}", status=405)
            status, headers, body = error_parts(refusal, request_id_of(scope))
            response = Response(body, status, {**headers, "Allow": self.method})
            await response(scope, receive, send)
