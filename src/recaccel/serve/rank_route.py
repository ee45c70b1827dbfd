"""POST /v1/rank: a request's checks, its rows, its batch and its answer.

Two doors lead here. The fast lane (plane/fast_http.py) hands `MeasuredRank` the body of a
request that uvicorn's parser has read, and gets the answer back through a callback: no ASGI
scope, no task, no message dicts. `RankEndpoint` as an ASGI app serves every other host of the
app (test clients, Ray Serve) and what the fast lane passes on (chunked bodies, pipelined
requests behind another, `Expect: 100-continue`). Both run the same steps (`RankEndpoint.rank`
and `rank_then`, over one `_RankCall`), and both are measured and limited alike (`MeasuredRank`
does for the fast lane what `middleware.RequestMetrics` does for ASGI).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from recaccel.serve.admission import deadline_for
from recaccel.serve.config import ServeConfig
from recaccel.serve.deployment import Deployment
from recaccel.serve.errors import RequestError, UnavailableError
from recaccel.serve.features import FeatureSource, InMemorySource
from recaccel.serve.middleware import (
    REFUSAL_RETRY_AFTER,
    RequestMetrics,
    error_parts,
    error_response,
    new_request_id,
    receive_body,
    request_id_header,
    request_id_of,
)
from recaccel.serve.rank import RankQuery, answer_body, parse_rank_request
from recaccel.serve.repository import ModelRepository

log = logging.getLogger("recaccel.serve")
RANK_PATH = "/v1/rank"
JSON = (b"content-type", b"application/json")
# What a fast-lane answer is written from: status, headers (without content-length), body.
Reply = Callable[[int, list[tuple[bytes, bytes]], bytes], None]
# A rank call's outcome: the answer's JSON, or the error that stands for it.
Outcome = bytes | BaseException


@dataclass
class _RankCall:
    """A checked request on its way: what is left to do once its rows are scored."""

    query: RankQuery
    deployment: Deployment
    store: FeatureSource
    deadline: float
    start: float
    default_k: int

    def answer(self, items: np.ndarray, scores: np.ndarray) -> bytes:
        query = self.query
        return answer_body(
            self.deployment.name,
            self.deployment.version,
            query.user_id,
            items,
            scores,
            query.k or self.default_k,
            (time.perf_counter() - self.start) * 1e3,
        )


class RankEndpoint:
    """POST /v1/rank, as an ASGI endpoint and as a call answered through a callback."""

    def __init__(self, repository: ModelRepository, config: ServeConfig) -> None:
        self.repository = repository
        self.config = config
        self._remote_calls: set[asyncio.Task[bytes]] = set()  # held until done (asyncio's rule)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await receive_body(scope, receive, self.config.server.max_body_bytes)
            answer = await self.rank(body, scope["state"])
        except ClientDisconnect:
            return  # nobody is waiting for an answer
        except RequestError as error:
            await error_response(error, request_id_of(scope))(scope, receive, send)
            return
        except Exception as error:  # a bug: logged with the request id, answered 500
            request_id = request_id_of(scope)
            log.error("request %s %s failed", request_id, RANK_PATH, exc_info=error)
            await error_response(RequestError("internal error", status=500), request_id)(
                scope, receive, send
            )
            return
        headers = [JSON, (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def rank(self, body: bytes, state: dict[str, Any]) -> bytes:
        """The answer to the rank request in `body`; a RequestError says why there is none.
        `state["model"]` is set to the model that serves it, for the request's metrics."""
        call = self._begin(body, state)
        query, store = call.query, call.store
        asked = query.candidates
        if store.remote and isinstance(asked, list) and len(asked) <= store.max_candidates:
            # A remote store's read costs a round trip and its server's work: a request that
            # admission would refuse is refused before it (once more after, as every request).
            # A list past the limit goes on to its 413, which says what to fix.
            call.deployment.admit(len(asked), call.deadline, query.priority)
        rows, items = await store.fetch(query.user_id, query.candidates, query.features)
        # One user against its candidates: an executor with reuse computes the user once.
        scores = await call.deployment.score(rows.as_one_request(), call.deadline, query.priority)
        return call.answer(items, scores)

    def rank_then(
        self, body: bytes, state: dict[str, Any], done: Callable[[Outcome], None]
    ) -> None:
        """`rank`, answered through `done` (exactly once, never raising). With the feature
        store in this process no task is made: the rows are built now and `done` runs from
        the batch's completion."""
        try:
            call = self._begin(body, state)
            store, query = call.store, call.query
            if not isinstance(store, InMemorySource):
                task = asyncio.ensure_future(self.rank(body, state))
                self._remote_calls.add(task)
                task.add_done_callback(lambda t: self._remote_done(t, done))
                return
            rows, items = store.rows(query.user_id, query.candidates, query.features)
            future = call.deployment.submit(rows.as_one_request(), call.deadline, query.priority)
        except Exception as error:
            done(error)
            return

        def scored(future: asyncio.Future[np.ndarray]) -> None:
            try:
                outcome: Outcome = call.answer(items, future.result())
            except Exception as error:
                outcome = error
            done(outcome)

        future.add_done_callback(scored)

    def _remote_done(self, task: asyncio.Task[bytes], done: Callable[[Outcome], None]) -> None:
        self._remote_calls.discard(task)
        if task.cancelled():  # the loop is closing under it
            done(UnavailableError("the server stopped before this request was answered"))
        else:
            done(task.exception() or task.result())

    def _begin(self, body: bytes, state: dict[str, Any]) -> _RankCall:
        start = time.perf_counter()
        config = self.config
        query = parse_rank_request(body)
        deployment = self.repository.get(query.model, None)
        state["model"] = deployment.name
        store = self.repository.features
        if store is None:
            raise UnavailableError(
                "ranking needs a feature store, and this server has none",
                "serve an artifact trained on a dataset with users and items, or give this "
                "server --users and --items tables, or --redis",
            )
        deadline = deadline_for(time.monotonic(), query.deadline_ms, config.slo.p99_ms)
        return _RankCall(query, deployment, store, deadline, start, config.rank.default_k)


class MeasuredRank:
    """The fast lane's /v1/rank: the request id, the in-flight limit and the request metrics
    of `middleware.RequestMetrics`, around `RankEndpoint.rank_then`, for a request that never
    became ASGI. Called with the body, the X-Request-ID the client sent (b"" if none) and
    where to write the answer."""

    def __init__(self, rank: RankEndpoint, measured: RequestMetrics) -> None:
        self.rank = rank
        self.measured = measured

    def __call__(self, body: bytes, given_id: bytes, reply: Reply) -> None:
        start = time.perf_counter()
        request_id = new_request_id(given_id)
        id_header = request_id_header(request_id)
        guard, measured = self.measured.overload, self.measured
        state = {"model": ""}
        if guard is not None and not guard.enter():
            refusal = measured.refusal(guard)
            reply(429, [JSON, REFUSAL_RETRY_AFTER, id_header], refusal)
            measured.record("POST", RANK_PATH, "", 429, time.perf_counter() - start, request_id)
            return

        def done(outcome: Outcome) -> None:
            if isinstance(outcome, bytes):
                status, headers, answer = 200, [JSON, id_header], outcome
            else:
                error = outcome
                if not isinstance(error, RequestError):  # a bug: logged, answered 500
                    log.error("request %s %s failed", request_id, RANK_PATH, exc_info=error)
                    error = RequestError("internal error", status=500)
                status, named, answer = error_parts(error, request_id)
                headers = [JSON, *((k.lower().encode(), v.encode()) for k, v in named.items())]
            elapsed = time.perf_counter() - start
            if guard is not None:
                guard.leave(elapsed, answered=status == 200)
            measured.record("POST", RANK_PATH, state["model"], status, elapsed, request_id)
            reply(status, headers, answer)

        self.rank.rank_then(body, state, done)
