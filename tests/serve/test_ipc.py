"""The worker pipes' framing: messages survive any chunking, big writes never block the loop."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

from recaccel.serve import ipc

MESSAGES = [
    ("ready", {"backend": "onnxruntime"}),
    (7, np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((3, 2), dtype=np.int64)),
    None,
    (8, "ok", np.linspace(0, 1, 1000, dtype=np.float32), 0.001),
]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, tuple | list):
        return isinstance(b, type(a)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


@pytest.mark.parametrize("chunk", [1, 3, 8, 9, 100, 1 << 20])
def test_decoder_rebuilds_every_message_whatever_the_chunking(chunk: int) -> None:
    stream = b"".join(ipc.frame(m) for m in MESSAGES)
    decoder = ipc.FrameDecoder()
    got = []
    for start in range(0, len(stream), chunk):
        got += decoder.feed(stream[start : start + chunk])
    assert _equal(got, MESSAGES)
    assert decoder.pending_bytes == 0


def test_decoder_holds_a_partial_message_until_it_completes() -> None:
    data = ipc.frame(("x", 1))
    decoder = ipc.FrameDecoder()
    assert decoder.feed(data[:-1]) == []
    assert decoder.pending_bytes == len(data) - 1
    assert decoder.feed(data[-1:]) == [("x", 1)]


def test_blocking_send_and_receive_round_trip() -> None:
    read_fd, write_fd = os.pipe()
    big = np.random.default_rng(0).random((100_000, 3))  # 2.4 MB: many pipe buffers
    sender = threading.Thread(target=ipc.send, args=(write_fd, (1, big)))
    sender.start()
    got = ipc.receive(read_fd)
    sender.join()
    assert got[0] == 1 and np.array_equal(got[1], big)
    os.close(write_fd)
    with pytest.raises(EOFError):
        ipc.receive(read_fd)
    os.close(read_fd)


def test_writer_buffers_what_the_pipe_cannot_take_and_flushes_it_as_the_reader_reads() -> None:
    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        writer = ipc.NonBlockingWriter(write_fd, loop)
        big = np.ones(1_000_000, dtype=np.float32)  # 4 MB, far past the pipe's buffer
        writer.write(ipc.frame(("big", big)))  # returns at once: the loop is never blocked
        writer.write(ipc.frame(("after", 2)))
        assert writer.backlog_bytes > 0
        received = await loop.run_in_executor(None, lambda: [ipc.receive(read_fd) for _ in "ab"])
        for _ in range(100):  # the last flush runs on the loop
            if writer.backlog_bytes == 0:
                break
            await asyncio.sleep(0.01)
        assert writer.backlog_bytes == 0
        writer.close()
        os.close(read_fd)
        return received

    received = asyncio.run(scenario())
    assert received[0][0] == "big" and received[0][1].shape == (1_000_000,)
    assert received[1] == ("after", 2)


def test_writer_refuses_after_close() -> None:
    async def scenario() -> None:
        read_fd, write_fd = os.pipe()
        writer = ipc.NonBlockingWriter(write_fd, asyncio.get_running_loop())
        writer.close()
        with pytest.raises(BrokenPipeError):
            writer.write(b"x")
        os.close(read_fd)

    asyncio.run(scenario())
