"""Which async HTTP client should drive the benchmark? aiohttp vs httpx, keep-alive, measured.

The load generator shares the machine with the server, so what matters is the client's CPU per
request, then its requests/s. A canned-answer uvicorn server (uvloop + httptools, as `recaccel
serve` runs) answers every POST without work, so the client is the bottleneck; each client
sends 4,000 /v1/rank-shaped bodies (100 candidates), 16 at a time on 16 keep-alive connections,
after 200 warm-up requests, on the standard asyncio loop and on uvloop.

    .venv/bin/python scripts/bench_http_clients.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import orjson

N_REQUESTS, CONCURRENCY, WARM_UP = 4_000, 16, 200
BODY = orjson.dumps({"user_id": 1, "candidates": list(range(1, 101)), "k": 10})
ANSWER = orjson.dumps(
    {"model": "m", "version": "1", "user_id": 1, "items": [], "candidates": 100, "server_ms": 0.1}
)

SERVER = f"""
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]}})
    await send({{"type": "http.response.body", "body": {ANSWER!r}}})
uvicorn.run(app, port=int(sys.argv[1]), loop="uvloop", http="httptools", log_level="warning")
"""


async def _drive(post: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            await post()

    await asyncio.gather(*(one() for _ in range(WARM_UP)))
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(N_REQUESTS)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def with_aiohttp(url: str) -> tuple[float, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> None:
            async with session.post(url, data=BODY) as response:
                orjson.loads(await response.read())

        return await _drive(post)


async def with_httpx(url: str) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:

        async def post() -> None:
            orjson.loads((await client.post(url, content=BODY)).content)

        return await _drive(post)


async def with_http_pool(url: str) -> tuple[float, float]:
    from recaccel.bench.http_pool import HttpPool

    pool = HttpPool(
        url.removesuffix("/v1/rank"), "/v1/rank", max_connections=CONCURRENCY, timeout_s=30
    )

    async def post() -> None:
        orjson.loads((await pool.post(BODY))[1])

    try:
        return await _drive(post)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        time.sleep(2.0)  # uvicorn binds well within this
        url = f"http://127.0.0.1:{port}/v1/rank"
        import uvloop

        for _ in range(args.rounds):  # interleaved: the machine's drift hits both alike
            for name, client in (
                ("aiohttp", with_aiohttp),
                ("httpx", with_httpx),
                ("http_pool", with_http_pool),
            ):
                for loop_name, run in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
                    wall, cpu = run(client(url))
                    print(
                        f"{name:8s} {loop_name:8s} {N_REQUESTS / wall:7.0f} requests/s  "
                        f"{cpu / N_REQUESTS * 1e6:6.0f} µs client CPU per request"
                    )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
