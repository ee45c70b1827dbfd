"""The fast lane (plane/fast_http.py) on a real socket under uvicorn: which requests it takes,
what it answers, and that connections, pipelining and shutdown still behave.

The lane's endpoint answers "fast:<body>" and the ASGI app answers "asgi:<path>", so every
test sees which of the two served each request.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from recaccel.serve.plane.fast_http import FastLaneProtocol, Reply, fast_lane_protocol

PATH = "/v1/rank"
MAX_BODY = 1000


@dataclass
class Lane:
    """The endpoint: answers at once, or after `delay_s`, or raises when asked to."""

    delay_s: float = 0.0
    seen: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __call__(self, body: bytes, request_id: bytes, reply: Reply) -> None:
        self.seen.append((body, request_id))
        if body == b"raise":
            raise RuntimeError("a bug in the endpoint")
        headers = [(b"content-type", b"text/plain"), (b"x-request-id", request_id or b"-")]
        answer = b"fast:" + body
        if self.delay_s and not body.startswith(b"now"):
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay_s, reply, 200, headers, answer)
        else:
            reply(200, headers, answer)


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status = 413 if len(body) > MAX_BODY else 200
    answer = b"asgi:" + scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@dataclass
class Running:
    port: int
    lane: Lane
    server: uvicorn.Server
    thread: threading.Thread

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        chunked = (headers or {}).get("Transfer-Encoding") == "chunked"
        connection.request("POST", path, body, headers or {}, encode_chunked=chunked)
        return connection.getresponse()


def _serve(lane: Lane, keep_alive_s: float = 5.0) -> Running:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        asgi_app,
        http=fast_lane_protocol(lane, PATH, MAX_BODY),
        loop="asyncio",
        log_level="warning",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=keep_alive_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return Running(port, lane, server, thread)


@pytest.fixture
def running() -> Iterator[Running]:
    served = _serve(Lane())
    yield served
    served.server.should_exit = True
    served.thread.join(10)


def _read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """`count` HTTP answers' bodies off a raw socket (Content-Length framed)."""
    data, bodies = b"", []
    while len(bodies) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode()
            length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
            if len(data) >= head_end + 4 + length:
                bodies.append(data[head_end + 4 : head_end + 4 + length])
                data = data[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {len(bodies)} answers"
        data += chunk
    return bodies


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def test_the_lane_answers_its_route_and_uvicorn_the_rest(running: Running) -> None:
    answer = running.post(PATH, b'{"user_id": 1}', {"X-Request-ID": "abc"})
    assert answer.status == 200 and answer.read() == b'fast:{"user_id": 1}'
    assert answer.getheader("x-request-id") == "abc"
    assert answer.getheader("content-length") == str(len(b'fast:{"user_id": 1}'))
    assert answer.getheader("server") == "uvicorn"  # uvicorn's default headers, as on the rest
    assert running.post("/v2/models/m/infer", b"{}").read() == b"asgi:/v2/models/m/infer"
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    connection.request("GET", PATH)
    assert connection.getresponse().read() == b"asgi:/v1/rank"  # another method


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        (PATH + "?x=1", {}, b"{}"),  # a query string: the app routes it
        (PATH, {"Transfer-Encoding": "chunked"}, b"{}"),  # chunked body
        (PATH, {"Expect": "100-continue"}, b"{}"),
    ],
    ids=["query-string", "chunked", "expect-100-continue"],
)
def test_what_the_lane_does_not_take_goes_to_the_app(
    running: Running, path: str, headers: dict[str, str], body: bytes
) -> None:
    answer = running.post(path, body, headers)
    assert answer.status == 200 and answer.read() == b"asgi:/v1/rank"
    assert running.lane.seen == []


def test_a_body_past_the_limit_goes_to_the_app_which_refuses_it(running: Running) -> None:
    answer = running.post(PATH, b"x" * (MAX_BODY + 1))
    assert answer.status == 413 and running.lane.seen == []


def test_keep_alive_serves_many_requests_on_one_connection(running: Running) -> None:
    with running.connect() as sock:
        for i in range(5):
            sock.sendall(_post(PATH, b"%d" % i))
            assert _read_answers(sock, 1) == [b"fast:%d" % i]
        sock.sendall(_post("/other", b""))
        assert _read_answers(sock, 1) == [b"asgi:/other"]
        sock.sendall(_post(PATH, b"again"))
        assert _read_answers(sock, 1) == [b"fast:again"]


def test_pipelined_requests_are_answered_in_order() -> None:
    """The second and third arrive while the first (lane, slow) is unanswered: uvicorn queues
    them (the third too: the lane takes a request only on a connection with no answer
    pending), and starts them once the lane has answered."""
    served = _serve(Lane(delay_s=0.2))
    try:
        with served.connect() as sock:
            sock.sendall(_post(PATH, b"first") + _post("/second", b"") + _post(PATH, b"third"))
            assert _read_answers(sock, 3) == [b"fast:first", b"asgi:/second", b"asgi:/v1/rank"]
            sock.sendall(_post(PATH, b"fourth"))  # nothing pending now: the lane again
            assert _read_answers(sock, 1) == [b"fast:fourth"]
    finally:
        served.server.should_exit = True
        served.thread.join(10)


def test_a_slow_request_pipelined_behind_a_quick_answer_outlives_the_keep_alive_timeout() -> None:
    """The first is answered inside the read that carries both, which arms the keep-alive
    timer; the second, slower than that timeout, must still be answered."""
    served = _serve(Lane(delay_s=0.6), keep_alive_s=0.2)
    try:
        with served.connect() as sock:
            sock.sendall(_post(PATH, b"now") + _post(PATH, b"slow"))
            assert _read_answers(sock, 2) == [b"fast:now", b"fast:slow"]
    finally:
        served.server.should_exit = True
        served.thread.join(10)


def test_connection_close_is_honoured(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(_post(PATH, b"bye", "Connection: close\r\n"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.endswith(b"fast:bye") and b"connection: close" in data.lower()


def test_a_client_gone_before_its_answer_leaves_the_server_serving() -> None:
    served = _serve(Lane(delay_s=0.2))
    try:
        with served.connect() as sock:
            sock.sendall(_post(PATH, b"gone"))
        time.sleep(0.4)  # the answer is due after the client left
        assert served.post(PATH, b"next").read() == b"fast:next"
    finally:
        served.server.should_exit = True
        served.thread.join(10)


def test_an_endpoint_that_raises_is_answered_500_not_left_hanging(running: Running) -> None:
    answer = running.post(PATH, b"raise")
    assert answer.status == 500 and b"internal error" in answer.read()
    assert running.post(PATH, b"ok").read() == b"fast:ok"


def test_graceful_shutdown_waits_for_an_answer_in_flight() -> None:
    served = _serve(Lane(delay_s=0.5))
    with served.connect() as sock:
        sock.sendall(_post(PATH, b"late"))
        time.sleep(0.1)  # the lane has it
        served.server.should_exit = True
        assert _read_answers(sock, 1) == [b"fast:late"]
    served.thread.join(10)
    assert not served.thread.is_alive()


def test_the_protocol_is_made_for_its_endpoint() -> None:
    lane = Lane()
    made = fast_lane_protocol(lane, PATH, MAX_BODY)
    assert issubclass(made, FastLaneProtocol)
    assert made.path == PATH.encode() and made.max_body == MAX_BODY


def test_recaccel_serve_runs_the_fast_lane_unless_it_is_turned_off() -> None:
    from recaccel.serve.config import ServeConfig, ServerSection
    from recaccel.serve.server import uvicorn_config

    class App:
        class state:  # noqa: N801 (FastAPI's app.state)
            lean_app = asgi_app
            fast_rank = Lane()

    on = uvicorn_config(App, ServeConfig())  # type: ignore[arg-type]
    assert isinstance(on.http, type) and issubclass(on.http, FastLaneProtocol)
    assert on.http.endpoint is App.state.fast_rank
    off = ServeConfig(server=ServerSection(fast_lane=False))
    assert uvicorn_config(App, off).http == "httptools"  # type: ignore[arg-type]
