"""Messages between the server and its worker processes: length-prefixed pickles over pipes.

    frame(obj) -> bytes                  # 8-byte little-endian length, then pickle protocol 5
    FrameDecoder().feed(chunk) -> [obj]  # the server's non-blocking side: whatever has arrived
    send(fd, obj), receive(fd) -> obj    # the worker's blocking side

Why not `multiprocessing.Queue` and `Connection.send`, which did this job first: the queue
pickles every batch with `ForkingPickler` (a fresh copy of the reducer table per call) in a
feeder thread, and results came back through a reader thread and `call_soon_threadsafe`.
Under load that was about 0.3 ms of server CPU per request in those two threads alone, plus
GIL hand-offs between them and the event loop on a 2-core machine. Here the event loop writes
each task itself (`NonBlockingWriter`: never blocks, buffers what the pipe does not take yet)
and reads results when their pipe is readable (`loop.add_reader`), so a batch costs one plain
`pickle.dumps` and no thread wake-up. The framing is ours because the `Connection` wire
format is not documented, and the server side must parse it incrementally.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pickle
import struct
from typing import Any

_LENGTH = struct.Struct("<Q")


def frame(message: Any) -> bytes:
    """`message` as one frame: its pickle's length, then the pickle (protocol 5)."""
    payload = pickle.dumps(message, protocol=5)
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into the messages `frame` made, however the stream is chunked."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        """Every message completed by `chunk`, in order; a partial one waits for more."""
        self._buffer += chunk
        messages = []
        start = 0
        while len(self._buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer, start)
            end = start + _LENGTH.size + length
            if len(self._buffer) < end:
                break
            messages.append(pickle.loads(memoryview(self._buffer)[start + _LENGTH.size : end]))
            start = end
        if start:
            del self._buffer[:start]
        return messages

    @property
    def pending_bytes(self) -> int:
        """Bytes of a message not yet complete (0 between messages)."""
        return len(self._buffer)


class NonBlockingWriter:
    """Writes frames to a pipe from the event loop without ever blocking it.

    What the pipe takes at once is written at once (the usual case: a worker is only sent a
    batch when it is idle and reading); the rest waits in a buffer that `loop.add_writer`
    flushes as the worker reads. `write` raises BrokenPipeError once the reader is gone.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._loop = loop
        self._backlog = bytearray()
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError(errno.EPIPE, "the pipe is closed")
        if self._backlog:
            self._backlog += data
            return
        written = self._write_some(data)
        if written < len(data):
            self._backlog += data[written:]
            self._loop.add_writer(self._fd, self._flush)

    @property
    def backlog_bytes(self) -> int:
        return len(self._backlog)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._backlog:
                self._loop.remove_writer(self._fd)
                self._backlog.clear()
            os.close(self._fd)

    def _write_some(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def _flush(self) -> None:
        try:
            written = self._write_some(self._backlog)
        except OSError:  # the reader is gone; the process sentinel reports its death
            written = len(self._backlog)
        del self._backlog[:written]
        if not self._backlog:
            self._loop.remove_writer(self._fd)


def send(fd: int, message: Any) -> None:
    """Write one frame to a blocking pipe (the worker's side)."""
    data = memoryview(frame(message))
    while data:
        data = data[os.write(fd, data) :]


def receive(fd: int) -> Any:
    """Read one frame from a blocking pipe (the worker's side); EOFError when it is closed."""
    (length,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    return pickle.loads(_read_exactly(fd, length))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the pipe was closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
