"""The load generator's HTTP client against real sockets: a small asyncio server per test that
answers as the test scripts it (keep-alive, `Connection: close`, a dropped connection, silence),
so each behaviour of the pool is seen on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from recaccel.bench.http_pool import HttpPool, ResponseError
from recaccel.errors import ConfigError

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep the connection


def answer(body: bytes, *, status: int = 200, close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


class Server:
    """Counts connections and requests; `handle` answers each request."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.connections = 0
        self.bodies: list[bytes] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while (body := await read_request(reader)) is not None:
                self.bodies.append(body)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    keep = await self.handle(body, writer)
                finally:
                    self.in_flight -= 1
                if not keep:
                    break
        finally:
            writer.close()


@asynccontextmanager
async def serving(handle: Handler) -> AsyncIterator[tuple[Server, str]]:
    server = Server(handle)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b"echo:" + body))
    await writer.drain()
    return True


def test_posts_the_body_and_returns_status_and_answer() -> None:
    async def main() -> None:
        async with serving(echo) as (server, url):
            pool = HttpPool(url, "/v1/rank", max_connections=4, timeout_s=5)
            assert await pool.post(b'{"a": 1}') == (200, b'echo:{"a": 1}')
            await pool.close()
            assert server.bodies == [b'{"a": 1}']

    asyncio.run(main())


def test_keeps_connections_alive_across_requests() -> None:
    async def main() -> None:
        async with serving(echo) as (server, url):
            pool = HttpPool(url, "/v1/rank", max_connections=4, timeout_s=5)
            for i in range(20):
                assert await pool.post(b"%d" % i) == (200, b"echo:%d" % i)
            await pool.close()
            assert server.connections == 1

    asyncio.run(main())


def test_never_opens_more_connections_than_its_bound() -> None:
    async def slow_echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        return await echo(body, writer)

    async def main() -> None:
        async with serving(slow_echo) as (server, url):
            pool = HttpPool(url, "/v1/rank", max_connections=3, timeout_s=5)
            answers = await asyncio.gather(*(pool.post(b"%d" % i) for i in range(30)))
            await pool.close()
            assert answers == [(200, b"echo:%d" % i) for i in range(30)]
            assert server.connections == 3
            assert server.most_in_flight == 3  # waiters got connections as they freed

    asyncio.run(main())


def test_a_connection_the_server_closes_is_replaced() -> None:
    async def close_after_answer(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(body, close=True))
        await writer.drain()
        return False

    async def main() -> None:
        async with serving(close_after_answer) as (server, url):
            pool = HttpPool(url, "/v1/rank", max_connections=1, timeout_s=5)
            for i in range(5):
                assert await pool.post(b"%d" % i) == (200, b"%d" % i)
            await pool.close()
            assert server.connections == 5

    asyncio.run(main())


def test_a_connection_dropped_mid_request_fails_that_request_only() -> None:
    async def drop_the_first(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"drop":
            return False  # closed without an answer
        return await echo(body, writer)

    async def main() -> None:
        async with serving(drop_the_first) as (server, url):
            pool = HttpPool(url, "/v1/rank", max_connections=1, timeout_s=5)
            with pytest.raises(ResponseError, match="closed mid-request"):
                await pool.post(b"drop")
            assert await pool.post(b"next") == (200, b"echo:next")
            await pool.close()
            assert server.connections == 2  # the failed connection was not reused

    asyncio.run(main())


def test_an_unanswered_request_times_out_and_its_connection_is_not_reused() -> None:
    async def silent_first(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"silent":
            await asyncio.sleep(1.0)  # answers after the client gave up
            writer.write(answer(b"late"))
            return True
        return await echo(body, writer)

    async def main() -> None:
        async with serving(silent_first) as (server, url):
            pool = HttpPool(url, "/v1/rank", max_connections=1, timeout_s=0.2)
            with pytest.raises(TimeoutError):
                await pool.post(b"silent")
            assert await pool.post(b"next") == (200, b"echo:next")  # not b"late"
            await pool.close()
            assert server.connections == 2

    asyncio.run(main())


def test_requests_that_time_out_waiting_give_their_slot_back() -> None:
    """Requests queued for the one connection time out; after them the pool still serves."""

    async def slow_digits(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body.isdigit():
            await asyncio.sleep(0.3)
        return await echo(body, writer)

    async def main() -> None:
        async with serving(slow_digits) as (_, url):
            pool = HttpPool(url, "/v1/rank", max_connections=1, timeout_s=0.1)
            results = await asyncio.gather(
                *(pool.post(b"%d" % i) for i in range(5)), return_exceptions=True
            )
            assert all(isinstance(r, TimeoutError) for r in results)
            # A leaked slot would leave this one waiting for a connection until it timed out.
            assert await pool.post(b"y") == (200, b"echo:y")
            await pool.close()

    asyncio.run(main())


def test_a_refused_connection_fails_the_request() -> None:
    async def main() -> None:
        async with serving(echo) as (_, url):
            pass  # closed: nothing listens on the port now
        pool = HttpPool(url, "/v1/rank", max_connections=2, timeout_s=5)
        for _ in range(3):  # the failed opens give their slots back
            with pytest.raises(OSError):
                await pool.post(b"x")
        assert pool._open == 0

    asyncio.run(main())


def test_a_non_http_answer_is_an_error_not_a_hang() -> None:
    async def garbage(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        return True

    async def main() -> None:
        async with serving(garbage) as (_, url):
            pool = HttpPool(url, "/v1/rank", max_connections=1, timeout_s=5)
            with pytest.raises(ResponseError, match=r"not an HTTP/1\.1 response"):
                await pool.post(b"x")
            await pool.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "connections"), [("https://h:1", 1), ("h:1", 1), ("http://h:1", 0)]
)
def test_refuses_what_it_cannot_do(url: str, connections: int) -> None:
    with pytest.raises(ConfigError):
        HttpPool(url, "/v1/rank", max_connections=connections, timeout_s=1)
