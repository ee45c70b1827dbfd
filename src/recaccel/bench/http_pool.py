"""A lean HTTP/1.1 keep-alive client for the load generator: POST a body, get (status, body).

Why by hand: the load generator shares the machine's cores with the server it measures, so
every CPU-µs the client spends per request is taken from the server and caps what any server
can be measured at. aiohttp, the cheapest general client measured here, spends 150–360 µs of
client CPU per request (scripts/bench_http_clients.py, two sessions); most of it is machinery
this client does not need — cookies, redirects, multidict headers, a stream reader per
response, a timer context per request. This one sends pre-framed bytes on a pooled connection
and hands the raw answer back; parsing is httptools' (the C parser uvicorn uses), so no HTTP
is parsed by hand.

What it does not do, on purpose: TLS, redirects, chunked request bodies, proxies, cookies,
100-continue, pipelining (one request per connection at a time, as a browser or aiohttp does).
A connection the server closes, or that answers `Connection: close`, is dropped from the pool
and a new one opened on demand; a request on a connection that fails is failed, never retried
(the benchmark books a failure, it does not hide one).

    pool = HttpPool("http://127.0.0.1:8000", "/v1/rank", max_connections=64, timeout_s=30)
    status, body = await pool.post(b'{"user_id": 1, "candidates": [1, 2], "k": 1}')
    await pool.close()
"""

from __future__ import annotations

import asyncio
import collections
from typing import cast
from urllib.parse import urlsplit

import httptools

from recaccel.errors import ConfigError


class ResponseError(ConnectionError):
    """The connection closed, or sent bytes that are not an HTTP/1.1 response, mid-request."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._parts: list[bytes] = []
        self.reusable = True

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ResponseError(f"not an HTTP/1.1 response: {error}"))
        except httptools.HttpParserUpgrade:
            self._fail(ResponseError("the server asked to upgrade the protocol"))

    def connection_lost(self, error: Exception | None) -> None:
        self.reusable = False
        self._fail(ResponseError(f"connection closed mid-request ({error or 'by the server'})"))

    # --- httptools' callbacks -----------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, None
        body = b"".join(self._parts)
        self._parts = []
        if not self._parser.should_keep_alive():
            self.close()
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), body))

    # --- the pool's side ----------------------------------------------------------------------

    def send(self, request: list[bytes]) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None and self._answer is None, "one request at a time"
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.writelines(request)
        return self._answer

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: Exception) -> None:
        self.close()
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)


class HttpPool:
    """POSTs to one path of one host over at most `max_connections` keep-alive connections;
    a request finding none free waits for one (the wait counts in its latency, as it should).
    Made on, and used from, one event loop."""

    def __init__(self, url: str, path: str, *, max_connections: int, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"url {url!r} is not http://host[:port]", "TLS is not supported")
        if max_connections < 1:
            raise ConfigError(f"max_connections={max_connections} < 1")
        self._host, self._port = parts.hostname, parts.port or 80
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._idle: collections.deque[_Connection] = collections.deque()
        self._waiting: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._open = 0  # connections open or opening, idle or busy

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with asyncio.timeout(self._timeout_s):
            connection = await self._acquire()
            try:
                return await connection.send([self._head, b"%d\r\n\r\n" % len(body), body])
            except BaseException:
                connection.close()  # a late answer must not reach the next request
                raise
            finally:
                self._release(connection)

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        while self._waiting:
            self._waiting.popleft().cancel()

    async def _acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: warm in every cache
            if connection.reusable:
                return connection
            self._open -= 1
        if self._open < self._max_connections:
            self._open += 1
            return await self._connect()
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            # Cancelled (timed out) after being handed a connection or a slot: give it on.
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())
            raise
        return handed if handed is not None else await self._connect()

    async def _connect(self) -> _Connection:
        """Open a connection in a slot already counted in `_open`."""
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, self._host, self._port
            )
        except BaseException:
            self._pass_on(None)
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        self._pass_on(connection if connection.reusable else None)

    def _pass_on(self, connection: _Connection | None) -> None:
        """Hand a free `connection`, or with None a free slot (counted in `_open`), to the
        longest waiter still waiting; with none, the connection goes idle or the slot is
        given up."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is not None:
            self._idle.append(connection)
        else:
            self._open -= 1
