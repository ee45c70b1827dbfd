"""uvicorn's HTTP protocol with a fast lane for the hot route (POST /v1/rank).

uvicorn hands each request to the ASGI app as a task with a scope dict, an `asyncio.Event`, a
`RequestResponseCycle` and four message dicts, and validates every response header with two
regular expressions: about 0.1 CPU-ms a request on the 2-core benchmark VM, as much again as the
socket and the parse (docs/serving-plane.md, "HTTP without uvicorn"). The fast lane keeps
uvicorn's parser, connections, keep-alive timer, flow control and graceful shutdown, and skips
the rest for one route: when a request's headers are in, a `POST` to exactly the lane's path
with a `Content-Length` within the body limit, on a connection with no answer pending, becomes
a `FastCycle`. Its body is collected as it arrives; the endpoint gets it whole and answers
through a callback, which writes the response in one `write`. No task, no ASGI.

Everything else goes to uvicorn as before, and so to the ASGI app: other routes, chunked or
oversized bodies (the app answers 413), `Expect: 100-continue`, protocol upgrades, a query
string or an escaped path, and a request pipelined behind one not yet answered (uvicorn queues
it; a fast cycle looks to that queue like uvicorn's own, and starts it once answered).

uvicorn's `limit_concurrency` (its last-resort 503 past a count of connections and tasks) does
not see the lane's requests, which are not tasks; the in-flight limit and admission control,
which refuse with 429 well before it, apply to them as to every inference request.

Written by hand because no server offers it: uvicorn's protocol classes are the only way in
below ASGI (`uvicorn.Config(http=...)` takes one), and this subclass overrides four parser
callbacks. It leans on `HttpToolsProtocol`'s attributes (`cycle`, `pipeline`, `parser`,
`headers`, `url`, `expect_100_continue`, `on_response_complete`); pyproject pins uvicorn's
minor version, and tests/serve/test_fast_http.py holds every case above to a real socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# The lane's endpoint: the request's body, its X-Request-ID (b"" if none), and where to
# answer: reply(status, headers without content-length, body), called once, now or later.
Reply = Callable[[int, list[tuple[bytes, bytes]], bytes], None]
Endpoint = Callable[[bytes, bytes, Reply], None]
INTERNAL_ERROR = b'{"error": "internal error"}'


class FastCycle:
    """One fast-lane request: its body as it arrives, then its answer. It stands in
    uvicorn's `protocol.cycle` slot, so connection loss, graceful shutdown and pipelining
    treat it as they treat uvicorn's own cycles (the attributes they read are here)."""

    __slots__ = (
        "body",
        "disconnected",
        "keep_alive",
        "more_body",
        "protocol",
        "request_id",
        "response_complete",
    )

    def __init__(self, protocol: FastLaneProtocol, keep_alive: bool, request_id: bytes) -> None:
        self.protocol = protocol
        self.keep_alive = keep_alive
        self.request_id = request_id
        self.body = b""
        self.more_body = True
        self.disconnected = False
        self.response_complete = False

    @property
    def message_event(self) -> _NoEvent:  # uvicorn's connection_lost sets it
        return _NO_EVENT

    def reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Write the answer (unless the client has gone), then let the connection go on."""
        if self.response_complete:
            return
        self.response_complete = True
        protocol = self.protocol
        transport = protocol.transport
        if self.disconnected or transport.is_closing():
            return
        content = [STATUS_LINE[status]]
        for name, value in protocol.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        for name, value in headers:
            content += [name, b": ", value, b"\r\n"]
        content.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content += [b"\r\n", body]
        transport.write(b"".join(content))
        if not self.keep_alive:
            transport.close()
        protocol.on_response_complete()


class _NoEvent:
    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


def fast_lane_protocol(
    endpoint: Endpoint, path: str, max_body_bytes: int
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `POST path` answered by `endpoint` (module
    docstring). Pass it as `uvicorn.Config(http=...)`."""
    return type(
        "FastLaneProtocol",
        (FastLaneProtocol,),
        {"endpoint": staticmethod(endpoint), "path": path.encode(), "max_body": max_body_bytes},
    )


class FastLaneProtocol(HttpToolsProtocol):
    """See the module docstring; made for one endpoint by `fast_lane_protocol`."""

    endpoint: Endpoint
    path: bytes
    max_body: int

    def on_headers_complete(self) -> None:
        # A request has begun: no keep-alive timeout runs under it. uvicorn clears the timer
        # when data arrives, but a lane answered at once, inside the same `data_received`,
        # arms it again before a request pipelined behind it is read.
        self._unset_keepalive_if_required()
        if self._fast_lane_takes():
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            self.cycle = FastCycle(self, keep_alive, self._request_id())  # type: ignore[assignment]
            return
        super().on_headers_complete()

    def _fast_lane_takes(self) -> bool:
        if self.url != self.path or self.parser.get_method() != b"POST":
            return False
        if self.expect_100_continue or self.parser.should_upgrade():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind an answer not yet written: uvicorn queues it
        length = next((v for k, v in self.headers if k == b"content-length"), None)
        if length is None or not length.isdigit() or int(length) > self.max_body:
            return False
        # One framing only: a request with both is uvicorn's (and the app's) to refuse.
        return not any(k == b"transfer-encoding" for k, _ in self.headers)

    def _request_id(self) -> bytes:
        # httptools has refused (400) any header value with bytes a response could not echo.
        return next((v for k, v in self.headers if k == b"x-request-id"), b"")

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if isinstance(cycle, FastCycle):
            cycle.body += body
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if not isinstance(cycle, FastCycle):
            super().on_message_complete()
            return
        cycle.more_body = False
        try:
            self.endpoint(cycle.body, cycle.request_id, cycle.reply)
        except Exception:  # the endpoint answers its own errors; this is a bug in it
            self.logger.exception("the fast lane's endpoint failed")
            cycle.reply(500, [(b"content-type", b"application/json")], INTERNAL_ERROR)
