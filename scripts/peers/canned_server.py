"""The wire's ceiling: a server that answers every POST with a canned /v1/rank body and does no
work — it never reads the request. A bare ASGI callable (no framework routing), so what it
costs is uvicorn's HTTP handling alone. Run it as the serving stacks are run:

    .venv/bin/uvicorn --app-dir scripts/peers canned_server:app --workers 2 \
        --loop uvloop --http httptools --no-access-log --port 8000
"""

from __future__ import annotations

from typing import Any

import orjson

BODY = orjson.dumps(
    {
        "model": "canned",
        "version": "1",
        "user_id": 1,
        "items": [{"item_id": i, "score": 0.5} for i in range(1, 11)],
        "candidates": 100,
        "server_ms": 0.0,
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
