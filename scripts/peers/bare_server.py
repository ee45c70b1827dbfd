"""The wire's ceiling without a server framework: the canned /v1/rank answer from a bare asyncio
protocol on httptools' parser (no ASGI, no task per request), N processes forked onto one
listening socket. What a Python process pays per request for the socket and the parse alone;
`canned_server.py` is the same answer through uvicorn, so the two together say what uvicorn's
own request handling costs.

    .venv/bin/python scripts/peers/bare_server.py --port 8000 --processes 2

It answers every request, whatever its method or path, after reading its body; GET /ready too.
Not a server for anything but this measurement: no keep-alive timeout, no limits, no graceful
shutdown (SIGTERM ends it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

import httptools
import uvloop
from canned_server import BODY

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class CannedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(ANSWER)
        if not self._parser.should_keep_alive():
            self._transport.close()


async def serve(listener: socket.socket) -> None:
    server = await asyncio.get_running_loop().create_server(CannedProtocol, sock=listener)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(2048)
    for _ in range(args.processes - 1):
        if os.fork() == 0:  # each child accepts on the inherited socket, as the parent does
            break
    uvloop.run(serve(listener))


if __name__ == "__main__":
    main()
